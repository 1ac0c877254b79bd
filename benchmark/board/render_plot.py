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


PLOT_SIZE = (7.5, 4.8)


def _plot_text(text: str) -> str:
    """`text` safe for Matplotlib labels ($ would start mathtext)."""
    return re.sub(r"[\r\n]+", " ", text).replace("$", r"\$")


def render_plot(task: TaskInfo, lines: list[SummaryRow], path: str | os.PathLike,
                published: list[dict] = ()) -> None:
    """Writes the label-efficiency PNG of `task`: primary metric vs label fraction (log x), one
    colour per (method, backbone, eval_mode, preset[, synthetic]), in-distribution solid, shifted dashed, CI
    band shaded; published label-fraction curves (`published_curves`) as labelled grey markers,
    never in our colours. A second panel below shows each line's difference to the control
    (`SummaryRow.differences`) in the same colour and line style, with its paired 95% CI as error
    bars (series shifted slightly along x so that their bars do not hide each other)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    series: dict[tuple, list[SummaryRow]] = {}
    for l in lines:
        series.setdefault((l.synthetic, l.method, l.backbone, l.eval_mode, l.preset, l.precision),
                          []).append(l)
    styles = {t: ("-" if i == 0 else "--") for i, t in enumerate(task.test_sets)}
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig = Figure(figsize=(PLOT_SIZE[0], PLOT_SIZE[1] * 1.7))
        ax, dax = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
        colours = [c for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
                   if matplotlib.colors.to_hex(c) != "#7f7f7f"]  # grey: published curves
        handles, labels = [], []
        fractions = sorted({l.label_fraction for l in lines})
        for i, (key, points) in enumerate(sorted(series.items())):
            synthetic, method, backbone, eval_mode, preset, precision = key
            colour = colours[i % len(colours)]
            points = sorted(points, key=lambda l: l.label_fraction)
            x = [p.label_fraction for p in points]
            for t in task.test_sets:
                stats = [dict(p.test_sets)[t] for p in points]
                y = [math.nan if s.mean is None else s.mean for s in stats]
                lo = [math.nan if s.ci_low is None else s.ci_low for s in stats]
                hi = [math.nan if s.ci_high is None else s.ci_high for s in stats]
                ax.plot(x, y, linestyle=styles[t], marker="o", color=colour)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
            _plot_differences(dax, task, points, colour, styles, shift=1.04 ** (i % 5 - 2))
            handles.append(Line2D([], [], color=colour, marker="o"))
            shown = f"{backbone or 'n/a'}, " if several_backbones(lines) else ""
            shown += f"{precision or 'n/a'}, " if several_precisions(lines) else ""
            labels.append(_plot_text(f"{method} ({shown}{eval_mode}, {preset}"
                                     f"{', SYNTHETIC' if synthetic else ''})"))
        curves = published_curves(task, list(published))
        for label, t, points in curves:
            x, y = zip(*points)
            ax.plot(x, y, linestyle=styles[t], linewidth=0.6, marker="x", markersize=4,
                    color=PUBLISHED_GREY)
            ax.annotate(_plot_text(label), (x[-1], y[-1]), xytext=(3, 0),
                        textcoords="offset points", fontsize=5, color=PUBLISHED_GREY,
                        va="center")
        if curves:
            handles.append(Line2D([], [], color=PUBLISHED_GREY, marker="x", linewidth=0.6))
            labels.append("published (not re-run; label = method [source])")
            fractions = sorted(set(fractions) | {x for _, _, pts in curves for x, _ in pts})
        for t in task.test_sets:
            handles.append(Line2D([], [], color="black", linestyle=styles[t]))
            labels.append(TEST_SET_TITLES.get(t, t))
        ax.set_xscale("log")
        if fractions:
            ax.xaxis.set_major_locator(FixedLocator(fractions))
            ax.set_xticklabels([format_fraction(f) for f in fractions])
            ax.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)
        else:
            ax.set_xlim(0.005, 1.5)
            ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("label fraction (log scale)")
        ax.set_ylabel(_plot_text(task.primary_metric))
        synthetic_note = " (includes SYNTHETIC data)" if any(l.synthetic for l in lines) else ""
        ax.set_title(_plot_text(f"{task.name}: {task.primary_metric} vs label fraction"
                                f"{synthetic_note}"))
        ax.grid(True, alpha=0.3)
        ax.legend(handles, labels, fontsize="small", loc="best")
        dax.set_xscale("log")
        dax.set_xlim(ax.get_xlim())
        dax.xaxis.set_major_locator(FixedLocator(fractions or [0.01, 0.1, 1.0]))
        dax.set_xticklabels([format_fraction(f) for f in (fractions or [0.01, 0.1, 1.0])])
        dax.xaxis.set_minor_locator(NullLocator())
        dax.axhline(0.0, color="black", linewidth=0.8)
        if not any(d is not None for l in lines for _, d in l.differences):
            dax.text(0.5, 0.5, f"no {CONTROL_METHOD} rows on the same backbone and cells",
                     transform=dax.transAxes, ha="center", va="center")
        dax.set_xlabel("label fraction (log scale)")
        dax.set_ylabel(_plot_text(f"Δ {task.primary_metric} vs {CONTROL_METHOD}"))
        dax.set_title(_plot_text(f"difference to {CONTROL_METHOD} (same backbone; paired 95% CI, "
                                 "seeds paired)"), fontsize="medium")
        dax.grid(True, alpha=0.3)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=PLOT_DPI,
                    metadata={"Software": None, "Title": None, "Author": None,
                              "Description": None})
    results.write_bytes(Path(path), png.getvalue())


def _plot_differences(ax, task: TaskInfo, points: list[SummaryRow], colour, styles: dict,
                      shift: float) -> None:
    """One series' differences to the control on `ax`: per test set, the points that have one,
    with their CI as error bars, at x multiplied by `shift` (and by 1.02 per test set)."""
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
        ax.errorbar(x, y, yerr=[below, above], linestyle=styles[t], marker="o", markersize=4,
                    color=colour, capsize=3, linewidth=1)
