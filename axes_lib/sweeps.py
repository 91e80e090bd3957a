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
from axes_lib.steering import steering


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
    with mode "add" — or `layers == []` — is the unsteered baseline. Rows already in `out_path` (same
    setting label and record id) are kept, so an interrupted sweep resumes. Returns all rows.
    """
    out_path = Path(out_path)
    done = {(r["setting"], r["id"]) for r in read_jsonl(out_path)} if out_path.exists() else set()
    for setting in tqdm(settings, desc=f"sweep {mode}", leave=False):
        todo = [r for r in records if (setting["label"], r["id"]) not in done]
        if not todo:
            continue
        prompts = [r["prompt"] for r in todo]
        kwargs = {"scale" if mode == "add" else "threshold": setting["strength"]}
        if setting["layers"]:
            with steering(model, direction, layers=setting["layers"], mode=mode, **kwargs) as stats:
                answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            fired = stats.summary()
        else:
            answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            fired = {}
        meta = {k: v for k, v in setting.items() if k not in ("label", "strength")}
        append_jsonl(out_path, [
            {**{k: v for k, v in r.items() if k != "prompt"}, "setting": setting["label"], "mode": mode,
             **meta, "response": a, "stats": fired}
            for r, a in zip(todo, answers)
        ])
    return read_jsonl(out_path)


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
    generated, not the intervention itself. Empty responses give NaN.
    """
    out = np.full(len(prompts), np.nan)
    keep = [i for i, r in enumerate(responses) if r.strip()]
    if not keep:
        return out
    acts = extract(model, tokenizer, [prompts[i] for i in keep], method="response_mean",
                   responses=[responses[i] for i in keep], layers=list(layers), batch_size=batch_size, progress=False)
    proj = project(acts, {layer: direction[layer] for layer in layers}, layers=list(layers)).double().numpy()
    out[keep] = proj.mean(axis=1)
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
