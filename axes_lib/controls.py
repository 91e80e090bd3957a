"""Controls for the axis's separation: what the same fit-and-score pipeline gives for labellings, directions
and prompt subsets that are not the assistant-vs-rest contrast, so each holdout number has a comparison
that could have made it look ordinary.

* `partition_null` — every way to call `k` of the personas "assistant" (C(9, 3) = 84 for the seed), fitted
  and scored exactly like the real split: with persona identity this decodable, any grouping of whole
  personas separates; the question is whether the real one stands out. This is also the exact
  permutation distribution of labels permuted by whole persona.
* `random_direction_null` — random unit directions (orthogonal to the axis) scored on the same holdout.
* `leave_one_persona_out` — each persona, assistant ones included, held out of the fit in turn and
  classified on held-out queries.
* `role_adherence` — which answers play their own side's voice, by a text classifier that never saw
  the answer's query (cross-fitted), to refit the axis on in-role answers only.

All return plain lists and floats (JSON-ready). The row-level permutation null is `validation.shuffled_null`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

from axes_lib.directions import check_acts, layer_labels
from axes_lib.metrics import auroc_columns, cohens_d, fit_threshold, rank_among
from axes_lib.splits import check_indices

__all__ = ["leave_one_persona_out", "partition_null", "random_direction_null", "role_adherence", "separation"]


def _group_means(x: torch.Tensor, groups: np.ndarray, names: Sequence[str]) -> tuple[torch.Tensor, np.ndarray]:
    """Per-group mean `[G, L, d]` (float64) and row counts `[G]`."""
    means = torch.stack([x[torch.from_numpy(groups == g)].double().mean(0) for g in names])
    return means, np.array([(groups == g).sum() for g in names], dtype=float)


def _unit(directions: torch.Tensor) -> torch.Tensor:
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _as_array(values: Sequence[Any], n: int, name: str) -> np.ndarray:
    out = np.asarray(list(values))
    if out.shape != (n,):
        raise ValueError(f"{name} has {out.shape[0] if out.ndim else 0} entries but acts has {n} prompts")
    return out


def separation(acts: torch.Tensor, is_assistant: Sequence[bool], direction: torch.Tensor) -> dict[str, list[float]]:
    """Cohen's d and AUROC per layer of `acts` (`[n, L, d]`) projected on a fixed direction (`[L, d]`), e.g. the
    committed axis on prompts in another format: nothing is refitted."""
    check_acts(acts)
    y = _as_array(is_assistant, acts.shape[0], "is_assistant").astype(bool)
    if direction.shape != acts.shape[1:]:
        raise ValueError(f"direction has shape {tuple(direction.shape)}, expected {tuple(acts.shape[1:])} (one vector per layer)")
    proj = torch.einsum("nld,ld->nl", acts.double(), _unit(direction.double())).numpy()
    return {"cohens_d": np.asarray(cohens_d(proj[y], proj[~y])).tolist(), "auroc": auroc_columns(proj[y], proj[~y]).tolist()}


def partition_null(
    acts: torch.Tensor, personas: Sequence[str], assistant: Sequence[str], train_idx: Sequence[int],
    test_idx: Sequence[int], layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Holdout Cohen's d and AUROC per layer for every partition of the personas into `len(assistant)`
    "assistant" ones and the rest, each direction the mean difference of its train prompts (row-weighted,
    as `validation.evaluate_layers` fits it); the real partition's rank among them per layer."""
    check_acts(acts)
    who = _as_array(personas, acts.shape[0], "personas").astype(str)
    train, test = check_indices(train_idx, acts.shape[0], "train_idx"), check_indices(test_idx, acts.shape[0], "test_idx")
    names = sorted(set(who[train]))
    real = tuple(sorted(set(assistant)))
    if not set(real) < set(names):
        raise ValueError(f"assistant personas {list(real)} must be a proper subset of the train personas {names}")
    means, counts = _group_means(acts[torch.as_tensor(train)], who[train], names)
    x_test = acts[torch.as_tensor(test)].double()
    parts = list(combinations(names, len(real)))
    d_all, auc_all = [], []
    for part in parts:
        inside = np.isin(names, part)
        w = torch.from_numpy(np.where(inside, counts / counts[inside].sum(), -counts / counts[~inside].sum()))
        direction = _unit(torch.einsum("g,gld->ld", w, means))
        proj = torch.einsum("nld,ld->nl", x_test, direction).numpy()
        y = np.isin(who[test], part)
        d_all.append(cohens_d(proj[y], proj[~y]))
        auc_all.append(auroc_columns(proj[y], proj[~y]))
    d_arr, auc_arr = np.stack(d_all), np.stack(auc_all)
    i_real = parts.index(real)
    others = np.arange(len(parts)) != i_real
    return {"layers": layer_labels(layers, acts.shape[1]), "n_partitions": len(parts), "assistant": list(real),
            "partitions": [list(p) for p in parts], "cohens_d": d_arr.tolist(), "auroc": auc_arr.tolist(),
            "real": {"cohens_d": d_arr[i_real].tolist(), "auroc": auc_arr[i_real].tolist()},
            "rank_cohens_d": rank_among(d_arr[i_real], d_arr[others]),
            "rank_auroc": rank_among(auc_arr[i_real], auc_arr[others]),
            # Per layer, the other grouping with the largest holdout d: who the axis competes with.
            "best_other": [list(parts[int(np.flatnonzero(others)[np.argmax(d_arr[others, c])])]) for c in range(d_arr.shape[1])]}


def random_direction_null(
    acts: torch.Tensor, is_assistant: Sequence[bool], test_idx: Sequence[int], axis: torch.Tensor, n: int = 1000,
    seed: int = 0, layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Holdout |Cohen's d| and AUROC (of the better sign) of `n` random unit directions per layer, Gaussian and
    orthogonalised to the axis (`[L, d]`) at each layer, against the axis's own; a random direction has no
    preferred sign, so both statistics are taken in the direction that separates best."""
    check_acts(acts)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    y = _as_array(is_assistant, acts.shape[0], "is_assistant").astype(bool)
    test = check_indices(test_idx, acts.shape[0], "test_idx")
    real = separation(acts[torch.as_tensor(test)], y[test], axis)
    u = _unit(axis.double())
    x_test, y_test = acts[torch.as_tensor(test)].double(), y[test]
    rng = torch.Generator().manual_seed(seed)
    d_all, auc_all = [], []
    for start in range(0, n, 100):
        r = torch.randn((min(100, n - start), *axis.shape), generator=rng, dtype=torch.float64)
        r = _unit(r - (r * u).sum(-1, keepdim=True) * u)
        proj = torch.einsum("nld,rld->rnl", x_test, r).numpy()
        for p in proj:
            d_all.append(np.abs(cohens_d(p[y_test], p[~y_test])))
            auc = auroc_columns(p[y_test], p[~y_test])
            auc_all.append(np.maximum(auc, 1 - auc))
    d_arr, auc_arr = np.stack(d_all), np.stack(auc_all)
    return {"layers": layer_labels(layers, acts.shape[1]), "n": n, "seed": seed, "orthogonal_to_axis": True,
            "real": real, "rank_cohens_d": rank_among(np.asarray(real["cohens_d"]), d_arr),
            "rank_auroc": rank_among(np.asarray(real["auroc"]), auc_arr)}


def leave_one_persona_out(
    acts: torch.Tensor, is_assistant: Sequence[bool], personas: Sequence[str], train_idx: Sequence[int],
    test_idx: Sequence[int], layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Hold each persona out of the fit in turn (assistant ones too): fit the mean-difference direction and
    threshold on the other personas' train prompts, then classify the held-out persona's prompts to the
    held-out queries. Per persona and layer: the share on its own side. Pooled over folds: balanced
    accuracy and AUROC of the scores `(projection - threshold) / train SD`, comparable across folds."""
    check_acts(acts)
    y = _as_array(is_assistant, acts.shape[0], "is_assistant").astype(bool)
    who = _as_array(personas, acts.shape[0], "personas").astype(str)
    train, test = check_indices(train_idx, acts.shape[0], "train_idx"), check_indices(test_idx, acts.shape[0], "test_idx")
    x = acts.double()
    per_persona: dict[str, list[float]] = {}
    z_all, y_all = [], []
    for name in sorted(set(who[test])):
        fit_rows = [i for i in train if who[i] != name]
        held = [i for i in test if who[i] == name]
        yf = y[fit_rows]
        if yf.all() or not yf.any():
            raise ValueError(f"without {name!r} the train prompts have one kind only: need 2+ personas of each kind")
        xf = x[torch.as_tensor(fit_rows)]
        direction = _unit(xf[torch.from_numpy(yf)].mean(0) - xf[torch.from_numpy(~yf)].mean(0))
        pf = torch.einsum("nld,ld->nl", xf, direction).numpy()
        threshold = fit_threshold(pf[yf], pf[~yf])
        scale = pf.std(axis=0, ddof=1)
        z = (torch.einsum("nld,ld->nl", x[torch.as_tensor(held)], direction).numpy() - threshold) / scale
        own_side = z > 0 if y[held[0]] else z <= 0
        per_persona[str(name)] = own_side.mean(axis=0).tolist()
        z_all.append(z)
        y_all.append(y[held])
    z, yy = np.concatenate(z_all), np.concatenate(y_all)
    return {"layers": layer_labels(layers, acts.shape[1]),
            "assistant_personas": sorted(set(who[y])), "on_own_side": per_persona,
            "balanced_accuracy": (((z[yy] > 0).mean(0) + (z[~yy] <= 0).mean(0)) / 2).tolist(),
            "auroc": auroc_columns(z[yy], z[~yy]).tolist()}


def role_adherence(
    texts: Sequence[str], is_assistant: Sequence[bool], personas: Sequence[str], groups: Sequence[str], n_folds: int = 5,
) -> dict[str, Any]:
    """Which answers sound like their own side: the judge's voice classifier (`judge.classifier`), fitted on
    the other query folds (grouped by `groups`), so no answer is scored by a model that saw its query.
    `in_role[i]`: P(assistant) >= 0.5 for an assistant persona's answer, < 0.5 for any other's."""
    from sklearn.model_selection import GroupKFold

    from axes_lib.judge.classifier import AssistantClassifier

    y = np.asarray(list(is_assistant), dtype=bool)
    texts, who, groups = list(texts), np.asarray(list(personas), dtype=str), np.asarray(list(groups))
    if not len(texts) == len(y) == len(who) == len(groups):
        raise ValueError(f"got {len(texts)} texts, {len(y)} labels, {len(who)} personas and {len(groups)} groups")
    prob = np.empty(len(texts))
    for fit, held in GroupKFold(n_splits=n_folds).split(texts, y, groups):
        clf = AssistantClassifier.fit([texts[i] for i in fit], y[fit], groups[fit], who[fit])
        prob[held] = clf.probability([texts[i] for i in held])
    in_role = np.where(y, prob >= 0.5, prob < 0.5)
    return {"probability": prob.tolist(), "in_role": in_role.tolist(),
            "kept": {name: int(in_role[who == name].sum()) for name in sorted(set(who))},
            "total": {name: int((who == name).sum()) for name in sorted(set(who))}}
