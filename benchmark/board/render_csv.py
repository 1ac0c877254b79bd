"""A task's leaderboard as CSV: one line per run line or published figure, every statistic in its
own column, spreadsheet formulas neutralised."""
from __future__ import annotations

import csv
import io

from benchmark.board.lines import (
    SECTION_PUBLISHED,
    SummaryRow,
    TaskInfo,
    TestSetSummary,
    fmt,
    sections,
    table_specs,
)
from benchmark.board.published import OTHER_TEST_SET, place_published

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _extra_columns(task: TaskInfo) -> list[tuple[str, str]]:
    """Table columns other than the primary metric, in page order."""
    primary = {(t, task.primary_metric) for t in task.test_sets}
    return [c for c in dict.fromkeys(c for s in table_specs(task) for c in s.columns)
            if c not in primary]


def csv_columns(task: TaskInfo) -> list[str]:
    """Columns of `<task>.csv`: section, the run identity, whether every seed ran deterministically
    (yes/no), the test sets the line holds (space-separated; a test set its runs did not request,
    `benchmark.run --test_sets`, has blank columns), per-test-set statistics of the primary metric
    and the number of seeds whose predictions collapsed there, whether the line is the control's
    (yes/no), the control its differences are to and per test set the difference, its paired CI
    and the number of seeds paired (blank without a control), a distill line's teacher line and
    its differences to it (`<test set>_teacher_diff` ...), the same statistics of every other
    table column (`<test set>_<metric>_mean` ...), then the published-figure fields (blank on our
    rows; run statistics blank on published rows; `backbone` is filled on both) with `placed_under`
    = the table key it is shown under, or `other`."""
    cols = ["section", "task", "method", "backbone", "precision", "init", "eval_mode", "preset",
            "label_fraction", "metric", "deterministic", "test_sets"]
    for t in task.test_sets:
        cols += [f"{t}_mean", f"{t}_std", f"{t}_n_seeds", f"{t}_ci_low", f"{t}_ci_high",
                 f"{t}_collapsed_seeds"]
    cols += ["is_control", "control"]
    for t in task.test_sets:
        cols += [f"{t}_diff", f"{t}_diff_ci_low", f"{t}_diff_ci_high", f"{t}_diff_n_seeds"]
    cols += ["teacher"]
    for t in task.test_sets:
        cols += [f"{t}_teacher_diff", f"{t}_teacher_diff_ci_low", f"{t}_teacher_diff_ci_high",
                 f"{t}_teacher_diff_n_seeds"]
    for t, m in _extra_columns(task):
        cols += [f"{t}_{m}_{s}" for s in ("mean", "std", "n_seeds", "ci_low", "ci_high")]
    return cols + ["value", "citation", "url_or_doi", "dataset", "split", "protocol",
                   "protocol_matches_ours", "note", "test_set", "class", "placed_under"]


def csv_cell(text: str) -> str:
    """`text` as a CSV cell a spreadsheet shows as text: a quote before a cell that would start a
    formula (= + - @ tab CR) unless the cell is a number such as -0.5."""
    if not text.startswith(_FORMULA_START):
        return text
    try:
        float(text)
        return text
    except ValueError:
        return "'" + text


def _stat_fields(prefix: str, s: TestSetSummary) -> dict[str, str]:
    return {f"{prefix}mean": fmt(s.mean, 6), f"{prefix}std": fmt(s.std, 6),
            f"{prefix}n_seeds": str(s.n_seeds), f"{prefix}ci_low": fmt(s.ci_low, 6),
            f"{prefix}ci_high": fmt(s.ci_high, 6)}


def _difference_fields(name: str, differences) -> dict[str, str]:
    """`<test set>_<name>`, `..._ci_low`, `..._ci_high`, `..._n_seeds` of each defined difference."""
    fields = {}
    for t, d in differences:
        if d is not None:
            fields.update({f"{t}_{name}": fmt(d.value, 6), f"{t}_{name}_ci_low": fmt(d.ci_low, 6),
                           f"{t}_{name}_ci_high": fmt(d.ci_high, 6), f"{t}_{name}_n_seeds": str(d.pairs)})
    return fields


def render_csv(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The CSV leaderboard of `task`; `section` is ours_real, ours_synthetic or published; every
    cell passes `csv_cell`."""
    cols = csv_columns(task)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()

    def write(record: dict) -> None:
        writer.writerow({k: csv_cell(str(v)) for k, v in record.items()})

    for section_id, _, section in sections(lines):
        for l in section:
            record = {"section": section_id, "task": task.name, "method": l.method,
                      "backbone": l.backbone, "precision": l.precision, "init": l.init,
                      "eval_mode": l.eval_mode,
                      "preset": l.preset,
                      "label_fraction": f"{l.label_fraction:.6g}", "metric": l.metric,
                      "deterministic": "yes" if l.deterministic else "no",
                      "test_sets": " ".join(t for t in task.test_sets if l.holds(t))}
            for t, s in l.test_sets:
                if l.holds(t):
                    record.update(_stat_fields(f"{t}_", s), **{f"{t}_collapsed_seeds": str(s.collapsed)})
            record.update(is_control="yes" if l.is_control else "no", control=l.control)
            record.update(_difference_fields("diff", l.differences))
            record["teacher"] = l.teacher
            record.update(_difference_fields("teacher_diff", l.teacher_differences))
            stats = dict(l.columns)
            for t, m in _extra_columns(task):
                if l.holds(t):
                    record.update(_stat_fields(f"{t}_{m}_", stats[(t, m)]))
            write(record)
    placed, other = place_published(task, published)
    shown = [(key, r) for key, plines in placed.items() for l in plines for r in l.rows]
    for key, r in shown + [(OTHER_TEST_SET, r) for r in other]:
        write({"section": SECTION_PUBLISHED, "task": task.name, "method": r["method"],
               "label_fraction": r["label_fraction"], "metric": r["metric"],
               "value": r["value"], "citation": r["citation"], "url_or_doi": r["url_or_doi"],
               "dataset": r["dataset"], "split": r["split"], "protocol": r["protocol"],
               "protocol_matches_ours": r["protocol_matches_ours"], "note": r["note"],
               "backbone": r["backbone"], "test_set": r["test_set"], "class": r["class"],
               "placed_under": key})
    return buf.getvalue()
