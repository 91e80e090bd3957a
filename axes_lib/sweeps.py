"""Intervention sweeps: generate steered answers over a grid of strengths, resumably, and measure them.

Used by the additive-steering and capping notebooks; the answers feed the judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.activations import extract
from axes_lib.generation import generate
from axes_lib.io import append_jsonl, read_jsonl
from axes_lib.metrics import project
from axes_lib.prompts import format_prompt, load_personas
from axes_lib.steering import make_intervention, steering_rows


def calibration_answers(
    responses: Sequence[Mapping[str, Any]], train_queries: Sequence[str], tokenizer: Any, model_key: str
) -> tuple[list[str], list[str]]:
    """Prompts and responses of the assistant personas' non-empty answers to the train queries: what
    capping thresholds are calibrated on (`steering.token_thresholds`)."""
    systems = {p.name: p.system for p in load_personas()}
    train = set(train_queries)
    rows = [r for r in responses if r["kind"] == "assistant" and r["query_id"] in train and r["response"].strip()]
    if not rows:
        raise ValueError("no assistant answers to the train queries to calibrate capping thresholds on")
    prompts = [format_prompt(systems[r["persona"]], r["query"], model_type=model_key, tokenizer=tokenizer) for r in rows]
    return prompts, [r["response"] for r in rows]


def sweep(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    direction: Mapping[int, torch.Tensor],
    mode: str,
    settings: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    max_new_tokens: int = 48,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Generate an answer for every record (needs "prompt") under every setting, appending to `out_path`.

    A setting is `{"label": str, "layers": [...], "strength": float | {layer: float}, ...}`; strength 0
    with mode "add" — or `layers == []` — is the unsteered baseline. Settings are generated together,
    as many as fill `batch_size` rows (each row steered by its own setting, `steering.steering_rows`),
    and appended to `out_path` when they are done. Rows already there (same setting label and record id)
    are kept, so an interrupted sweep resumes. Returns all rows.
    """
    out_path = Path(out_path)
    done = {(r["setting"], r["id"]) for r in read_jsonl(out_path)} if out_path.exists() else set()
    interventions = [make_intervention(mode, s["layers"], **{"scale" if mode == "add" else "threshold": s["strength"]})
                     if s["layers"] else None for s in settings]  # every setting checked before any generation
    todo = [(k, [r for r in records if (s["label"], r["id"]) not in done]) for k, s in enumerate(settings)]
    todo = [(k, rows) for k, rows in todo if rows]
    bar = tqdm(total=len(todo), desc=f"sweep {mode}", leave=False)
    for chunk in _fill(todo, batch_size):
        pairs = [(k, r) for k, rows in chunk for r in rows]
        with steering_rows(model, direction, interventions, [k for k, _ in pairs]) as stats:
            answers = generate(model, tokenizer, [r["prompt"] for _, r in pairs], max_new_tokens=max_new_tokens,
                               batch_size=batch_size, groups=[k for k, _ in pairs])
        append_jsonl(out_path, [
            {**{key: v for key, v in r.items() if key != "prompt"}, "setting": settings[k]["label"], "mode": mode,
             **{key: v for key, v in settings[k].items() if key not in ("label", "strength")}, "response": a,
             "stats": stats[k].summary() if interventions[k] is not None else {}}
            for (k, r), a in zip(pairs, answers, strict=True)
        ])
        bar.update(len(chunk))
    bar.close()
    return read_jsonl(out_path)


def _fill(todo: list[tuple[int, list[Any]]], rows: int) -> list[list[tuple[int, list[Any]]]]:
    """Consecutive settings grouped into chunks of at most `rows` rows (a larger setting is a chunk of its own)."""
    chunks: list[list[tuple[int, list[Any]]]] = []
    size = 0
    for item in todo:
        if chunks and size + len(item[1]) <= rows:
            chunks[-1].append(item)
            size += len(item[1])
        else:
            chunks.append([item])
            size = len(item[1])
    return chunks


def response_projection(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    direction: Mapping[int, torch.Tensor],
    layers: Sequence[int],
    batch_size: int = 32,
) -> np.ndarray:
    """Mean over `layers` of the response-mean projection on the unit direction, read by the unsteered model.

    Teacher-forces each (prompt, response) with no intervention, so it measures the text that was
    generated, not the intervention itself; equal pairs (a setting that changed no word) are read once.
    Empty responses give NaN.
    """
    out = np.full(len(prompts), np.nan)
    unique: dict[tuple[str, str], int] = {}
    for pair in zip(prompts, responses, strict=True):
        if pair[1].strip():
            unique.setdefault(pair, len(unique))
    if not unique:
        return out
    acts = extract(model, tokenizer, [p for p, _ in unique], method="response_mean", responses=[r for _, r in unique],
                   layers=list(layers), batch_size=batch_size, progress=False)
    proj = project(acts, {layer: direction[layer] for layer in layers}, layers=list(layers)).double().numpy().mean(axis=1)
    keep = [i for i, r in enumerate(responses) if r.strip()]
    out[keep] = proj[[unique[prompts[i], responses[i]] for i in keep]]
    return out


def mean_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean and a percentile bootstrap CI, ignoring NaNs (missing judge scores)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return float(x.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))
