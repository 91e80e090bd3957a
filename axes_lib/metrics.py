"""Metrics: projections on a direction, Cohen's d, thresholds, accuracy, AUROC, and bootstrap intervals.

Numbers come back as float64 numpy arrays (or floats). Train/holdout splits live in `splits`, the
per-layer evaluation of a direction and its nulls in `validation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from axes_lib.directions import check_acts, layer_labels, unit

__all__ = ["ASSISTANT_KIND", "ArrayLike", "accuracy", "auroc", "auroc_columns", "auroc_interval", "balanced_accuracy",
           "bootstrap_ci", "cohens_d", "crossed_interval", "fit_threshold", "grouped_interval", "mean_ci", "project",
           "projection_stats", "rank_among", "spearman"]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

#: The value of a record's "kind" that marks an assistant persona; every other kind is "other".
ASSISTANT_KIND = "assistant"

QUANTILES = (5, 25, 50, 75, 95)


def _np(x: ArrayLike) -> np.ndarray:
    """float64 numpy copy of a tensor / array / list."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_2d(x: ArrayLike, name: str) -> np.ndarray:
    """A `[n, L]` float64 array; 1-D input becomes one column."""
    arr = _np(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [n_samples] or [n_samples, n_layers] array, got shape {arr.shape}")
    return arr


def _squeeze_like(result: np.ndarray, ref: ArrayLike) -> np.ndarray | float:
    """Return a float when the reference input was 1-D (one layer), else the array."""
    return float(result[0]) if np.ndim(_np(ref)) == 1 else result


def project(
    acts: torch.Tensor, direction: Mapping[int, torch.Tensor] | torch.Tensor, layers: Sequence[int] | None = None
) -> torch.Tensor:
    """Projections `[n, L]` of activations `[n, L, d]` on the unit direction of each layer (float64 math, float32 out).

    `direction` is a layer -> vector dict (column c uses `direction[layers[c]]`, `layers` default 0..L-1)
    or a `[L, d]` tensor whose rows match the activation columns.
    """
    check_acts(acts)
    n_cols, d_model = acts.shape[1], acts.shape[2]
    if isinstance(direction, Mapping):
        labels = layer_labels(layers, n_cols)
        missing = [layer for layer in labels if layer not in direction]
        if missing:
            raise ValueError(f"direction has no vector for layers {missing}: it covers layers {sorted(direction)}")
        units = unit({layer: direction[layer] for layer in labels})
        matrix = torch.stack([units[layer] for layer in labels]).double()
    elif isinstance(direction, torch.Tensor):
        if direction.shape != (n_cols, d_model):
            raise ValueError(f"direction tensor has shape {tuple(direction.shape)} but activations need [n_layers, d_model] = [{n_cols}, {d_model}]")
        norms = direction.double().norm(dim=1, keepdim=True)
        if not bool((norms > 0).all()):
            zero = torch.nonzero(norms[:, 0] == 0).flatten().tolist()
            raise ValueError(f"direction rows {zero} are zero vectors: they have no unit direction")
        matrix = direction.double() / norms
    else:
        raise ValueError(f"direction must be a dict of layer -> vector or a [n_layers, d_model] tensor, got {type(direction).__name__}")
    if matrix.shape[1] != d_model:
        raise ValueError(f"direction vectors have length {matrix.shape[1]} but activations have d_model {d_model}")
    return torch.einsum("nld,ld->nl", acts.double(), matrix).float()


def cohens_d(a: ArrayLike, b: ArrayLike) -> np.ndarray | float:
    """Cohen's d `(mean_a - mean_b) / pooled SD` (ddof=1) over axis -2: `[n_a, L]`, `[n_b, L]` -> `[L]`; 1-D -> float.

    Leading axes broadcast (`[B, n, L]` -> `[B, L]`, used by the bootstrap). A pooled SD of zero gives
    +-inf (or nan when the means are equal too).
    """
    one_d = np.ndim(_np(a)) == 1
    x, y = _np(a), _np(b)
    if one_d:
        x, y = x[:, None], y[:, None]
    n_a, n_b = x.shape[-2], y.shape[-2]
    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        raise ValueError(f"Cohen's d needs at least one sample per group and three in all, got n_a={n_a}, n_b={n_b}")
    mean_a, mean_b = x.mean(axis=-2), y.mean(axis=-2)
    ss = ((x - mean_a[..., None, :]) ** 2).sum(axis=-2) + ((y - mean_b[..., None, :]) ** 2).sum(axis=-2)
    pooled = np.sqrt(ss / (n_a + n_b - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (mean_a - mean_b) / pooled
    return float(d[0]) if one_d else d


def fit_threshold(pos: ArrayLike, neg: ArrayLike) -> np.ndarray | float:
    """Per-layer threshold maximising train balanced accuracy of the rule `proj > t -> assistant`; `[n, L]` -> `[L]`.

    Candidates are the midpoints between consecutive distinct sorted values (plus one below and one above
    all values), so a separable layer gets the middle of the gap: the max-margin cut. Balanced accuracy,
    not plain accuracy, because the class ratio (3 assistant vs 6 other personas) is a design choice that
    should not move the cut toward the majority class. Ties go to the candidate nearest the midpoint of
    the two class means. Fit it on train projections only.
    """
    p, n = _as_2d(pos, "pos"), _as_2d(neg, "neg")
    if p.shape[1] != n.shape[1]:
        raise ValueError(f"pos has {p.shape[1]} layer columns but neg has {n.shape[1]}")
    n_p, n_n = p.shape[0], n.shape[0]
    values = np.concatenate([p, n], axis=0)  # [N, L]
    labels = np.concatenate([np.ones(n_p), np.zeros(n_n)])
    order = np.argsort(values, axis=0, kind="stable")
    s = np.take_along_axis(values, order, axis=0)
    ys = labels[order]
    zero = np.zeros((1, s.shape[1]))
    # Candidate k cuts between s[k-1] and s[k]: everything from s[k] up is called assistant.
    neg_below = np.concatenate([zero, np.cumsum(1 - ys, axis=0)])
    pos_above = n_p - np.concatenate([zero, np.cumsum(ys, axis=0)])
    score = 0.5 * (pos_above / n_p + neg_below / n_n)  # [N+1, L]
    cuts = np.concatenate([s[:1] - 1.0, (s[:-1] + s[1:]) / 2, s[-1:] + 1.0])
    valid = np.ones_like(score, dtype=bool)
    valid[1:-1] = s[:-1] < s[1:]  # no cut between equal values
    score = np.where(valid, score, -np.inf)
    best = score.max(axis=0, keepdims=True)
    centre = (p.mean(axis=0) + n.mean(axis=0)) / 2
    distance = np.where(score >= best - 1e-12, np.abs(cuts - centre), np.inf)
    pick = distance.argmin(axis=0)
    thresholds = cuts[pick, np.arange(s.shape[1])]
    return _squeeze_like(thresholds, pos)


def accuracy(pos: ArrayLike, neg: ArrayLike, threshold: ArrayLike | float) -> np.ndarray | float:
    """Fraction classified right by `proj > threshold -> assistant`, per layer: `[n_p, L]`, `[n_n, L]`, `[L]` -> `[L]`."""
    p, n = _as_2d(pos, "pos"), _as_2d(neg, "neg")
    t = np.broadcast_to(_np(threshold), (p.shape[1],))
    acc = ((p > t).sum(axis=0) + (n <= t).sum(axis=0)) / (p.shape[0] + n.shape[0])
    return _squeeze_like(acc, pos)


def balanced_accuracy(pos: ArrayLike, neg: ArrayLike, threshold: ArrayLike | float) -> np.ndarray | float:
    """Mean of the per-class hit rates of `proj > threshold -> assistant`: chance is 0.5 whatever the class ratio."""
    p, n = _as_2d(pos, "pos"), _as_2d(neg, "neg")
    t = np.broadcast_to(_np(threshold), (p.shape[1],))
    bal = 0.5 * ((p > t).mean(axis=0) + (n <= t).mean(axis=0))
    return _squeeze_like(bal, pos)


def _summary(x: np.ndarray) -> dict[str, float]:
    """n, mean, std (ddof=1), min, max and the QUANTILES of one sample."""
    out = {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
           "min": float(x.min()), "max": float(x.max())}
    for q, value in zip(QUANTILES, np.percentile(x, QUANTILES)):
        out[f"q{q:02d}"] = float(value)
    return out


def projection_stats(proj_assistant: ArrayLike, proj_other: ArrayLike) -> list[dict[str, dict[str, float]]]:
    """Per layer column: `{"assistant": {...}, "other": {...}}` with n, mean, std, min, max, q05..q95 (JSON-ready)."""
    a, o = _as_2d(proj_assistant, "proj_assistant"), _as_2d(proj_other, "proj_other")
    if a.shape[1] != o.shape[1]:
        raise ValueError(f"proj_assistant has {a.shape[1]} layer columns but proj_other has {o.shape[1]}")
    return [{"assistant": _summary(a[:, c]), "other": _summary(o[:, c])} for c in range(a.shape[1])]


def _resample(stat: Callable[..., Any], sizes: Sequence[int], n_boot: int, chunk: int, rng: np.random.Generator) -> np.ndarray:
    """`[n_boot, k]` statistics of bootstrap resamples: per chunk of resamples, one `[chunk, n]` index draw per sample.

    The one resampling loop of the project (`bootstrap_ci`, `mean_ci`, `auroc_interval`): `stat` gets one
    index array `[size, n]` per sample, in the order of `sizes`, and returns `size` statistics (or `[size, k]`).
    """
    stats = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = [rng.integers(0, n, size=(size, n)) for n in sizes]
        stats.append(np.asarray(stat(*idx), dtype=np.float64).reshape(size, -1))
    return np.concatenate(stats, axis=0)


def _interval(boot: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval `(low, high)` per column of resampled statistics, ignoring NaN resamples."""
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")


def bootstrap_ci(
    stat_fn: Callable[[np.ndarray, np.ndarray], Any],
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    vectorized: bool = True,
) -> dict[str, np.ndarray | float]:
    """Percentile bootstrap CI of `stat_fn(a, b)`, resampling each group with replacement on its own.

    Samples lie on axis -2 (`[n, L]`; 1-D is one layer). With `vectorized=True`, `stat_fn` gets stacked
    resamples `[B, n, L]` and must return `[B, L]` (as `cohens_d` does), so 1000 resamples cost a few
    array operations; otherwise it is called once per resample. Returns `{"estimate", "low", "high"}`.
    """
    _check_boot(n_boot, alpha)
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    n_a, n_b, n_cols = x.shape[0], y.shape[0], x.shape[1]
    chunk = max(1, int(4_000_000 // max(1, (n_a + n_b) * n_cols)))  # bound memory to ~32 MB per group

    def stat(idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        if vectorized:
            return stat_fn(x[idx_a], y[idx_b])
        return np.stack([np.asarray(stat_fn(x[ia], y[ib]), dtype=np.float64).reshape(-1) for ia, ib in zip(idx_a, idx_b)])

    low, high = _interval(_resample(stat, (n_a, n_b), n_boot, chunk, np.random.default_rng(seed)), alpha)
    estimate = np.asarray(stat_fn(x, y), dtype=np.float64).reshape(-1)
    out = {"estimate": estimate, "low": low, "high": high}
    if np.ndim(_np(a)) == 1:
        return {k: float(v[0]) for k, v in out.items()}
    return out


def mean_ci(values: Sequence[float | None], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean and a percentile bootstrap CI of the mean, ignoring None and NaN (missing judge scores); NaNs when none is left."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    _check_boot(n_boot, alpha)
    boot = _resample(lambda idx: x[idx].mean(axis=1), (x.size,), n_boot, n_boot, np.random.default_rng(seed))
    low, high = _interval(boot, alpha)
    return float(x.mean()), float(low[0]), float(high[0])


def auroc(positive: ArrayLike, negative: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn): P(a random positive scores above a random negative), ties half.

    NaN when either side is empty, where the area is undefined.
    """
    from sklearn.metrics import roc_auc_score

    pos, neg = _np(positive).reshape(-1), _np(negative).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg]))


def auroc_columns(positive: ArrayLike, negative: ArrayLike) -> np.ndarray:
    """AUROC of every column at once (`[n_p, L]`, `[n_n, L]` -> `[L]`): the Mann-Whitney U of the positives'
    mid-ranks over `n_p * n_n`, ties half -- the same number as `auroc` per column, without a loop."""
    from scipy.stats import rankdata

    pos, neg = _as_2d(positive, "positive"), _as_2d(negative, "negative")
    n_p, n_n = pos.shape[0], neg.shape[0]
    ranks = rankdata(np.concatenate([pos, neg]), axis=0)[:n_p]
    return (ranks.sum(axis=0) - n_p * (n_p + 1) / 2) / (n_p * n_n)


def crossed_interval(
    stat: Callable[[np.ndarray], Any], first: Sequence[Any], second: Sequence[Any], strata: Sequence[Any] | None = None,
    n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-way percentile bootstrap interval of `stat(rows)` for a crossed design (e.g. persona x query):
    each resample draws the levels of `first` (within each stratum of `strata`, e.g. personas within their
    kind, so both kinds stay in) and of `second` with replacement, and keeps every row of every drawn pair.
    `stat` returns a float or an array; the interval has its shape."""
    _check_boot(n_boot, alpha)
    a, b = np.asarray(list(first)), np.asarray(list(second))
    s = np.asarray(list(strata)) if strata is not None else np.zeros(len(a), dtype=int)
    if not len(a) == len(b) == len(s):
        raise ValueError(f"got {len(a)}, {len(b)} and {len(s)} labels: need one of each per row")
    cells: dict[tuple[Any, Any], list[int]] = {}
    for i, key in enumerate(zip(a.tolist(), b.tolist())):
        cells.setdefault(key, []).append(i)
    levels_b = sorted(set(b.tolist()), key=str)
    by_stratum = [sorted({x for x, t in zip(a.tolist(), s.tolist()) if t == st}, key=str)
                  for st in sorted(set(s.tolist()), key=str)]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        drawn_a = [lv[j] for lv in by_stratum for j in rng.integers(0, len(lv), len(lv))]
        drawn_b = [levels_b[j] for j in rng.integers(0, len(levels_b), len(levels_b))]
        rows = [r for x in drawn_a for y in drawn_b for r in cells.get((x, y), [])]
        boot.append(np.asarray(stat(np.asarray(rows, dtype=int)), dtype=np.float64).reshape(-1))
    low, high = _interval(np.stack(boot), alpha)
    return low, high


def grouped_interval(
    stat: Callable[[np.ndarray], float], groups: Sequence[Any], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat(rows)` (rows: indices of the items drawn), resampling whole groups
    (e.g. queries: the answers to one query share its topic, so they are not independent draws)."""
    _check_boot(n_boot, alpha)
    group = np.asarray(groups)
    members = [np.flatnonzero(group == g) for g in sorted(set(group.tolist()))]

    def draws(idx: np.ndarray) -> list[float]:
        return [stat(np.concatenate([members[i] for i in draw])) for draw in idx]

    low, high = _interval(_resample(draws, (len(members),), n_boot, 1, np.random.default_rng(seed)), alpha)
    return float(low[0]), float(high[0])


def auroc_interval(
    positive: Sequence[bool], scores: ArrayLike, groups: Sequence[Any], n_boot: int = 1000, alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC of `scores` for `positive`, resampling whole groups (queries).
    Resamples with one class only are skipped."""
    pos, x = np.asarray(positive, dtype=bool), _np(scores)
    if not len(pos) == len(x) == len(groups):
        raise ValueError(f"got {len(pos)} labels, {len(x)} scores and {len(groups)} groups: need one of each per item")
    return grouped_interval(lambda rows: auroc(x[rows][pos[rows]], x[rows][~pos[rows]]), groups, n_boot, alpha, seed)


def rank_among(real: np.ndarray, null: np.ndarray) -> dict[str, list[float]]:
    """Where `real` (`[L]`) ranks among `null` (`[n, L]`), per layer: `rank` 1 = above every null value
    (ties count against the real value), and the permutation p-value `(1 + #null >= real) / (1 + n)`."""
    real, null = np.asarray(real, dtype=float), np.asarray(null, dtype=float)
    at_least = (null >= real[None, :]).sum(axis=0)
    return {"rank": (1 + at_least).astype(float).tolist(), "p_value": ((1 + at_least) / (1 + null.shape[0])).tolist(),
            "null_max": null.max(axis=0).tolist(), "null_q95": np.quantile(null, 0.95, axis=0).tolist()}


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation (scipy); NaN when either side is constant or there are fewer than 3 pairs."""
    from scipy.stats import spearmanr

    x, y = _np(a).reshape(-1), _np(b).reshape(-1)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)
# --------------------------------------------------------------------------------------------- splits
