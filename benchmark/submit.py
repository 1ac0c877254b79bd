"""Validates a leaderboard submission, re-scores its predictions and merges it.

    python -m benchmark.submit --submission=DIR --leaderboard_dir=leaderboards/ \
        [--results=leaderboards/results.jsonl]

What a submission holds and every check: `benchmark.board.submit`.
"""
from __future__ import annotations

import sys

from benchmark.board import submit
from benchmark.cli import run_entry_point, use_folder_tasks


def cli(submission: str, leaderboard_dir: str, results_path: str | None,
        folder_tasks: str = "") -> int:
    """What `python -m benchmark.submit` does with its flag values; returns the exit status (a
    rejection, data or OS error is one line on stderr, see `cli.run_entry_point`)."""
    def action():
        use_folder_tasks(folder_tasks)
        return submit.submit(submission, leaderboard_dir, results_path)

    status, stored = run_entry_point(action)
    if stored is not None:
        methods = sorted({r["method"] for r in stored})
        print(f"accepted {len(stored)} rows for {', '.join(methods)}; leaderboard regenerated in "
              f"{leaderboard_dir}")
    return status


def main(argv):
    """Entry point: flags are defined here only."""
    del argv
    from absl import flags

    f = flags.FLAGS
    sys.exit(cli(f.submission, f.leaderboard_dir, f.results, f.task))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("submission", None, "Submission directory.", required=True)
    flags.DEFINE_string("leaderboard_dir", "leaderboards", "Leaderboard directory (tables, "
                        "published.csv).")
    flags.DEFINE_string("results", None, "Leaderboard results file (default "
                        "<leaderboard_dir>/results.jsonl).")
    flags.DEFINE_string("task", "", "folder:<dir>[,folder:<dir>...]: where folder tasks' folders "
                        "are, for rows that record them elsewhere.")
    app.run(main)
