"""Interventions in the model's units: capping bands by depth, thresholds as percentiles of projections,
projection SDs for scales.

A threshold is a position on the axis and a scale a distance along it; both are calibrated on the
assistant personas' answers to the train queries, so they mean the same in any model. A band is a range
of layers named by its depth (a fraction of the model's layers), so it too means the same in any model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from axes_lib.activations import token_projections_many
from axes_lib.directions import unit
from axes_lib.interventions import check_layer_list
from axes_lib.prompts import format_prompt, load_personas

__all__ = ["DEPTHS", "calibration_answers", "check_bands", "depth_bands", "percentile_thresholds", "projection_sd",
           "quantile_thresholds", "shared_layers", "token_thresholds",
           "token_thresholds_many"]

#: Capping bands by depth: (first, last) fraction of the layers each is centred in (layer i sits at depth i / n).
DEPTHS: dict[str, tuple[float, float]] = {"early": (0.20, 0.35), "middle": (0.45, 0.60), "late": (0.70, 0.90)}


def depth_bands(n_layers: int, depths: Mapping[str, tuple[float, float]] = DEPTHS) -> dict[str, list[int]]:
    """Disjoint bands of equal width, one per depth range, each centred in its range: the width is the narrowest
    range's share of the layers, rounded half up (5 of 30 layers for 15 %). Raises when the model has too few
    layers for the bands to be disjoint."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a whole number >= 1, got {n_layers!r}")
    def half_up(x: float) -> int:  # rounds x.5 up, also where float arithmetic left it at x.4999999
        return math.floor(x + 0.5 + 1e-9)

    width = max(1, half_up(min(hi - lo for lo, hi in depths.values()) * n_layers))
    bands = {}
    for name, (lo, hi) in depths.items():
        first = half_up((lo + hi) / 2 * n_layers - (width - 1) / 2)
        first = min(max(first, 0), n_layers - width)
        bands[name] = list(range(first, first + width))
    return check_bands(bands, n_layers)


def shared_layers(band: Sequence[int], bands: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The layers `band` shares with each of `bands` that it overlaps (empty when it is disjoint from all)."""
    return {name: sorted(set(band) & set(other)) for name, other in bands.items() if set(band) & set(other)}


def check_bands(bands: Mapping[str, Sequence[int]], n_layers: int) -> dict[str, list[int]]:
    """Named bands as lists of layers of a model with `n_layers`: each non-empty, in range, and no two sharing a
    layer, so that a comparison of bands compares different layers."""
    if not isinstance(bands, Mapping) or not bands:
        raise ValueError(f"bands must map names to lists of layers, got {bands!r}")
    out = {}
    for name, band in bands.items():
        out[str(name)] = layers = check_layer_list(band, f"band {name!r}")
        if max(layers) >= n_layers:
            raise ValueError(f"band {name!r}: layers {[i for i in layers if i >= n_layers]} not in a model of {n_layers} layers")
        for other, shared in shared_layers(layers, {k: v for k, v in out.items() if k != name}).items():
            raise ValueError(f"bands must be disjoint: {name!r} and {other!r} share layers {shared}")
    return out


def calibration_answers(
    responses: Sequence[Mapping[str, Any]], train_queries: Sequence[str], tokenizer: Any, model_key: str
) -> tuple[list[str], list[str]]:
    """Prompts and responses of the assistant personas' non-empty answers to the train queries: what
    capping thresholds are calibrated on (`token_thresholds`)."""
    systems = {p.name: p.system for p in load_personas()}
    train = set(train_queries)
    rows = [r for r in responses if r["kind"] == "assistant" and r["query_id"] in train and r["response"].strip()]
    if not rows:
        raise ValueError("no assistant answers to the train queries to calibrate capping thresholds on")
    prompts = [format_prompt(systems[r["persona"]], r["query"], model_type=model_key, tokenizer=tokenizer) for r in rows]
    return prompts, [r["response"] for r in rows]


def projection_sd(acts: torch.Tensor, direction: Mapping[int, torch.Tensor], layers: Sequence[int]) -> dict[int, float]:
    """Standard deviation of the projections on the unit direction per layer (columns of `acts` labelled by `layers`)."""
    units = unit(direction)
    return {layer: float((acts[:, col].double() @ units[layer].double()).std()) for col, layer in enumerate(layers)}


def percentile_thresholds(
    acts: torch.Tensor, direction: Mapping[int, torch.Tensor], layers: Sequence[int], band: Sequence[int], q: float = 25.0
) -> dict[int, float]:
    """Capping thresholds: the q-th percentile of the projections of (assistant, train) activations, per layer of `band`.

    `acts` columns are labelled by `layers`; Anthropic's paper caps at the 25th percentile over a band of layers
    (of per-token projections, on our reading of the paper).
    """
    _check_percentile(q)
    units = unit(direction)
    column = {layer: col for col, layer in enumerate(layers)}
    missing = [layer for layer in band if layer not in column or layer not in units]
    if missing:
        raise ValueError(f"no activations or direction for band layers {missing}")
    return {
        layer: float(torch.quantile(acts[:, column[layer]].double() @ units[layer].double(), q / 100))
        for layer in band
    }


def token_thresholds(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    direction: Mapping[int, torch.Tensor],
    band: Sequence[int],
    percentiles: Sequence[float] = (25.0,),
    batch_size: int = 32,
) -> dict[float, dict[int, float]]:
    """Capping thresholds from the positions a cap acts on: `{q: {layer: threshold}}`, the q-th percentile,
    per layer of `band`, of the projections of every response token of (assistant, train) answers, read
    in one teacher-forced pass.

    This is Anthropic's recipe: a cap fires on individual positions, so its threshold comes from the
    per-token distribution, not from one position per prompt (`percentile_thresholds`).
    """
    return token_thresholds_many(model, tokenizer, prompts, responses, [direction], band, percentiles, batch_size)[0]


def token_thresholds_many(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    directions: Sequence[Mapping[int, torch.Tensor]],
    band: Sequence[int],
    percentiles: Sequence[float] = (25.0,),
    batch_size: int = 32,
) -> list[dict[float, dict[int, float]]]:
    """`token_thresholds` for each of several directions (e.g. an axis and its random controls), one
    `{q: {layer: threshold}}` per direction, from a single teacher-forced pass over the answers."""
    for q in percentiles:
        _check_percentile(q)
    projections = token_projections_many(model, tokenizer, prompts, responses, directions, list(band),
                                         batch_size=batch_size)
    return [{q: quantile_thresholds(proj, q) for q in percentiles} for proj in projections]


def quantile_thresholds(projections: Mapping[int, torch.Tensor], q: float) -> dict[int, float]:
    """The q-th percentile of each layer's projections (e.g. from `activations.token_projections`)."""
    _check_percentile(q)
    return {layer: float(torch.quantile(values.double(), q / 100)) for layer, values in projections.items()}


def _check_percentile(q: float) -> None:
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
