"""Submissions: every kind of bad submission is rejected with its own message and changes nothing;
a good one is re-scored, merged and shown."""
import csv
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import submit as submit_cmd
from benchmark.board import leaderboard, submit
from benchmark.harness import results
from benchmark.board.submit import SubmissionError
from shared_helpers import example_builder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A toy leaderboard (reference rows, tables, published.csv) and one submission per task."""
    root = tmp_path_factory.mktemp("example")
    dirs = example_builder().build(root)
    shutil.copyfile(REPO / "leaderboards" / "published.csv", dirs["leaderboard"] / "published.csv")
    leaderboard.regenerate([dirs["leaderboard"] / "results.jsonl"], dirs["leaderboard"])
    return root


@pytest.fixture
def example(base, tmp_path):
    root = tmp_path / "example"
    shutil.copytree(base, root)
    return root


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes, except the empty lock file a merge attempt may create."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.suffix != ".lock"}


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


def _as_linear(row):
    """`row` as a linear-probe row (the toy board has no reference rows of that eval mode)."""
    probe = {"C": 1.0, "grid": [1.0], "validation": {"1.0": None}, "metric": "top1",
             "standardised": True, "solver": "lbfgs", "max_iter": 1000, "unconverged": [],
             "constant": [], "n_validation_examples": 0}
    return dict({k: v for k, v in row.items() if k != "finetune_selection"}, eval_mode="linear",
                linear_probe=probe)


def _copy_prediction(source, target):
    """Presents row `source`'s in-distribution predictions, byte for byte, as row `target`'s,
    with the numbers a harness would store for that cell."""
    def mutate(sub):
        from benchmark.board import rules
        from benchmark.harness import tasks

        rows = _rows(sub)
        data = (sub / rows[source]["metrics"]["in_distribution"]["predictions"]).read_bytes()
        path = sub / rows[target]["metrics"]["in_distribution"]["predictions"]
        path.write_bytes(data)
        rescored = rules.rescore(tasks.get_task("derm"), "in_distribution", rows[target],
                                 results.read_predictions(path))
        rows[target]["metrics"]["in_distribution"].update(rescored)
        _write(sub, rows)
    return mutate


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
    # Issue 21, principle 2: names are unique ignoring case and punctuation, controls are the
    # board's, the grid holds without reference rows of the eval mode, every cell its own files.
    "method_clash/case": (_set_all("method", "Supervised"), [
        "results.jsonl:1: method 'Supervised' names the same method as 'supervised' on the "
        "leaderboard (names are compared ignoring case and punctuation); choose another name"]),
    "method_clash/punctuation": (_set_all("method", "super-vised"), [
        "method 'super-vised' names the same method as 'supervised' on the leaderboard"]),
    "method_clash/within": (_edit_rows(lambda rows: [dict(r, method="Example.SSL") for r in
                                                     rows[:1]] + rows[1:]), [
        "results.jsonl:2: method 'example-ssl' names the same method as 'Example.SSL' on line 1"]),
    "method_clash/control": (_set_all("method", "Random-Init2"), [
        "results.jsonl:1: method 'Random-Init2' reads as the board's control 'random_init'; "
        "controls are the reference rows, choose another name"]),
    "cell_outside_grid/preset": (_edit_rows(lambda rows: [_as_linear(r) for r in rows]), [
        "(task=derm, method=example-ssl, preset=cpu, eval_mode=linear) has cells "
        "label_fraction=1 seed=0, label_fraction=1 seed=1 outside the required grid "
        "label_fraction in {0.1} x seed in {0, 1} (preset cpu's; the leaderboard has no "
        "reference rows of this eval mode)"]),
    "incomplete_grid/preset": (_edit_rows(lambda rows: [_as_linear(r) for r in rows[:1]]), [
        "(task=derm, method=example-ssl, preset=cpu, eval_mode=linear) is missing cells "
        "label_fraction=0.1 seed=1; the required grid is label_fraction in {0.1} x seed in "
        "{0, 1} (preset cpu's"]),
    "duplicate_predictions": (_copy_prediction(0, 1), [
        "results.jsonl:2: metrics.in_distribution: predictions/derm_example-ssl_cpu_finetune_"
        "f10_s1_in_distribution.csv has the same bytes as predictions/derm_example-ssl_cpu_"
        "finetune_f10_s0_in_distribution.csv of ", "results.jsonl:1, cell (task=derm, "
        "method=example-ssl, preset=cpu, eval_mode=finetune, label_fraction=0.1, seed=0); every "
        "cell is scored from its own predictions"]),
    "duplicate_predictions/fraction": (_copy_prediction(1, 3), [
        "results.jsonl:4: metrics.in_distribution: predictions/derm_example-ssl_cpu_finetune_"
        "f100_s1_in_distribution.csv has the same bytes as ", "label_fraction=0.1, seed=1)"]),
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
    assert "| example-ssl | scratch | finetune | cpu | 10% |" in md
    assert json.loads((board / "results_submitters.json").read_text()) == {
        "example-ssl": "example-lab"}
    # The same submitter may add the method on another task; resubmitting a cell is a duplicate.
    submit.submit(example / "submission_cxr", board)
    assert "| example-ssl | scratch | finetune | cpu | 100% |" in (board / "cxr.md").read_text()
    _write(derm, submitted)
    _expect_rejection(derm, board, "duplicate_cell", ["is already on the leaderboard"])
    # Another submitter cannot use the name, even for cells not on the board.
    (derm / "submission.json").write_text(json.dumps({"submitter": "other-lab"}))
    _write(derm, [dict({k: v for k, v in r.items() if k != "finetune_selection"}, eval_mode="linear",
                       linear_probe=example_builder().make_cell(
        "derm", r["method"], r["label_fraction"], r["seed"], example / "probe",
        eval_mode="linear")["linear_probe"]) for r in submitted])
    _expect_rejection(derm, board, "method_clash", ["already belongs to 'example-lab'"])


UNCHANGED = "; the submission was not merged and the leaderboard is unchanged"


def test_failed_regeneration_changes_nothing_and_the_resubmission_lands(example):
    """Issue 10 item 4: a bad published.csv fails the regeneration; nothing is merged, and once
    it is fixed the same submission is accepted (not a duplicate)."""
    board = example / "leaderboard"
    good = (board / "published.csv").read_text()
    (board / "published.csv").write_text(good.replace(",partial,", ",maybe,"))
    before = _snapshot(board)
    with pytest.raises(ValueError) as info:
        submit.submit(example / "submission_derm", board)
    assert str(info.value) == (f"{board / 'published.csv'}:2: protocol_matches_ours 'maybe'; "
                               f"expected one of ('yes', 'no', 'partial'){UNCHANGED}")
    assert _snapshot(board) == before
    assert not list(board.glob(".submit-staging-*"))
    (board / "published.csv").write_text(good)
    assert len(submit.submit(example / "submission_derm", board)) == 4


@pytest.fixture(scope="module")
def os_calls(base, tmp_path_factory):
    """How often a successful submission calls each file operation the fault tests break."""
    root = tmp_path_factory.mktemp("count") / "example"
    shutil.copytree(base, root)
    counts = {"fsync": 0, "replace": 0, "link": 0}
    real = {name: getattr(os, name) for name in counts}
    with pytest.MonkeyPatch.context() as mp:
        for name in counts:
            def counting(*args, _name=name, **kwargs):
                counts[_name] += 1
                return real[_name](*args, **kwargs)
            mp.setattr(os, name, counting)
        submit.submit(root / "submission_derm", root / "leaderboard")
    return counts


@pytest.mark.parametrize("call, position", [
    ("fsync", 0.0), ("fsync", 0.5), ("fsync", 1.0),
    ("replace", 0.0), ("replace", 0.25), ("replace", 0.5), ("replace", 0.52), ("replace", 0.75),
    ("replace", 1.0), ("link", 0.0), ("link", 1.0)])
def test_disk_full_at_any_step_changes_nothing(example, os_calls, monkeypatch, call, position):
    """ENOSPC (simulated) at the n-th fsync/rename/link of a submission, while staging or while
    moving files into place: one error naming a file, the leaderboard byte-identical, no staging
    left; the same submission then lands."""
    board = example / "leaderboard"
    before = _snapshot(board)
    fail_at = round(position * (os_calls[call] - 1))
    real = getattr(os, call)
    seen = []

    def failing(*args, **kwargs):
        seen.append(1)
        if len(seen) - 1 == fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)
    monkeypatch.setattr(os, call, failing)
    with pytest.raises(OSError) as info:
        submit.submit(example / "submission_derm", board)
    monkeypatch.undo()
    line = results.os_error_text(info.value)
    assert line.startswith(str(example)) and f": No space left on device{UNCHANGED}" in line, line
    assert _snapshot(board) == before
    assert sorted(p.name for p in board.iterdir() if p.name.startswith(".")) == []
    assert len(submit.submit(example / "submission_derm", board)) == 4


def _bad_board_row(example, fn, line=2):
    path = example / "leaderboard" / "results.jsonl"
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("".join(l + "\n" for l in lines))


def _drop_key(text):
    row = json.loads(text)
    del row["config"]
    return json.dumps(row)


def _read_only_board(example, monkeypatch):
    board = example / "leaderboard"
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(board)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)


# name -> (setup(example, monkeypatch) -> (submission, leaderboard_dir, results flag),
#          the exact stderr line with {ex} for the example directory)
SUBMIT_CLI_CASES = {
    "leaderboard_dir_missing": (lambda ex, m: (ex / "submission_derm", ex / "nowhere", None),
                                "error: --leaderboard_dir={ex}/nowhere: no such directory"),
    "leaderboard_dir_is_a_file": (lambda ex, m: (ex / "submission_derm",
                                                 ex / "leaderboard" / "derm.md", None),
                                  "error: --leaderboard_dir={ex}/leaderboard/derm.md: not a "
                                  "directory"),
    "results_missing": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard",
                                       str(ex / "none.jsonl")),
                        "error: --results={ex}/none.jsonl: {ex}/none.jsonl not found; the "
                        "leaderboard's results file holds the reference rows submissions are "
                        "compared with"),
    "default_results_missing": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard", None)
                                if (ex / "leaderboard" / "results.jsonl").unlink() is None
                                else None,
                                "error: --leaderboard_dir={ex}/leaderboard: {ex}/leaderboard/"
                                "results.jsonl not found; the leaderboard's results file holds "
                                "the reference rows submissions are compared with"),
    "board_malformed_line": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard", None)
                             if _bad_board_row(ex, lambda l: l[:30]) is None else None,
                             "error: {ex}/leaderboard/results.jsonl:2: malformed result row "
                             "(Unterminated string starting at: line 1 column 17 (char 16))"),
    "board_row_missing_key": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard", None)
                              if _bad_board_row(ex, _drop_key, 3) is None else None,
                              "error: {ex}/leaderboard/results.jsonl:3: result row: missing key "
                              "'config'"),
    "owners_not_json": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard", None)
                        if (ex / "leaderboard" / "results_submitters.json").write_text("{")
                        else None,
                        "error: {ex}/leaderboard/results_submitters.json: not JSON (Expecting "
                        "property name enclosed in double quotes: line 1 column 2 (char 1))"),
    "read_only_leaderboard": (lambda ex, m: (ex / "submission_derm", ex / "leaderboard", None)
                              if _read_only_board(ex, m) is None else None,
                              "error: {ex}/leaderboard/results.jsonl.lock: Permission denied"),
    "rejection": (lambda ex, m: (ex / "nowhere", ex / "leaderboard", None),
                  "submission rejected [missing_dir]: {ex}/nowhere: no such directory"),
}


@pytest.mark.parametrize("case", sorted(SUBMIT_CLI_CASES))
def test_submit_cli_bad_input_is_one_line(example, monkeypatch, capsys, case):
    setup, expected = SUBMIT_CLI_CASES[case]
    sub, board, results_flag = setup(example, monkeypatch)
    before = _snapshot(example / "leaderboard")
    status = submit_cmd.cli(str(sub), str(board), results_flag)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert status == 1
    assert err == expected.format(ex=example) + "\n"
    assert _snapshot(example / "leaderboard") == before


def test_submit_cli_warns_about_a_torn_board_line_and_merges(example, capsys):
    path = example / "leaderboard" / "results.jsonl"
    text = path.read_text()
    path.write_text(text + '{"schema": 1, "ta')
    n = len(text.splitlines()) + 1
    assert submit_cmd.cli(str(example / "submission_derm"), str(example / "leaderboard"), None) == 0
    out = capsys.readouterr()
    assert out.err == (f"warning: {path}:{n}: ignoring truncated last line (Unterminated string "
                       "starting at: line 1 column 15 (char 14)); it is dropped when this "
                       "submission is merged\n")
    assert out.out.startswith("accepted 4 rows for example-ssl")
    assert path.read_text().startswith(text) and path.read_text().count("\n") == n + 3


def test_submit_process_exits_non_zero_without_traceback(example):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    board = example / "leaderboard"
    (board / "results.jsonl").write_text('{"schema": 2}\n')
    proc = subprocess.run([sys.executable, "-m", "benchmark.submit",
                           f"--submission={example / 'submission_derm'}",
                           f"--leaderboard_dir={board}"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {board / 'results.jsonl'}:1: result row: missing key 'code_digest'")


R18 = {"family": "resnet_v1", "depth": 18, "width": 0.25, "small_stem": False}


def test_a_submission_is_never_a_control_nor_moves_another_lines_numbers(tmp_path):
    """Issue 21, principle 2: a submitted row claiming `config.method_spec: random_init`, with a
    name sorting before `random_init`, stays an ordinary line: the reference lines keep their
    control and their differences, and the submitted line is compared with the board's control."""
    build = example_builder()
    board = tmp_path / "board"
    reference = []
    for method, skill in (("supervised", 1.1), ("random_init", 1.0)):
        for row in build.make_grid("derm", method, board, skill=skill):
            row["config"] = {"backbone": R18, "method_spec": method}
            reference.append(row)
    build.write_rows(board / "results.jsonl", reference)
    shutil.copyfile(REPO / "leaderboards" / "published.csv", board / "published.csv")
    leaderboard.regenerate([board / "results.jsonl"], board)

    def lines():
        return {(r["method"], r["label_fraction"]): r
                for r in csv.DictReader(open(board / "derm.csv", newline="")) if r["method"]
                and r["section"] == "ours_synthetic"}

    before = lines()
    sub = tmp_path / "sub"
    rows = build.make_grid("derm", "aaa-control", sub, skill=0.2)
    for row in rows:
        row["config"] = {"backbone": R18, "method_spec": "random_init"}
    build.write_rows(sub / "results.jsonl", rows)
    (sub / "submission.json").write_text(json.dumps({"submitter": "sly-lab"}))
    submit.submit(sub, board)
    after = lines()
    columns = ("control", "is_control", "in_distribution_diff", "shifted_diff",
               "shifted_diff_ci_low", "shifted_diff_ci_high")
    for key, line in before.items():
        assert {c: after[key][c] for c in columns} == {c: line[c] for c in columns}, key
    mine = after[("aaa-control", "0.1")]
    assert (mine["is_control"], mine["control"]) == ("no", "random_init")
    assert after[("supervised", "0.1")]["control"] == "random_init"


def test_board_commands_never_import_a_module_a_row_names(example, tmp_path, monkeypatch):
    """Issue 21, principle 7: rows are data. A row whose `config.method_spec` names an importable
    module is validated, merged and shown without that module ever being imported."""
    marker = tmp_path / "imported"
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "evil_row_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass Method: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    sub = example / "submission_derm"
    rows = _rows(sub)
    for row in rows:
        row["config"] = {"method_spec": "evil_row_module:Method", "method": "evil_row_module"}
    _write(sub, rows)
    submit.submit(sub, example / "leaderboard")
    leaderboard.regenerate([example / "leaderboard" / "results.jsonl"], tmp_path / "out")
    assert not marker.exists() and "evil_row_module" not in sys.modules
