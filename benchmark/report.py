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
