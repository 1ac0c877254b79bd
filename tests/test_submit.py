"""Submissions: every kind of bad submission is rejected with its own message and changes nothing;
a good one is re-scored, merged and shown."""
import csv
import importlib.util
import json
import shutil
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
    "missing_predictions": (lambda sub: _prediction(sub).unlink(),
                            ["results.jsonl:2: metrics.in_distribution", "_s1_in_distribution.csv "
                             "not found"]),
    "malformed_predictions": (_edit_csv(2, _set_cell("score/mel", "high")),
                              ["_s1_in_distribution.csv:4", "could not convert"]),
    "ids_mismatch": (_edit_csv(0, _set_cell("example_id", "intruder")),
                     ["_s1_in_distribution.csv", "not in the test set: 'intruder'"]),
    "label_mismatch": (_edit_csv(3, _rotate_label), ["_s1_in_distribution.csv: labels differ"]),
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
    stored = submit.submit(derm, board)
    assert len(stored) == 4
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
    assert "| example-ssl | finetune | cpu | 10% |" in md
    assert json.loads((board / "results_submitters.json").read_text()) == {
        "example-ssl": "example-lab"}
    # The same submitter may add the method on another task; resubmitting a cell is a duplicate.
    submit.submit(example / "submission_cxr", board)
    assert "| example-ssl | finetune | cpu | 100% |" in (board / "cxr.md").read_text()
    _write(derm, submitted)
    _expect_rejection(derm, board, "duplicate_cell", ["is already on the leaderboard"])
    # Another submitter cannot use the name, even for cells not on the board.
    (derm / "submission.json").write_text(json.dumps({"submitter": "other-lab"}))
    _write(derm, [dict(r, eval_mode="linear") for r in submitted])
    _expect_rejection(derm, board, "method_clash", ["already belongs to 'example-lab'"])
