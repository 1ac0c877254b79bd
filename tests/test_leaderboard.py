"""Leaderboard tables and plots: reproducibility, statistics, escaping, sections."""
import copy
import csv
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark import leaderboard

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "leaderboards" / "published.csv"
HOSTILE = "<script>alert(1)</script>|*x*_`[y]`\nz"


def _builder():
    path = Path(__file__).parent / "data" / "submission_example" / "build_example.py"
    spec = importlib.util.spec_from_file_location("build_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    """Real-data derm rows, synthetic derm and cxr rows, and one row with a hostile method name."""
    build = _builder()
    d = tmp_path_factory.mktemp("runs")
    rows = build.make_grid("derm", "supervised", d, synthetic=False)
    rows += build.make_grid("derm", "simclr", d, synthetic=True, skill=1.3)
    rows += build.make_grid("cxr", "micle", d, synthetic=True, eval_mode="linear")
    hostile = copy.deepcopy(rows[0])
    hostile["method"] = HOSTILE
    rows.append(hostile)
    build.write_rows(d / "results.jsonl", rows)
    return d / "results.jsonl"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_regeneration_is_byte_identical_across_processes(results_file, tmp_path):
    first = leaderboard.regenerate([results_file], tmp_path / "a", PUBLISHED)
    leaderboard.regenerate([results_file], tmp_path / "b", PUBLISHED)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-m", "benchmark.leaderboard", f"--results={results_file}",
                    f"--output_dir={tmp_path / 'c'}", f"--published={PUBLISHED}"],
                   check=True, cwd=REPO, env=env, capture_output=True)
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
    rows = [r for r in leaderboard.load_rows([results_file])
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


def test_hostile_method_name_is_escaped(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    html_text = (tmp_path / "derm.html").read_text()
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|*x*_`[y]`" in html_text
    md = (tmp_path / "derm.md").read_text()
    assert "<script>" not in md
    lines = md.splitlines()
    hostile = [l for l in lines if "alert(1)" in l]
    assert len(hostile) == 1  # the newline in the name did not split the row
    header = next(l for l in lines if l.startswith("| method"))
    assert len(_cells(hostile[0])) == len(_cells(header))
    name = _cells(hostile[0])[0].strip()
    assert name == r"\<script\>alert(1)\</script\>\|\*x\*\_\`\[y\]\` z"


def test_published_figures_form_their_own_section(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    for task, metric in (("derm", "delta_top1"), ("cxr", "delta_mean_auc")):
        md = (tmp_path / f"{task}.md").read_text()
        start = md.index("## Published figures")
        assert "Azizi et al. 2021" in md[start:] and "Azizi et al. 2021" not in md[:start]
        assert leaderboard.escape_markdown(metric) in md[start:]
        assert "| supervised |" not in md[start:]
        html_text = (tmp_path / f"{task}.html").read_text()
        h_start = html_text.index('<h2 id="published">')
        assert "Azizi et al. 2021" not in html_text[:h_start]
        ours = [l for l in md[:start].splitlines() if l.startswith("| ") and "method" not in l]
        assert ours and not any("Azizi" in l for l in ours)
        rows = _csv_rows((tmp_path / f"{task}.csv").read_text())
        published = [r for r in rows if r["section"] == "published"]
        assert [r["metric"] for r in published] == [metric]
        assert all(r["in_distribution_mean"] == "" for r in published)
        assert all(r["citation"] == "" for r in rows if r["section"] != "published")


def test_synthetic_rows_are_labelled_in_every_table_header(results_file, tmp_path):
    leaderboard.regenerate([results_file], tmp_path, PUBLISHED)
    md = (tmp_path / "derm.md").read_text()
    real, synthetic = md.split("## Our runs: SYNTHETIC")
    synthetic = synthetic.split("## Published")[0]
    assert "| supervised |" in real and "simclr" not in real
    assert "| simclr |" in synthetic
    header = next(l for l in synthetic.splitlines() if l.startswith("| method"))
    assert "SYNTHETIC" in header
    cxr = (tmp_path / "cxr.md").read_text()
    assert "No runs yet." in cxr.split("## Our runs: SYNTHETIC")[0]
    tables = re.findall(r"<h2 id=\"ours_synthetic\">(.*?)</h2>\s*<table>\s*<thead>(.*?)</thead>",
                        (tmp_path / "cxr.html").read_text(), re.S)
    assert len(tables) == 1 and "SYNTHETIC" in tables[0][0] and "SYNTHETIC" in tables[0][1]
    sections = {r["method"]: r["section"] for r in _csv_rows((tmp_path / "derm.csv").read_text())}
    assert sections["simclr"] == "ours_synthetic" and sections["supervised"] == "ours_real"


def test_published_csv_holds_the_cited_abstract_figures():
    rows = leaderboard.load_published(PUBLISHED)
    found = {(r["task"], r["metric"], r["value"], r["protocol_matches_ours"]) for r in rows}
    assert found == {("derm", "delta_top1", "6.7", "no"),
                     ("cxr", "delta_mean_auc", "1.1", "partial")}
    assert all(r["url_or_doi"] == "https://arxiv.org/abs/2101.05224" for r in rows)


def test_bad_published_and_duplicate_rows_are_rejected(results_file, tmp_path):
    text = PUBLISHED.read_text().replace(",partial,", ",maybe,")
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=r"bad\.csv:3: protocol_matches_ours 'maybe'"):
        leaderboard.load_published(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="already read from"):
        leaderboard.load_rows([results_file, results_file])


def test_committed_leaderboards_regenerate_identically(tmp_path):
    """The committed tables and plots are exactly what the committed reference rows produce."""
    board = REPO / "leaderboards"
    (tmp_path / "published.csv").write_bytes((board / "published.csv").read_bytes())
    leaderboard.regenerate([str(board / "results.jsonl")], str(tmp_path))
    for task in ("cxr", "derm"):
        for ext in ("md", "csv", "html", "png"):
            name = f"{task}.{ext}"
            assert (tmp_path / name).read_bytes() == (board / name).read_bytes(), name


def test_committed_reference_rows_are_one_clean_complete_run():
    """The reference rows come from one clean commit, on synthetic data, with the cpu preset's full
    grid for every baseline and task, and every prediction file they name is committed."""
    from benchmark import results
    from benchmark.presets import get_preset

    board = REPO / "leaderboards"
    rows = results.ResultsStore(board / "results.jsonl").rows()
    preset = get_preset("cpu")
    assert len({row["code_version"] for row in rows}) == 1
    assert not rows[0]["code_version"].endswith("-dirty") and rows[0]["code_version"] != "unknown"
    assert all(row["synthetic"] and row["preset"] == "cpu" for row in rows)
    cells = {(r["task"], r["method"], r["eval_mode"], r["label_fraction"], r["seed"]) for r in rows}
    assert len(cells) == len(rows)
    assert cells == {(task, method, mode, fraction, seed)
                     for task in ("cxr", "derm") for method in ("micle", "simclr", "supervised")
                     for mode in preset.eval_modes for fraction in
                     (percent / 100 for percent in preset.label_fractions) for seed in preset.seeds}
    for row in rows:
        for test_set in row["metrics"].values():
            assert (board / test_set["predictions"]).is_file(), test_set["predictions"]
