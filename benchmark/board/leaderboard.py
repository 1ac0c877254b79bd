"""Leaderboard tables and label-efficiency plots, regenerated from result rows (the command is
`python -m benchmark.leaderboard`; lines and their statistics: `lines`, published figures:
`published`, the formats: `render_tables` (md, html), `render_csv`, `render_plot`).

For every task this writes `<task>.md`, `<task>.csv`, `<task>.html` and `<task>.png`: one line
per (preset, method, backbone, eval_mode, label fraction) with the task's primary metric on the
in-distribution and shifted test sets side by side, as the mean ± sample standard deviation over
seeds, the number of seeds, and a 95% CI that is the MEAN OVER SEEDS OF THE PER-SEED patient-level
bootstrap bounds (lower bounds averaged, upper bounds averaged). Rows on synthetic data form their
own section whose every table header says SYNTHETIC; published figures (`published.csv`) form a
separate section and are never mixed with our runs. Rows of different backbones (the row's
`config.backbone`, written like `--backbone`, e.g. resnet_v1-18x0.25, botnet-50x0.25-small) are
never pooled; a table whose lines have several backbones shows a `backbone` column (the CSV always
has it). The same holds for the training precision (`config.precision.used`, float32 or bfloat16;
"n/a" for a row that does not record it): lines never pool precisions, a table whose lines have
several shows a `precision` column, and the CSV always has it. Every line of the primary-metric table also shows, per test set, its difference to the
control `random_init` (the same backbone without pretraining; a reference row, never a
submitted one: `is_control`) of the same task,
preset, backbone, eval mode, label fraction and data kind: the mean over the seeds both ran of the
method minus the control, with a 95% CI from a paired patient-level bootstrap computed from the
stored prediction files (`scoring.control_difference`); "—" where no such control row exists (a
line whose backbone is not recorded never matches), "control" on the control's own lines. The
plot has a second panel with these differences and their CIs as error bars. Output is
byte-for-byte reproducible for the
same rows: sorted order, fixed float formats, no timestamps, PNG written with fixed dpi and no
metadata. Every number is re-scored from the rows' prediction files by the board's rules
(`rules`); a row whose stored metrics disagree with its files is left out with a warning naming
it. A line pooling any seed that did not run deterministically (`deterministic: false`, or a
row older than that key) is marked NONDETERMINISTIC_MARK with a footnote, and `no` in the CSV's
`deterministic` column; its numbers are computed like any other. CSV text cells that a spreadsheet
would run as a formula (starting with = + - @, tab or carriage return, and not a number) are
prefixed with a quote.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

from benchmark.board import journal
from benchmark.board.lines import PredictionReader, load_board, summarise, task_info
from benchmark.board.published import load_published
from benchmark.board.render_csv import render_csv
from benchmark.board.render_plot import render_plot
from benchmark.board.render_tables import render_html, render_markdown
from benchmark.harness import results


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
                       *, info=task_info, predictions: PredictionReader | None = None,
                       submitted: frozenset = frozenset()) -> list[Path]:
    """Writes `<task>.md/.csv/.html/.png` for every task with rows or published figures; returns
    the written paths in order. Differences to the control are computed from `predictions`, never
    to a submitted row (`submitted`: their cell keys; see `summarise`)."""
    out = output_directory(output_dir, "--output_dir")
    names = sorted({r["task"] for r in rows} | {p["task"] for p in published})
    written = []
    for name in names:
        task = info(name)
        lines = summarise(rows, task, predictions, submitted)
        pub = [p for p in published if p["task"] == name]
        for suffix, text in ((".md", render_markdown(task, lines, pub)),
                             (".csv", render_csv(task, lines, pub)),
                             (".html", render_html(task, lines, pub))):
            results.write_bytes(out / f"{name}{suffix}", text.encode("utf-8"))
            written.append(out / f"{name}{suffix}")
        render_plot(task, lines, out / f"{name}.png", pub)
        written.append(out / f"{name}.png")
    return written


def regenerate(results_paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
               published_path: str | os.PathLike | None = None, *,
               prediction_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Reads the results files and the published figures (default `<output_dir>/published.csv`
    when it exists) and rewrites every task's leaderboard files from the rows as `load_board`
    re-scores them (prediction files are looked up beside their results file, then in
    `prediction_dirs`; a row whose stored metrics disagree with its files is left out with a
    warning)."""
    if published_path is None:
        default = Path(output_dir) / "published.csv"
        published_path = default if default.is_file() else None
    published = load_published(published_path) if published_path else []
    board = load_board(results_paths, prediction_dirs)
    return write_leaderboards(board.rows, published, output_dir, predictions=board.predictions,
                              submitted=board.submitted)


def regenerate_board(results_paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                     published_path: str | os.PathLike | None = None) -> list[Path]:
    """`regenerate` as `python -m benchmark.leaderboard` runs it beside other writers: holding the
    lock of every results file it reads (shared) and, when `output_dir` is a board (holds a
    results.jsonl), the board's (exclusive), so it never reads or writes half of a submission's
    commit; a commit left by a killed writer is completed first (`journal.recover`)."""
    out = output_directory(output_dir, "--output_dir")
    board = out / "results.jsonl"
    exclusive = {results.lock_path(board).absolute(): board} if board.is_file() else {}
    shared = {}
    for path in map(Path, results_paths):
        if path.is_file():
            lock = results.lock_path(path).absolute()
            if lock in exclusive or os.path.lexists(journal.journal_path(path)):
                exclusive[lock] = path
            else:
                shared[lock] = path
    with contextlib.ExitStack() as stack:
        for lock in sorted(set(shared) | set(exclusive)):
            stack.enter_context(results.file_lock(lock, shared=lock not in exclusive))
            if lock in exclusive:
                journal.recover(exclusive[lock], [out])
        return regenerate(results_paths, out, published_path)
