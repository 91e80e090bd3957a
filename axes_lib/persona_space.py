"""Persona space: one vector per role, its principal components per layer, and how the assistant axis sits in it.

Anthropic's *The Assistant Axis* (arXiv 2601.10387) computes a mean response activation per role, runs a PCA
over the role vectors at each layer and compares the first component with the assistant axis. The functions
here do the same on `[n_answers, n_layers, d_model]` activations with a role label per answer, plus two
controls: a null of random role sets (is PC1 closer to the assistant contrast than to the contrast of any
other set of as many roles?) and a bootstrap over roles for the cosine's interval. Shuffling answers
between roles is no null here: the means of random groups of answers vary along the answers' own main
direction of variance, which the between-role spread dominates, so their PC1 lines up with it as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["contrast", "pc1_contrast_null", "pc1_cosine", "pca_by_layer", "role_bootstrap", "role_means", "voice_match"]


def _group_means(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Means of the rows of `x` (`[n, ...]`) per group code, as one matrix product."""
    onehot = np.zeros((n_groups, len(codes)))
    onehot[codes, np.arange(len(codes))] = 1.0
    onehot /= onehot.sum(axis=1, keepdims=True)
    return (onehot @ x.reshape(len(codes), -1)).reshape(n_groups, *x.shape[1:])


def role_means(acts: torch.Tensor | np.ndarray, roles: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Mean activation per role: the role names (sorted) and `[n_roles, n_layers, d_model]` float64."""
    x = acts.double().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts, dtype=np.float64)
    if len(roles) != x.shape[0]:
        raise ValueError(f"{len(roles)} role labels for {x.shape[0]} answers")
    names, codes = np.unique(np.asarray(roles), return_inverse=True)
    return names.tolist(), _group_means(x, codes, len(names))


def pca_by_layer(vectors: np.ndarray, n_components: int = 5) -> dict[str, np.ndarray]:
    """PCA of the role vectors `[n_roles, n_layers, d]` at every layer, centred on the mean role.

    Returns `explained` `[n_layers, k]` (variance ratios), `components` `[n_layers, k, d]` (unit rows) and
    `scores` `[n_layers, n_roles, k]`; k = min(n_components, n_roles - 1). Signs are arbitrary, as in any PCA.
    """
    n_roles, n_layers, _ = vectors.shape
    k = min(n_components, n_roles - 1)
    if k < 1:
        raise ValueError(f"a PCA of role vectors needs at least 2 roles, got {n_roles}")
    explained, components, scores = [], [], []
    for layer in range(n_layers):
        x = vectors[:, layer] - vectors[:, layer].mean(axis=0)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        var = s**2
        explained.append(var[:k] / var.sum())
        components.append(vt[:k])
        scores.append(u[:, :k] * s[:k])
    return {"explained": np.array(explained), "components": np.array(components), "scores": np.array(scores)}


def pc1_cosine(components: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """|cos| per layer between each layer's first component (`[n_layers, k, d]`) and the axis (`[n_layers, d]`);
    absolute because a component's sign is arbitrary."""
    pc1 = components[:, 0]
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    return np.abs(np.einsum("ld,ld->l", pc1, unit))


def contrast(vectors: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """`[n_layers, d]`: the mean of the role vectors `members` minus the mean of the other roles (the assistant
    axis when `members` are the assistant roles)."""
    inside = np.zeros(len(vectors), bool)
    inside[list(members)] = True
    if inside.all() or not inside.any():
        raise ValueError("a contrast needs roles on both sides")
    return vectors[inside].mean(axis=0) - vectors[~inside].mean(axis=0)


def pc1_contrast_null(vectors: np.ndarray, members: Sequence[int], n: int = 1000, seed: int = 0) -> np.ndarray:
    """|cos| per layer between PC1 and the contrast of `len(members)` roles drawn at random from the others
    against the rest (`[n, n_layers]`): how well the first component lines up with a contrast of *some*
    roles, so that the assistant contrast's cosine can be ranked among them."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(len(vectors)), np.asarray(members))
    if len(pool) < len(members):
        raise ValueError(f"{len(pool)} other roles cannot fill random sets of {len(members)}")
    components = pca_by_layer(vectors, 1)["components"]
    return np.array([pc1_cosine(components, contrast(vectors, rng.choice(pool, len(members), replace=False)))
                     for _ in range(n)])


def role_bootstrap(vectors: np.ndarray, axis: np.ndarray, n: int = 1000, seed: int = 0) -> np.ndarray:
    """The PC1-vs-axis |cos| per layer with the roles resampled with replacement (`[n, n_layers]`): the
    interval over which roles happen to be in the bank."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, vectors.shape[1]))
    for i in range(n):
        pick = rng.integers(0, len(vectors), len(vectors))
        out[i] = pc1_cosine(pca_by_layer(vectors[pick], 1)["components"], axis)
    return out


def voice_match(answers: np.ndarray, roles: Sequence[str], centroids: Mapping[str, np.ndarray],
                reference: Sequence[str]) -> dict[str, np.ndarray]:
    """Does each answer sound like its own role? `answers`: unit sentence embeddings `[n, e]`; `centroids`:
    each role's centroid of its example answers (from its system prompt); `reference`: the assistant roles.

    Returns `own` (cosine with its own role's centroid), `rank` (1 when its own role is the closest of all
    roles) and `in_role`: closer to its own role than to every reference role (answers of reference roles
    are in role by definition).
    """
    names = list(centroids)
    c = np.stack([centroids[n] / np.linalg.norm(centroids[n]) for n in names])
    sims = answers @ c.T
    own_col = np.array([names.index(r) for r in roles])
    own = sims[np.arange(len(roles)), own_col]
    rank = 1 + (sims > own[:, None]).sum(axis=1)
    ref_cols = [names.index(r) for r in reference]
    in_role = np.array([r in reference for r in roles]) | (own > sims[:, ref_cols].max(axis=1))
    return {"own": own, "rank": rank, "in_role": in_role}
