"""Figures of persona space, drift over a conversation and the costs of steering (steps 10 and 11).

Kept apart from `figures` (steps 1-9) so that the earlier steps' records, which hash the library code they
import, stay valid when these change. Built without pyplot's global state, like `figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["FAMILY_COLOR", "cost_panels", "drift_trajectories", "pc1_alignment", "role_map", "role_ranking"]

FAMILY_COLOR = {"assistant": "#d62728", "professional": "#ff7f0e", "everyday": "#2ca02c", "fantastical": "#9467bd",
                "emotional": "#1f77b4", "adversarial": "#7f7f7f"}


def pc1_alignment(layers: Sequence[int], curves: Mapping[str, Sequence[float]], null_q95: Sequence[float],
                  explained: Sequence[float], axis_layer: int | None = None) -> Figure:
    """|cos(PC1, axis)| per layer for each axis (`curves`), the random-role-set null's 95th percentile, and
    the share of variance PC1 explains (right axis)."""
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for (label, curve), color in zip(curves.items(), ["#d62728", "#1f77b4", "#2ca02c"]):
        ax.plot(layers, curve, marker="o", ms=3, lw=1.6, color=color, label=label)
    ax.plot(layers, null_q95, color="grey", ls="--", lw=1.2, label="random role sets, 95th percentile")
    if axis_layer is not None:
        ax.axvline(axis_layer, color="k", ls=":", lw=1)
    ax.set(xlabel="layer", ylabel="|cos(PC1, axis)|", ylim=(0, 1.02), title="Is the assistant axis the first component of persona space?")
    twin = ax.twinx()
    twin.bar(layers, explained, color="#cccccc", alpha=0.5, width=0.6, zorder=0)
    twin.set(ylabel="PC1 share of variance", ylim=(0, 1.02))
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def role_map(scores: np.ndarray, names: Sequence[str], families: Sequence[str], projection: np.ndarray,
             explained: Sequence[float], layer: int, label_every: int = 1) -> Figure:
    """Roles on PC1/PC2 at one layer, coloured by their projection on the axis, marked by family."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.subplots()
    markers = dict(zip(FAMILY_COLOR, "*os^Dv"))
    vmax = float(np.max(np.abs(projection - np.median(projection)))) or 1.0
    for family in FAMILY_COLOR:
        idx = [i for i, f in enumerate(families) if f == family]
        if idx:
            sc = ax.scatter(scores[idx, 0], scores[idx, 1], c=projection[idx], cmap="coolwarm_r", marker=markers[family],
                            s=90 if family == "assistant" else 45, edgecolors="k", linewidths=0.4, label=family,
                            vmin=np.median(projection) - vmax, vmax=np.median(projection) + vmax)
    for i, name in enumerate(names):
        if i % label_every == 0:
            ax.annotate(name.replace("_", " "), scores[i, :2], fontsize=6, xytext=(3, 2), textcoords="offset points")
    fig.colorbar(sc, ax=ax, label="projection on the assistant axis")
    ax.set(xlabel=f"PC1 ({100 * explained[0]:.0f} % of variance)", ylabel=f"PC2 ({100 * explained[1]:.0f} %)",
           title=f"Persona space at layer {layer}")
    ax.legend(fontsize=7, markerscale=0.8)
    return fig


def role_ranking(names: Sequence[str], families: Sequence[str], projection: np.ndarray, layer: int) -> Figure:
    """Every role's projection on the axis, sorted, coloured by family."""
    order = np.argsort(projection)
    fig = Figure(figsize=(7, 0.17 * len(names) + 1.2), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(order)), projection[order], color=[FAMILY_COLOR[families[i]] for i in order])
    ax.set_yticks(range(len(order)), [names[i].replace("_", " ") for i in order], fontsize=6)
    handles = [ax.bar(0, 0, color=c, label=f) for f, c in FAMILY_COLOR.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set(xlabel="mean projection of the role's answers on the assistant axis", title=f"Roles along the axis (layer {layer})")
    return fig


def _grid(n: int, width: float, height: float, sharey: bool | str) -> tuple[Figure, list[Any]]:
    """A figure with n panels, two per row."""
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=sharey, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def drift_trajectories(turns: Mapping[str, Mapping[str, Sequence[float]]], reference: Mapping[str, float]) -> Figure:
    """Per domain: the projection of each turn's answer, per setting (`{domain: {setting: [turns]}}`), with the
    reference levels (`{label: value}`, e.g. the assistant and role-playing answers of step 1)."""
    fig, axes = _grid(len(turns), 4.6, 3.2, sharey=True)
    for ax, (domain, settings) in zip(axes, turns.items()):
        for (label, values), color in zip(settings.items(), ["#1f77b4", "#d62728", "#2ca02c"]):
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, color=color, label=label)
        for (label, value), ls in zip(reference.items(), [":", "--"]):
            ax.axhline(value, color="grey", ls=ls, lw=1, label=label)
        ax.set(title=domain.replace("_", " "), xlabel="turn", ylabel="projection on the axis")
    axes[0].legend(fontsize=7)
    return fig


def cost_panels(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, str]) -> Figure:
    """One panel per metric (`{key: axis label}`), two per row: each setting's value with its interval (keys
    `key`, `key_low`, `key_high` in every row; rows carry `label` and `kind`)."""
    fig, axes = _grid(len(metrics), 4.8, 0.24 * len(rows) + 1.3, sharey=True)
    colors = {"unsteered": "k", "capping": "#1f77b4", "additive": "#d62728"}
    for ax, (key, label) in zip(axes, metrics.items()):
        for y, row in enumerate(rows):
            value, low, high = row[key], row.get(f"{key}_low", row[key]), row.get(f"{key}_high", row[key])
            ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", ms=4, color=colors.get(row["kind"], "grey"))
        ax.set(xlabel=label)
        ax.grid(axis="x", lw=0.3)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=7)
    axes[0].invert_yaxis()
    return fig
