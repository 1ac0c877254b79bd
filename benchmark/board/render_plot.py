"""A task's label-efficiency plot (PNG, byte-reproducible): the primary metric over label
fractions, and a second panel with each line's paired difference to the control."""
from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

from benchmark.board.lines import (
    CONTROL_METHOD,
    TEST_SET_TITLES,
    SummaryRow,
    TaskInfo,
    format_fraction,
    several_backbones,
    several_precisions,
)
from benchmark.board.published import published_curves
from benchmark.harness import results

PLOT_DPI = 100
PUBLISHED_GREY = "#8c8c8c"  # published curves on the plot; no colour of our runs is grey
PANEL_SIZE = (5.0, 3.4)  # one eval mode's metric panel; its difference panel is 2/3 as high
EVAL_MODE_MARKERS = {"finetune": "o", "linear": "s", "distill": "^"}


def _plot_text(text: str) -> str:
    """`text` safe for Matplotlib labels ($ would start mathtext)."""
    return re.sub(r"[\r\n]+", " ", text).replace("$", r"\$")


def method_colours(keys: list[tuple]) -> dict[tuple, str]:
    """One colour per method key (in sorted order): the 18 non-grey colours of Matplotlib's
    tab20, dark shades first, then (beyond 18 methods) the same again."""
    from matplotlib import colormaps, colors

    tab20 = [colors.to_hex(c) for c in colormaps["tab20"].colors]
    palette = [c for c in tab20[0::2] + tab20[1::2] if c not in ("#7f7f7f", "#c7c7c7")]
    return {k: palette[i % len(palette)] for i, k in enumerate(sorted(keys))}


def _method_key(line: SummaryRow) -> tuple:
    """What one colour stands for: everything of a line but its eval mode and label fraction."""
    return (line.synthetic, line.method, line.backbone or "", line.preset, line.precision or "")


def render_plot(task: TaskInfo, lines: list[SummaryRow], path: str | os.PathLike,
                published: list[dict] = ()) -> None:
    """Writes the label-efficiency PNG of `task`: one column of panels per eval mode; above, the
    primary metric vs label fraction (log x) with its CI band shaded and published label-fraction
    curves (`published_curves`) as labelled grey markers, never in our colours; below, each line's
    difference to the control (`SummaryRow.differences`) with its paired 95% CI as error bars,
    the series shifted slightly along x, each labelled with its method at its last point. One
    colour per method (`method_colours`), one line style per test set (in-distribution solid,
    shifted dashed), one marker per eval mode; the legend sits below the panels, off the data."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    modes = sorted({l.eval_mode for l in lines}, key=lambda m: (m not in EVAL_MODE_MARKERS, m)) or [""]
    styles = {t: ("-" if i == 0 else "--") for i, t in enumerate(task.test_sets)}
    colour = method_colours(list({_method_key(l) for l in lines}))
    curves = published_curves(task, list(published))
    fractions = sorted({l.label_fraction for l in lines}
                       | {x for _, _, pts in curves for x, _ in pts}) or [0.01, 0.1, 1.0]
    legend_rows = math.ceil((len(colour) + len(task.test_sets) + bool(curves)) / 2)
    width, height = PANEL_SIZE[0] * len(modes), PANEL_SIZE[1] * 5 / 3 + 0.25 * legend_rows + 0.4
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(2, len(modes), squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
        for col, mode in enumerate(modes):
            ax, dax = axes[0][col], axes[1][col]
            series: dict[tuple, list[SummaryRow]] = {}
            for l in lines:
                if l.eval_mode == mode:
                    series.setdefault(_method_key(l), []).append(l)
            for i, (key, points) in enumerate(sorted(series.items())):
                points = sorted(points, key=lambda l: l.label_fraction)
                x = [p.label_fraction for p in points]
                for t in task.test_sets:
                    stats = [dict(p.test_sets)[t] for p in points]
                    y = [math.nan if s.mean is None else s.mean for s in stats]
                    lo = [math.nan if s.ci_low is None else s.ci_low for s in stats]
                    hi = [math.nan if s.ci_high is None else s.ci_high for s in stats]
                    ax.plot(x, y, linestyle=styles[t], marker=EVAL_MODE_MARKERS.get(mode.split(":")[0], "o"),
                            markersize=4, color=colour[key])
                    ax.fill_between(x, lo, hi, color=colour[key], alpha=0.12, linewidth=0)
                _plot_differences(dax, task, points, colour[key], styles,
                                  shift=1.04 ** (i % 5 - 2), label=_plot_text(key[1]))
            for label, t, points in curves:
                x, y = zip(*points)
                ax.plot(x, y, linestyle=styles[t], linewidth=0.6, marker="x", markersize=4,
                        color=PUBLISHED_GREY)
                ax.annotate(_plot_text(label), (x[-1], y[-1]), xytext=(3, 0),
                            textcoords="offset points", fontsize=5, color=PUBLISHED_GREY,
                            va="center")
            for a in (ax, dax):
                a.set_xscale("log")
                a.xaxis.set_major_locator(FixedLocator(fractions))
                a.set_xticklabels([format_fraction(f) for f in fractions])
                a.xaxis.set_minor_locator(NullLocator())
                a.set_xlim(min(fractions) / 1.6, max(fractions) * 1.6)
                a.set_xlabel("label fraction (log scale)")
                a.grid(True, alpha=0.3)
            if not series:
                ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center")
            ax.set_ylabel(_plot_text(task.primary_metric))
            ax.set_title(_plot_text(f"{mode or 'no runs'}: {task.primary_metric}"), fontsize="medium")
            dax.axhline(0.0, color="black", linewidth=0.8)
            if not any(d is not None for ps in series.values() for p in ps for _, d in p.differences):
                dax.text(0.5, 0.5, f"no {CONTROL_METHOD} rows on the same backbone and cells",
                         transform=dax.transAxes, ha="center", va="center", fontsize="small")
            dax.set_ylabel(_plot_text(f"Δ vs {CONTROL_METHOD}"))
            dax.set_title(_plot_text(f"{mode}: difference to {CONTROL_METHOD} (same backbone; "
                                     "paired 95% CI)"), fontsize="small")
        handles, labels = [], []
        for key in sorted(colour):
            synthetic, method, backbone, preset, precision = key
            shown = f"{backbone or 'n/a'}, " if several_backbones(lines) else ""
            shown += f"{precision or 'n/a'}, " if several_precisions(lines) else ""
            handles.append(Line2D([], [], color=colour[key], linewidth=2))
            labels.append(_plot_text(f"{method} ({shown}{preset}{', SYNTHETIC' if synthetic else ''})"))
        for t in task.test_sets:
            handles.append(Line2D([], [], color="black", linestyle=styles[t]))
            labels.append(TEST_SET_TITLES.get(t, t))
        if curves:
            handles.append(Line2D([], [], color=PUBLISHED_GREY, marker="x", linewidth=0.6))
            labels.append("published (not re-run; label = method [source])")
        synthetic_note = " (includes SYNTHETIC data)" if any(l.synthetic for l in lines) else ""
        fig.suptitle(_plot_text(f"{task.name}: {task.primary_metric} vs label fraction"
                                f"{synthetic_note}"))
        legend_height = (0.25 * legend_rows + 0.3) / height
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, legend_height, 1, 0.97))
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PLOT_DPI,
                    metadata={"Software": None, "Title": None, "Author": None,
                              "Description": None})
    results.write_bytes(Path(path), png.getvalue())


def _plot_differences(ax, task: TaskInfo, points: list[SummaryRow], colour, styles: dict,
                      shift: float, label: str) -> None:
    """One series' differences to the control on `ax`: per test set, the points that have one,
    with their CI as error bars, at x multiplied by `shift` (and by 1.02 per test set); `label`
    written beside the series' last point."""
    for j, t in enumerate(task.test_sets):
        found = [(p.label_fraction * shift * 1.02 ** j, dict(p.differences).get(t))
                 for p in points]
        found = [(x, d) for x, d in found if d is not None]
        if not found:
            continue
        x = [x for x, _ in found]
        y = [d.value for _, d in found]
        below = [max(0.0, d.value - d.ci_low) for _, d in found]
        above = [max(0.0, d.ci_high - d.value) for _, d in found]
        ax.errorbar(x, y, yerr=[below, above], linestyle=styles[t], marker="o", markersize=3,
                    color=colour, capsize=2, linewidth=1)
        ax.annotate(label, (x[-1], y[-1]), xytext=(4, 0), textcoords="offset points",
                    fontsize=5, color=colour, va="center")
