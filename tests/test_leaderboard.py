"""Leaderboard tables and plots: reproducibility, statistics, escaping, sections."""
import csv
import errno
import json
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.board import leaderboard
from benchmark.board import lines as board_lines
from benchmark.board import published as board_published
from benchmark.board import render_csv
from benchmark.board import render_tables
from benchmark import leaderboard as leaderboard_cmd
from shared_helpers import example_builder

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "leaderboards" / "published.csv"
HOSTILE = "<script>alert(1)</script>|*x*_`[y]`\nz"


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    """Real-data derm rows (deterministic), synthetic derm and cxr rows (non-deterministic)."""
    build = example_builder()
    d = tmp_path_factory.mktemp("runs")
    rows = build.make_grid("derm", "supervised", d, synthetic=False, deterministic=True)
    rows += build.make_grid("derm", "simclr", d, synthetic=True, skill=1.3, deterministic=False)
    rows += build.make_grid("cxr", "micle", d, synthetic=True, eval_mode="linear",
                            deterministic=False)
    build.write_rows(d / "results.jsonl", rows)
    return d / "results.jsonl"


@pytest.fixture(scope="module")
def hostile_published(tmp_path_factory):
    """published.csv with a hostile method name and note (method names of result rows cannot be
    hostile: `results.validate_row` holds them to `results.METHOD_NAME_PATTERN`)."""
    path = tmp_path_factory.mktemp("published") / "published.csv"
    with open(PUBLISHED, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["method"] = HOSTILE
    rows[0]["note"] = "=HYPERLINK(\"http://evil\")"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=board_published.PUBLISHED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_regeneration_is_byte_identical_across_processes(results_file, tmp_path):
    first = leaderboard.regenerate([results_file], tmp_path / "a", PUBLISHED)
    leaderboard.regenerate([results_file], tmp_path / "b", PUBLISHED)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "benchmark.leaderboard", f"--results={results_file}",
                           f"--output_dir={tmp_path / 'c'}", f"--published={PUBLISHED}"],
                          check=True, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.stderr == ""  # nothing to warn about, and no TensorFlow start-up (the board needs none)
    expected = {f"{t}.{ext}" for t in ("cxr", "derm") for ext in ("md", "csv", "html", "png")}
    assert {p.name for p in first} == expected
    a = _files(tmp_path / "a")
    assert set(a) == expected
    assert a == _files(tmp_path / "b") == _files(tmp_path / "c")
    png = a["derm.png"]
    assert png.startswith(b"\x89PNG") and b"tEXt" not in png and b"matplotlib" not in png


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_statistics_are_mean_std_and_mean_of_seed_cis(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    rows = [r for r in board_lines.load_rows([results_file])
            if r["method"] == "supervised" and r["label_fraction"] == 0.1]
    assert len(rows) == 2
    line = next(r for r in _csv_rows((tmp_path / "derm.csv").read_text())
                if r["method"] == "supervised" and r["label_fraction"] == "0.1")
    assert line["section"] == "ours_real"
    for test_set in ("in_distribution", "shifted"):
        values = [r["metrics"][test_set]["values"]["top1"] for r in rows]
        cis = np.array([r["metrics"][test_set]["ci95"]["top1"] for r in rows])
        assert float(line[f"{test_set}_mean"]) == pytest.approx(np.mean(values), abs=1e-6)
        assert float(line[f"{test_set}_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        assert line[f"{test_set}_n_seeds"] == "2"
        assert float(line[f"{test_set}_ci_low"]) == pytest.approx(cis[:, 0].mean(), abs=1e-6)
        assert float(line[f"{test_set}_ci_high"]) == pytest.approx(cis[:, 1].mean(), abs=1e-6)
    md = (tmp_path / "derm.md").read_text()
    mean, std = np.mean(values), np.std(values, ddof=1)
    lo, hi = cis[:, 0].mean(), cis[:, 1].mean()
    assert f"| {mean:.4f} ± {std:.4f} | 2 | [{lo:.4f}, {hi:.4f}] |" in md


def _cells(markdown_row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", markdown_row.strip())[1:-1]


def test_hostile_published_method_name_is_escaped(results_file, hostile_published, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, hostile_published)
    task = next(r["task"] for r in board_published.load_published(hostile_published)
                if r["method"] == HOSTILE)
    html_text = (tmp_path / f"{task}.html").read_text()
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|*x*_`[y]`" in html_text
    md = (tmp_path / f"{task}.md").read_text()
    assert "<script>" not in md
    lines = md.splitlines()
    hostile = [l for l in lines if "alert(1)" in l]
    assert len(hostile) == 1  # the newline in the name did not split the row
    at = lines.index(hostile[0])
    header = next(l for l in reversed(lines[:at]) if l.startswith("| published figure"))
    assert len(_cells(hostile[0])) == len(_cells(header))
    name = _cells(hostile[0])[1].strip()
    assert name == r"\<script\>alert(1)\</script\>\|\*x\*\_\`\[y\]\` z"


def test_published_figures_stand_only_under_real_data_tables(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    for task in ("derm", "cxr"):
        md = (tmp_path / f"{task}.md").read_text()
        synthetic = md.index("## Our runs: SYNTHETIC data")
        other = md.index("## Other published figures")
        assert "Published figures for this table" not in md[synthetic:other]
        assert "Azizi et al. 2021" in md[other:] and "Azizi et al. 2021" not in md[:other]
        ours = [l for l in md.splitlines() if l.startswith(("| supervised", "| simclr", "| micle"))]
        assert ours and not any("](http" in l for l in ours)
        html_text = (tmp_path / f"{task}.html").read_text()
        assert "Azizi et al. 2021" not in html_text[:html_text.index('<h2 id="published">')]
        rows = _csv_rows((tmp_path / f"{task}.csv").read_text())
        published = [r for r in rows if r["section"] == "published"]
        assert len(published) == len([p for p in board_published.load_published(PUBLISHED)
                                      if p["task"] == task])
        assert all(r["in_distribution_mean"] == "" for r in published)
        assert all(r["citation"] == "" for r in rows if r["section"] != "published")


def test_synthetic_rows_are_labelled_in_every_table_header(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    md = (tmp_path / "derm.md").read_text()
    real, synthetic = md.split("## Our runs: SYNTHETIC")
    synthetic = synthetic.split("## Other published")[0]
    assert "| supervised |" in real and "simclr" not in real
    assert "| simclr † |" in synthetic
    header = next(l for l in synthetic.splitlines() if l.startswith("| method"))
    assert "SYNTHETIC" in header
    cxr = (tmp_path / "cxr.md").read_text()
    assert "No runs yet." in cxr.split("## Our runs: SYNTHETIC")[0]
    html_text = (tmp_path / "cxr.html").read_text()
    synthetic_html = html_text[html_text.index('<h2 id="ours_synthetic">'):
                               html_text.index('<h2 id="published">')]
    heads = re.findall(r"<thead>(.*?)</thead>", synthetic_html, re.S)
    assert len(heads) == len(board_lines.table_specs(board_lines.task_info("cxr")))
    assert all("method (SYNTHETIC data)" in h for h in heads)
    sections = {r["method"]: r["section"] for r in _csv_rows((tmp_path / "derm.csv").read_text())}
    assert sections["simclr"] == "ours_synthetic" and sections["supervised"] == "ours_real"


def test_bad_published_and_duplicate_rows_are_rejected(results_file, tmp_path):
    text = PUBLISHED.read_text().replace(",partial,", ",maybe,")
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=r"bad\.csv:2: protocol_matches_ours 'maybe'"):
        board_published.load_published(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="already read from"):
        board_lines.load_rows([results_file, results_file])


@pytest.mark.parametrize("folder, tasks", [("", ("cxr", "derm")), ("ham10000_subset", ("derm",))])
def test_committed_leaderboards_regenerate_identically(tmp_path, folder, tasks):
    """The committed tables and plots of each board (the synthetic reference rows, and the real
    HAM10000 subset's, which has no published figures) are exactly what its rows produce."""
    board = REPO / "leaderboards" / folder
    if (board / "published.csv").is_file():
        (tmp_path / "published.csv").write_bytes((board / "published.csv").read_bytes())
    written = leaderboard.regenerate([str(board / "results.jsonl")], str(tmp_path))
    assert sorted(p.name for p in written) == sorted(f"{t}.{e}" for t in tasks for e in ("md", "csv", "html", "png"))
    for path in written:
        assert path.read_bytes() == (board / path.name).read_bytes(), path.name


def _cell_keys(rows):
    cells = {(r["task"], r["method"], r["eval_mode"], r["label_fraction"], r["seed"]) for r in rows}
    assert len(cells) == len(rows)
    return cells


def _grid(tasks, methods, modes, percents):
    return {(task, method, mode, percent / 100, seed) for task in tasks for method in methods
            for mode in modes for percent in percents for seed in (0, 1, 2)}


def test_committed_reference_rows_are_one_clean_complete_run():
    """The reference rows come from one clean commit, in deterministic mode, with the cpu preset,
    three seeds (0, 1, 2) and three label fractions (1, 10, 100 %) on synthetic data: the baselines and
    the untrained `random_init` control on both tasks, MICLe and SimCLR (so the control) also
    self-distilled, MICLe on BoTNet with its own control on both tasks (on derm also distilled into
    a smaller ResNet from scratch); and, on a board of their own, the derm rows on the real
    HAM10000 subset (in-distribution only, 10 and 100 %). Every prediction file they name is
    committed."""
    from benchmark.harness import results

    board, subset = REPO / "leaderboards", REPO / "leaderboards" / "ham10000_subset"
    rows = results.ResultsStore(board / "results.jsonl").rows()
    real = results.ResultsStore(subset / "results.jsonl").rows()
    assert len({row["code_version"] for row in rows + real}) == 1
    assert not rows[0]["code_version"].endswith("-dirty") and rows[0]["code_version"] != "unknown"
    assert all(row["preset"] == "cpu" and row["deterministic"] for row in rows + real)
    assert all(row["synthetic"] for row in rows) and not any(row["synthetic"] for row in real)
    fractions = (1, 10, 100)
    botnet = ("micle-botnet50", "random_init-botnet-50x0.25-small")
    assert _cell_keys(rows) == (
        _grid(("cxr", "derm"), ("micle", "simclr", "random_init"), ("finetune", "linear", "distill"), fractions)
        | _grid(("cxr", "derm"), ("supervised",), ("finetune", "linear"), fractions)
        | _grid(("derm",), botnet, ("finetune", "linear", "distill:resnet_v1-18x0.25"), fractions)
        | _grid(("cxr",), botnet, ("finetune", "linear"), fractions))
    assert _cell_keys(real) == _grid(("derm",), ("micle", "simclr", "supervised", "random_init"),
                                 ("finetune", "linear"), (10, 100))
    for row in real:
        assert set(row["metrics"]) == {"in_distribution"} and row["config"]["test_sets"] == ["in_distribution"]
    for folder, some in ((board, rows), (subset, real)):
        for row in some:
            for test_set in row["metrics"].values():
                assert (folder / test_set["predictions"]).is_file(), test_set["predictions"]
            assert (row["config"]["backbone"]["family"] == "botnet") == ("botnet" in row["method"])


def test_nondeterministic_rows_are_marked_without_changing_values(results_file, tmp_path):
    """Issue 11 item 3: deterministic: false rows are marked † with a
    footnote (md, html) and deterministic=no (csv); the numbers are those of unmarked lines."""
    rows = [json.loads(l) for l in results_file.read_text().splitlines()]
    leaderboard.regenerate([results_file], tmp_path / "a", PUBLISHED)
    md = (tmp_path / "a" / "derm.md").read_text()
    real, synthetic = md.split("## Our runs: SYNTHETIC")
    assert "| supervised | scratch | finetune |" in real and "†" not in real
    assert "| simclr † | scratch | finetune |" in synthetic
    assert synthetic.count(render_tables.escape_markdown(board_lines.NONDETERMINISTIC_NOTE)) == 1
    cxr_md = (tmp_path / "a" / "cxr.md").read_text()
    assert "| micle † | scratch | linear |" in cxr_md
    html_text = (tmp_path / "a" / "derm.html").read_text()
    assert "<td>simclr †</td>" in html_text and "<td>supervised</td>" in html_text
    assert html_text.count(render_tables.escape_html(board_lines.NONDETERMINISTIC_NOTE)) == 1
    marked = _csv_rows((tmp_path / "a" / "derm.csv").read_text())
    assert {r["method"]: r["deterministic"] for r in marked if r["section"] != "published"} == {
        "supervised": "yes", "simclr": "no"}
    # One non-deterministic seed marks its whole line; the same rows all deterministic give the
    # same numbers, unmarked.
    flipped = [dict(r, deterministic=True) for r in rows]
    flipped[0]["deterministic"] = False
    (tmp_path / "flipped.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flipped))
    leaderboard.regenerate([tmp_path / "flipped.jsonl"], tmp_path / "b", PUBLISHED,
                           prediction_dirs=[results_file.parent])
    unmarked = _csv_rows((tmp_path / "b" / "derm.csv").read_text())
    first = (rows[0]["method"], str(rows[0]["label_fraction"]), rows[0]["eval_mode"])
    assert [r["deterministic"] for r in unmarked if r["section"] != "published"].count("no") == 1
    for a, b in zip(marked, unmarked):
        key = (b["method"], b["label_fraction"], b["eval_mode"])
        assert b["deterministic"] == ("no" if key == first else "yes" if b["section"] != "published"
                                      else "")
        assert {k: v for k, v in a.items() if k != "deterministic"} == {
            k: v for k, v in b.items() if k != "deterministic"}


@pytest.mark.parametrize("cell, shown", [
    ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("-", "'-"),
    ("-0.5", "-0.5"),
    ("+1e-3", "+1e-3"),
    ("0.71", "0.71"),
    ("simclr", "simclr"),
    ("", ""),
])
def test_csv_cells_that_would_run_as_a_formula_are_neutralised(cell, shown):
    assert render_csv.csv_cell(cell) == shown


def test_leaderboard_csv_neutralises_a_hostile_published_note(results_file, hostile_published,
                                                               tmp_path):
    leaderboard.regenerate([results_file], tmp_path, hostile_published)
    notes = [r["note"] for r in _csv_rows((tmp_path / "derm.csv").read_text())
             + _csv_rows((tmp_path / "cxr.csv").read_text()) if r["section"] == "published"]
    assert "'=HYPERLINK(\"http://evil\")" in notes
    assert not any(n.startswith(("=", "+", "-", "@")) for n in notes)


def _row_lines(results_file) -> list[str]:
    return results_file.read_text().splitlines()


def _rows_file(tmp_path, lines) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(l + "\n" for l in lines))
    return path


def _edited(results_file, index, fn):
    lines = _row_lines(results_file)
    row = json.loads(lines[index])
    fn(row)
    lines[index] = json.dumps(row)
    return lines


def _published_with(tmp_path, old, new) -> Path:
    path = tmp_path / "pub.csv"
    path.write_text(PUBLISHED.read_text().replace(old, new, 1))
    return path


def _no_space(monkeypatch):
    real = os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", fsync)
    return real


def _read_only(monkeypatch, directory):
    real = os.open

    def fake_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(directory)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)


# name -> (setup(results_file, tmp_path, monkeypatch) -> (results flag, output dir, published),
#          the one stderr line (with {tmp} for tmp_path and {rows} for rows.jsonl), exactly)
CLI_CASES = {
    "missing_results": (lambda r, t, m: (str(t / "nope.jsonl"), t / "out", None),
                        "error: --results: {tmp}/nope.jsonl: no such file"),
    "results_is_a_directory": (lambda r, t, m: (str(t), t / "out", None),
                               "error: --results: {tmp}: not a regular file; expected a "
                               "results.jsonl"),
    "empty_results_flag": (lambda r, t, m: (",", t / "out", None),
                           "error: --results: expected one or more comma-separated results.jsonl "
                           "paths"),
    "malformed_middle_line": (lambda r, t, m: (str(_rows_file(t, ["{", *_row_lines(r)])),
                                               t / "out", None),
                              "error: {rows}:1: malformed result row (Expecting property name "
                              "enclosed in double quotes: line 1 column 2 (char 1))"),
    "not_an_object": (lambda r, t, m: (str(_rows_file(t, [*_row_lines(r)[:2], "[1, 2]",
                                                          *_row_lines(r)[2:]])), t / "out", None),
                      "error: {rows}:3: expected a JSON object per line"),
    "missing_key": (lambda r, t, m: (str(_rows_file(t, _edited(r, 4, lambda x: x.pop("config")))),
                                     t / "out", None),
                    "error: {rows}:5: result row: missing key 'config'"),
    "missing_test_set_key": (lambda r, t, m: (str(_rows_file(t, _edited(
        r, 2, lambda x: x["metrics"]["shifted"].pop("ci95")))), t / "out", None),
        "error: {rows}:3: result row: missing key 'metrics.shifted.ci95'"),
    "hostile_method_name": (lambda r, t, m: (str(_rows_file(t, _edited(
        r, 1, lambda x: x.update(method="=cmd|x")))), t / "out", None),
        "error: {rows}:2: result row: method '=cmd|x' must be 1-63 characters from A-Z a-z 0-9 "
        ". _ + - starting with a letter or digit"),
    "unknown_preset": (lambda r, t, m: (str(_rows_file(t, _edited(
        r, 1, lambda x: x.update(preset="tpu")))), t / "out", None),
        "error: {rows}:2: result row: preset 'tpu' is not registered; expected one of "
        "['cpu', 'paper', 'smoke']"),
    "unknown_task": (lambda r, t, m: (str(_rows_file(t, _edited(
        r, 0, lambda x: x.update(task="mri")))), t / "out", None),
        "error: {rows}:1: task 'mri' is not registered; expected one of ['cxr', 'derm']"),
    "deterministic_not_bool": (lambda r, t, m: (str(_rows_file(t, _edited(
        r, 0, lambda x: x.update(deterministic="yes")))), t / "out", None),
        "error: {rows}:1: result row: 'deterministic' must be a bool, got 'yes'"),
    "not_utf8": (lambda r, t, m: (str(_rows_file(t, ["\udcff"]) if False else
                                      (t / "rows.jsonl").write_bytes(b"\xff\n") and
                                      t / "rows.jsonl"), t / "out", None),
                 "error: {rows}: not UTF-8 text (invalid start byte at byte 0)"),
    "duplicate_across_files": (lambda r, t, m: (f"{r},{_rows_file(t, _row_lines(r)[3:4])}",
                                                t / "out", None),
                               "error: {rows}:1: cell ('derm', 'supervised', 'cpu', 'finetune', "
                               "1.0, 1) already read from {results}:4"),
    "output_dir_is_a_file": (lambda r, t, m: (str(r), r, None),
                             "error: --output_dir={results}: not a directory"),
    "output_dir_read_only": (lambda r, t, m: (str(r), t / "out", None) if (
        (t / "out").mkdir() or _read_only(m, t / "out")) is None else None,
        "error: {tmp}/out: Permission denied (cannot create a file in it)"),
    "disk_full": (lambda r, t, m: (str(r), t / "out", None) if _no_space(m) else None,
                  "error: {tmp}/out/cxr.md: No space left on device"),
    "published_missing": (lambda r, t, m: (str(r), t / "out", str(t / "none.csv")),
                          "error: {tmp}/none.csv: No such file or directory"),
    "published_bad_protocol": (lambda r, t, m: (str(r), t / "out", str(_published_with(
        t, ",partial,", ",maybe,"))),
        "error: {tmp}/pub.csv:2: protocol_matches_ours 'maybe'; expected one of ('yes', 'no', "
        "'partial')"),
    "published_bad_fraction": (lambda r, t, m: (str(r), t / "out", str(_published_with(
        t, ",1,0.907,", ",ten,0.907,"))),
        "error: {tmp}/pub.csv:2: label_fraction 'ten'; expected a number in (0, 1], 'N per class' "
        "or blank (not stated)"),
    "published_unknown_task": (lambda r, t, m: (str(r), t / "out", str(_published_with(
        t, ",cxr,", ",mri,"))),
        "error: {tmp}/pub.csv:2: task 'mri' is not registered; expected one of ['cxr', 'derm']"),
    "published_not_utf8": (lambda r, t, m: (str(r), t / "out", str(
        (t / "pub.csv").write_bytes(b"citation\xff\n") and t / "pub.csv")),
        "error: {tmp}/pub.csv: not UTF-8 text (invalid start byte at byte 8)"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_leaderboard_cli_bad_input_is_one_error_line(results_file, tmp_path, monkeypatch, capsys,
                                                     case):
    setup, expected = CLI_CASES[case]
    flag, out, published = setup(results_file, tmp_path, monkeypatch)
    status = leaderboard_cmd.cli(flag, str(out), published)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert status == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    pattern = re.escape(expected.format(tmp=tmp_path, rows=tmp_path / "rows.jsonl",
                                        results=results_file)).replace(r"\*", ".*")
    assert re.fullmatch(pattern, err.strip()), err


def test_torn_last_line_is_skipped_with_a_warning(results_file, tmp_path, capsys):
    """A truncated last line is skipped, as `results.ResultsStore` does, and the user is told."""
    lines = _row_lines(results_file)
    torn = _rows_file(tmp_path, lines[:-1] + [lines[-1][:40]])
    whole = _rows_file(tmp_path / "whole", lines[:-1]) if (tmp_path / "whole").mkdir() is None \
        else None
    (tmp_path / "predictions").symlink_to(results_file.parent / "predictions")
    assert leaderboard_cmd.cli(str(torn), str(tmp_path / "a"), str(PUBLISHED)) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {torn}:{len(lines)}: ignoring truncated last line (Unterminated "
                   "string starting at: line 1 column 17 (char 16)); the leaderboard is built "
                   "without it\n")
    leaderboard.regenerate([whole], tmp_path / "b", PUBLISHED, prediction_dirs=[tmp_path])
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_cli_process_exits_non_zero_without_traceback(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"schema": 2}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "benchmark.leaderboard", f"--results={bad}",
                           f"--output_dir={tmp_path / 'out'}"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:1: result row: missing key 'code_digest'")


R18 = {"family": "resnet_v1", "depth": 18, "width": 0.25, "small_stem": False}
BIT = {"family": "bit", "depth": 50, "width": 0.25, "small_stem": False}


def test_lines_show_their_paired_difference_to_random_init_on_the_same_backbone_only(tmp_path):
    build = example_builder()
    rows = []
    for method, backbone, skill in (("simclr", R18, 1.3), ("random_init", R18, 1.0),
                                    ("supervised", BIT, 1.1)):
        for row in build.make_grid("derm", method, tmp_path, skill=skill):
            if method == "random_init" and row["label_fraction"] == 0.1 and row["seed"] == 1:
                continue  # one seed of the control missing: only seed 0 pairs up there
            row["config"] = {"backbone": backbone}
            rows.append(row)
    build.write_rows(tmp_path / "results.jsonl", rows)
    leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "out", PUBLISHED)
    lines = {(r["method"], r["label_fraction"]): r
             for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text()) if r["method"]
             and r["section"] == "ours_synthetic"}

    def top1(method, fraction, test_set, seeds):
        return np.mean([r["metrics"][test_set]["values"]["top1"] for r in rows
                        if (r["method"], r["label_fraction"]) == (method, fraction)
                        and r["seed"] in seeds])

    for fraction, seeds in ((0.1, (0,)), (1.0, (0, 1))):
        line = lines[("simclr", f"{fraction:g}")]
        assert (line["is_control"], line["control"]) == ("no", "random_init")
        for t in ("in_distribution", "shifted"):
            expected = top1("simclr", fraction, t, seeds) - top1("random_init", fraction, t, seeds)
            assert float(line[f"{t}_diff"]) == pytest.approx(expected, abs=1e-6)
            assert float(line[f"{t}_diff_ci_low"]) <= expected <= float(line[f"{t}_diff_ci_high"])
            assert line[f"{t}_diff_n_seeds"] == str(len(seeds))
    for fraction in ("0.1", "1"):
        other = lines[("supervised", fraction)]  # bit-50x0.25: no random_init on that backbone
        assert (other["control"], other["in_distribution_diff"], other["shifted_diff"]) == ("", "", "")
        assert lines[("random_init", fraction)]["is_control"] == "yes"
    md = (tmp_path / "out" / "derm.md").read_text()
    table = md.split("## Our runs: SYNTHETIC")[1].split("### balanced")[0]
    cells = {(c[0], c[5]): c for c in map(_cells, table.splitlines()[4:]) if len(c) > 6}
    assert [c.strip() for c in cells[(" supervised ", " 10% ")][-2:]] == ["—", "—"]
    assert [c.strip() for c in cells[(" random\\_init ", " 100% ")][-2:]] == ["control"] * 2
    assert re.fullmatch(r" [+-]0\.\d{4} \[[+-]0\.\d{4}, [+-]0\.\d{4}\] \(n=1\) ",
                        cells[(" simclr ", " 10% ")][-2])
    control_file = next(r for r in rows if r["method"] == "random_init")["metrics"]["shifted"]
    (tmp_path / control_file["predictions"]).unlink()
    with pytest.raises(ValueError, match=r"results.jsonl:\d+: prediction file predictions/derm_"
                                         r"random_init_.* of metrics.shifted is not in "):
        leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "again", PUBLISHED)


def test_a_line_pairs_with_the_control_of_its_own_pretraining_seed(tmp_path):
    build = example_builder()
    rows = []
    for method, seed, skill in (("simclr", 0, 1.3), ("simclr-pseed1", 1, 1.2),
                                ("random_init", 0, 1.0), ("random_init-pseed1", 1, 0.9)):
        for row in build.make_grid("derm", method, tmp_path, skill=skill):
            row["config"] = {"backbone": R18, "pretrain": {"seed": seed}}
            rows.append(row)
    build.write_rows(tmp_path / "results.jsonl", rows)
    leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "out", PUBLISHED)
    controls = {r["method"]: r["control"] for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text())
                if r["method"] and r["section"] == "ours_synthetic"}
    assert controls["simclr"] == "random_init" and controls["simclr-pseed1"] == "random_init-pseed1"


def test_lines_never_pool_precisions_and_pair_with_a_control_of_their_own(tmp_path):
    """Seeds of one method in float32 and bfloat16 are two lines with a precision column, each
    paired with the control of its own precision."""
    build = example_builder()
    rows = []
    for method, skill in (("simclr", 1.3), ("random_init", 1.0)):
        for precision, seeds in (("float32", (0, 1)), ("bfloat16", (2, 3))):
            for seed in seeds:
                row = build.make_cell("derm", method, 0.1, seed, tmp_path, skill=skill)
                row["config"] = {"backbone": R18, "precision": {"used": precision}}
                rows.append(row)
    build.write_rows(tmp_path / "results.jsonl", rows)
    leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "out", PUBLISHED)
    lines = [r for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text())
             if r["method"] and r["section"] == "ours_synthetic"]
    assert sorted((r["method"], r["precision"], r["shifted_n_seeds"]) for r in lines) == [
        ("random_init", "bfloat16", "2"), ("random_init", "float32", "2"),
        ("simclr", "bfloat16", "2"), ("simclr", "float32", "2")]

    def shifted(method, precision):
        return np.mean([r["metrics"]["shifted"]["values"]["top1"] for r in rows
                        if r["method"] == method and r["config"]["precision"]["used"] == precision])

    for line in lines:
        if line["method"] == "simclr":
            expected = shifted("simclr", line["precision"]) - shifted("random_init", line["precision"])
            assert float(line["shifted_diff"]) == pytest.approx(expected, abs=1e-6)
    assert "| method (SYNTHETIC data) | precision | init |" in (tmp_path / "out" / "derm.md").read_text()


def test_summary_table_shows_the_control_and_the_paired_difference(tmp_path):
    from benchmark.board import report

    build = example_builder()
    rows = build.make_grid("derm", "simclr", tmp_path, skill=1.3)
    control = build.make_grid("derm", "random_init", tmp_path)
    build.write_rows(tmp_path / "results.jsonl", rows + control)
    shown = report.summary_table(rows, control, output_dir=str(tmp_path))
    header, first = shown.splitlines()[:2]
    assert "control" in header and "difference [paired 95% CI]" in header
    values = [[r["metrics"]["in_distribution"]["values"]["top1"] for r in rs
               if r["label_fraction"] == 0.1] for rs in (rows, control)]
    assert first.startswith("derm   simclr       finetune      10%  in_distribution  top1")
    assert (f"{np.mean(values[0]):.3f} ± {np.std(values[0], ddof=1):.3f} (n=2)" in first
            and f"{np.mean(values[1]):.3f} ± {np.std(values[1], ddof=1):.3f} (n=2)" in first)
    assert f"{np.mean(values[0]) - np.mean(values[1]):+.3f} [" in first
    assert "control: random_init" in shown and "paired patient-level bootstrap" in shown
    alone = report.summary_table(rows, output_dir=str(tmp_path))
    assert alone.splitlines()[1].split()[-2:] == ["—", "—"] and "control:" not in alone


def _swap_first_scores(path: Path) -> None:
    """Edits a prediction file after its row was scored: the first two examples swap scores."""
    lines = path.read_text().splitlines()
    header, a, b = (l.split(",") for l in lines[:3])
    k = (len(header) - 2) // 2
    a[2 + k:], b[2 + k:] = b[2 + k:], a[2 + k:]
    lines[1], lines[2] = ",".join(a), ",".join(b)
    path.write_text("\n".join(lines) + "\n")


def _board_with_control(tmp_path):
    build = example_builder()
    rows = []
    for method, skill in (("simclr", 1.3), ("random_init", 1.0)):
        for row in build.make_grid("derm", method, tmp_path, skill=skill):
            row["config"] = {"backbone": R18, "method_spec": method}
            rows.append(row)
    build.write_rows(tmp_path / "results.jsonl", rows)
    return rows


def test_a_row_whose_numbers_disagree_with_its_files_is_left_out_with_one_warning(tmp_path,
                                                                                  capsys):
    """Issue 21, principle 1: every number shown is computed from the prediction files. A stored
    row whose metrics disagree with its (edited) file is named in one warning line and left out:
    neither its stored mean nor its file's difference is shown."""
    rows = _board_with_control(tmp_path)
    edited = next(i for i, r in enumerate(rows) if r["method"] == "random_init"
                  and r["label_fraction"] == 0.1 and r["seed"] == 1)
    _swap_first_scores(tmp_path / rows[edited]["metrics"]["in_distribution"]["predictions"])
    assert leaderboard_cmd.cli(str(tmp_path / "results.jsonl"), str(tmp_path / "out"),
                               str(PUBLISHED)) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert re.fullmatch(
        rf"warning: {re.escape(str(tmp_path))}/results.jsonl:{edited + 1}: metrics."
        r"in_distribution: values\.\S+ = 0.\d+ but re-scoring predictions/derm_random_init_cpu_"
        r"finetune_f10_s1_in_distribution.csv gives 0.\d+ \(tolerance 1e-06\); the row is left "
        r"out\n", err), err
    lines = {(r["method"], r["label_fraction"]): r
             for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text()) if r["method"]
             and r["section"] == "ours_synthetic"}
    kept = rows[edited - 1]["metrics"]["shifted"]["values"]["top1"]  # the control's seed 0
    assert lines[("random_init", "0.1")]["shifted_n_seeds"] == "1"
    assert float(lines[("random_init", "0.1")]["shifted_mean"]) == pytest.approx(kept, abs=1e-6)
    simclr = lines[("simclr", "0.1")]
    assert simclr["in_distribution_diff_n_seeds"] == simclr["shifted_diff_n_seeds"] == "1"
    assert lines[("simclr", "1")]["in_distribution_diff_n_seeds"] == "2"


def test_the_runs_table_rescores_and_leaves_out_a_row_that_disagrees_with_its_files(tmp_path):
    """Issue 21, principle 1: the table a run prints re-scores every row from its files; an
    edited file's row is named by its results line and left out, never shown."""
    from benchmark.board import report, rules

    rows = _board_with_control(tmp_path)
    method = [r for r in rows if r["method"] == "simclr"]
    control = [r for r in rows if r["method"] == "random_init"]
    _swap_first_scores(tmp_path / control[0]["metrics"]["shifted"]["predictions"])
    with pytest.warns(rules.LeftOutRowWarning) as caught:
        shown = report.summary_table(method, control, output_dir=str(tmp_path))
    assert len(caught) == 1 and re.fullmatch(
        rf"{re.escape(str(tmp_path))}/results.jsonl:5: metrics.shifted: values\.\S+ = 0.\d+ but "
        r"re-scoring predictions/derm_random_init_cpu_finetune_f10_s0_shifted.csv gives 0.\d+ "
        r"\(tolerance 1e-06\); the row is left out of the table", str(caught[0].message))
    first = next(l for l in shown.splitlines() if "10%" in l and "shifted" in l)
    assert first.count("(n=1)") == 2 and "(n=2)" in first  # control and difference: seed 1 only


def test_a_line_without_the_shifted_test_set_shows_no_shifted_result(tmp_path):
    """Rows of `benchmark.run --test_sets=in_distribution` (metrics of one test set): the shifted
    columns read — with a note (md, html), the CSV leaves them blank and names the line's test sets;
    its in-distribution numbers are those of the same rows with both test sets."""
    build = example_builder()
    both = build.make_grid("derm", "simclr", tmp_path, synthetic=False)
    only = []
    for row in build.make_grid("derm", "simclr", tmp_path, synthetic=False):
        row["method"] = "simclr-id"
        del row["metrics"]["shifted"]
        row["config"] = {"test_sets": ["in_distribution"]}
        only.append(row)
    build.write_rows(tmp_path / "results.jsonl", both + only)
    leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "out", PUBLISHED)
    lines = {(r["method"], r["label_fraction"]): r
             for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text())
             if r["section"] == "ours_real"}
    for fraction in ("0.1", "1"):
        full, partial = lines[("simclr", fraction)], lines[("simclr-id", fraction)]
        assert (full["test_sets"], partial["test_sets"]) == ("in_distribution shifted", "in_distribution")
        assert {k: v for k, v in partial.items() if k.startswith("shifted_")} == {
            k: "" for k in partial if k.startswith("shifted_")}
        assert partial["in_distribution_mean"] == full["in_distribution_mean"] != ""
        assert partial["in_distribution_n_seeds"] == full["in_distribution_n_seeds"] == "2"
    md = (tmp_path / "out" / "derm.md").read_text()
    table = md.split("## Our runs: real data")[1].split("### balanced")[0]
    cells = {(c[0].strip(), c[4].strip()): [x.strip() for x in c]
             for c in map(_cells, table.splitlines()[4:]) if len(c) > 6}
    partial = cells[("simclr-id", "10%")]  # in-distribution 5:8, shifted 8:11, differences 11:13
    assert "—" not in partial[5:8] and partial[8:] == ["—"] * 5
    assert "—" not in cells[("simclr", "10%")][5:11]
    real = md.split("## Our runs: real data")[1].split("## Other published")[0]
    assert real.count(render_tables.escape_markdown(board_lines.NOT_REQUESTED_NOTE)) == 1
    html_text = (tmp_path / "out" / "derm.html").read_text()
    assert html_text.count(render_tables.escape_html(board_lines.NOT_REQUESTED_NOTE)) == 1


def test_collapsed_predictions_are_marked_from_the_files(tmp_path):
    """Issue 23, item 3: a seed whose predictions collapsed (one class for every example) is counted
    from its prediction file and marked ‡k in md/html, `<test set>_collapsed_seeds` in the CSV."""
    from benchmark.harness import results, scoring
    from benchmark.harness.presets import get_preset
    from benchmark.harness.tasks import get_task

    build, task = example_builder(), get_task("derm")
    rows = build.make_grid("derm", "simclr", tmp_path)
    row = rows[0]  # fraction 0.1, seed 0: every example predicted as the first class
    for name, stored in row["metrics"].items():
        ids, groups, labels, scores, names = results.read_predictions(tmp_path / stored["predictions"])
        scores = np.zeros_like(scores)
        scores[:, 0] = 1.0
        results.write_predictions(tmp_path / stored["predictions"], ids, groups, labels, scores, names)
        stored.update(scoring.score_task(
            task, name, ids, labels, scores, groups,
            bootstrap_samples=get_preset(row["preset"]).bootstrap_samples, seed=0))
    build.write_rows(tmp_path / "results.jsonl", rows)
    leaderboard.regenerate([tmp_path / "results.jsonl"], tmp_path / "out", PUBLISHED)
    csv_lines = {(r["method"], r["label_fraction"]): r
                 for r in _csv_rows((tmp_path / "out" / "derm.csv").read_text()) if r["method"]}
    assert csv_lines[("simclr", "0.1")]["in_distribution_collapsed_seeds"] == "1"
    assert csv_lines[("simclr", "1")]["in_distribution_collapsed_seeds"] == "0"
    md = (tmp_path / "out" / "derm.md").read_text()
    assert md.count(render_tables.escape_markdown(board_lines.COLLAPSED_NOTE)) == 1
    assert re.search(r"\| simclr \| .*\| 10% \| [0-9.]+ ± [0-9.]+ ‡1 \|", md)
