"""Precision parity: bfloat16 vs float32 replicates of one configuration, per cell, against their
spread (what is compared and refused: `benchmark.board.parity`).

    python -m benchmark.parity --results=runs/parity/results.jsonl
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from benchmark import cli

    cli.quiet_start(sys.argv)

from absl import app, flags  # noqa: E402

from benchmark import cli  # noqa: E402
from benchmark.board import parity  # noqa: E402


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every setting is a --flag")
    try:
        print(parity.report(flags.FLAGS.results or []))
    except (ValueError, OSError) as e:
        cli.exit_on_error(e)


if __name__ == "__main__":
    flags.DEFINE_list("results", None, "results.jsonl files holding the replicates of both precisions.")
    app.run(main)
