"""Judged sweeps: score the steered answers resumably, summarise them per strength, find the sweet spot.

Used by notebook 07. Judgements are stored per judge in a `ScoreCache` (a JSONL file) keyed by the
judge's id and a hash of (query, response), so a rerun judges only answers it has not seen, equal
answers (the unsteered baselines of steps 5 and 6 are the same texts) are judged once, and a judgement
that failed (a Claude error) is tried again next time. The store is checked before the first
judgement, and a score whose write fails is still returned.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.judge.base import SCALES, Item, Judge, Score
from axes_lib.judge.cache import ScoreCache
from axes_lib.metrics import grouped_interval, mean_ci

__all__ = ["agreement", "judge_rows", "means", "query_halves", "query_mean", "scores_of", "summarise", "sweet_spot", "text_key",
           "unique_texts"]


def text_key(query: str, response: str) -> str:
    """A short hash of a (query, response) pair: what a judgement is stored under."""
    return hashlib.sha256(f"{query}\0{response}".encode()).hexdigest()[:20]


def judge_rows(
    judge: Judge, rows: Sequence[Mapping[str, Any]], out_path: str | Path, chunk_size: int = 128, progress: bool = True,
) -> list[dict[str, Any]]:
    """Judge every row (needs "query" and "response"); returns copies with both scales and the judge id.

    Judgements are appended to `out_path` chunk by chunk; ones already there for this judge are reused.
    Rows whose judgement failed get `None` scores and the error text in "judge_error". An unwritable
    `out_path` is an error before anything is judged; a write that fails later only warns.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for i, r in enumerate(rows):
        if not isinstance(r.get("query"), str) or not isinstance(r.get("response"), str):
            raise ValueError(f"row {i} needs str 'query' and 'response' fields, got keys {sorted(r)}")
    store = ScoreCache(out_path, judge.id)
    todo: dict[str, Item] = {}
    for r in rows:
        key = text_key(r["query"], r["response"])
        if key not in store and key not in todo:
            todo[key] = Item(r["query"], r["response"])
    failed: dict[str, str] = {}
    keys = list(todo)
    with tqdm(total=len(keys), desc=f"judge ({judge.id})", disable=not progress or not keys, leave=False) as bar:
        for start in range(0, len(keys), chunk_size):
            chunk = keys[start:start + chunk_size]
            scores: list[Score] = judge.score([todo[k] for k in chunk])
            failed.update({k: s.error or "no score" for k, s in zip(chunk, scores) if not s.ok})
            store.put(dict(zip(chunk, scores)))
            bar.update(len(chunk))
    out = []
    for r in rows:
        key = text_key(r["query"], r["response"])
        score = store.get(key)
        out.append({**r, "judge": judge.id,
                    "assistant_likeness": score.assistant_likeness if score else None,
                    "coherence": score.coherence if score else None,
                    "judge_error": None if score else failed.get(key, "not judged")})
    return out


def summarise(
    rows: Sequence[Mapping[str, Any]], by: Sequence[str], n_boot: int = 1000, seed: int = 0,
) -> list[dict[str, Any]]:
    """Mean and 95 % bootstrap CI of both scales per group of `by` fields, groups in first-seen order.

    Each output row holds the `by` fields, `n`, and `{scale}_mean`, `{scale}_low`, `{scale}_high`.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(_hashable(r.get(k)) for k in by), []).append(r)
    out = []
    for members in groups.values():
        entry: dict[str, Any] = {k: members[0].get(k) for k in by}
        entry["n"] = len(members)
        for scale in SCALES:
            mean, low, high = mean_ci([m.get(scale) for m in members], n_boot=n_boot, seed=seed)
            entry.update({f"{scale}_mean": mean, f"{scale}_low": low, f"{scale}_high": high})
        out.append(entry)
    return out


def means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """Mean of each scale over rows, missing scores left out; None for no rows (e.g. a figure's reference lines)."""
    if not rows:
        return None
    out = {}
    for scale in SCALES:
        x = np.array([r[scale] for r in rows if r.get(scale) is not None], dtype=float)
        out[scale] = float(x.mean()) if x.size else float("nan")
    return out


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def sweet_spot(
    summary: Sequence[Mapping[str, Any]], baseline_coherence: float, margin: float, x: str | None = None,
) -> dict[str, Any] | None:
    """The setting with the highest mean assistant-likeness whose mean coherence is within `margin` of baseline.

    Ties go to the smaller `x` (the weaker intervention) when `x` is given. None when no setting qualifies.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (coherence points below the baseline), got {margin}")
    ok = [s for s in summary
          if math.isfinite(s["coherence_mean"]) and math.isfinite(s["assistant_likeness_mean"])
          and s["coherence_mean"] >= baseline_coherence - margin]
    if not ok:
        return None
    return dict(max(ok, key=lambda s: (s["assistant_likeness_mean"], -(s[x] if x else 0))))


def agreement(a: Sequence[Score], b: Sequence[Score]) -> dict[str, dict[str, float]]:
    """Spearman correlation between two judges per scale, over the items both scored."""
    from scipy.stats import spearmanr

    if len(a) != len(b):
        raise ValueError(f"got {len(a)} and {len(b)} scores: agreement needs the two judges' scores of the same items")
    out = {}
    for scale in SCALES:
        pairs = [(getattr(x, scale), getattr(y, scale)) for x, y in zip(a, b)
                 if getattr(x, scale) is not None and getattr(y, scale) is not None]
        if len(pairs) < 3:
            out[scale] = {"spearman": float("nan"), "n": len(pairs)}
            continue
        rho = spearmanr(np.array(pairs)[:, 0], np.array(pairs)[:, 1]).statistic
        out[scale] = {"spearman": float(rho), "n": len(pairs)}
    return out


def unique_texts(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the first row of each distinct (query, response): equal answers count once in a statistic."""
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(text_key(r["query"], r["response"]), i)
    return list(first.values())


def scores_of(rows: Sequence[Mapping[str, Any]]) -> list[Score]:
    """The judged rows' scores as `Score` objects (missing where the judgement failed)."""
    return [Score(r.get("assistant_likeness"), r.get("coherence"), str(r.get("judge")), r.get("judge_error")) for r in rows]


def query_halves(rows: Sequence[Mapping[str, Any]], seed: int = 0) -> tuple[set[str], set[str]]:
    """The rows' queries split into two halves (seeded): choose a setting on one, report it on the other."""
    queries = sorted({str(r["query_id"]) for r in rows})
    if len(queries) < 2:
        raise ValueError(f"need answers to at least 2 queries to choose on one half and report on the other, got {queries}")
    random.Random(seed).shuffle(queries)
    half = len(queries) // 2
    return set(queries[:half]), set(queries[half:])


def query_mean(rows: Sequence[Mapping[str, Any]], scale: str, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean of one scale over `rows` with a 95 % interval that resamples whole queries (the unit of the design)."""
    kept = [r for r in rows if r.get(scale) is not None and math.isfinite(r[scale])]
    if not kept:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    x = np.array([r[scale] for r in kept], dtype=float)
    low, high = grouped_interval(lambda k: float(x[k].mean()), [str(r["query_id"]) for r in kept], n_boot, seed=seed)
    return {"mean": float(x.mean()), "low": low, "high": high, "n": len(kept)}
