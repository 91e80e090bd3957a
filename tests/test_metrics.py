"""Tests for axes_lib.metrics against independent computations and planted toy data."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from axes_lib.directions import compute_direction
from axes_lib.metrics import (
    accuracy,
    auroc,
    auroc_interval,
    balanced_accuracy,
    bootstrap_ci,
    cohens_d,
    fit_threshold,
    mean_ci,
    project,
    projection_stats,
)
from axes_lib.splits import split_by_persona, split_by_query
from axes_lib.validation import evaluate_layers, shuffled_null

FAST = settings(max_examples=40, deadline=None)
finite = st.floats(-100, 100, allow_nan=False, width=64)


def reference_d(a: list[float], b: list[float]) -> float:
    """Cohen's d from the statistics module: pooled sample variance."""
    n_a, n_b = len(a), len(b)
    pooled = ((n_a - 1) * statistics.variance(a) + (n_b - 1) * statistics.variance(b)) / (n_a + n_b - 2)
    return (statistics.fmean(a) - statistics.fmean(b)) / pooled**0.5


# ------------------------------------------------------------------------------------------ project


def test_project_matches_manual_dot() -> None:
    g = torch.Generator().manual_seed(0)
    acts, direction = torch.randn(5, 3, 8, generator=g), {i: torch.randn(8, generator=g) for i in range(3)}
    got = project(acts, direction)
    assert got.shape == (5, 3) and got.dtype == torch.float32
    for layer in range(3):
        u = direction[layer].double() / direction[layer].double().norm()
        np.testing.assert_allclose(got[:, layer].numpy(), (acts[:, layer].double() @ u).numpy(), rtol=1e-5, atol=1e-5)
    matrix = torch.stack([direction[i] for i in range(3)])
    assert torch.allclose(project(acts, matrix), got)


def test_project_layer_labels_and_errors() -> None:
    acts = torch.randn(4, 2, 8)
    direction = {5: torch.randn(8), 9: torch.randn(8), 11: torch.randn(8)}
    got = project(acts, direction, layers=[9, 11])
    assert torch.allclose(got, project(acts, torch.stack([direction[9], direction[11]])))
    with pytest.raises(ValueError, match=r"no vector for layers \[0, 1\]"):
        project(acts, direction)
    with pytest.raises(ValueError, match=r"\[n_layers, d_model\] = \[2, 8\]"):
        project(acts, torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"rows \[1\] are zero"):
        project(acts, torch.stack([torch.ones(8), torch.zeros(8)]))


@FAST
@given(
    x=arrays(np.float64, (3, 2, 4), elements=finite),
    y=arrays(np.float64, (3, 2, 4), elements=finite),
    v=arrays(np.float64, (2, 4), elements=st.floats(0.1, 10)),
    c=st.floats(-10, 10),
    s=st.floats(0.01, 100),
)
def test_project_is_linear_and_scale_free(x, y, v, c, s) -> None:
    x, y, v = (torch.from_numpy(arr).float() for arr in (x, y, v))
    px, py = project(x, v), project(y, v)
    tol = dict(rtol=1e-4, atol=1e-2)
    assert torch.allclose(project(x + y, v), px + py, **tol)
    assert torch.allclose(project(c * x, v), c * px, **tol)
    assert torch.allclose(project(x, s * v), px, **tol)  # only the direction's direction matters


# ---------------------------------------------------------------------------------------- cohens_d


def test_cohens_d_matches_statistics_module() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 2, (40, 5)), rng.normal(0, 1, (25, 5))
    got = cohens_d(torch.from_numpy(a), torch.from_numpy(b))
    assert got.shape == (5,)
    for layer in range(5):
        assert got[layer] == pytest.approx(reference_d(list(a[:, layer]), list(b[:, layer])), rel=1e-10)
    assert cohens_d(a[:, 0], b[:, 0]) == pytest.approx(got[0])
    stacked = cohens_d(np.stack([a, a[::-1]]), np.stack([b, b]))  # leading batch axis
    np.testing.assert_allclose(stacked, np.stack([got, got]))


@FAST
@given(
    a=arrays(np.float64, st.tuples(st.integers(2, 12), st.just(3)), elements=finite),
    b=arrays(np.float64, st.tuples(st.integers(2, 12), st.just(3)), elements=finite),
    scale=st.floats(0.1, 10),
    shift=st.floats(-50, 50),
)
def test_cohens_d_antisymmetric_and_affine_invariant(a, b, scale, shift) -> None:
    d_ab = cohens_d(a, b)
    ok = a.std(axis=0) + b.std(axis=0) > 1e-3  # skip columns where the pooled SD is (numerically) zero
    np.testing.assert_allclose(cohens_d(b, a)[ok], -d_ab[ok], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cohens_d(scale * a + shift, scale * b + shift)[ok], d_ab[ok], rtol=1e-6, atol=1e-6)


def test_cohens_d_edge_cases() -> None:
    assert cohens_d([1.0, 1.0], [0.0, 0.0]) == np.inf
    assert cohens_d([1.0], [0.0, 2.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="three in all"):
        cohens_d([1.0], [2.0])


# ---------------------------------------------------------------------------------- threshold, acc


def brute_force_best(pos: np.ndarray, neg: np.ndarray) -> float:
    values = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    return max(0.5 * ((pos > t).mean() + (neg <= t).mean()) for t in cuts)


@FAST
@given(
    pos=arrays(np.float64, st.integers(1, 15), elements=st.integers(-5, 5).map(float)),
    neg=arrays(np.float64, st.integers(1, 15), elements=st.integers(-5, 5).map(float)),
)
def test_fit_threshold_is_optimal(pos, neg) -> None:
    t = fit_threshold(pos, neg)
    assert isinstance(t, float)
    assert balanced_accuracy(pos, neg, t) == pytest.approx(brute_force_best(pos, neg))


def test_fit_threshold_separable_takes_gap_midpoint_per_layer() -> None:
    pos = np.array([[3.0, -1.0], [5.0, 0.0], [4.0, 1.0]])
    neg = np.array([[0.0, -10.0], [1.0, -9.0]])
    t = fit_threshold(pos, neg)
    np.testing.assert_allclose(t, [2.0, -5.0])
    np.testing.assert_allclose(accuracy(pos, neg, t), [1.0, 1.0])


def test_fit_threshold_ignores_class_ratio() -> None:
    # Plain accuracy would call everything "other" (90 %); balanced accuracy keeps the minority class.
    pos = np.array([0.0, 1.0])
    neg = np.concatenate([np.full(18, -1.0), [0.5, 2.0]])
    t = fit_threshold(pos, neg)
    assert (pos > t).any()
    assert balanced_accuracy(pos, neg, t) == pytest.approx(brute_force_best(pos, neg))


def test_accuracy_counts() -> None:
    pos, neg = np.array([[1.0], [2.0], [-1.0]]), np.array([[0.0], [3.0]])
    assert accuracy(pos, neg, [0.5])[0] == pytest.approx(3 / 5)
    assert balanced_accuracy(pos, neg, 0.5)[0] == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    assert accuracy(pos[:, 0], neg[:, 0], 0.0) == pytest.approx(3 / 5)  # neg at the threshold counts as other


def test_projection_stats_match_numpy() -> None:
    rng = np.random.default_rng(2)
    a, o = rng.normal(size=(30, 2)), rng.normal(size=(20, 2))
    stats = projection_stats(torch.from_numpy(a), o)
    assert len(stats) == 2
    s = stats[1]["other"]
    assert s["n"] == 20 and s["mean"] == pytest.approx(o[:, 1].mean()) and s["std"] == pytest.approx(o[:, 1].std(ddof=1))
    assert s["min"] == o[:, 1].min() and s["max"] == o[:, 1].max()
    assert [s[k] for k in ("q05", "q25", "q50", "q75", "q95")] == pytest.approx(np.percentile(o[:, 1], [5, 25, 50, 75, 95]))
    assert stats[0]["assistant"]["q50"] == pytest.approx(np.median(a[:, 0]))
    json.dumps(stats)


# ---------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_vectorised_equals_loop_and_is_fast() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, (70, 30)), rng.normal(0, 1, (130, 30))
    start = time.perf_counter()
    fast = bootstrap_ci(cohens_d, a, b, n_boot=1000, seed=4)
    elapsed = time.perf_counter() - start
    slow = bootstrap_ci(cohens_d, a, b, n_boot=1000, seed=4, vectorized=False)
    assert elapsed < 1.0
    for key in ("estimate", "low", "high"):
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12)
    np.testing.assert_allclose(fast["estimate"], cohens_d(a, b))
    assert (fast["low"] < fast["estimate"]).all() and (fast["estimate"] < fast["high"]).all()


def test_bootstrap_ci_matches_independent_resampling() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.8, 1, 60), rng.normal(0, 1, 80)
    ci = bootstrap_ci(lambda x, y: x.mean(axis=-2) - y.mean(axis=-2), a, b, n_boot=4000, seed=0)
    own = np.random.default_rng(99)
    diffs = [own.choice(a, a.size).mean() - own.choice(b, b.size).mean() for _ in range(4000)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert isinstance(ci["low"], float)
    assert ci["low"] == pytest.approx(lo, abs=0.03) and ci["high"] == pytest.approx(hi, abs=0.03)
    # Coverage sanity: the normal-theory interval has about the same width.
    se = (a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) ** 0.5
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_mean_ci_is_the_percentile_bootstrap_of_the_mean() -> None:
    """One `[n_boot, n]` index draw from `default_rng(seed)`, row means, linear quantiles: written out here, equal to the bit."""
    rng = np.random.default_rng(8)
    for n, n_boot, alpha, seed in [(1, 50, 0.05, 0), (7, 1000, 0.05, 3), (250, 400, 0.1, 11), (5000, 1000, 0.2, 2)]:
        x = rng.normal(5, 2, n)
        got = mean_ci([*x.tolist(), None, float("nan")], n_boot=n_boot, alpha=alpha, seed=seed)
        own = np.random.default_rng(seed)
        means = x[own.integers(0, n, size=(n_boot, n))].mean(axis=1)
        assert got == (float(x.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))
        assert got[1] <= got[0] <= got[2]
    assert all(np.isnan(v) for v in mean_ci([None, float("nan")]))
    with pytest.raises(ValueError, match="n_boot"):
        mean_ci([1.0, 2.0], n_boot=0)


def _pair_count_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(positive > negative) over all pairs, ties counting half."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30), st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_auroc_is_the_pair_count_with_ties(pos, neg) -> None:
    pos, neg = np.array(pos, dtype=float), np.array(neg, dtype=float)
    assert auroc(pos, neg) == pytest.approx(_pair_count_auroc(pos, neg), abs=1e-12)


def test_auroc_edge_cases() -> None:
    assert np.isnan(auroc([], [1.0])) and np.isnan(auroc([1.0], []))
    assert auroc([2.0], [1.0]) == 1.0 and auroc([1.0], [2.0]) == 0.0 and auroc([1.0, 1.0], [1.0]) == 0.5


def test_auroc_interval_is_a_bootstrap_over_whole_groups() -> None:
    """Written out: per resample, one draw of as many groups (sorted names) as there are; rows of the drawn groups."""
    rng = np.random.default_rng(4)
    groups = [f"q{j}" for j in rng.integers(0, 9, 70)]
    positive = rng.random(70) < 0.4
    scores = rng.integers(0, 6, 70) + positive
    got = auroc_interval(positive, scores, groups, n_boot=300, alpha=0.1, seed=7)
    names = sorted(set(groups))
    members = [np.flatnonzero(np.array(groups) == g) for g in names]
    own = np.random.default_rng(7)
    stats = []
    for _ in range(300):
        rows = np.concatenate([members[i] for i in own.integers(0, len(names), len(names))])
        p, x = positive[rows], scores[rows].astype(float)
        stats.append(_pair_count_auroc(x[p], x[~p]) if p.any() and (~p).any() else np.nan)
    assert got == pytest.approx(tuple(np.nanquantile(stats, [0.05, 0.95])), abs=1e-12)
    with pytest.raises(ValueError, match="one of each per item"):
        auroc_interval(positive[:-1], scores, groups)


def test_auroc_interval_resamples_whole_queries() -> None:
    """Perfect separation within every query stays perfect however queries are drawn; a query-level
    confound gives an interval as wide as the queries disagree."""
    groups = [q for q in "abcdefgh" for _ in range(4)]
    positive = [True, True, False, False] * 8
    perfect = [1.0, 0.9, 0.1, 0.0] * 8
    assert auroc_interval(positive, perfect, groups, n_boot=200) == (1.0, 1.0)
    # half the queries rank their answers the wrong way round: the interval straddles 0.5
    mixed = perfect[:16] + [0.0, 0.1, 0.9, 1.0] * 4
    lo, hi = auroc_interval(positive, mixed, groups, n_boot=500)
    assert lo < 0.5 < hi



# ------------------------------------------------------------------------------------------- splits


def make_records(n_categories: int = 5, per_category: int = 20, n_assistant: int = 3, n_other: int = 6) -> list[dict]:
    personas = [(f"assistant_{i}", "assistant") for i in range(n_assistant)] + [(f"persona_{i}", "persona") for i in range(n_other)]
    return [
        {"query_id": f"q{c}_{q}", "category": f"cat{c}", "persona": p, "kind": kind}
        for c in range(n_categories) for q in range(per_category) for p, kind in personas
    ]


@FAST
@given(seed=st.integers(0, 10_000), frac=st.floats(0.05, 0.6), per_category=st.integers(2, 12))
def test_split_by_query_invariants(seed, frac, per_category) -> None:
    records = make_records(n_categories=3, per_category=per_category)
    train, test = split_by_query(records, holdout_frac=frac, seed=seed)
    assert sorted(train + test) == list(range(len(records)))  # every index exactly once
    assert not {records[i]["query_id"] for i in train} & {records[i]["query_id"] for i in test}
    held = Counter(records[i]["category"] for i in test if records[i]["persona"] == "assistant_0")
    expected = min(max(round(frac * per_category), 1), per_category - 1)
    assert held == {f"cat{c}": expected for c in range(3)}  # stratified: every category, same share


def test_split_by_query_is_deterministic_and_order_free() -> None:
    records = make_records()
    train, test = split_by_query(records, seed=7)
    assert (train, test) == split_by_query(records, seed=7)
    assert len(test) == len(records) // 5
    reversed_records = records[::-1]
    r_train, r_test = split_by_query(reversed_records, seed=7)
    assert {reversed_records[i]["query_id"] for i in r_test} == {records[i]["query_id"] for i in test}
    assert split_by_query(records, seed=8)[1] != test


def test_split_by_query_without_category_and_subset() -> None:
    records = [{"query_id": q, "persona": "p", "kind": "persona"} for q in range(10) for _ in range(2)]
    train, test = split_by_query(records, holdout_frac=0.3)
    assert len({records[i]["query_id"] for i in test}) == 3
    inner_train, val = split_by_query(records, holdout_frac=0.3, indices=train)
    assert sorted(inner_train + val) == train
    assert not {records[i]["query_id"] for i in inner_train} & {records[i]["query_id"] for i in val}


def test_split_by_query_errors() -> None:
    with pytest.raises(ValueError, match="holdout_frac"):
        split_by_query(make_records(), holdout_frac=1.0)
    with pytest.raises(ValueError, match="at least 2 queries"):
        split_by_query([{"query_id": 1}, {"query_id": 1}])
    with pytest.raises(ValueError, match="two categories"):
        split_by_query([{"query_id": 1, "category": "a"}, {"query_id": 1, "category": "b"}])
    with pytest.raises(ValueError, match="record 0 has no 'query_id'"):
        split_by_query([{"persona": "x"}])


@FAST
@given(seed=st.integers(0, 10_000), n_holdout=st.integers(1, 5))
def test_split_by_persona_invariants(seed, n_holdout) -> None:
    records = make_records(per_category=6)
    train, test = split_by_persona(records, n_holdout=n_holdout, seed=seed)
    assert sorted(train + test) == list(range(len(records)))
    train_personas = {records[i]["persona"] for i in train if records[i]["kind"] != "assistant"}
    test_personas = {records[i]["persona"] for i in test if records[i]["kind"] != "assistant"}
    assert len(test_personas) == n_holdout and not train_personas & test_personas
    a_train = {records[i]["query_id"] for i in train if records[i]["kind"] == "assistant"}
    a_test = {records[i]["query_id"] for i in test if records[i]["kind"] == "assistant"}
    assert a_train and a_test and not a_train & a_test


def test_split_by_persona_named_and_errors() -> None:
    records = make_records(per_category=4)
    train, test = split_by_persona(records, holdout_personas=["persona_1", "persona_4"])
    assert {records[i]["persona"] for i in test if records[i]["kind"] != "assistant"} == {"persona_1", "persona_4"}
    with pytest.raises(ValueError, match=r"\['assistant_0'\] are not non-assistant personas"):
        split_by_persona(records, holdout_personas=["assistant_0"])
    with pytest.raises(ValueError, match="at most 5"):
        split_by_persona(records, holdout_personas=[f"persona_{i}" for i in range(6)])
    with pytest.raises(ValueError, match="n_holdout must be 1..5"):
        split_by_persona(records, n_holdout=6)


# -------------------------------------------------------------------------------------- evaluation


def planted_dataset(seed: int = 0, n: int = 300, d_model: int = 32, shifts=(0.0, 0.4, 3.0)):
    """Prompts with labels; layer l adds +-shifts[l] along a random unit vector (layer 0: no signal)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) < 1 / 3  # 1:2 like the seed's 3 assistant vs 6 other personas
    v = torch.randn(len(shifts), d_model, generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    sign = torch.where(y, 1.0, -1.0)[:, None, None]
    acts = torch.randn(n, len(shifts), d_model, generator=g) + sign * torch.tensor(shifts)[None, :, None] * v
    return acts, y, v


def test_evaluate_layers_on_planted_data() -> None:
    acts, y, v = planted_dataset()
    idx = np.random.default_rng(0).permutation(len(y))
    train, test = idx[:200].tolist(), idx[200:].tolist()
    report = evaluate_layers(acts, y, train, test, layers=[4, 8, 12], n_boot=300)
    json.dumps(report, allow_nan=False)  # plain floats and lists
    assert report["layers"] == [4, 8, 12] and report["best_layer"] == 12
    assert report["selection"] == {"on": "test", "rule": report["selection"]["rule"], "selection_biased": True}
    t = report["test"]
    assert t["accuracy"][2] == 1.0 and t["balanced_accuracy"][2] == 1.0
    assert t["cohens_d_low"][2] > 3 and t["cohens_d_low"][2] < t["cohens_d"][2] < t["cohens_d_high"][2]
    assert abs(t["cohens_d"][0]) < 0.6 and t["balanced_accuracy"][0] < 0.7
    # Independent recomputation of the holdout d at the best layer.
    direction = compute_direction(acts[train][y[train]], acts[train][~y[train]], layers=[4, 8, 12])
    assert float(torch.nn.functional.cosine_similarity(direction[12], v[2], dim=0)) > 0.99
    proj = (acts[test][:, 2].double() @ (direction[12].double() / direction[12].double().norm())).numpy()
    y_test = y[test].numpy()
    assert t["cohens_d"][2] == pytest.approx(reference_d(list(proj[y_test]), list(proj[~y_test])), rel=1e-5)
    assert report["n"]["test"]["assistant"] == int(y_test.sum())
    assert len(t["projection_stats"]) == 3 and t["projection_stats"][2]["assistant"]["n"] == int(y_test.sum())
    assert report["best"]["threshold"] == report["train"]["threshold"][2]


def test_evaluate_layers_with_validation_split() -> None:
    acts, y, _ = planted_dataset(seed=1)
    idx = np.random.default_rng(1).permutation(len(y))
    report = evaluate_layers(acts, y, idx[:150], idx[225:], val_idx=idx[150:225], n_boot=200)
    assert report["selection"]["on"] == "val" and report["selection"]["selection_biased"] is False
    assert report["best_layer"] == 2 and "val" in report and report["n"]["val"]["assistant"] > 0


def test_evaluate_layers_tie_break_prefers_reliable_d() -> None:
    # Both layers separate the holdout perfectly; layer 1 separates it by a wider margin.
    acts, y, _ = planted_dataset(seed=2, shifts=(5.0, 8.0))
    idx = np.random.default_rng(2).permutation(len(y))
    report = evaluate_layers(acts, y, idx[:200], idx[200:], n_boot=200)
    assert report["test"]["balanced_accuracy"] == [1.0, 1.0]
    assert report["best_layer"] == 1


def test_evaluate_layers_rejects_leakage_and_one_class_sides() -> None:
    acts, y, _ = planted_dataset()
    with pytest.raises(ValueError, match="share 1 prompts"):
        evaluate_layers(acts, y, list(range(0, 200)), list(range(199, 300)))
    only_other = [i for i in range(300) if not y[i]][:50]
    rest = [i for i in range(300) if i not in set(only_other)]
    with pytest.raises(ValueError, match="test_idx has 0 assistant"):
        evaluate_layers(acts, y, rest, only_other)
    with pytest.raises(ValueError, match="300 prompts"):
        evaluate_layers(acts, y[:10], list(range(5)), list(range(5, 10)))


def test_shuffled_null_is_near_chance() -> None:
    acts, y, _ = planted_dataset()
    idx = np.random.default_rng(0).permutation(len(y))
    null = shuffled_null(acts, y, idx[:200], idx[200:], n_perm=20, seed=3)
    json.dumps(null, allow_nan=False)
    bal = np.array(null["balanced_accuracy"])
    assert bal.shape == (20, 3) and len(null["max_abs_cohens_d"]) == 20
    assert abs(bal.mean() - 0.5) < 0.08
    real = evaluate_layers(acts, y, idx[:200], idx[200:], n_boot=100)
    assert real["test"]["balanced_accuracy"][2] > max(null["max_balanced_accuracy"])
    assert real["test"]["cohens_d"][2] > max(null["max_abs_cohens_d"])


def test_shuffled_null_equals_evaluation_on_permuted_train_labels() -> None:
    acts, y, _ = planted_dataset(seed=4)
    idx = np.random.default_rng(4).permutation(len(y))
    train, test = sorted(idx[:200].tolist()), sorted(idx[200:].tolist())
    null = shuffled_null(acts, y, train, test, n_perm=1, seed=11)
    y_perm = y.clone()
    y_perm[train] = y[train][torch.from_numpy(np.random.default_rng(11).permutation(len(train)))]
    report = evaluate_layers(acts, y_perm, train, test, n_boot=10)
    for key in ("cohens_d", "accuracy", "balanced_accuracy"):
        np.testing.assert_allclose(null[key][0], report["test"][key], rtol=1e-5, atol=1e-6)
