"""Regenerates the leaderboard tables and plots from result rows.

    python -m benchmark.leaderboard --results=leaderboards/results.jsonl --output_dir=leaderboards/

What is written and how each number is computed: `benchmark.board.leaderboard`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from benchmark.board import leaderboard
from benchmark.cli import run_entry_point, use_folder_tasks


def cli(results_flag: str, output_dir: str, published: str | None, folder_tasks: str = "") -> int:
    """What `python -m benchmark.leaderboard` does with its flag values: regenerates and prints the
    written paths; returns the exit status (see `run_entry_point`)."""
    def action() -> list[Path]:
        use_folder_tasks(folder_tasks)
        paths = [p for p in (results_flag or "").split(",") if p]
        if not paths:
            raise ValueError("--results: expected one or more comma-separated results.jsonl paths")
        return leaderboard.regenerate_board(paths, output_dir, published or None)

    status, written = run_entry_point(action)
    for path in written or ():
        print(path)
    return status


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    sys.exit(cli(f.results, f.output_dir, f.published, f.task))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("results", None, "Comma-separated results.jsonl files.", required=True)
    flags.DEFINE_string("output_dir", "leaderboards", "Where <task>.md/.csv/.html/.png go.")
    flags.DEFINE_string("published", None, "Published-figures CSV (default: "
                        "<output_dir>/published.csv when it exists).")
    flags.DEFINE_string("task", "", "folder:<dir>[,folder:<dir>...]: where folder tasks' folders "
                        "are, for rows that record them elsewhere.")
    app.run(main)
