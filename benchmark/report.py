"""The result table a run prints: primary metric per eval mode × label fraction, mean ± std over
seeds, in-distribution and shifted side by side."""
from __future__ import annotations

import collections

from benchmark import metrics


def summary_table(rows: list[dict]) -> str:
    """A plain-text table of `rows` (one task and method)."""
    cells = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
        for test_set, result in row["metrics"].items():
            value = result["values"].get(result["primary"])
            if value is not None:
                cells[(row["task"], row["method"], row["eval_mode"], row["label_fraction"])][
                    (test_set, result["primary"])].append(value)
    lines = [f"{'task':<6} {'method':<12} {'eval':<9} {'labels':>7}  "
             f"{'in-distribution':<26} {'shifted':<26}"]
    for (task, method, mode, fraction), by_set in sorted(cells.items()):
        shown = []
        for test_set in ("in_distribution", "shifted"):
            found = [(name, v) for (s, name), v in by_set.items() if s == test_set]
            if not found:
                shown.append(f"{'-':<26}")
                continue
            name, values = found[0]
            mean, std = metrics.summarise_seeds(values)
            shown.append(f"{name} {mean:.3f} ± {std:.3f} (n={len(values)})".ljust(26))
        lines.append(f"{task:<6} {method[:12]:<12} {mode:<9} {fraction * 100:>6g}%  {shown[0]} {shown[1]}")
    return "\n".join(lines)


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
