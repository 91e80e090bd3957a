"""Validation metrics: projections, Cohen's d, thresholds, AUROC, the bootstrap (CIs), splits, layer sweeps.

Numbers come back as float64 numpy arrays (or plain lists/floats in the `evaluate_layers` and
`shuffled_null` reports, so `axes_lib.io.write_json` can store them directly). Everything that is
fitted (direction, threshold) is fitted on the train indices only; the holdout is only scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from axes_lib.directions import check_acts, compute_direction, layer_labels, unit

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


def auroc_interval(
    positive: Sequence[bool], scores: ArrayLike, groups: Sequence[Any], n_boot: int = 1000, alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC of `scores` for `positive`, resampling whole groups (queries):
    the answers to one query share its topic, so they are not independent draws. Resamples with one class only are skipped."""
    _check_boot(n_boot, alpha)
    pos, x = np.asarray(positive, dtype=bool), _np(scores)
    group = np.asarray(groups)
    if not len(pos) == len(x) == len(group):
        raise ValueError(f"got {len(pos)} labels, {len(x)} scores and {len(group)} groups: need one of each per item")
    members = [np.flatnonzero(group == g) for g in sorted(set(group.tolist()))]

    def stat(idx: np.ndarray) -> list[float]:
        out = []
        for draw in idx:
            rows = np.concatenate([members[i] for i in draw])
            out.append(auroc(x[rows][pos[rows]], x[rows][~pos[rows]]))
        return out

    low, high = _interval(_resample(stat, (len(members),), n_boot, 1, np.random.default_rng(seed)), alpha)
    return float(low[0]), float(high[0])


# --------------------------------------------------------------------------------------------- splits


def _record_field(records: Sequence[Mapping[str, Any]], i: int, field: str) -> Any:
    try:
        return records[i][field]
    except KeyError:
        raise ValueError(f"record {i} has no {field!r} field: records need 'query_id', 'persona' and 'kind'") from None


def _check_indices(indices: Sequence[int] | None, n: int, name: str = "indices") -> list[int]:
    """Distinct in-range integer indices (default all of 0..n-1)."""
    if indices is None:
        return list(range(n))
    out = [int(i) for i in np.asarray(indices).reshape(-1)]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"{name} {bad[:5]} out of range: there are {n} records/prompts (valid 0..{n - 1})")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} contain duplicates; each record may appear once")
    return out


def split_by_query(
    records: Sequence[Mapping[str, Any]], holdout_frac: float = 0.2, seed: int = 0, indices: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """Split record indices by query so no query is on both sides, stratified by the query's "category".

    Each category holds out `round(holdout_frac * n_queries)` of its queries, at least one and at most
    all but one when it has two or more. `indices` restricts the split to a subset (e.g. the train side,
    for a validation split) and the returned indices refer to `records`. Deterministic for a seed,
    whatever the order of the records.
    """
    if not 0 < holdout_frac < 1:
        raise ValueError(f"holdout_frac must be between 0 and 1 (exclusive), got {holdout_frac}")
    pool = _check_indices(indices, len(records))
    by_query: dict[Any, list[int]] = {}
    category: dict[Any, Any] = {}
    for i in pool:
        qid = _record_field(records, i, "query_id")
        cat = records[i].get("category")
        if qid in category and category[qid] != cat:
            raise ValueError(f"query {qid!r} has two categories ({category[qid]!r} and {cat!r}): a query belongs to one category")
        category[qid] = cat
        by_query.setdefault(qid, []).append(i)
    by_category: dict[Any, list[Any]] = {}
    for qid, cat in category.items():
        by_category.setdefault(cat, []).append(qid)
    rng = np.random.default_rng(seed)
    held: set[Any] = set()
    for cat in sorted(by_category, key=str):
        queries = sorted(by_category[cat], key=str)
        k = round(holdout_frac * len(queries))
        if len(queries) >= 2:
            k = min(max(k, 1), len(queries) - 1)
        held.update(queries[j] for j in rng.permutation(len(queries))[:k])
    if not held or len(held) == len(by_query):
        raise ValueError(f"cannot split {len(by_query)} queries into non-empty train and holdout sides: need at least 2 queries")
    train = sorted(i for q, idx in by_query.items() if q not in held for i in idx)
    test = sorted(i for q, idx in by_query.items() if q in held for i in idx)
    return train, test


def split_by_persona(
    records: Sequence[Mapping[str, Any]],
    holdout_personas: Sequence[str] | None = None,
    n_holdout: int = 2,
    seed: int = 0,
    holdout_frac: float = 0.2,
) -> tuple[list[int], list[int]]:
    """Hold out whole non-assistant personas, to test whether the axis generalises to personas it never saw.

    Non-assistant records go to train or holdout by persona (`holdout_personas`, or `n_holdout` drawn with
    `seed`). Assistant records cannot be held out by persona (the axis is defined by them), so they are
    split by query with `split_by_query(holdout_frac)`: both sides get assistant examples and no assistant
    query is on both sides. Which personas were held out: `{records[i]["persona"] for i in test}` minus the
    assistant ones.
    """
    pool = list(range(len(records)))
    kinds = [_record_field(records, i, "kind") for i in pool]
    personas = [_record_field(records, i, "persona") for i in pool]
    assistant = [i for i in pool if kinds[i] == ASSISTANT_KIND]
    others = sorted({personas[i] for i in pool if kinds[i] != ASSISTANT_KIND}, key=str)
    if not assistant or len(others) < 2:
        raise ValueError(
            f"a persona split needs assistant records and at least 2 non-assistant personas, got {len(assistant)} "
            f"assistant records (kind == {ASSISTANT_KIND!r}) and personas {others}"
        )
    if holdout_personas is None:
        if not 1 <= n_holdout < len(others):
            raise ValueError(f"n_holdout must be 1..{len(others) - 1} for {len(others)} non-assistant personas, got {n_holdout}")
        rng = np.random.default_rng(seed)
        held = {others[j] for j in rng.permutation(len(others))[:n_holdout]}
    else:
        held = set(holdout_personas)
        unknown = sorted(held - set(others), key=str)
        if unknown:
            raise ValueError(f"holdout personas {unknown} are not non-assistant personas of these records; choose from {others}")
        if not held or held == set(others):
            raise ValueError(f"hold out at least one and at most {len(others) - 1} of the personas {others}, got {sorted(held)}")
    a_train, a_test = split_by_query(records, holdout_frac=holdout_frac, seed=seed, indices=assistant)
    o_train = [i for i in pool if kinds[i] != ASSISTANT_KIND and personas[i] not in held]
    o_test = [i for i in pool if kinds[i] != ASSISTANT_KIND and personas[i] in held]
    return sorted(a_train + o_train), sorted(a_test + o_test)


# ------------------------------------------------------------------------------------- layer sweeps


def _labels(is_assistant: ArrayLike, n: int) -> np.ndarray:
    y = is_assistant.detach().cpu().numpy() if isinstance(is_assistant, torch.Tensor) else np.asarray(is_assistant)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"is_assistant has {y.shape[0]} labels but acts has {n} prompts")
    if y.dtype != bool and not np.isin(y, [0, 1]).all():
        raise ValueError("is_assistant must be booleans (or 0/1): True for assistant-persona prompts")
    return y.astype(bool)


def _check_sides(y: np.ndarray, sides: dict[str, list[int]]) -> None:
    """Sides must be disjoint and each hold both classes (at least 3 prompts for Cohen's d)."""
    names = list(sides)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            overlap = set(sides[first]) & set(sides[second])
            if overlap:
                raise ValueError(f"{first}_idx and {second}_idx share {len(overlap)} prompts (e.g. {sorted(overlap)[:5]}): fitted and scored data must be disjoint")
    for name, idx in sides.items():
        n_a = int(y[idx].sum())
        if n_a == 0 or n_a == len(idx) or len(idx) < 3:
            raise ValueError(f"{name}_idx has {n_a} assistant and {len(idx) - n_a} other prompts: each side needs both kinds, 3+ prompts in all")


def _rows(acts: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """The prompts `idx` of `acts` (index_select: much faster than indexing with a Python list)."""
    return acts.index_select(0, torch.as_tensor(idx, dtype=torch.long))


def _fit_direction(train_acts: torch.Tensor, y_train: np.ndarray) -> torch.Tensor:
    """`[L, d]` mean-difference direction of the train prompts."""
    mask = torch.from_numpy(y_train)
    direction = compute_direction(train_acts[mask], train_acts[~mask])
    return torch.stack([direction[c] for c in range(train_acts.shape[1])])


def _score(proj: np.ndarray, y: np.ndarray, threshold: np.ndarray) -> dict[str, np.ndarray]:
    pos, neg = proj[y], proj[~y]
    return {"cohens_d": cohens_d(pos, neg), "accuracy": accuracy(pos, neg, threshold),
            "balanced_accuracy": balanced_accuracy(pos, neg, threshold)}


def _lists(d: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [float(v) for v in np.asarray(arr).reshape(-1)] for k, arr in d.items()}


def evaluate_layers(
    acts: torch.Tensor,
    is_assistant: ArrayLike,
    train_idx: Sequence[int],
    test_idx: Sequence[int],
    layers: Sequence[int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    val_idx: Sequence[int] | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Fit the direction and thresholds on train, score every layer on the holdout, and pick a best layer.

    Per layer (columns of `acts`, labelled by `layers`, default 0..L-1): holdout Cohen's d with a
    bootstrap CI, accuracy and balanced accuracy at the train-fitted threshold (`fit_threshold`), and
    holdout projection stats; train d/accuracy too, for spotting overfit.

    Best layer: the highest balanced accuracy, ties (common: many layers reach 1.0) broken by the higher
    lower CI bound of Cohen's d (a large *and* reliable separation), then by the lower layer. The rule is
    applied to `val_idx` when given (a split inside train, e.g. `split_by_query(records, indices=train)`;
    the direction is still fitted on `train_idx` only), so the reported holdout numbers of the best layer
    are unbiased; without it the rule is applied to the holdout itself and the report marks
    `selection_biased: true` (a max over layers; compare it with `shuffled_null`'s max over layers).
    Returns plain lists/floats, ready for `write_json`.
    """
    check_acts(acts)
    y = _labels(is_assistant, acts.shape[0])
    labels = layer_labels(layers, acts.shape[1])
    sides = {"train": _check_indices(train_idx, acts.shape[0], "train_idx"),
             "test": _check_indices(test_idx, acts.shape[0], "test_idx")}
    if val_idx is not None:
        sides["val"] = _check_indices(val_idx, acts.shape[0], "val_idx")
    _check_sides(y, sides)

    direction = _fit_direction(_rows(acts, sides["train"]), y[sides["train"]])
    proj = {name: project(_rows(acts, idx), direction).double().numpy() for name, idx in sides.items()}
    y_side = {name: y[idx] for name, idx in sides.items()}
    threshold = fit_threshold(proj["train"][y_side["train"]], proj["train"][~y_side["train"]])

    report: dict[str, Any] = {"layers": labels}
    report["n"] = {name: {"assistant": int(ys.sum()), "other": int((~ys).sum())} for name, ys in y_side.items()}
    report["direction_norm"] = [float(v) for v in direction.double().norm(dim=1)]
    for name in sides:
        pos, neg = proj[name][y_side[name]], proj[name][~y_side[name]]
        scores = _score(proj[name], y_side[name], threshold)
        if name != "train":
            ci = bootstrap_ci(cohens_d, pos, neg, n_boot=n_boot, alpha=alpha, seed=seed)
            scores["cohens_d_low"], scores["cohens_d_high"] = ci["low"], ci["high"]
        else:
            scores["threshold"] = threshold
        report[name] = _lists(scores)
        if name == "test":
            report[name]["projection_stats"] = projection_stats(pos, neg)

    chooser = "val" if "val" in sides else "test"
    sel = report[chooser]

    def key(c: int) -> tuple[float, float, int]:
        low = sel["cohens_d_low"][c]
        return (-sel["balanced_accuracy"][c], np.inf if np.isnan(low) else -low, c)

    best = min(range(len(labels)), key=key)
    test = report["test"]
    report["best_layer"] = labels[best]
    report["best"] = {"layer": labels[best], "column": best, "threshold": report["train"]["threshold"][best],
                      **{k: test[k][best] for k in ("cohens_d", "cohens_d_low", "cohens_d_high", "accuracy", "balanced_accuracy")}}
    report["selection"] = {
        "on": chooser,
        "rule": "max balanced accuracy, then max lower CI bound of Cohen's d, then lowest layer",
        "selection_biased": chooser == "test",
    }
    report["params"] = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    return report


def shuffled_null(
    acts: torch.Tensor,
    is_assistant: ArrayLike,
    train_idx: Sequence[int],
    test_idx: Sequence[int],
    n_perm: int = 20,
    seed: int = 0,
    layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Null baseline: the `evaluate_layers` pipeline with train labels shuffled, scored on true holdout labels.

    Each permutation refits the direction and thresholds on shuffled train labels (class counts kept), so
    holdout d and accuracy show what a mean-difference axis reaches by chance at each layer; the per-
    permutation maxima over layers are the fair comparison for a best layer picked on the holdout.
    """
    check_acts(acts)
    if n_perm < 1:
        raise ValueError(f"n_perm must be at least 1, got {n_perm}")
    y = _labels(is_assistant, acts.shape[0])
    labels = layer_labels(layers, acts.shape[1])
    train = _check_indices(train_idx, acts.shape[0], "train_idx")
    test = _check_indices(test_idx, acts.shape[0], "test_idx")
    _check_sides(y, {"train": train, "test": test})
    rng = np.random.default_rng(seed)
    # float64 copies made once; each permutation is then two weighted sums over the prompts.
    x_train, x_test = _rows(acts, train).double(), _rows(acts, test).double()
    y_train, y_test = y[train], y[test]
    runs: dict[str, list[np.ndarray]] = {"cohens_d": [], "accuracy": [], "balanced_accuracy": []}
    for _ in range(n_perm):
        y_perm = y_train[rng.permutation(len(train))]
        weights = np.where(y_perm, 1.0 / y_perm.sum(), -1.0 / (~y_perm).sum())
        direction = torch.einsum("n,nld->ld", torch.from_numpy(weights), x_train)  # mean(a) - mean(o)
        proj_train = project(x_train, direction).double().numpy()
        threshold = fit_threshold(proj_train[y_perm], proj_train[~y_perm])
        for k, v in _score(project(x_test, direction).double().numpy(), y_test, threshold).items():
            runs[k].append(v)
    mats = {k: np.stack(v) for k, v in runs.items()}  # [n_perm, L]
    return {
        "layers": labels,
        "n_perm": n_perm,
        "seed": seed,
        **{k: m.tolist() for k, m in mats.items()},
        "max_abs_cohens_d": np.abs(mats["cohens_d"]).max(axis=1).tolist(),
        "max_balanced_accuracy": mats["balanced_accuracy"].max(axis=1).tolist(),
        "max_accuracy": mats["accuracy"].max(axis=1).tolist(),
        "cohens_d_q95": np.quantile(mats["cohens_d"], 0.95, axis=0).tolist(),
        "balanced_accuracy_q95": np.quantile(mats["balanced_accuracy"], 0.95, axis=0).tolist(),
    }
