"""Leaderboard tables and label-efficiency plots, regenerated from result rows.

    python -m benchmark.leaderboard --results=leaderboards/results.jsonl --output_dir=leaderboards/

For every task this writes `<task>.md`, `<task>.csv`, `<task>.html` and `<task>.png`: one line
per (preset, method, eval_mode, label fraction) with the task's primary metric on the
in-distribution and shifted test sets side by side, as the mean ± sample standard deviation over
seeds, the number of seeds, and a 95% CI that is the MEAN OVER SEEDS OF THE PER-SEED patient-level
bootstrap bounds (lower bounds averaged, upper bounds averaged). Rows on synthetic data form their
own section whose every table header says SYNTHETIC; published figures (`published.csv`) form a
separate section and are never mixed with our runs. Output is byte-for-byte reproducible for the
same rows: sorted order, fixed float formats, no timestamps, PNG written with fixed dpi and no
metadata.
"""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from benchmark import metrics, results

PUBLISHED_COLUMNS = ("citation", "url_or_doi", "dataset", "split", "task", "metric", "method",
                     "label_fraction", "value", "protocol", "protocol_matches_ours", "note")
PROTOCOL_MATCHES = ("yes", "no", "partial")
SECTION_REAL = "ours_real"
SECTION_SYNTHETIC = "ours_synthetic"
SECTION_PUBLISHED = "published"
TEST_SET_TITLES = {"in_distribution": "in-distribution", "shifted": "shifted"}
CI_RULE = ("95% CI: mean over seeds of each seed's patient-level bootstrap interval "
           "(lower and upper bounds averaged separately)")
PLOT_DPI = 100
PLOT_SIZE = (7.5, 4.8)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What the leaderboard needs to know about a task."""

    name: str
    primary_metric: str
    test_sets: tuple[str, ...]


def task_info(name: str) -> TaskInfo:
    """Primary metric and test sets of the task registered under `name` in `benchmark.tasks`."""
    from benchmark import tasks  # imports TensorFlow: only when a task is actually needed

    task = tasks.get_task(name)
    return TaskInfo(task.name, task.primary_metric, tuple(task.test_sets))


@dataclasses.dataclass(frozen=True)
class TestSetSummary:
    """The primary metric of one test set over the seeds of a cell group."""

    mean: float | None
    std: float | None
    n_seeds: int
    ci_low: float | None
    ci_high: float | None


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of a leaderboard table: a (preset, method, eval_mode, label fraction) over seeds."""

    method: str
    eval_mode: str
    preset: str
    label_fraction: float
    synthetic: bool
    metric: str
    test_sets: tuple[tuple[str, TestSetSummary], ...]


def load_rows(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Rows of every results file in `paths`, each checked with `results.validate_row`; raises
    ValueError naming the file and row for an invalid row or a cell present twice."""
    rows, seen = [], {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--results: {path}: no such file")
        for i, row in enumerate(results.ResultsStore(path).rows(), start=1):
            try:
                results.validate_row(row)
            except ValueError as e:
                raise ValueError(f"{path}: row {i}: {e}") from None
            key = results.cell_key(row)
            if key in seen:
                raise ValueError(f"{path}: row {i}: cell {key} already read from {seen[key]}")
            seen[key] = f"{path}: row {i}"
            rows.append(row)
    return rows


def load_published(path: str | os.PathLike) -> list[dict]:
    """Rows of a published-figures CSV with exactly PUBLISHED_COLUMNS; raises ValueError naming the
    line for a bad header, an empty required field, a non-numeric value or a protocol_matches_ours
    outside yes/no/partial."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != PUBLISHED_COLUMNS:
            raise ValueError(f"{path}:1: header {reader.fieldnames}; expected "
                             f"{','.join(PUBLISHED_COLUMNS)}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"{path}:{line}: expected {len(PUBLISHED_COLUMNS)} fields")
            for key in ("citation", "url_or_doi", "task", "metric", "method", "value"):
                if not row[key].strip():
                    raise ValueError(f"{path}:{line}: empty {key!r}")
            try:
                float(row["value"])
            except ValueError:
                raise ValueError(f"{path}:{line}: value {row['value']!r} is not a number") from None
            if row["protocol_matches_ours"] not in PROTOCOL_MATCHES:
                raise ValueError(f"{path}:{line}: protocol_matches_ours "
                                 f"{row['protocol_matches_ours']!r}; expected one of "
                                 f"{PROTOCOL_MATCHES}")
            rows.append(dict(row))
    return rows


def _mean_or_none(values: list[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _summarise_test_set(rows: list[dict], test_set: str, metric: str) -> TestSetSummary:
    values, lows, highs = [], [], []
    for row in rows:
        result = row["metrics"].get(test_set)
        if result is None or not _defined(result["values"].get(metric)):
            continue
        values.append(float(result["values"][metric]))
        lo, hi = result["ci95"].get(metric, (None, None))
        if _defined(lo) and _defined(hi):
            lows.append(float(lo))
            highs.append(float(hi))
    if not values:
        return TestSetSummary(None, None, 0, None, None)
    mean, std = metrics.summarise_seeds(values)
    return TestSetSummary(mean, std, len(values), _mean_or_none(lows), _mean_or_none(highs))


def summarise(rows: Iterable[dict], task: TaskInfo) -> list[SummaryRow]:
    """Lines of `task`'s table from its result rows, seeds pooled, in sorted order (synthetic last,
    then preset, method, eval_mode, label fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["task"] != task.name:
            continue
        key = (bool(row["synthetic"]), row["preset"], row["method"], row["eval_mode"],
               float(row["label_fraction"]))
        groups.setdefault(key, []).append(row)
    lines = []
    for key in sorted(groups):
        synthetic, preset, method, eval_mode, fraction = key
        members = sorted(groups[key], key=lambda r: int(r["seed"]))
        lines.append(SummaryRow(
            method=method, eval_mode=eval_mode, preset=preset, label_fraction=fraction,
            synthetic=synthetic, metric=task.primary_metric,
            test_sets=tuple((t, _summarise_test_set(members, t, task.primary_metric))
                            for t in task.test_sets)))
    return lines


def escape_markdown(text) -> str:
    """`text` as literal Markdown table-cell text: backslash before \\ ` * _ [ ] < > | & #, line
    breaks replaced by spaces."""
    flat = re.sub(r"[\r\n]+", " ", str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def escape_html(text) -> str:
    """`text` as literal HTML text (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def _fmt(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage, e.g. 0.1 -> "10%"."""
    return f"{round(fraction * 100, 6):g}%"


def _display_cells(s: TestSetSummary) -> tuple[str, str, str]:
    """(mean ± std, seeds, CI) as shown in Markdown/HTML."""
    if s.mean is None:
        return "n/a", "0", "n/a"
    ci = ("n/a" if s.ci_low is None else f"[{_fmt(s.ci_low, 4)}, {_fmt(s.ci_high, 4)}]")
    return f"{s.mean:.4f} ± {s.std:.4f}", str(s.n_seeds), ci


def _runs_header(task: TaskInfo, synthetic: bool) -> list[str]:
    method = "method (SYNTHETIC data)" if synthetic else "method"
    cols = [method, "eval mode", "preset", "labels"]
    for t in task.test_sets:
        title = TEST_SET_TITLES.get(t, t)
        cols += [f"{title} {task.primary_metric}", f"{title} seeds", f"{title} 95% CI"]
    return cols


def _runs_cells(line: SummaryRow, escape) -> list[str]:
    """Table cells of one line; `escape` is applied to the names (numbers are ours)."""
    cells = [escape(line.method), escape(line.eval_mode), escape(line.preset),
             format_fraction(line.label_fraction)]
    for _, s in line.test_sets:
        cells += list(_display_cells(s))
    return cells


PUBLISHED_HEADER = ("citation", "method", "dataset", "split", "metric", "labels", "value",
                    "protocol", "protocol matches ours", "note", "source")


def _published_cells(row: dict, escape) -> list[str]:
    fraction = row["label_fraction"].strip()
    labels = format_fraction(float(fraction)) if fraction else "not stated"
    return [escape(c) for c in (row["citation"], row["method"], row["dataset"], row["split"],
                                row["metric"], labels, row["value"], row["protocol"],
                                row["protocol_matches_ours"], row["note"], row["url_or_doi"])]


def _sections(lines: list[SummaryRow]) -> list[tuple[str, str, list[SummaryRow]]]:
    """(section id, title, lines) of our runs: real data always, synthetic when present."""
    real = [l for l in lines if not l.synthetic]
    synthetic = [l for l in lines if l.synthetic]
    sections = [(SECTION_REAL, "Our runs: real data", real)]
    if synthetic:
        sections.append((SECTION_SYNTHETIC, "Our runs: SYNTHETIC data (pipeline check on generated "
                         "images, not a result)", synthetic))
    return sections


def _preamble(task: TaskInfo) -> list[str]:
    return [f"Primary metric `{task.primary_metric}`: mean ± sample standard deviation over seeds "
            f"(ddof=1; 0 for one seed). {CI_RULE}. Labels = fraction of the labelled training "
            "patients/lesions used for fine-tuning.",
            "",
            "Regenerate with `python -m benchmark.leaderboard --results=<results.jsonl> "
            "--output_dir=leaderboards/`."]


def render_markdown(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The Markdown leaderboard of `task`."""
    out = [f"# Leaderboard: {escape_markdown(task.name)}", ""]
    out += _preamble(task)
    out.append("")

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("| " + " | ".join(escape_markdown(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for cells in rows:  # already escaped
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    for _, title, section in _sections(lines):
        out += [f"## {title}", ""]
        if section:
            table(_runs_header(task, section[0].synthetic),
                  [_runs_cells(l, escape_markdown) for l in section])
        else:
            out += ["No runs yet.", ""]
    out += ["## Published figures (as reported by their authors; not re-run, not comparable "
            "cell by cell with our runs)", ""]
    if published:
        table(PUBLISHED_HEADER, [_published_cells(r, escape_markdown) for r in published])
    else:
        out += ["None recorded.", ""]
    return "\n".join(out)


def render_html(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The HTML leaderboard of `task` (a complete document)."""
    name = escape_html(task.name)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>Leaderboard: {name}</title>",
           "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
           "</style>", "</head>", "<body>", f"<h1>Leaderboard: {name}</h1>"]
    out += [f"<p>{escape_html(p)}</p>" for p in _preamble(task) if p]

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("<table>")
        out.append("<thead><tr>" + "".join(f"<th>{escape_html(h)}</th>" for h in header)
                   + "</tr></thead>")
        out.append("<tbody>")
        for cells in rows:  # already escaped
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody>")
        out.append("</table>")

    for section_id, title, section in _sections(lines):
        out.append(f'<h2 id="{section_id}">{escape_html(title)}</h2>')
        if section:
            table(_runs_header(task, section[0].synthetic),
                  [_runs_cells(l, escape_html) for l in section])
        else:
            out.append("<p>No runs yet.</p>")
    out.append(f'<h2 id="{SECTION_PUBLISHED}">Published figures (as reported by their authors; '
               "not re-run, not comparable cell by cell with our runs)</h2>")
    if published:
        table(PUBLISHED_HEADER, [_published_cells(r, escape_html) for r in published])
    else:
        out.append("<p>None recorded.</p>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def csv_columns(task: TaskInfo) -> list[str]:
    """Columns of `<task>.csv`: section, the run identity, per-test-set statistics, then the
    published-figure fields (blank on our rows; run statistics blank on published rows)."""
    cols = ["section", "task", "method", "eval_mode", "preset", "label_fraction", "metric"]
    for t in task.test_sets:
        cols += [f"{t}_mean", f"{t}_std", f"{t}_n_seeds", f"{t}_ci_low", f"{t}_ci_high"]
    return cols + ["value", "citation", "url_or_doi", "dataset", "split", "protocol",
                   "protocol_matches_ours", "note"]


def render_csv(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The CSV leaderboard of `task`; `section` is ours_real, ours_synthetic or published."""
    cols = csv_columns(task)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for section_id, _, section in _sections(lines):
        for l in section:
            record = {"section": section_id, "task": task.name, "method": l.method,
                      "eval_mode": l.eval_mode, "preset": l.preset,
                      "label_fraction": f"{l.label_fraction:.6g}", "metric": l.metric}
            for t, s in l.test_sets:
                record.update({f"{t}_mean": _fmt(s.mean, 6), f"{t}_std": _fmt(s.std, 6),
                               f"{t}_n_seeds": str(s.n_seeds), f"{t}_ci_low": _fmt(s.ci_low, 6),
                               f"{t}_ci_high": _fmt(s.ci_high, 6)})
            writer.writerow(record)
    for r in published:
        writer.writerow({"section": SECTION_PUBLISHED, "task": task.name, "method": r["method"],
                         "label_fraction": r["label_fraction"], "metric": r["metric"],
                         "value": r["value"], "citation": r["citation"],
                         "url_or_doi": r["url_or_doi"], "dataset": r["dataset"],
                         "split": r["split"], "protocol": r["protocol"],
                         "protocol_matches_ours": r["protocol_matches_ours"], "note": r["note"]})
    return buf.getvalue()


def _plot_text(text: str) -> str:
    """`text` safe for Matplotlib labels ($ would start mathtext)."""
    return re.sub(r"[\r\n]+", " ", text).replace("$", r"\$")


def render_plot(task: TaskInfo, lines: list[SummaryRow], path: str | os.PathLike) -> None:
    """Writes the label-efficiency PNG of `task`: primary metric vs label fraction (log x), one
    colour per (method, eval_mode, preset[, synthetic]), in-distribution solid, shifted dashed, CI
    band shaded."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    series: dict[tuple, list[SummaryRow]] = {}
    for l in lines:
        series.setdefault((l.synthetic, l.method, l.eval_mode, l.preset), []).append(l)
    styles = {t: ("-" if i == 0 else "--") for i, t in enumerate(task.test_sets)}
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig = Figure(figsize=PLOT_SIZE)
        ax = fig.add_subplot()
        colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        handles, labels = [], []
        fractions = sorted({l.label_fraction for l in lines})
        for i, (key, points) in enumerate(sorted(series.items())):
            synthetic, method, eval_mode, preset = key
            colour = colours[i % len(colours)]
            points = sorted(points, key=lambda l: l.label_fraction)
            x = [p.label_fraction for p in points]
            for t in task.test_sets:
                stats = [dict(p.test_sets)[t] for p in points]
                y = [math.nan if s.mean is None else s.mean for s in stats]
                lo = [math.nan if s.ci_low is None else s.ci_low for s in stats]
                hi = [math.nan if s.ci_high is None else s.ci_high for s in stats]
                ax.plot(x, y, linestyle=styles[t], marker="o", color=colour)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
            handles.append(Line2D([], [], color=colour, marker="o"))
            labels.append(_plot_text(f"{method} ({eval_mode}, {preset}"
                                     f"{', SYNTHETIC' if synthetic else ''})"))
        for t in task.test_sets:
            handles.append(Line2D([], [], color="black", linestyle=styles[t]))
            labels.append(TEST_SET_TITLES.get(t, t))
        ax.set_xscale("log")
        if fractions:
            ax.xaxis.set_major_locator(FixedLocator(fractions))
            ax.set_xticklabels([format_fraction(f) for f in fractions])
            ax.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)
        else:
            ax.set_xlim(0.005, 1.5)
            ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("label fraction (log scale)")
        ax.set_ylabel(_plot_text(task.primary_metric))
        synthetic_note = " (includes SYNTHETIC data)" if any(l.synthetic for l in lines) else ""
        ax.set_title(_plot_text(f"{task.name}: {task.primary_metric} vs label fraction"
                                f"{synthetic_note}"))
        ax.grid(True, alpha=0.3)
        ax.legend(handles, labels, fontsize="small", loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=PLOT_DPI,
                    metadata={"Software": None, "Title": None, "Author": None,
                              "Description": None})


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def write_leaderboards(rows: list[dict], published: list[dict], output_dir: str | os.PathLike,
                       *, info=task_info) -> list[Path]:
    """Writes `<task>.md/.csv/.html/.png` for every task with rows or published figures; returns
    the written paths in order."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({r["task"] for r in rows} | {p["task"] for p in published})
    written = []
    for name in names:
        task = info(name)
        lines = summarise(rows, task)
        pub = [p for p in published if p["task"] == name]
        for suffix, text in ((".md", render_markdown(task, lines, pub)),
                             (".csv", render_csv(task, lines, pub)),
                             (".html", render_html(task, lines, pub))):
            _write_text(out / f"{name}{suffix}", text)
            written.append(out / f"{name}{suffix}")
        render_plot(task, lines, out / f"{name}.png")
        written.append(out / f"{name}.png")
    return written


def regenerate(results_paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
               published_path: str | os.PathLike | None = None) -> list[Path]:
    """Reads the results files and the published figures (default `<output_dir>/published.csv`
    when it exists) and rewrites every task's leaderboard files."""
    if published_path is None:
        default = Path(output_dir) / "published.csv"
        published_path = default if default.is_file() else None
    published = load_published(published_path) if published_path else []
    return write_leaderboards(load_rows(results_paths), published, output_dir)


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    paths = [p for p in f.results.split(",") if p]
    if not paths:
        raise ValueError("--results: expected one or more comma-separated results.jsonl paths")
    for path in regenerate(paths, f.output_dir, f.published or None):
        print(path)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("results", None, "Comma-separated results.jsonl files.", required=True)
    flags.DEFINE_string("output_dir", "leaderboards", "Where <task>.md/.csv/.html/.png go.")
    flags.DEFINE_string("published", None, "Published-figures CSV (default: "
                        "<output_dir>/published.csv when it exists).")
    app.run(main)
