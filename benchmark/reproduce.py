"""Re-runs one result cell from what its row records and says whether it came out the same.

    python -m benchmark.reproduce --results=runs/cxr/results.jsonl --row=3
    python -m benchmark.reproduce --results=runs/cxr/results.jsonl --task=cxr --method=micle \
        --eval_mode=finetune --label_fraction=10 --seed=0

What is compared and refused: `benchmark.board.reproduce`.
"""
from __future__ import annotations

import os
import sys
import tempfile

if __name__ == "__main__":
    from benchmark import cli

    cli.quiet_start(sys.argv)

from absl import app, flags  # noqa: E402

from baselines import distribute  # noqa: E402
from benchmark import cli  # noqa: E402
from benchmark.board import reproduce  # noqa: E402
from benchmark.harness import runner, tasks  # noqa: E402
from medssl_common.provenance import machine, machine_kind  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: their names are those of
    `benchmark.run`'s, which a test process may import too)."""
    flags.DEFINE_string("results", None, "The results.jsonl holding the row to reproduce.")
    flags.DEFINE_integer("row", None, "Line number (1-based) of the row in --results.")
    flags.DEFINE_string("task", None, "Cell to reproduce (instead of --row): task (a folder task "
                        "by its name, or folder:<dir>, which also says where its folder is).")
    flags.DEFINE_string("method", None, "Cell: the method's name in results.")
    flags.DEFINE_string("preset", None, "Cell: preset (needed only when several presets match).")
    flags.DEFINE_string("eval_mode", None, "Cell: finetune or linear.")
    flags.DEFINE_float("label_fraction", None, "Cell: label percentage, e.g. 10.")
    flags.DEFINE_integer("seed", None, "Cell: seed.")
    flags.DEFINE_string("data_dir", os.path.join("runs", "data"), "Where TFDS builds are stored.")
    flags.DEFINE_string("manual_dir", None, "Real-data folder, if not where the row says it was.")
    flags.DEFINE_string("scratch_dir", None, "Where the re-run writes (default: a new temporary dir).")
    flags.DEFINE_string("tpu_address", None, "TPU address, for rows computed with --strategy=tpu.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    flags.DEFINE_string("method_spec", None, "The row's config.method_spec, when it is not a "
                        "registered method (an import path package.module:Class or saved:<path>): "
                        "naming it here is what allows running that code.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every setting is a --flag")
    if not FLAGS["verbosity"].present:
        cli.quiet_logs()
    if not FLAGS.results:
        sys.exit("error: --results: required (the results.jsonl holding the row)")
    try:
        task = FLAGS.task
        if task and task.startswith(tasks.FOLDER_PREFIX):  # says where the row's folder is
            name = tasks.get_task(task).name
            task = None if FLAGS.row is not None else name
        number, row = reproduce.select_row(FLAGS.results, line=FLAGS.row, task=task, method=FLAGS.method,
                                 preset=FLAGS.preset, eval_mode=FLAGS.eval_mode,
                                 label_fraction=FLAGS.label_fraction, seed=FLAGS.seed)
        where = reproduce.where(FLAGS.results, number)
        scratch = FLAGS.scratch_dir or tempfile.mkdtemp(prefix="reproduce_")
        cfg = reproduce.rerun_config(where, row, data_dir=FLAGS.data_dir, scratch_dir=scratch,
                           manual_dir=FLAGS.manual_dir, tpu_address=FLAGS.tpu_address,
                           progress=cli.progress_enabled(FLAGS.progress),
                           method_spec=FLAGS.method_spec)
        reproduce.check_code(where, row)
        if os.path.exists(os.path.join(scratch, "results.jsonl")):
            raise ValueError(f"--scratch_dir={scratch}: already holds results; give an empty folder")
        strategy = distribute.get_strategy(cfg.strategy, tpu_address=cfg.tpu_address)
        print(f"reproducing {where}: {row['task']} {row['method']} {row['eval_mode']} "
              f"{row['label_fraction'] * 100:g}% seed {row['seed']} into {scratch}")
        if machine_kind(row["machine"]) != machine_kind(machine()):
            print(f"note: computed on {row['machine']}, this machine is {machine()}: byte identity "
                  "is expected only on the same kind of machine")
        if not row["deterministic"]:
            print("note: the row was computed with --nondeterministic: byte identity is not expected")
        reproduce.check_data(where, row, cfg)
        new_rows = runner.run(cfg, strategy)
        comparisons = reproduce.compare(os.path.dirname(os.path.abspath(FLAGS.results)), row, scratch,
                              new_rows[0])
    except cli.user_errors() as e:
        cli.exit_on_error(e)
    differing = reproduce.row_differences(row, new_rows[0])
    print(reproduce.report(comparisons, differing))
    if differing or not all(c.identical for c in comparisons):
        sys.exit("not reproduced")
    print("reproduced")


if __name__ == "__main__":
    define_flags()
    app.run(main)
