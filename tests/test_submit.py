"""Submissions: every kind of bad submission is rejected with its own message and changes nothing;
a good one is re-scored, merged and shown."""
import csv
import errno
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import leaderboard, results, submit
from benchmark.submit import SubmissionError

REPO = Path(__file__).resolve().parents[1]


def _builder():
    path = Path(__file__).parent / "data" / "submission_example" / "build_example.py"
    spec = importlib.util.spec_from_file_location("build_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A toy leaderboard (reference rows, tables, published.csv) and one submission per task."""
    root = tmp_path_factory.mktemp("example")
    dirs = _builder().build(root)
    shutil.copyfile(REPO / "leaderboards" / "published.csv", dirs["leaderboard"] / "published.csv")
    leaderboard.regenerate([dirs["leaderboard"] / "results.jsonl"], dirs["leaderboard"])
    return root


@pytest.fixture
def example(base, tmp_path):
    root = tmp_path / "example"
    shutil.copytree(base, root)
    return root


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _rows(sub: Path) -> list[dict]:
    return [json.loads(l) for l in (sub / "results.jsonl").read_text().splitlines()]


def _write(sub: Path, rows: list[dict]) -> None:
    (sub / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _edit_rows(fn):
    def mutate(sub):
        rows = _rows(sub)
        rows = fn(rows) or rows
        _write(sub, rows)
    return mutate


def _set_all(key, value):
    def fn(rows):
        for r in rows:
            r[key] = value
    return _edit_rows(fn)


def _drop_config(rows):
    del rows[0]["config"]


def _prediction(sub: Path, row: int = 1, test_set: str = "in_distribution") -> Path:
    return sub / _rows(sub)[row]["metrics"][test_set]["predictions"]


def _edit_csv(row_index: int, fn):
    """Edits data row `row_index` (0-based; file line row_index + 2) of the in-distribution
    prediction file of results line 2."""
    def mutate(sub):
        path = _prediction(sub)
        with open(path, newline="") as f:
            table = list(csv.reader(f))
        fn(table[0], table[row_index + 1])
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(table)
    return mutate


def _set_cell(column, value):
    def fn(header, row):
        row[header.index(column)] = value
    return fn


def _rotate_label(header, row):
    idx = [i for i, h in enumerate(header) if h.startswith("label/")]
    labels = [row[i] for i in idx]
    for i, v in zip(idx, labels[-1:] + labels[:-1]):
        row[i] = v


def _bump_value(rows, delta, ci=False):
    result = rows[0]["metrics"]["in_distribution"]
    if ci:
        result["ci95"]["top1"][0] += delta
    else:
        result["values"]["top1"] += delta


def _swap_fingerprints(rows):
    m = rows[0]["metrics"]
    m["in_distribution"]["fingerprint"] = m["shifted"]["fingerprint"]


def _symlink_out(target_of):
    """Moves a file or directory of the submission outside it, leaving a symlink to it: the same
    bytes, read from elsewhere."""
    def mutate(sub):
        target = target_of(sub)
        outside = sub.parent / "outside" / target.name
        outside.parent.mkdir(exist_ok=True)
        shutil.move(target, outside)
        target.symlink_to(outside, target_is_directory=outside.is_dir())
    return mutate


def _fifo(sub):
    path = _prediction(sub)
    path.unlink()
    os.mkfifo(path)


def _unlink(name):
    return lambda sub: (sub / name).unlink()


CASES = {
    "no_results": (_unlink("results.jsonl"), ["results.jsonl: not found"]),
    "bad_submitter": (_unlink("submission.json"), ["submission.json: not found"]),
    "malformed_json": (lambda sub: (sub / "results.jsonl").write_text(
        "\n".join(l[:-3] if i == 1 else l for i, l in
                  enumerate((sub / "results.jsonl").read_text().splitlines()))),
        ["results.jsonl:2: not valid JSON"]),
    "schema": (_edit_rows(_drop_config),
               ["results.jsonl:1", "missing key 'config'"]),
    "unknown_task": (_edit_rows(lambda rows: rows[3].update(task="mri")),
                     ["results.jsonl:4", "task 'mri'"]),
    "unknown_preset": (_edit_rows(lambda rows: rows[2].update(preset="tpu")),
                       ["results.jsonl:3", "preset 'tpu'"]),
    "bad_cell_types": (_edit_rows(lambda rows: rows[1].update(label_fraction="0.1")),
                       ["results.jsonl:2", "label_fraction '0.1'"]),
    "bad_cell_types/seed": (_edit_rows(lambda rows: rows[0].update(seed=1.5)),
                            ["results.jsonl:1", "seed 1.5"]),
    "invalid_method_name": (_set_all("method", "bad name!"), ["method 'bad name!'"]),
    "duplicate_cell": (_edit_rows(lambda rows: rows + [rows[0]]),
                       ["results.jsonl:5", "already on line 1"]),
    "method_clash": (_set_all("method", "supervised"),
                     ["method 'supervised' already belongs to 'reference'"]),
    "incomplete_grid": (_edit_rows(lambda rows: rows[:-1]),
                        ["method=example-ssl", "missing cells label_fraction=1 seed=1"]),
    "cell_outside_grid": (_edit_rows(lambda rows: rows + [dict(rows[0], seed=7)]),
                          ["label_fraction=0.1 seed=7 outside the required grid"]),
    "wrong_fingerprint": (_edit_rows(lambda rows: rows[1]["metrics"]["shifted"].update(
        fingerprint="0" * 64)), ["results.jsonl:2", "metrics.shifted.fingerprint 0000"]),
    "wrong_fingerprint/other_test_set": (_edit_rows(_swap_fingerprints), [
        "results.jsonl:1: metrics.in_distribution.fingerprint", "is not that of a derm/cpu "
        "in_distribution test set", "(it is the fingerprint of the derm/cpu shifted test set)"]),
    "reference_mismatch/synthetic": (_set_all("synthetic", False), [
        "results.jsonl:1: synthetic is false but the reference rows scored on this "
        "in_distribution test set (", "ran on SYNTHETIC data"]),
    "reference_mismatch/n_examples": (_edit_rows(lambda rows: rows[2]["metrics"]["shifted"].update(
        n_examples=23)), ["results.jsonl:3: metrics.shifted.n_examples = 23 but this test set "
                          "has 24"]),
    "reference_mismatch/n_groups": (_edit_rows(lambda rows: rows[0]["metrics"][
        "in_distribution"].update(n_groups=17)), ["results.jsonl:1: metrics.in_distribution."
                                                  "n_groups = 17 but this test set has 18"]),
    "reference_mismatch/data_fingerprint": (_edit_rows(lambda rows: rows[1].update(
        data_fingerprint="1" * 64)), ["results.jsonl:2: data_fingerprint = '1111", "but the "
                                      "reference rows of the same test sets, label_fraction 0.1 "
                                      "and seed 1 trained on '"]),
    "reference_mismatch/n_train_examples": (_edit_rows(lambda rows: rows[3].update(
        n_train_examples=500)), ["results.jsonl:4: n_train_examples = 500 but the reference "
                                 "rows of the same test sets, label_fraction 1 and seed 1 "
                                 "trained on 120"]),
    "reference_mismatch/n_train_groups_missing": (_edit_rows(lambda rows: rows[0].pop(
        "n_train_groups") and None), ["results.jsonl:1: n_train_groups = None but", "trained on 8"]),
    "outside_submission/dotdot": (_edit_rows(lambda rows: rows[1]["metrics"]["shifted"].update(
        predictions="../leaderboard/predictions/x.csv")), [
        "results.jsonl:2: metrics.shifted.predictions '../leaderboard/predictions/x.csv' leaves "
        "the submission directory"]),
    "outside_submission/absolute": (_edit_rows(lambda rows: rows[0]["metrics"][
        "in_distribution"].update(predictions="/etc/passwd")), [
        "results.jsonl:1: metrics.in_distribution.predictions '/etc/passwd' leaves the "
        "submission directory"]),
    "outside_submission/symlinked_file": (_symlink_out(lambda sub: _prediction(sub)), [
        "results.jsonl:2: metrics.in_distribution: predictions/derm_example-ssl_cpu_finetune_f10_"
        "s1_in_distribution.csv resolves to", "outside the submission directory"]),
    "outside_submission/symlinked_dir": (_symlink_out(lambda sub: sub / "predictions"), [
        "results.jsonl:1: metrics.in_distribution: predictions/", "outside the submission "
        "directory"]),
    "outside_submission/symlinked_results": (_symlink_out(lambda sub: sub / "results.jsonl"), [
        "submission_derm/results.jsonl: results.jsonl resolves to", "outside the submission "
        "directory"]),
    "outside_submission/symlinked_submitter": (_symlink_out(lambda sub: sub / "submission.json"),
                                               ["submission.json resolves to", "outside"]),
    "outside_submission/fifo": (_fifo, ["_s1_in_distribution.csv is not a regular file"]),
    "outside_submission/directory": (_edit_rows(lambda rows: rows[0]["metrics"]["shifted"].update(
        predictions="predictions")), ["results.jsonl:1: metrics.shifted:", "/predictions is not "
                                      "a regular file"]),
    "outside_submission/nul": (_edit_rows(lambda rows: rows[0]["metrics"]["shifted"].update(
        predictions="a\0b.csv")), ["results.jsonl:1: metrics.shifted: file name 'a\\x00b.csv' "
                                   "holds a NUL byte"]),
    "schema/deterministic": (_set_all("deterministic", "yes"), [
        "results.jsonl:1: result row: 'deterministic' must be a bool, got 'yes'"]),
    "malformed_json/not_utf8": (lambda sub: (sub / "results.jsonl").write_bytes(b"\xff\n"), [
        "results.jsonl: not UTF-8 text (invalid start byte at byte 0)"]),
    "malformed_json/array": (lambda sub: (sub / "results.jsonl").write_text("[]\n"), [
        "results.jsonl:1: expected a JSON object, got list"]),
    "bad_submitter/not_json": (lambda sub: (sub / "submission.json").write_text("lab"), [
        "submission.json: not JSON"]),
    "bad_submitter/reference": (lambda sub: (sub / "submission.json").write_text(
        '{"submitter": "reference"}'), ["submitter 'reference' must match"]),
    "no_results/empty": (lambda sub: (sub / "results.jsonl").write_text("\n"), [
        "results.jsonl: holds no result rows"]),
    "missing_predictions": (lambda sub: _prediction(sub).unlink(),
                            ["results.jsonl:2: metrics.in_distribution", "_s1_in_distribution.csv "
                             "not found"]),
    "malformed_predictions": (_edit_csv(2, _set_cell("score/mel", "high")),
                              ["_s1_in_distribution.csv:4", "could not convert"]),
    "ids_mismatch": (_edit_csv(0, _set_cell("example_id", "intruder")),
                     ["_s1_in_distribution.csv", "not in the test set: 'intruder'"]),
    "label_mismatch": (_edit_csv(3, _rotate_label),
                       ["_s1_in_distribution.csv:5: labels differ from the test set's, first at "
                        "example 'in003': [0, 0, 0, 0, 1] here, [0, 0, 0, 1, 0] in the test set"]),
    "group_mismatch": (_edit_csv(5, _set_cell("group_id", "p999")),
                       ["_s1_in_distribution.csv", "'p999'"]),
    "metric_mismatch": (_edit_rows(lambda rows: _bump_value(rows, 1e-3)),
                        ["results.jsonl:1: metrics.in_distribution: values.top1"]),
    "metric_mismatch/ci": (_edit_rows(lambda rows: _bump_value(rows, 1e-3, ci=True)),
                           ["results.jsonl:1: metrics.in_distribution: ci95.top1 lo"]),
}


def _expect_rejection(submission: Path, board: Path, code: str, fragments) -> str:
    before = _snapshot(board)
    with pytest.raises(SubmissionError) as info:
        submit.submit(submission, board)
    message = str(info.value)
    assert info.value.code == code, message
    assert message.startswith(f"submission rejected [{code}]: ")
    for fragment in fragments:
        assert fragment in message, message
    assert _snapshot(board) == before
    return message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_submission_is_rejected_with_its_own_message(example, case):
    mutate, fragments = CASES[case]
    sub = example / "submission_derm"
    mutate(sub)
    _expect_rejection(sub, example / "leaderboard", case.split("/")[0], fragments)


def test_missing_dir_and_missing_reference_are_rejected(example):
    board = example / "leaderboard"
    _expect_rejection(example / "nowhere", board, "missing_dir", ["nowhere: no such directory"])
    rows = [r for r in results.ResultsStore(board / "results.jsonl").rows() if r["task"] != "cxr"]
    (board / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _expect_rejection(example / "submission_cxr", board, "no_reference",
                      ["no reference rows for task 'cxr', preset 'cpu'"])


def test_every_rejection_code_is_exercised():
    assert not set(CASES) & {"missing_dir", "no_reference"}
    tested = {c.split("/")[0] for c in CASES} | {"missing_dir", "no_reference"}
    assert tested == set(submit.REJECTIONS)


def test_good_submission_is_rescored_merged_and_shown(example):
    board = example / "leaderboard"
    derm = example / "submission_derm"
    submitted = _rows(derm)
    # A difference below the tolerance is accepted, and the re-scored value is what is stored.
    nudged = [dict(r) for r in submitted]
    nudged[0] = json.loads(json.dumps(submitted[0]))
    nudged[0]["metrics"]["in_distribution"]["values"]["top1"] += 5e-7
    _write(derm, nudged)
    (board / "results.jsonl").chmod(0o640)
    stored = submit.submit(derm, board)
    assert len(stored) == 4
    assert stat.S_IMODE((board / "results.jsonl").stat().st_mode) == 0o640
    board_rows = results.ResultsStore(board / "results.jsonl").rows()
    on_board = {results.cell_key(r): r for r in board_rows}
    for row in submitted:
        mine = on_board[results.cell_key(row)]
        for test_set, result in row["metrics"].items():
            assert mine["metrics"][test_set]["values"] == result["values"]
            assert mine["metrics"][test_set]["ci95"] == result["ci95"]
            copied = board / mine["metrics"][test_set]["predictions"]
            assert copied.read_bytes() == (derm / result["predictions"]).read_bytes()
    md = (board / "derm.md").read_text()
    assert "| example-ssl † | finetune | cpu | 10% |" in md  # toy rows predate `deterministic`
    assert json.loads((board / "results_submitters.json").read_text()) == {
        "example-ssl": "example-lab"}
    # The same submitter may add the method on another task; resubmitting a cell is a duplicate.
    submit.submit(example / "submission_cxr", board)
    assert "| example-ssl † | finetune | cpu | 100% |" in (board / "cxr.md").read_text()
    _write(derm, submitted)
    _expect_rejection(derm, board, "duplicate_cell", ["is already on the leaderboard"])
    # Another submitter cannot use the name, even for cells not on the board.
    (derm / "submission.json").write_text(json.dumps({"submitter": "other-lab"}))
    _write(derm, [dict(r, eval_mode="linear") for r in submitted])
    _expect_rejection(derm, board, "method_clash", ["already belongs to 'example-lab'"])
