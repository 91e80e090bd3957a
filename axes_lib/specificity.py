"""Is it this axis? Judged effects of settings measured against the unsteered answers, and an effect's rank
among those of control directions (random directions steered or capped the same way).

Used by notebook 09. Each setting's answer to a prompt is compared with the unsteered answer to the same
prompt (paired), so the prompts' own spread cancels; intervals resample whole queries, as elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from axes_lib.judge.base import SCALES
from axes_lib.judge.repetition import loop_coverage
from axes_lib.metrics import grouped_interval
from axes_lib.metrics import rank_among as metrics_rank_among

__all__ = ["LOOP_COVERAGE", "paired_effects", "rank_among"]

#: An answer loops when more than this share of its words sits inside repeated material (as in step 7).
LOOP_COVERAGE = 0.3


def paired_effects(
    rows: Sequence[Mapping[str, Any]], baseline: str, n_boot: int = 1000, seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per setting: the mean change from the `baseline` setting's answer to the same record (`id`), per scale,
    with a 95 % interval resampling queries; and the loop rates.

    Rows need "setting", "id", "query_id", "response" and the judged scales. Returns `{setting: {"n": pairs,
    scale: {"mean", "low", "high"}, "loop_rate": share of its answers that loop, "loop_change": that minus
    the baseline's on the same records}}`, in first-seen order; the baseline's own entry has zero changes.
    Pairs where either score is missing are left out of that scale.
    """
    base = {r["id"]: r for r in rows if r["setting"] == baseline}
    if not base:
        raise ValueError(f"no rows of the baseline setting {baseline!r}: every effect is measured against it")
    by_setting: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for setting, members in by_setting.items():
        missing = sorted({r["id"] for r in members} - set(base))
        if missing:
            raise ValueError(f"setting {setting!r} has records without a {baseline!r} answer: {missing[:3]}")
        loops = np.array([loop_coverage(r["response"]) > LOOP_COVERAGE for r in members], dtype=float)
        base_loops = np.array([loop_coverage(base[r["id"]]["response"]) > LOOP_COVERAGE for r in members], dtype=float)
        entry: dict[str, Any] = {"n": len(members), "loop_rate": float(loops.mean()),
                                 "loop_change": float((loops - base_loops).mean())}
        for scale in SCALES:
            pairs = [(r, base[r["id"]]) for r in members if _finite(r.get(scale)) and _finite(base[r["id"]].get(scale))]
            diff = np.array([r[scale] - b[scale] for r, b in pairs], dtype=float)
            if not diff.size:
                entry[scale] = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
                continue
            low, high = grouped_interval(lambda k, d=diff: float(d[k].mean()), [str(r["query_id"]) for r, _ in pairs],
                                         n_boot, seed=seed)
            entry[scale] = {"mean": float(diff.mean()), "low": low, "high": high, "n": int(diff.size)}
        out[setting] = entry
    return out


def rank_among(value: float, controls: Sequence[float]) -> dict[str, Any]:
    """Where `value` stands among the `controls`' values, larger first.

    `rank` is 1 + the number of controls strictly above it (1: at the top), `n_above` that number,
    `n_at_or_above` the controls at least as large, and `p` the permutation-style share
    `(1 + n_at_or_above) / (1 + n_controls)`: how often a control does as well, the value itself counted once.
    """
    c = np.asarray(list(controls), dtype=float)
    if not c.size or not np.isfinite(c).all() or not math.isfinite(value):
        raise ValueError(f"need a finite value and at least one finite control value, got {value} and {c.tolist()}")
    shared = metrics_rank_among(np.array([value]), c[:, None])  # the one permutation-style p of the project
    above = int((c > value).sum())
    return {"rank": 1 + above, "n_controls": int(c.size), "n_above": above,
            "n_at_or_above": int(shared["rank"][0]) - 1, "p": shared["p_value"][0], "max": shared["null_max"][0],
            "min": float(c.min()), "median": float(np.median(c))}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
