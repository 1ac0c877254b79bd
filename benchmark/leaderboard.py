"""Leaderboard tables and label-efficiency plots, regenerated from result rows.

    python -m benchmark.leaderboard --results=leaderboards/results.jsonl --output_dir=leaderboards/

For every task this writes `<task>.md`, `<task>.csv`, `<task>.html` and `<task>.png`: one line
per (preset, method, backbone, eval_mode, label fraction) with the task's primary metric on the
in-distribution and shifted test sets side by side, as the mean ± sample standard deviation over
seeds, the number of seeds, and a 95% CI that is the MEAN OVER SEEDS OF THE PER-SEED patient-level
bootstrap bounds (lower bounds averaged, upper bounds averaged). Rows on synthetic data form their
own section whose every table header says SYNTHETIC; published figures (`published.csv`) form a
separate section and are never mixed with our runs. Rows of different backbones (the row's
`config.backbone`, written like `--backbone`, e.g. resnet_v1-18x0.25, botnet-50x0.25-small) are
never pooled; a table whose lines have several backbones shows a `backbone` column (the CSV always
has it). Output is byte-for-byte reproducible for the
same rows: sorted order, fixed float formats, no timestamps, PNG written with fixed dpi and no
metadata. A line pooling any seed that did not run deterministically (`deterministic: false`, or a
row older than that key) is marked NONDETERMINISTIC_MARK with a footnote, and `no` in the CSV's
`deterministic` column; its numbers are computed like any other. CSV text cells that a spreadsheet
would run as a formula (starting with = + - @, tab or carriage return, and not a number) are
prefixed with a quote.
"""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

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

NONDETERMINISTIC_MARK = "†"
NONDETERMINISTIC_NOTE = (f"{NONDETERMINISTIC_MARK} non-deterministic: at least one seed of this "
                         "line ran without deterministic ops and input order (`deterministic: "
                         "false`, or a row older than that flag), so a re-run need not reproduce "
                         "its numbers exactly.")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

T = TypeVar("T")
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
    """One line of a leaderboard table: a (preset, method, backbone, eval_mode, label fraction) over
    seeds."""

    method: str
    eval_mode: str
    preset: str
    label_fraction: float
    synthetic: bool
    metric: str
    test_sets: tuple[tuple[str, TestSetSummary], ...]
    deterministic: bool = True  # every seed pooled here ran deterministically
    backbone: str = ""  # `backbone_name` of the rows' config.backbone


def backbone_name(row: dict) -> str:
    """The backbone a row's encoder had, written like `--backbone` (e.g. resnet_v1-18x0.25,
    bit-50, botnet-50x0.25-small); "" for a row whose config does not record it."""
    b = row.get("config", {}).get("backbone")
    if not isinstance(b, dict) or not {"family", "depth", "width"} <= b.keys():
        return ""
    width = "" if float(b["width"]) == 1 else f"x{float(b['width']):g}"
    small = "-small" if b.get("small_stem") and b["family"] != "bit" else ""
    return f"{b['family']}-{b['depth']}{width}{small}"


def is_deterministic(row: dict) -> bool:
    """Whether a row records a deterministic run (rows without the key predate it: no)."""
    return row.get("deterministic") is True


def load_rows(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Rows of every results file in `paths`, each checked with `results.validate_row` and for a
    registered task; raises ValueError naming the file and line for a malformed or invalid row or a
    cell present twice. A truncated last line is skipped with a `results.TruncatedLineWarning`
    (as `results.ResultsStore` does)."""
    from benchmark import tasks

    rows, seen = [], {}
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"--results: {path}: no such file")
        if not Path(path).is_file():
            raise ValueError(f"--results: {path}: not a regular file; expected a results.jsonl")
        parsed, torn = results.ResultsStore(path).scan()
        if torn:
            warnings.warn(f"{torn}; the leaderboard is built without it",
                          results.TruncatedLineWarning, stacklevel=2)
        for line, _, row in parsed:
            where = f"{path}:{line}"
            try:
                results.validate_row(row)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            if row["task"] not in tasks.TASKS:
                raise ValueError(f"{where}: task {row['task']!r} is not registered; expected one "
                                 f"of {sorted(tasks.TASKS)}")
            key = results.cell_key(row)
            if key in seen:
                raise ValueError(f"{where}: cell {key} already read from {seen[key]}")
            seen[key] = where
            rows.append(row)
    return rows


def load_published(path: str | os.PathLike) -> list[dict]:
    """Rows of a published-figures CSV with exactly PUBLISHED_COLUMNS; raises ValueError naming the
    line for a bad header, an empty required field, a non-numeric value or a protocol_matches_ours
    outside yes/no/partial."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return _read_published(path, f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a CSV file ({e})") from None


def _read_published(path, f) -> list[dict]:
    """Rows of the open published-figures CSV `f` (read from `path`), checked."""
    from benchmark import tasks

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
        if row["task"] not in tasks.TASKS:
            raise ValueError(f"{path}:{line}: task {row['task']!r} is not registered; expected one "
                             f"of {sorted(tasks.TASKS)}")
        try:
            float(row["value"])
        except ValueError:
            raise ValueError(f"{path}:{line}: value {row['value']!r} is not a number") from None
        if row["label_fraction"].strip() and not _is_fraction(row["label_fraction"]):
            raise ValueError(f"{path}:{line}: label_fraction {row['label_fraction']!r}; "
                             "expected a number in (0, 1] or blank (not stated)")
        if row["protocol_matches_ours"] not in PROTOCOL_MATCHES:
            raise ValueError(f"{path}:{line}: protocol_matches_ours "
                             f"{row['protocol_matches_ours']!r}; expected one of "
                             f"{PROTOCOL_MATCHES}")
        rows.append(dict(row))
    return rows


def _is_fraction(text: str) -> bool:
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


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
    then preset, method, backbone, eval_mode, label fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["task"] != task.name:
            continue
        key = (bool(row["synthetic"]), row["preset"], row["method"], backbone_name(row), row["eval_mode"],
               float(row["label_fraction"]))
        groups.setdefault(key, []).append(row)
    lines = []
    for key in sorted(groups):
        synthetic, preset, method, backbone, eval_mode, fraction = key
        members = sorted(groups[key], key=lambda r: int(r["seed"]))
        lines.append(SummaryRow(
            method=method, eval_mode=eval_mode, preset=preset, label_fraction=fraction,
            synthetic=synthetic, metric=task.primary_metric,
            test_sets=tuple((t, _summarise_test_set(members, t, task.primary_metric))
                            for t in task.test_sets),
            deterministic=all(is_deterministic(r) for r in members), backbone=backbone))
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


def _several_backbones(lines: list[SummaryRow]) -> bool:
    return len({l.backbone for l in lines}) > 1


def _runs_header(task: TaskInfo, synthetic: bool, backbone: bool = False) -> list[str]:
    method = "method (SYNTHETIC data)" if synthetic else "method"
    cols = [method] + (["backbone"] if backbone else []) + ["eval mode", "preset", "labels"]
    for t in task.test_sets:
        title = TEST_SET_TITLES.get(t, t)
        cols += [f"{title} {task.primary_metric}", f"{title} seeds", f"{title} 95% CI"]
    return cols


def _runs_cells(line: SummaryRow, escape, backbone: bool = False) -> list[str]:
    """Table cells of one line (with its backbone if asked); `escape` is applied to the names
    (numbers are ours)."""
    method = escape(line.method)
    if not line.deterministic:
        method += f" {NONDETERMINISTIC_MARK}"
    cells = [method] + ([escape(line.backbone or "n/a")] if backbone else []) + [
             escape(line.eval_mode), escape(line.preset),
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
            several = _several_backbones(section)
            table(_runs_header(task, section[0].synthetic, several),
                  [_runs_cells(l, escape_markdown, several) for l in section])
            if not all(l.deterministic for l in section):
                out += [escape_markdown(NONDETERMINISTIC_NOTE), ""]
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
            several = _several_backbones(section)
            table(_runs_header(task, section[0].synthetic, several),
                  [_runs_cells(l, escape_html, several) for l in section])
            if not all(l.deterministic for l in section):
                out.append(f"<p>{escape_html(NONDETERMINISTIC_NOTE)}</p>")
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
    """Columns of `<task>.csv`: section, the run identity, whether every seed ran deterministically
    (yes/no), per-test-set statistics, then the published-figure fields (blank on our rows; run
    statistics blank on published rows)."""
    cols = ["section", "task", "method", "backbone", "eval_mode", "preset", "label_fraction", "metric",
            "deterministic"]
    for t in task.test_sets:
        cols += [f"{t}_mean", f"{t}_std", f"{t}_n_seeds", f"{t}_ci_low", f"{t}_ci_high"]
    return cols + ["value", "citation", "url_or_doi", "dataset", "split", "protocol",
                   "protocol_matches_ours", "note"]


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


def render_csv(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The CSV leaderboard of `task`; `section` is ours_real, ours_synthetic or published; every
    cell passes `csv_cell`."""
    cols = csv_columns(task)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()

    def write(record: dict) -> None:
        writer.writerow({k: csv_cell(str(v)) for k, v in record.items()})

    for section_id, _, section in _sections(lines):
        for l in section:
            record = {"section": section_id, "task": task.name, "method": l.method,
                      "backbone": l.backbone, "eval_mode": l.eval_mode, "preset": l.preset,
                      "label_fraction": f"{l.label_fraction:.6g}", "metric": l.metric,
                      "deterministic": "yes" if l.deterministic else "no"}
            for t, s in l.test_sets:
                record.update({f"{t}_mean": _fmt(s.mean, 6), f"{t}_std": _fmt(s.std, 6),
                               f"{t}_n_seeds": str(s.n_seeds), f"{t}_ci_low": _fmt(s.ci_low, 6),
                               f"{t}_ci_high": _fmt(s.ci_high, 6)})
            write(record)
    for r in published:
        write({"section": SECTION_PUBLISHED, "task": task.name, "method": r["method"],
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
    colour per (method, backbone, eval_mode, preset[, synthetic]), in-distribution solid, shifted dashed, CI
    band shaded."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    series: dict[tuple, list[SummaryRow]] = {}
    for l in lines:
        series.setdefault((l.synthetic, l.method, l.backbone, l.eval_mode, l.preset), []).append(l)
    styles = {t: ("-" if i == 0 else "--") for i, t in enumerate(task.test_sets)}
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig = Figure(figsize=PLOT_SIZE)
        ax = fig.add_subplot()
        colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        handles, labels = [], []
        fractions = sorted({l.label_fraction for l in lines})
        for i, (key, points) in enumerate(sorted(series.items())):
            synthetic, method, backbone, eval_mode, preset = key
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
            shown = f"{backbone or 'n/a'}, " if _several_backbones(lines) else ""
            labels.append(_plot_text(f"{method} ({shown}{eval_mode}, {preset}"
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
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PLOT_DPI,
                    metadata={"Software": None, "Title": None, "Author": None,
                              "Description": None})
    _write_bytes(Path(path), png.getvalue())


def _write_bytes(path: Path, data: bytes) -> None:
    """Replaces `path` atomically; an OS error names `path`."""
    with results.atomic_writer(path, binary=True) as f:
        f.write(data)


def output_directory(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a directory to write into (created if missing); ValueError naming `flag` when it
    is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag}={path}: not a directory")
    with results.naming_file(out):
        out.mkdir(parents=True, exist_ok=True)
    return out


def write_leaderboards(rows: list[dict], published: list[dict], output_dir: str | os.PathLike,
                       *, info=task_info) -> list[Path]:
    """Writes `<task>.md/.csv/.html/.png` for every task with rows or published figures; returns
    the written paths in order."""
    out = output_directory(output_dir, "--output_dir")
    names = sorted({r["task"] for r in rows} | {p["task"] for p in published})
    written = []
    for name in names:
        task = info(name)
        lines = summarise(rows, task)
        pub = [p for p in published if p["task"] == name]
        for suffix, text in ((".md", render_markdown(task, lines, pub)),
                             (".csv", render_csv(task, lines, pub)),
                             (".html", render_html(task, lines, pub))):
            _write_bytes(out / f"{name}{suffix}", text.encode("utf-8"))
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


def run_entry_point(action: Callable[[], T]) -> tuple[int, T | None]:
    """Runs `action` as an entry point must: a data error (ValueError) or OS error becomes one
    `error:` line on stderr and status 1, a skipped truncated results line one `warning:` line;
    returns (exit status, what `action` returned or None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", results.TruncatedLineWarning)
        try:
            outcome = 0, action()
        except OSError as e:
            outcome = 1, None
            message = results.os_error_text(e)
        except ValueError as e:
            outcome = 1, None
            message = str(e)
    told = set()
    for w in caught:
        if issubclass(w.category, results.TruncatedLineWarning):
            if str(w.message) not in told:
                print(f"warning: {w.message}", file=sys.stderr)
            told.add(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if outcome[0]:
        print(message if message.startswith("submission rejected") else f"error: {message}",
              file=sys.stderr)
    return outcome


def cli(results_flag: str, output_dir: str, published: str | None) -> int:
    """What `python -m benchmark.leaderboard` does with its flag values: regenerates and prints the
    written paths; returns the exit status (see `run_entry_point`)."""
    def action() -> list[Path]:
        paths = [p for p in (results_flag or "").split(",") if p]
        if not paths:
            raise ValueError("--results: expected one or more comma-separated results.jsonl paths")
        return regenerate(paths, output_dir, published or None)

    status, written = run_entry_point(action)
    for path in written or ():
        print(path)
    return status


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    sys.exit(cli(f.results, f.output_dir, f.published))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("results", None, "Comma-separated results.jsonl files.", required=True)
    flags.DEFINE_string("output_dir", "leaderboards", "Where <task>.md/.csv/.html/.png go.")
    flags.DEFINE_string("published", None, "Published-figures CSV (default: "
                        "<output_dir>/published.csv when it exists).")
    app.run(main)
