"""Persona space: role means, PCA per layer and the PC1-vs-axis cosine with its controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axes_lib.persona_space import contrast, pc1_contrast_null, pc1_cosine, pca_by_layer, role_bootstrap, role_means


def planted(n_per_role=6, n_roles=24, d=32, n_layers=3, seed=0):
    """Answers whose role means spread along a planted axis (roles 0, 1, 2 at one end) and, less, along a
    second direction (in an order unrelated to the first), plus noise."""
    rng = np.random.default_rng(seed)
    axis, other = rng.normal(size=(2, n_layers, d))
    other -= (other * axis).sum(-1, keepdims=True) / (axis * axis).sum(-1, keepdims=True) * axis
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (axis, other)]
    position = np.linspace(-3, 3, n_roles)
    second = rng.permutation(np.linspace(-2.5, 2.5, n_roles))
    roles, rows = [], []
    for r in range(n_roles):
        for _ in range(n_per_role):
            roles.append(f"role{r:02d}")
            rows.append(position[r] * unit[0] + second[r] * unit[1] + 0.3 * rng.normal(size=(n_layers, d)))
    return torch.tensor(np.array(rows)), roles, axis


def test_role_means_match_a_direct_mean():
    acts, roles, _ = planted()
    names, vectors = role_means(acts, roles)
    labels = np.array(roles)
    assert names == sorted(set(roles))
    assert np.allclose(vectors[3], acts.numpy()[labels == names[3]].mean(0))
    with pytest.raises(ValueError, match="role labels"):
        role_means(acts, roles[:-1])


def test_pca_matches_sklearn_and_finds_the_planted_axis():
    from sklearn.decomposition import PCA

    acts, roles, axis = planted()
    _, vectors = role_means(acts, roles)
    pca = pca_by_layer(vectors, n_components=3)
    reference = PCA(n_components=3).fit(vectors[:, 1])
    assert np.allclose(pca["explained"][1], reference.explained_variance_ratio_)
    assert np.allclose(np.abs(pca["components"][1]), np.abs(reference.components_), atol=1e-8)
    cos = pc1_cosine(pca["components"], axis)
    assert np.all(cos > 0.9)
    assert np.all(pc1_cosine(pca["components"], -axis) == cos)  # the sign of a component is arbitrary


def test_the_planted_contrast_ranks_first_among_random_role_sets_and_the_bootstrap_keeps_it():
    acts, roles, axis = planted()
    _, vectors = role_means(acts, roles)
    ends = [0, 1, 2]  # the three roles at one end of the planted axis: their contrast is the axis
    real = pc1_cosine(pca_by_layer(vectors)["components"], contrast(vectors, ends))
    null = pc1_contrast_null(vectors, ends, n=200, seed=1)
    assert null.shape == (200, 3) and np.all(real > np.quantile(null, 0.95, axis=0))
    middle = [11, 12, 13]  # roles in the middle: their contrast is no better than random sets
    mid = pc1_cosine(pca_by_layer(vectors)["components"], contrast(vectors, middle))
    assert np.all(mid < np.quantile(pc1_contrast_null(vectors, middle, n=200, seed=1), 0.5))
    assert np.median(role_bootstrap(vectors, axis, n=50, seed=1)) > 0.8
    with pytest.raises(ValueError, match="both sides"):
        contrast(vectors, range(len(vectors)))


def test_voice_match_against_a_direct_comparison():
    from axes_lib.persona_space import voice_match

    centroids = {"assistant": np.array([1.0, 0, 0]), "pirate": np.array([0, 2.0, 0]), "poet": np.array([0, 0, 1.0])}
    answers = np.array([[0.9, 0.1, 0], [0.1, 0.9, 0.4], [0.6, 0.5, 0.6], [0.7, 0.7, 0]])
    answers /= np.linalg.norm(answers, axis=1, keepdims=True)
    out = voice_match(answers, ["assistant", "pirate", "poet", "pirate"], centroids, ["assistant"])
    assert out["rank"].tolist() == [1, 1, 1, 1]
    assert out["in_role"].tolist() == [True, True, False, False]  # ties with the assistant are not in role
    assert np.allclose(out["own"], [answers[0, 0], answers[1, 1], answers[2, 2], answers[3, 1]])
