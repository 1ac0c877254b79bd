"""leaderboards/published.csv: every row is a citable, checked figure, and the leaderboard places
each one under the table with its task, test set and metric (never among our runs)."""
import collections
import csv
import re
from pathlib import Path

import pytest

from benchmark.board import leaderboard
from benchmark.board import lines as board_lines
from benchmark.board import published as board_published
from benchmark.board import render_plot
from benchmark.board import render_tables
from shared_helpers import example_builder

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "leaderboards" / "published.csv"
CLASSES = {"cxr": ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"),
           "derm": ("akiec_ack_scc", "bcc", "bkl_sek", "mel", "nv")}
SCORES = {"cxr": ("mean_auc", "study_max/mean_auc"), "derm": ("top1", "balanced_accuracy",
                                                             "macro_auc")}
PER_CLASS = {"cxr": ("auc", "study_max/auc"), "derm": ()}
DELTAS = {"cxr": {"delta_mean_auc": 100, "delta_auc": 1, "delta_auc_pct": 100},
          "derm": {"delta_top1": 100, "delta_balanced_accuracy": 100}}


def _rows():
    with open(PUBLISHED, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _expected_table(row) -> str:
    """The key of the table a row belongs under, from the row alone."""
    metric, test_set = row["metric"], row["test_set"]
    if test_set == "other" or metric.startswith("delta_"):
        return "other"
    if row["class"]:
        prefix = "auc" if metric == "auc" else "study_max_auc"
        return f"{prefix}_per_class_{test_set}"
    if metric.startswith("study_"):
        return f"study_mean_auc_{test_set}"
    return metric


def test_every_published_row_is_a_checked_citable_figure():
    rows = _rows()
    assert list(rows[0]) == list(board_published.PUBLISHED_COLUMNS)
    assert board_published.load_published(PUBLISHED) == rows
    for n, r in enumerate(rows, start=2):
        task = r["task"]
        assert task in CLASSES, n
        assert r["test_set"] in ("in_distribution", "shifted", "other"), n
        assert re.search(r"https?://\S+|\b10\.\d{4,9}/\S+", r["url_or_doi"]), n
        assert r["protocol_matches_ours"] in ("yes", "partial", "no"), n
        assert r["note"].strip() and r["note"].count(". ") == 0, n  # one sentence
        if "SECONDARY" in r["citation"]:
            assert "SECONDARY" in r["note"], n
        value = float(r["value"])
        if r["metric"] in DELTAS[task]:
            assert abs(value) <= DELTAS[task][r["metric"]], n
        else:
            assert r["metric"] in SCORES[task] + PER_CLASS[task], n
            assert 0 <= value <= 1, n
        assert (r["class"] in CLASSES[task]) == (r["metric"] in PER_CLASS[task] + (
            "delta_auc", "delta_auc_pct")), n
        assert not r["class"] or r["class"] in CLASSES[task], n
    counts = collections.Counter((r["task"], r["test_set"]) for r in rows)
    assert counts == {("cxr", "in_distribution"): 65, ("cxr", "shifted"): 68,
                      ("derm", "in_distribution"): 44, ("derm", "shifted"): 26,
                      ("derm", "other"): 1}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """Real-data rows of both tasks (with prediction files) and the pages built from them."""
    build = example_builder()
    d = tmp_path_factory.mktemp("board")
    rows = build.make_grid("derm", "supervised", d, synthetic=False)
    rows += build.make_grid("cxr", "micle", d, synthetic=False)
    build.write_rows(d / "results.jsonl", rows)
    leaderboard.regenerate([d / "results.jsonl"], d / "out", PUBLISHED)
    return d


def _published_tables(md: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """{table title: (header, rows)} of the published tables under our real-data tables."""
    real = md[md.index("## Our runs: real data"):]
    real = real[:real.index("\n## ")]
    found = {}
    for block in real.split("\n### ")[1:]:
        title = block.splitlines()[0]
        if "Published figures for this table" not in block:
            continue
        lines = block[block.index("Published figures for this table"):].splitlines()
        table = [l for l in lines if l.startswith("| ")]
        split = [[c.strip() for c in l.strip("|").split(" | ")] for l in table]
        found[title] = (split[0], split[1:])
    return found


def test_each_published_row_is_placed_under_the_right_table(board):
    for task in ("cxr", "derm"):
        info = board_lines.task_info(task)
        titles = {s.key: render_tables.escape_markdown(s.title)
                  for s in board_lines.table_specs(info)}
        md = (board / "out" / f"{task}.md").read_text()
        tables = _published_tables(md)
        other = md[md.index("## Other published figures"):]
        csv_rows = [r for r in csv.DictReader(open(board / "out" / f"{task}.csv"))
                    if r["section"] == "published"]
        rows = [r for r in _rows() if r["task"] == task]
        assert sorted(r["citation"] + r["value"] for r in csv_rows) == sorted(
            r["citation"] + r["value"] for r in rows)
        for r in rows:
            key = _expected_table(r)
            assert any(c["placed_under"] == key and c["citation"] == r["citation"]
                       and c["method"] == r["method"] and c["value"] == r["value"]
                       for c in csv_rows), r
            cite = render_tables.escape_markdown(r["citation"])
            method = render_tables.escape_markdown(r["method"])
            if key == "other":
                assert any(l.startswith(f"| [{cite}](") and method in l and f"| {r['value']} |" in l
                           for l in other.splitlines()), r
                continue
            header, lines = tables[titles[key]]
            column = (r["class"] or render_tables.escape_markdown(
                f"{board_lines.TEST_SET_TITLES[r['test_set']]} {r['metric']}"))
            col = header.index(column)
            assert any(l[0].startswith(f"[{cite}](http") and l[1] == method
                       and l[col] == r["value"] for l in lines), r


def test_published_lines_are_sorted_by_protocol_match(board):
    order = {"yes": 0, "partial": 1, "no": 2}
    for task in ("cxr", "derm"):
        for header, lines in _published_tables((board / "out" / f"{task}.md").read_text()).values():
            flags = [order[l[header.index("protocol matches ours")]] for l in lines]
            assert flags == sorted(flags)


def test_published_curves_are_grey_and_labelled_on_the_plot():
    info = board_lines.task_info("cxr")
    curves = board_published.published_curves(info, board_published.load_published(PUBLISHED))
    labels = {(label, test_set): [x for x, _ in pts] for label, test_set, pts in curves}
    assert labels[("MaCo [MaCo]", "in_distribution")] == [0.01, 0.1, 1.0]
    assert labels[("ConVIRT [MaCo]", "shifted")] == [0.01, 0.1, 1.0]
    assert render_plot.PUBLISHED_GREY not in ("#7f7f7f",)


def test_legacy_published_header_is_read_as_unplaced_rows(tmp_path):
    legacy = tmp_path / "legacy.csv"
    with open(legacy, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(board_published.LEGACY_PUBLISHED_COLUMNS)
        writer.writerow(["Azizi et al. 2021", "https://arxiv.org/abs/2101.05224", "derm images",
                         "not stated", "derm", "delta_top1", "combined", "", "6.7", "p", "no",
                         "A difference."])
    (row,) = board_published.load_published(legacy)
    assert (row["backbone"], row["test_set"], row["class"]) == ("", "other", "")
    placed, other = board_published.place_published(board_lines.task_info("derm"), [row])
    assert other == [row] and not any(placed.values())


def _one_row(tmp_path, **changes) -> Path:
    row = dict(_rows()[0], **changes)
    path = tmp_path / "pub.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=board_published.PUBLISHED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    return path


BAD_ROWS = {
    "no_url_or_doi": ({"url_or_doi": "the CheXpert page"},
                      "pub.csv:2: url_or_doi 'the CheXpert page' has no http(s) URL or DOI"),
    "unknown_metric": ({"metric": "f1"}, "pub.csv:2: metric 'f1' is not known for task cxr; "
                       "expected one of ['auc', 'delta_auc', 'delta_auc_pct', 'delta_mean_auc', "
                       "'mean_auc', 'study_max/auc', 'study_max/mean_auc', 'study_mean/auc', "
                       "'study_mean/mean_auc']"),
    "value_out_of_range": ({"value": "90.7"}, "pub.csv:2: value 90.7 of study_max/mean_auc is "
                           "outside [0, 1]"),
    "not_a_number": ({"value": "+6.7%"}, "pub.csv:2: value '+6.7%' is not a number"),
    "unknown_test_set": ({"test_set": "valid"}, "pub.csv:2: test_set 'valid'; expected one of "
                         "('in_distribution', 'shifted', 'other')"),
    "class_of_a_mean": ({"class": "Edema"}, "pub.csv:2: class 'Edema' for study_max/mean_auc, a "
                        "mean over classes; expected a blank class"),
    "unknown_class": ({"metric": "auc", "class": "Effusion"}, "pub.csv:2: class 'Effusion' for "
                      "per-class metric auc; expected one of ('Atelectasis', 'Cardiomegaly', "
                      "'Consolidation', 'Edema', 'Pleural Effusion')"),
    "bad_label_budget": ({"label_fraction": "8 labels/class"}, "pub.csv:2: label_fraction "
                         "'8 labels/class'; expected a number in (0, 1], 'N per class' or blank "
                         "(not stated)"),
    "empty_test_set": ({"test_set": ""}, "pub.csv:2: empty 'test_set'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_published_rows_are_rejected_with_one_line(tmp_path, case):
    changes, message = BAD_ROWS[case]
    with pytest.raises(ValueError) as info:
        board_published.load_published(_one_row(tmp_path, **changes))
    assert str(info.value) == f"{tmp_path}/{message}"


def _strip_new_metrics(rows):
    for r in rows:
        for result in r["metrics"].values():
            for name in [n for n in result["values"]
                         if n == "balanced_accuracy" or n.startswith("study_")]:
                del result["values"][name], result["ci95"][name]
    return rows


def test_rows_scored_before_new_metrics_are_rescored_from_their_predictions(board, tmp_path):
    """Rows lacking balanced_accuracy and study-level metrics give byte-identical pages."""
    import json
    rows = [json.loads(l) for l in (board / "results.jsonl").read_text().splitlines()]
    old = board / "old.jsonl"
    example_builder().write_rows(old, _strip_new_metrics(rows))
    leaderboard.regenerate([old], tmp_path / "out", PUBLISHED)
    for name in ("cxr.md", "cxr.csv", "derm.md", "derm.csv", "cxr.png"):
        assert (tmp_path / "out" / name).read_bytes() == (board / "out" / name).read_bytes(), name
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "results.jsonl").write_bytes(old.read_bytes())
    with pytest.raises(ValueError, match=r"moved/results.jsonl:1: prediction file predictions/"
                                         r".* of metrics.in_distribution is not in "):
        board_lines.load_rows([moved / "results.jsonl"])
    assert len(board_lines.load_rows([moved / "results.jsonl"], prediction_dirs=[board])) == len(rows)
