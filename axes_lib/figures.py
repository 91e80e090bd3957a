"""Figures of the book. Each function takes computed results and returns a matplotlib Figure.

Figures are built without pyplot's global state, so a notebook shows each one once (as the cell's value)
and nothing leaks between calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from axes_lib.io import atomic_write_bytes

__all__ = [
    "METHOD_COLOR",
    "METHOD_LABEL",
    "SCALE_COLOR",
    "Plain",
    "control_strips",
    "controls_by_layer",
    "direction_discovery",
    "direction_overview",
    "format_transfer",
    "gold_scatter",
    "judged_curves",
    "layer_comparison",
    "norm_by_layer",
    "projection_histograms",
    "save",
]

METHOD_LABEL = {"last_token": "last-token", "response_mean": "response-mean"}
METHOD_COLOR = {"last_token": "#1f77b4", "response_mean": "#d62728"}


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure as PNG atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def norm_by_layer(acts: Mapping[str, torch.Tensor]) -> Figure:
    """Mean residual-stream norm per layer for each method's `[n_prompts, n_layers, d_model]` activations (log scale)."""
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    for method, a in acts.items():
        ax.plot(a.norm(dim=-1).mean(0).numpy(), label=METHOD_LABEL.get(method, method), color=METHOD_COLOR.get(method))
    ax.set(xlabel="layer", ylabel="mean ‖h‖", yscale="log", title="Residual-stream norm by layer")
    ax.legend()
    return fig


def direction_overview(directions: Mapping[str, Mapping[int, torch.Tensor]]) -> tuple[Figure, dict[int, float]]:
    """Norm of each method's direction per layer, and the cosine between the methods' directions."""
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    (left, right) = fig.subplots(1, 2)
    for method, d in directions.items():
        layers = sorted(d)
        left.plot(layers, [float(d[i].norm()) for i in layers], label=METHOD_LABEL.get(method, method),
                  color=METHOD_COLOR.get(method))
    left.set(xlabel="layer", ylabel="‖mean(assistant) − mean(other)‖", yscale="log", title="Direction norm")
    left.legend()
    cosines: dict[int, float] = {}
    if len(directions) == 2:
        a, b = directions.values()
        cosines = {i: float(torch.nn.functional.cosine_similarity(a[i], b[i], dim=0)) for i in sorted(set(a) & set(b))}
        right.plot(list(cosines), list(cosines.values()), color="k")
        right.axhline(0, color="grey", lw=0.5)
    right.set(xlabel="layer", ylabel="cosine", ylim=(-0.1, 1.0), title="last-token vs response-mean direction")
    return fig, cosines


def direction_discovery(evals: Mapping[str, Mapping[str, Any]], nulls: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Holdout Cohen's d with bootstrap CI per layer for each method, against the shuffled-label null."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for method, ev in evals.items():
        layers, test = ev["layers"], ev["test"]
        color = METHOD_COLOR.get(method)
        ax.plot(layers, test["cohens_d"], marker="o", ms=3, color=color, label=f"{METHOD_LABEL.get(method, method)} (holdout)")
        ax.fill_between(layers, test["cohens_d_low"], test["cohens_d_high"], color=color, alpha=0.2)
        ax.axvline(ev["best_layer"], color=color, ls=":", lw=1)
        if method in nulls:
            ax.plot(nulls[method]["layers"], nulls[method]["cohens_d_q95"], color=color, ls="--", lw=1,
                    label=f"{METHOD_LABEL.get(method, method)}: shuffled-label null, 95th pct")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="layer", ylabel="Cohen's d (holdout)", title="Direction discovery: separation of held-out prompts")
    ax.legend(fontsize=8)
    return fig


def layer_comparison(evals: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Figure:
    """Holdout accuracy per layer: split by query vs split by persona, for each method."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    styles = {"query_split": "-", "persona_split": "--"}
    for method, by_split in evals.items():
        for split, ev in by_split.items():
            ax.plot(ev["layers"], ev["test"]["balanced_accuracy"], ls=styles.get(split, "-"),
                    color=METHOD_COLOR.get(method), label=f"{METHOD_LABEL.get(method, method)}, {split.replace('_', ' ')}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(xlabel="layer", ylabel="balanced accuracy (holdout)", ylim=(0.4, 1.02),
           title="Held-out queries vs held-out personas")
    ax.legend(fontsize=8)
    return fig


def projection_histograms(panels: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per (method, layer): holdout projections by persona kind, with the train threshold."""
    fig = Figure(figsize=(5 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        bins = np.histogram_bin_edges(np.concatenate([panel["assistant"], panel["other"]]), bins=30)
        ax.hist(panel["other"], bins=bins, alpha=0.6, label="non-assistant personas", color="#ff7f0e")
        ax.hist(panel["assistant"], bins=bins, alpha=0.6, label="assistant personas", color="#2ca02c")
        ax.axvline(panel["threshold"], color="k", ls="--", lw=1, label="threshold (fitted on train)")
        ax.set(xlabel="projection on the unit direction", ylabel="holdout prompts",
               title=f"{METHOD_LABEL.get(panel['method'], panel['method'])}, layer {panel['layer']}")
        ax.legend(fontsize=7)
    return fig


SCALE_COLOR = {"assistant_likeness": "#2ca02c", "coherence": "#1f77b4"}


def judged_curves(panels: Sequence[Mapping[str, Any]], title: str) -> Figure:
    """Judged assistant-likeness and coherence (mean, 95 % CI) against strength, one panel per sweep.

    A panel holds `rows` (from `evaluation.summarise`), the strength field `x`, `xlabel`, `title`, and
    optionally `xscale` ("symlog" for scales spanning decades), `baseline` and `reference`
    ({scale: value}: dotted = unsteered answers, dashed = assistant personas' answers) and `sweet_spot`
    (an x value: a vertical line and a star on both curves).
    """
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(5.2 * len(panels), 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        rows = sorted(panel["rows"], key=lambda r: r[panel["x"]])
        xs = np.array([r[panel["x"]] for r in rows], dtype=float)
        for scale, color in SCALE_COLOR.items():
            mean = np.array([r[f"{scale}_mean"] for r in rows], dtype=float)
            low = np.array([r[f"{scale}_low"] for r in rows], dtype=float)
            high = np.array([r[f"{scale}_high"] for r in rows], dtype=float)
            ax.errorbar(xs, mean, yerr=[mean - low, high - mean], marker="o", ms=3, color=color, capsize=2, lw=1.5)
            ax.fill_between(xs, low, high, color=color, alpha=0.15, lw=0)
            if panel.get("baseline") and scale in panel["baseline"]:
                ax.axhline(panel["baseline"][scale], color=color, ls=":", lw=1)
            if panel.get("reference") and scale in panel["reference"]:
                ax.axhline(panel["reference"][scale], color=color, ls="--", lw=0.8, alpha=0.7)
            if panel.get("sweet_spot") is not None and panel["sweet_spot"] in xs:
                i = int(np.flatnonzero(xs == panel["sweet_spot"])[0])
                ax.plot([xs[i]], [mean[i]], marker="*", ms=14, color=color, mec="k", mew=0.6, ls="none")
        if panel.get("sweet_spot") is not None:
            ax.axvline(panel["sweet_spot"], color="k", ls="--", lw=0.8)
        if panel.get("xscale") == "symlog":
            positive = xs[xs > 0]
            ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
        if xs.size:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            pad = 0.05 * (xs.max() - xs.min()) if xs.max() > xs.min() else 1.0
            if panel.get("xscale") != "symlog":
                ax.set_xlim(xs.min() - pad, xs.max() + pad)
        ax.set(xlabel=panel["xlabel"], ylabel="judge score (0-10)", ylim=(-0.3, 10.3), title=panel["title"])
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=k.replace("_", "-")) for k, c in SCALE_COLOR.items()]
    handles += [Line2D([], [], color="grey", ls=":", lw=1, label="unsteered answers"),
                Line2D([], [], color="grey", ls="--", lw=0.8, label="assistant personas' answers"),
                Line2D([], [], color="k", ls="--", lw=0.8, marker="*", ms=10, mfc="w", label="sweet spot")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


def gold_scatter(rows: Sequence[Mapping[str, Any]], scores: Sequence[Any], title: str, seed: int = 0) -> Figure:
    """A judge's scores (`Score` objects) against the gold labels of the same answers, one panel per scale,
    coloured by the labeller's failure kind; integer labels are jittered so ties stay visible."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(seed)
    kinds = sorted({r["failure"] for r in rows})
    palette = dict(zip(kinds, ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")))
    for ax, scale in zip(axes, ("assistant_likeness", "coherence")):
        for kind in kinds:
            pick = [(r[scale], getattr(s, scale)) for r, s in zip(rows, scores) if r["failure"] == kind]
            gold = np.array([g for g, _ in pick], dtype=float) + rng.uniform(-0.25, 0.25, len(pick))
            ax.scatter(gold, [j for _, j in pick], s=14, alpha=0.75, color=palette[kind], label=kind.replace("_", " "))
        ax.plot([0, 10], [0, 10], color="grey", lw=0.8, ls=":")
        ax.set(xlabel=f"gold label ({scale.replace('_', '-')})", ylabel="judge score", xlim=(-0.6, 10.6),
               ylim=(-0.3, 10.3), title=scale.replace("_", "-"))
    axes[1].legend(title="labelled failure", fontsize=8, title_fontsize=8, loc="upper left")
    fig.suptitle(title)
    return fig


def control_strips(grid: Sequence[Sequence[Mapping[str, Any]]], title: str, seed: int = 0) -> Figure:
    """One effect per direction as dots on a line, the axis highlighted: a row of panels per intervention.

    Each panel holds `title`, `xlabel`, `controls` (the control directions' values: grey dots, jittered
    vertically), `axis` (the axis's value: a red diamond) and optionally `axis_ci` ((low, high): its bar).
    """
    from matplotlib.lines import Line2D

    n_rows, n_cols = len(grid), max(len(row) for row in grid)
    fig = Figure(figsize=(3.8 * n_cols, 1.9 * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    rng = np.random.default_rng(seed)
    for r, row in enumerate(grid):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(row):
                ax.set_axis_off()
                continue
            panel = row[c]
            controls = np.asarray(panel["controls"], dtype=float)
            ax.scatter(controls, rng.uniform(-0.25, 0.25, controls.size), s=18, color="0.55", alpha=0.8, zorder=2)
            ci = panel.get("axis_ci")
            if ci is not None:
                ax.plot(list(ci), [0, 0], color="#c44e52", lw=2.5, alpha=0.5, zorder=3)
            ax.plot([panel["axis"]], [0], marker="D", ms=8, color="#c44e52", mec="k", mew=0.6, zorder=4)
            ax.axvline(0, color="k", lw=0.8, ls=":")
            ax.set(ylim=(-0.6, 0.6), yticks=[], xlabel=panel["xlabel"], title=panel["title"])
    handles = [Line2D([], [], marker="o", ls="none", color="0.55", label="random directions"),
               Line2D([], [], marker="D", ls="none", color="#c44e52", mec="k", label="the axis (bar: 95 % CI)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(title)
    return fig


class Plain(str):
    """A string that displays without quotes, for glued words and formatted numbers in the book's prose."""

    def __repr__(self) -> str:
        return str(self)

    @classmethod
    def list(cls, items: Sequence[Any]) -> Plain:
        """`a, b and c`: a list that reads as prose (and that the book's text role keeps as written)."""
        words = [str(x) for x in items]
        return cls(", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words))


def _per_method_axes(n: int, title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(5.5 * n, 3.8), layout="constrained")
    fig.suptitle(title)
    return fig, fig.subplots(1, n, squeeze=False)[0]


def controls_by_layer(panels: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Per method: the axis's holdout AUROC per layer against its controls (each a curve `{label: [L]}`)."""
    fig, axes = _per_method_axes(len(panels), "The axis against its controls (holdout AUROC)")
    for ax, (method, panel) in zip(axes, panels.items()):
        ax.plot(panel["layers"], panel["axis"], color=METHOD_COLOR.get(method), lw=2, label="assistant axis")
        for (label, curve), ls in zip(panel["controls"].items(), ["--", ":", "-.", (0, (1, 3))]):
            ax.plot(panel["layers"], curve, color="grey", ls=ls, lw=1.2, label=label)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(xlabel="layer", ylabel="AUROC", ylim=(0.3, 1.02), title=METHOD_LABEL.get(method, method))
        ax.legend(fontsize=7)
    return fig


def format_transfer(panels: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Per method: AUROC per layer of the assistant contrast under each prompt wording (`{label: [L]}`)."""
    fig, axes = _per_method_axes(len(panels), "Does the separation survive another prompt format? (held-out queries)")
    for ax, (method, panel) in zip(axes, panels.items()):
        for label, curve in panel["curves"].items():
            ax.plot(panel["layers"], curve, marker="o", ms=2.5, lw=1.2, label=label)
        ax.axvline(panel["best_layer"], color="k", ls=":", lw=1)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(xlabel="layer", ylabel="AUROC", ylim=(0, 1.02), title=METHOD_LABEL.get(method, method))
        ax.legend(fontsize=7)
    return fig
