"""Strengths in the model's units: capping thresholds as percentiles of projections, projection SDs for scales.

A threshold is a position on the axis and a scale a distance along it; both are calibrated on the
assistant personas' answers to the train queries, so they mean the same in any model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from axes_lib.activations import token_projections_many
from axes_lib.directions import unit
from axes_lib.prompts import format_prompt, load_personas

__all__ = ["calibration_answers", "percentile_thresholds", "projection_sd", "quantile_thresholds", "token_thresholds",
           "token_thresholds_many"]


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

    `acts` columns are labelled by `layers`; Anthropic's paper caps at the 25th percentile over a band of layers.
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
