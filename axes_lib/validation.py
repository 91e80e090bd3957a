"""Per-layer evaluation of a direction: fit on train prompts, score held-out ones, with bootstrap intervals
and a shuffled-label null. Reports are plain lists and floats, so `io.write_json` stores them directly.
Everything that is fitted (direction, threshold) is fitted on the train indices only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from axes_lib.directions import check_acts, compute_direction, layer_labels
from axes_lib.metrics import (
    ArrayLike,
    accuracy,
    auroc_columns,
    balanced_accuracy,
    bootstrap_ci,
    cohens_d,
    fit_threshold,
    project,
    projection_stats,
    rank_among,
)
from axes_lib.splits import check_indices

__all__ = ["evaluate_layers", "null_summary", "shuffled_null"]


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
            "balanced_accuracy": balanced_accuracy(pos, neg, threshold), "auroc": auroc_columns(pos, neg)}


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
    transfer: Callable[[torch.Tensor], Sequence[float]] | None = None,
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

    `transfer` guards the choice against a format detector: a function of the fitted direction (`[L, d]`)
    that returns its AUROC per layer on prompts in another format (e.g. one-sentence role prompts to
    train queries). The best layer then maximises min(selection AUROC, transfer AUROC), ties broken as
    above, so a layer that separates only the prompts' layout cannot win.
    Returns plain lists/floats, ready for `write_json`.
    """
    check_acts(acts)
    y = _labels(is_assistant, acts.shape[0])
    labels = layer_labels(layers, acts.shape[1])
    sides = {"train": check_indices(train_idx, acts.shape[0], "train_idx"),
             "test": check_indices(test_idx, acts.shape[0], "test_idx")}
    if val_idx is not None:
        sides["val"] = check_indices(val_idx, acts.shape[0], "val_idx")
    _check_sides(y, sides)

    direction = _fit_direction(_rows(acts, sides["train"]), y[sides["train"]])
    proj = {name: project(_rows(acts, idx), direction).double().numpy() for name, idx in sides.items()}
    y_side = {name: y[idx] for name, idx in sides.items()}
    threshold = fit_threshold(proj["train"][y_side["train"]], proj["train"][~y_side["train"]])

    report: dict[str, Any] = {"layers": labels}
    report["n"] = {name: {"assistant": int(ys.sum()), "other": int((~ys).sum())} for name, ys in y_side.items()}
    # What accuracy a rule that ignores the prompt reaches: always the larger class of the holdout.
    report["majority_baseline"] = float(max(y_side["test"].mean(), 1 - y_side["test"].mean()))
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
    if transfer is not None:
        report["transfer_auroc"] = [float(v) for v in transfer(direction)]
        if len(report["transfer_auroc"]) != len(labels):
            raise ValueError(f"transfer returned {len(report['transfer_auroc'])} values for {len(labels)} layers")

    def key(c: int) -> tuple[float, float, int]:
        low = sel["cohens_d_low"][c]
        first = sel["balanced_accuracy"][c] if transfer is None else min(sel["auroc"][c], report["transfer_auroc"][c])
        return (-first, np.inf if np.isnan(low) else -low, c)

    best = min(range(len(labels)), key=key)
    test = report["test"]
    report["best_layer"] = labels[best]
    report["best"] = {"layer": labels[best], "column": best, "threshold": report["train"]["threshold"][best],
                      **{k: test[k][best] for k in ("cohens_d", "cohens_d_low", "cohens_d_high", "accuracy", "balanced_accuracy",
                                     "auroc")}}
    report["selection"] = {
        "on": chooser,
        "rule": ("max balanced accuracy" if transfer is None else "max of min(AUROC, AUROC on another prompt format)")
        + ", then max lower CI bound of Cohen's d, then lowest layer",
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
    train = check_indices(train_idx, acts.shape[0], "train_idx")
    test = check_indices(test_idx, acts.shape[0], "test_idx")
    _check_sides(y, {"train": train, "test": test})
    rng = np.random.default_rng(seed)
    # float64 copies made once; each permutation is then two weighted sums over the prompts.
    x_train, x_test = _rows(acts, train).double(), _rows(acts, test).double()
    y_train, y_test = y[train], y[test]
    runs: dict[str, list[np.ndarray]] = {"cohens_d": [], "accuracy": [], "balanced_accuracy": [], "auroc": []}
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
        "max_auroc": mats["auroc"].max(axis=1).tolist(),
    }


def null_summary(null: Mapping[str, Any], real: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """`shuffled_null`'s result without its per-draw matrices (too large to store at 1,000 draws), with the
    rank of the real holdout values (`real[metric]`, `[L]`, e.g. `evaluate_layers(...)["test"]`) among the
    draws per layer, and the p-value of the real maximum over layers among the draws' maxima (the fair
    comparison for a best layer picked on the holdout)."""
    metrics = ("cohens_d", "accuracy", "balanced_accuracy", "auroc")
    out = {k: v for k, v in null.items() if k not in metrics}
    n = len(null["max_abs_cohens_d"])
    for k in metrics:
        out[f"rank_{k}"] = rank_among(np.asarray(real[k]), np.asarray(null[k]))
    best_d = float(np.max(np.abs(real["cohens_d"])))
    out["p_value_max_abs_cohens_d"] = float((1 + np.sum(np.asarray(null["max_abs_cohens_d"]) >= best_d)) / (1 + n))
    return out
