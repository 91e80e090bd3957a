"""Figures that put models side by side (notebook 12), on relative depth so that models of different depth align.

Kept apart from `figures` for the same reason as `figures_space`: the earlier steps' records hash the code they
import. Built without pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from axes_lib.compare import METHODS
from axes_lib.figures import METHOD_LABEL, SCALE_COLOR

__all__ = ["MODEL_STYLE", "interventions_by_model", "separation_by_depth"]

#: Line style and marker per model, in the order the models are given (colours stay those of the methods/scales).
MODEL_STYLE = (("-", "o"), ("--", "s"), (":", "^"))


def separation_by_depth(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Figure:
    """Held-out Cohen's d per layer against relative depth, one panel per extraction method, one line per model,
    with each model's shuffled-label null (95th percentile) and its chosen layer marked."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(METHODS), sharey=True)
    for ax, method in zip(axes, METHODS):
        for summary, label, (ls, marker) in zip(summaries, labels, MODEL_STYLE):
            ext = summary["extraction"][method]
            curve = ext["by_layer"]
            line, = ax.plot(curve["depth"], curve["cohens_d"], ls=ls, marker=marker, ms=3, lw=1.5, label=label)
            if curve["null_q95"]:
                ax.plot(curve["depth"], curve["null_q95"], ls=ls, lw=0.9, color="grey")
            ax.errorbar([ext["depth"]], [ext["cohens_d"].mean],
                        yerr=[[ext["cohens_d"].mean - ext["cohens_d"].low], [ext["cohens_d"].high - ext["cohens_d"].mean]],
                        fmt="*", ms=12, color=line.get_color(), mec="k", capsize=3)
        ax.set(title=METHOD_LABEL[method], xlabel="relative depth (layer / last layer)", xlim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Cohen's d, held-out queries")
    axes[-1].legend(fontsize=8, loc="upper left", title="★ chosen layer (95 % CI); grey: shuffled-label null q95",
                    title_fontsize=7)
    return fig


def interventions_by_model(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> Figure:
    """Left: judged assistant-likeness and coherence of additive steering against its scale in projection SDs.
    Right: the gain in assistant-likeness of each capping band (report half, 95 % CI), by model."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    for summary, label, (ls, marker) in zip(summaries, labels, MODEL_STYLE):
        curve = sorted(summary["additive_curve"], key=lambda r: r["scale_sd"])
        for scale, color in SCALE_COLOR.items():
            left.plot([r["scale_sd"] for r in curve], [r[scale] for r in curve], ls=ls, marker=marker, ms=4, color=color,
                      label=f"{label}: {scale.replace('_', '-')}")
    left.set(xlabel="additive scale (projection SDs at the steered layer)", ylabel="judge score (0-10)",
             title="Additive steering", ylim=(0, 10))
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    names = list(dict.fromkeys(f"{b['band']} ({b['positions']})" for s in summaries for b in s["bands"]))
    width = 0.8 / len(summaries)
    for m, (summary, label) in enumerate(zip(summaries, labels)):
        bands = {f"{b['band']} ({b['positions']})": b for b in summary["bands"]}
        xs = [i + (m - (len(summaries) - 1) / 2) * width for i, name in enumerate(names) if name in bands]
        gains = [bands[name]["gain"] for name in names if name in bands]
        right.bar(xs, [g.mean for g in gains], width=width * 0.9, label=label, alpha=0.8,
                  yerr=[[g.mean - g.low for g in gains], [g.high - g.mean for g in gains]], capsize=3)
    right.axhline(0, color="k", lw=0.8)
    right.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    right.set(ylabel="gain in assistant-likeness vs uncapped", title="Capping bands (step 7's percentile)")
    right.legend(fontsize=8)
    return fig
