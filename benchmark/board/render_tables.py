"""A task's leaderboard page as Markdown and as HTML: the same sections, tables and notes."""
from __future__ import annotations

import html
import re
from typing import Sequence

from benchmark.board.lines import (
    CI_RULE,
    CONTROL_METHOD,
    CONTROL_SELF,
    DIFFERENCE_RULE,
    NO_CONTROL,
    NO_TEACHER,
    TEACHER_RULE,
    COLLAPSED_MARK,
    COLLAPSED_NOTE,
    NONDETERMINISTIC_MARK,
    NONDETERMINISTIC_NOTE,
    NOT_REQUESTED,
    NOT_REQUESTED_NOTE,
    SECTION_PUBLISHED,
    SECTION_REAL,
    TEST_SET_TITLES,
    SummaryRow,
    TableSpec,
    TaskInfo,
    TestSetSummary,
    fmt,
    format_fraction,
    sections,
    several_backbones,
    several_precisions,
    table_specs,
)
from benchmark.board.published import (
    LABEL_BUDGET,
    OTHER_TEST_SET,
    PublishedLine,
    place_published,
    source_link,
)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&#])")


def escape_markdown(text) -> str:
    """`text` as literal Markdown table-cell text: backslash before \\ ` * _ [ ] < > | & #, line
    breaks replaced by spaces."""
    flat = re.sub(r"[\r\n]+", " ", str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def escape_html(text) -> str:
    """`text` as literal HTML text (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def _display_cells(s: TestSetSummary) -> tuple[str, str, str]:
    """(mean ± std, seeds, CI) as shown in Markdown/HTML."""
    if s.mean is None:
        return "n/a", "0", "n/a"
    ci = ("n/a" if s.ci_low is None else f"[{fmt(s.ci_low, 4)}, {fmt(s.ci_high, 4)}]")
    mark = f" {COLLAPSED_MARK}{s.collapsed}" if s.collapsed else ""
    return f"{s.mean:.4f} ± {s.std:.4f}{mark}", str(s.n_seeds), ci


def _column_title(spec: TableSpec, column: tuple[str, str]) -> str:
    test_set, metric = column
    if spec.per_class:
        return metric.rsplit("/", 1)[1]
    return f"{TEST_SET_TITLES.get(test_set, test_set)} {metric}"


def _runs_header(spec: TableSpec, synthetic: bool, backbone: bool = False,
                 differences: tuple[str, ...] = (), precision: bool = False,
                 teachers: tuple[str, ...] = ()) -> list[str]:
    method = "method (SYNTHETIC data)" if synthetic else "method"
    cols = ([method] + (["backbone"] if backbone else []) + (["precision"] if precision else [])
            + ["init", "eval mode", "preset", "labels"])
    for c in spec.columns:
        title = _column_title(spec, c)
        cols += [title] if spec.per_class else [title, f"{title} seeds", f"{title} 95% CI"]
    return (cols + [f"{TEST_SET_TITLES.get(t, t)} Δ vs {CONTROL_METHOD} (paired 95% CI)"
                    for t in differences]
            + [f"{TEST_SET_TITLES.get(t, t)} Δ vs teacher (paired 95% CI)" for t in teachers])


def _teacher_cell(line: SummaryRow, test_set: str) -> str:
    """A distill line's difference to its teacher's fine-tune line on `test_set`."""
    if not line.holds(test_set):
        return NOT_REQUESTED
    if not line.teacher_differences:
        return ""
    d = dict(line.teacher_differences).get(test_set)
    if d is None:
        return NO_TEACHER
    return f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] (n={d.pairs}, {line.teacher})"


def _difference_cell(line: SummaryRow, test_set: str) -> str:
    """A line's difference to the control on `test_set` as shown in Markdown/HTML."""
    if not line.holds(test_set):
        return NOT_REQUESTED
    if line.is_control:
        return CONTROL_SELF
    d = dict(line.differences).get(test_set)
    if d is None:
        return NO_CONTROL
    return f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}] (n={d.pairs})"


def _runs_cells(spec: TableSpec, line: SummaryRow, escape, backbone: bool = False,
                differences: tuple[str, ...] = (), precision: bool = False,
                teachers: tuple[str, ...] = ()) -> list[str]:
    """Table cells of one line (with its backbone, its precision, and its differences to the
    control on the test sets `differences`, if asked); `escape` is applied to the names (numbers
    are ours)."""
    method = escape(line.method)
    if not line.deterministic:
        method += f" {NONDETERMINISTIC_MARK}"
    cells = ([method] + ([escape(line.backbone or "n/a")] if backbone else [])
             + ([escape(line.precision or "n/a")] if precision else [])) + [
             escape(line.init), escape(line.eval_mode), escape(line.preset),
             format_fraction(line.label_fraction)]
    stats = dict(line.columns)
    for c in spec.columns:
        shown = _display_cells(stats[c]) if line.holds(c[0]) else (NOT_REQUESTED,) * 3
        cells += [shown[0]] if spec.per_class else list(shown)
    return (cells + [_difference_cell(line, t) for t in differences]
            + [escape(_teacher_cell(line, t)) for t in teachers])


def _published_labels(row: dict) -> str:
    fraction = row["label_fraction"].strip()
    if not fraction:
        return "not stated"
    return fraction if LABEL_BUDGET.match(fraction) else format_fraction(float(fraction))


def _published_header(spec: TableSpec) -> list[str]:
    return (["published figure (not re-run)", "method", "backbone", "labels"]
            + [_column_title(spec, c) for c in spec.columns]
            + ["protocol matches ours", "dataset, split", "note"])


def _published_line_cells(spec: TableSpec, line: PublishedLine, escape, link) -> list[str]:
    first = line.rows[0]
    values = dict(line.values)
    notes = " ".join(dict.fromkeys(r["note"] for r in line.rows))
    return ([link(first["citation"], first["url_or_doi"]), escape(first["method"]),
             escape(first["backbone"]), escape(_published_labels(first))]
            + [escape(values.get(c, "")) for c in spec.columns]
            + [escape(first["protocol_matches_ours"]),
               escape(f"{first['dataset']}, {first['split']}"), escape(notes)])


OTHER_PUBLISHED_HEADER = ("published figure (not re-run)", "method", "backbone", "dataset", "split",
                          "test set", "metric", "class", "labels", "value",
                          "protocol matches ours", "protocol", "note")


def _other_published_cells(row: dict, escape, link) -> list[str]:
    return [link(row["citation"], row["url_or_doi"])] + [escape(c) for c in (
        row["method"], row["backbone"], row["dataset"], row["split"], row["test_set"],
        row["metric"], row["class"], _published_labels(row), row["value"],
        row["protocol_matches_ours"], row["protocol"], row["note"])]


def _markdown_link(text: str, source: str) -> str:
    url = source_link(source)
    return f"[{escape_markdown(text)}]({url})" if url else escape_markdown(text)


def _html_link(text: str, source: str) -> str:
    url = source_link(source)
    return (f'<a href="{escape_html(url)}">{escape_html(text)}</a>' if url
            else escape_html(text))


def _preamble(task: TaskInfo) -> list[str]:
    return [f"Primary metric `{task.primary_metric}`: mean ± sample standard deviation over seeds "
            f"(ddof=1; 0 for one seed). {CI_RULE}. Labels = fraction of the labelled training "
            "patients/lesions used for fine-tuning.",
            "",
            f"{DIFFERENCE_RULE}.",
            "",
            "Published figures stand under the real-data table with the same test set and metric, "
            "sorted by how closely their protocol matches ours (yes, partial, no); they are "
            "quoted as their authors report them, never re-run, averaged with or ranked among our "
            "runs. A row's note says how its protocol differs from ours.",
            "",
            "Regenerate with `python -m benchmark.leaderboard --results=<results.jsonl> "
            "--output_dir=leaderboards/`."]


PUBLISHED_UNDER_TITLE = "Published figures for this table (not re-run; compare with care)"


OTHER_PUBLISHED_TITLE = ("Other published figures (no table of ours reports this metric on this "
                         "test set: differences between two models, or other data)")


def _closing_note(task: TaskInfo, published: list[dict]) -> list[str]:
    """Counts of published rows per test set, and where rows left out are listed."""
    counts = {t: sum(r["test_set"] == t for r in published)
              for t in (*task.test_sets, OTHER_TEST_SET)}
    shown = ", ".join(f"{TEST_SET_TITLES.get(t, t)} {n}" for t, n in counts.items())
    return [f"Published rows for {task.name}: {len(published)} ({shown}). Figures of the source "
            "compilation that are not in `published.csv`, and why, are listed in "
            "`leaderboards/README.md` (section \"Published figures\")."]


def _page(task: TaskInfo, lines: list[SummaryRow], published: list[dict], heading, table,
          paragraph, escape, link) -> None:
    """Emits a page through `heading(level, text, anchor)`, `table(header, rows)` and
    `paragraph(text)` (texts unescaped; table cells already escaped)."""
    placed, other = place_published(task, published)
    for section_id, title, section in sections(lines):
        heading(2, title, section_id)
        for spec in table_specs(task):
            anchor = f"{section_id}_{spec.key}".replace("/", "_")
            heading(3, spec.title, anchor)
            if section:
                several = several_backbones(section)
                precisions = several_precisions(section)
                diffs = task.test_sets if spec.key == task.primary_metric else ()
                teachers = diffs if any(l.teacher_differences for l in section) else ()
                table(_runs_header(spec, section[0].synthetic, several, diffs, precisions, teachers),
                      [_runs_cells(spec, l, escape, several, diffs, precisions, teachers)
                       for l in section])
            else:
                paragraph("No runs yet.")
            if section_id == SECTION_REAL and placed[spec.key]:
                paragraph(f"{PUBLISHED_UNDER_TITLE}:")
                table(_published_header(spec),
                      [_published_line_cells(spec, l, escape, link) for l in placed[spec.key]])
        if not all(l.deterministic for l in section):
            paragraph(NONDETERMINISTIC_NOTE)
        if any(s.collapsed for l in section for _, s in l.columns):
            paragraph(COLLAPSED_NOTE)
        if any(l.teacher_differences for l in section):
            paragraph(f"{TEACHER_RULE}.")
        if not all(l.holds(t) for l in section for t in task.test_sets):
            paragraph(NOT_REQUESTED_NOTE)
    heading(2, OTHER_PUBLISHED_TITLE, SECTION_PUBLISHED)
    if other:
        table(list(OTHER_PUBLISHED_HEADER), [_other_published_cells(r, escape, link) for r in other])
    else:
        paragraph("None recorded.")
    for text in _closing_note(task, published):
        paragraph(text)


def render_markdown(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The Markdown leaderboard of `task`."""
    out = [f"# Leaderboard: {escape_markdown(task.name)}", ""]
    out += _preamble(task)
    out.append("")

    def heading(level: int, text: str, anchor: str) -> None:
        out.extend([f"{'#' * level} {escape_markdown(text)}", ""])

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("| " + " | ".join(escape_markdown(h) for h in header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for cells in rows:  # already escaped
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    def paragraph(text: str) -> None:
        out.extend([escape_markdown(text), ""])

    _page(task, lines, published, heading, table, paragraph, escape_markdown, _markdown_link)
    return "\n".join(out)


def render_html(task: TaskInfo, lines: list[SummaryRow], published: list[dict]) -> str:
    """The HTML leaderboard of `task` (a complete document)."""
    name = escape_html(task.name)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>Leaderboard: {name}</title>",
           "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
           "</style>", "</head>", "<body>", f"<h1>Leaderboard: {name}</h1>"]
    out += [f"<p>{escape_html(p)}</p>" for p in _preamble(task) if p]

    def heading(level: int, text: str, anchor: str) -> None:
        out.append(f'<h{level} id="{escape_html(anchor)}">{escape_html(text)}</h{level}>')

    def table(header: Sequence[str], rows: list[list[str]]) -> None:
        out.append("<table>")
        out.append("<thead><tr>" + "".join(f"<th>{escape_html(h)}</th>" for h in header)
                   + "</tr></thead>")
        out.append("<tbody>")
        for cells in rows:  # already escaped
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody>")
        out.append("</table>")

    def paragraph(text: str) -> None:
        out.append(f"<p>{escape_html(text)}</p>")

    _page(task, lines, published, heading, table, paragraph, escape_html, _html_link)
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
