"""The result table a run prints: primary metric per eval mode × label fraction × test set, mean ±
std over seeds, beside the control's (`random_init`: same backbone, no pretraining) and the
method's difference to it with a paired patient-level bootstrap 95% CI, all re-scored from the
prediction files by the board's rules (`rules`); distill cells also beside their teachers."""
from __future__ import annotations

import collections
import os
import warnings

from benchmark.board import rules
from benchmark.harness import metrics, results, scoring

NO_CONTROL = "—"
DIFFERENCE_NOTE = ("difference = method - control, mean over the seeds both ran (n); 95% CI from a "
                   "paired patient-level bootstrap\n(each replicate resamples the test patients "
                   "once for both methods and all seeds): test-sample uncertainty only; the ± "
                   "columns show the spread over seeds")


def summary_table(rows: list[dict], control_rows: list[dict] = (), *, output_dir: str) -> str:
    """A plain-text table of `rows` (one task and method) beside `control_rows` (its control's rows
    of the same grid; none: "—"), every number re-scored from the prediction files under
    `output_dir` by the board's rules (`rules.rescored_row`). A row whose stored metrics disagree
    with its files is left out with a `rules.LeftOutRowWarning` naming its line in
    `<output_dir>/results.jsonl`."""
    rows, control_rows = _rescored(rows, output_dir), _rescored(control_rows, output_dir)
    cells = collections.defaultdict(list)
    for row in rows:
        cells[(row["task"], row["method"], row["eval_mode"], row["label_fraction"])].append(row)
    controls = collections.defaultdict(list)
    for row in control_rows:
        controls[(row["task"], row["eval_mode"], row["label_fraction"])].append(row)
    control_names = sorted({r["method"] for r in control_rows})
    lines = [f"{'task':<6} {'method':<12} {'eval':<9} {'labels':>7}  {'test set':<16} "
             f"{'metric':<10} {'method':<21} {'control':<21} difference [paired 95% CI]"]
    for (task, method, mode, fraction), members in sorted(cells.items()):
        others = controls.get((task, mode, fraction), [])
        for test_set in ("in_distribution", "shifted"):
            results_of = [r["metrics"][test_set] for r in members if test_set in r["metrics"]]
            if not results_of:
                continue
            lines.append(_line((task, method, mode, fraction), test_set, results_of[0]["primary"],
                               members, others, output_dir))
    if control_names:
        lines += ["", f"control: {', '.join(control_names)} (the same backbone, no pretraining)",
                  DIFFERENCE_NOTE]
    return "\n".join(lines + _teacher_lines(cells, output_dir))


def _line(cell: tuple, test_set: str, primary: str, members: list[dict], others: list[dict],
          output_dir: str) -> str:
    """One table line: a cell's (task, method, eval mode, fraction) rows on `test_set` beside
    `others` (the control's or the teacher's) and the paired difference to them."""
    task, method, mode, fraction = cell
    return (f"{task:<6} {method[:12]:<12} {mode:<9} {fraction * 100:>6g}%  {test_set:<16} "
            f"{primary[:10]:<10} {_seed_summary(members, test_set, primary):<21} "
            f"{_seed_summary(others, test_set, primary):<21} "
            f"{_shown(_difference(primary, test_set, members, others, output_dir))}")


def _teacher_lines(cells: dict, output_dir: str) -> list[str]:
    """Each distill cell's student beside its teacher (the same method's finetune rows of the
    label fraction) and their paired difference; [] without distill rows."""
    lines = []
    for (task, method, mode, fraction), members in sorted(cells.items()):
        if not results.is_distill_mode(mode):
            continue
        teachers = cells.get((task, method, "finetune", fraction), [])
        for test_set in ("in_distribution", "shifted"):
            if not any(test_set in r["metrics"] for r in members):
                continue
            primary = next(r["metrics"][test_set]["primary"] for r in members if test_set in r["metrics"])
            lines.append(_line((task, method, mode, fraction), test_set, primary, members, teachers,
                               output_dir))
    if not lines:
        return []
    header = (f"{'task':<6} {'method':<12} {'eval':<9} {'labels':>7}  {'test set':<16} "
              f"{'metric':<10} {'student':<21} {'teacher':<21} difference [paired 95% CI]")
    return ["", "distillation: the student beside its teacher (the cell's fine-tuned model, the "
            "finetune rows above)", header] + lines


def _read(output_dir: str):
    def read(row: dict, name: str) -> tuple:
        return results.read_predictions(os.path.join(output_dir,
                                                     row["metrics"][name]["predictions"]))
    return read


def _rescored(rows: list[dict], output_dir: str) -> list[dict]:
    """`rows` re-scored from their files; those whose stored metrics disagree are left out."""
    from benchmark.harness.tasks import task_of_row  # imports TensorFlow: only when there is a table

    path = os.path.join(output_dir, "results.jsonl")
    line_of = {results.cell_key(r): n for n, _, r in results.ResultsStore(path).scan()[0]}
    kept = []
    for row in rows:
        key = results.cell_key(row)
        where = f"{path}:{line_of[key]}" if key in line_of else f"{path}: cell {key}"
        try:
            kept.append(rules.rescored_row(row, task_of_row(row), _read(output_dir), where))
        except rules.StoredMetricsMismatch as e:
            warnings.warn(f"{e}; the row is left out of the table", rules.LeftOutRowWarning,
                          stacklevel=3)
    return kept


def _seed_summary(rows: list[dict], test_set: str, metric: str) -> str:
    values = [r["metrics"][test_set]["values"].get(metric) for r in rows
              if test_set in r["metrics"]]
    values = [v for v in values if v is not None]
    if not values:
        return NO_CONTROL
    mean, std = metrics.summarise_seeds(values)
    return f"{mean:.3f} ± {std:.3f} (n={len(values)})"


def _difference(metric: str, test_set: str, rows: list[dict],
                control_rows: list[dict], output_dir: str) -> metrics.PairedDifference | None:
    from benchmark.harness.tasks import task_of_row  # imports TensorFlow: only when there is a table

    if not control_rows:
        return None
    task = task_of_row(rows[0])
    return scoring.control_difference(task.kind, task.class_names, metric, test_set, rows,
                                      control_rows, _read(output_dir),
                                      bootstrap_samples=rules.bootstrap_samples(rows[0]["preset"]))


def _shown(d: metrics.PairedDifference | None) -> str:
    if d is None:
        return NO_CONTROL
    return f"{d.value:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}] (n={d.pairs})"


def _pretrain_line(summary: dict | None) -> str:
    if summary is None:
        return "not recorded (row written before pretraining summaries)"
    steps, curve = summary["steps"], summary["curve"]
    if curve is None:
        return f"{'steps not recorded' if steps is None else f'{steps} steps'}, no contrastive curve"
    first, last, chance = curve["first"], curve["last"], curve["chance"]

    def change(key: str, fmt: str) -> str:
        shown = f"{first[key]:{fmt}} (step {first['step']}) → {last[key]:{fmt}} (step {last['step']})"
        return shown + (f", chance {chance[key]:{fmt}}" if key in chance else "")

    if first is None or last is None:
        return f"{steps} steps, no point logged"
    return (f"{steps} steps, batch {curve['batch_size']}; loss {change('loss', '.3f')}; "
            f"contrastive accuracy {change('contrast_acc', '.3f')}")


def pretrain_lines(rows: list[dict]) -> list[str]:
    """One line per task and method: its pretraining (steps; loss and contrastive accuracy at the
    first and last logged step, and their chance levels), from the rows' `pretrain_summary` (the
    last row's, all rows of a stage share it)."""
    latest = {}
    for row in rows:
        latest[(row["task"], row["method"])] = row.get("pretrain_summary")
    lines = []
    for (task, method), summary in sorted(latest.items()):
        stage = f" ({summary['method']})" if summary and summary["method"] != method else ""
        lines.append(f"pretraining {task}/{method}{stage}: {_pretrain_line(summary)}")
    return lines
