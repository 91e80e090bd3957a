"""Controls for the axis's separation (axes_lib.controls) and the statistics they rest on, checked against
independent computations (scikit-learn, a direct refit) and invariants on synthetic persona data."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from axes_lib.controls import leave_one_persona_out, partition_null, random_direction_null, role_adherence, separation
from axes_lib.metrics import auroc_columns, cohens_d, crossed_interval, rank_among
from axes_lib.validation import evaluate_layers, null_summary, shuffled_null

PERSONAS = [f"p{i}" for i in range(9)]
ASSISTANTS = ["p0", "p1", "p2"]


def persona_dataset(seed: int = 0, n_queries: int = 20, d_model: int = 24, shift: float = 2.0, spread: float = 1.5):
    """9 personas x n_queries prompts over 3 layers. Every persona has its own random offset (`spread`: persona
    identity is decodable at every layer); at layer 2 the assistant personas also share +shift along v and the
    others -shift; layer 0 has persona offsets only, layer 1 nothing but noise."""
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(d_model, generator=g), dim=0)
    offsets = spread * torch.randn(len(PERSONAS), d_model, generator=g)
    rows, who, query = [], [], []
    for p, name in enumerate(PERSONAS):
        for q in range(n_queries):
            sign = 1.0 if name in ASSISTANTS else -1.0
            x = torch.randn(3, d_model, generator=g)
            x[0] += offsets[p]
            x[2] += 0.1 * offsets[p] + sign * shift * v
            rows.append(x)
            who.append(name)
            query.append(f"q{q}")
    acts = torch.stack(rows)
    y = np.isin(who, ASSISTANTS)
    test = [i for i, q in enumerate(query) if int(q[1:]) % 4 == 0]
    train = [i for i in range(len(who)) if i not in set(test)]
    return acts, y, np.array(who), np.array(query), train, test, v


def test_auroc_columns_equals_scikit_learn_per_column_with_ties() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, (30, 4)).astype(float), rng.integers(0, 5, (50, 4)).astype(float)  # many ties
    got = auroc_columns(pos, neg)
    for c in range(4):
        want = roc_auc_score(np.r_[np.ones(30), np.zeros(50)], np.r_[pos[:, c], neg[:, c]])
        assert got[c] == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        auroc_columns(np.empty((0, 2)), neg[:, :2])


def test_rank_among_counts_ties_against_the_real_value() -> None:
    out = rank_among(np.array([3.0, 0.0]), np.array([[1.0, 5.0], [3.0, 5.0], [2.0, -1.0]]))
    assert out["rank"] == [2.0, 3.0]  # one tie above the first column; two larger values in the second
    assert out["p_value"] == [0.5, 0.75] and out["null_max"] == [3.0, 5.0]


def test_crossed_interval_keeps_both_strata_and_widens_for_a_persona_effect() -> None:
    acts, y, who, query, *_ = persona_dataset()
    kind = np.where(y, "assistant", "other")
    # Every resample keeps both kinds (personas are drawn within kind), so the share stays 1/3.
    low, high = crossed_interval(lambda rows: y[rows].mean(), who, query, strata=kind, n_boot=200)
    assert low[0] == pytest.approx(1 / 3) and high[0] == pytest.approx(1 / 3)
    # A value carried by the persona: resampling personas gives a wide interval, rows alone a narrow one.
    value = acts[:, 0, 0].numpy()
    two_way = crossed_interval(lambda rows: value[rows].mean(), who, query, n_boot=300)
    one_way = crossed_interval(lambda rows: value[rows].mean(), np.arange(len(who)), np.zeros(len(who)), n_boot=300)
    assert two_way[1][0] - two_way[0][0] > 2 * (one_way[1][0] - one_way[0][0])
    with pytest.raises(ValueError, match="one of each"):
        crossed_interval(lambda rows: 0.0, who[:5], query)


def test_partition_null_scores_the_real_split_like_evaluate_layers_and_ranks_it_first() -> None:
    acts, y, who, _, train, test, _ = persona_dataset()
    out = partition_null(acts, who, ASSISTANTS, train, test, layers=[5, 10, 15])
    json.dumps(out, allow_nan=False)
    assert out["n_partitions"] == comb(9, 3) == len(out["cohens_d"])
    real = evaluate_layers(acts, y, train, test, n_boot=10)["test"]
    np.testing.assert_allclose(out["real"]["cohens_d"], real["cohens_d"], rtol=1e-5)
    np.testing.assert_allclose(out["real"]["auroc"], real["auroc"], rtol=1e-9)
    assert out["rank_cohens_d"]["rank"][2] == 1.0  # only the real grouping shares a direction at layer 2
    assert out["rank_cohens_d"]["rank"][0] > 1.0  # persona offsets alone: some other grouping separates better
    best_other = out["partitions"].index(out["best_other"][0])
    assert out["cohens_d"][best_other][0] == max(d[0] for i, d in enumerate(out["cohens_d"]) if i != out["partitions"].index(ASSISTANTS))
    with pytest.raises(ValueError, match="proper subset"):
        partition_null(acts, who, ["nobody"], train, test)


def test_random_directions_are_orthogonal_controls_and_the_planted_axis_beats_them() -> None:
    acts, y, _, _, train, test, v = persona_dataset()
    axis = torch.stack([torch.nn.functional.normalize(torch.randn(24), dim=0), torch.randn(24), 5 * v])
    out = random_direction_null(acts, y, test, axis, n=200, seed=1)
    proj = torch.einsum("nld,ld->nl", acts[test].double(), torch.nn.functional.normalize(axis.double(), dim=-1)).numpy()
    np.testing.assert_allclose(out["real"]["cohens_d"], cohens_d(proj[y[test]], proj[~y[test]]), rtol=1e-9)
    assert out["rank_cohens_d"]["rank"][2] == 1.0 and out["rank_auroc"]["p_value"][2] == pytest.approx(1 / 201)
    assert out["rank_cohens_d"]["p_value"][1] > 0.01  # layer 1 is pure noise: the axis there is one more draw
    with pytest.raises(ValueError, match="shape"):
        random_direction_null(acts, y, test, axis[:2])


def test_leave_one_persona_out_matches_a_direct_refit_and_holds_out_assistants() -> None:
    acts, y, who, _, train, test, _ = persona_dataset()
    out = leave_one_persona_out(acts, y, who, train, test)
    assert sorted(out["on_own_side"]) == PERSONAS and out["assistant_personas"] == ASSISTANTS
    json.dumps(out, allow_nan=False)
    on_side = np.array([s[2] for s in out["on_own_side"].values()])
    assert on_side.min() >= 0.8 and on_side.mean() > 0.9 and out["auroc"][2] > 0.98
    assert out["auroc"][1] < 0.7  # layer 1 carries nothing: held-out personas land anywhere
    # Direct recomputation for the held-out assistant p1 at layer 2.
    fit = [i for i in train if who[i] != "p1"]
    held = [i for i in test if who[i] == "p1"]
    x = acts[:, 2].double().numpy()
    u = x[fit][y[fit]].mean(0) - x[fit][~y[fit]].mean(0)
    u /= np.linalg.norm(u)
    pf, ph = x[fit] @ u, x[held] @ u
    best = max(np.unique(pf), key=lambda t: ((pf[y[fit]] > t).mean() + (pf[~y[fit]] <= t).mean()))
    assert out["on_own_side"]["p1"][2] == pytest.approx((ph > best).mean(), abs=1 / len(held))
    with pytest.raises(ValueError, match="one kind only"):
        leave_one_persona_out(acts, y, np.where(y, "a", who), train, test)


def test_null_summary_drops_the_draws_and_ranks_the_real_values() -> None:
    acts, y, _, _, train, test, _ = persona_dataset()
    null = shuffled_null(acts, y, train, test, n_perm=50, seed=2)
    real = evaluate_layers(acts, y, train, test, n_boot=10)["test"]
    out = null_summary(null, real)
    json.dumps(out, allow_nan=False)
    assert "cohens_d" not in out and len(out["max_abs_cohens_d"]) == 50
    assert out["rank_cohens_d"]["rank"][2] == 1.0 and out["p_value_max_abs_cohens_d"] == pytest.approx(1 / 51)
    assert np.mean(null["auroc"]) == pytest.approx(0.5, abs=0.1)


def test_role_adherence_flags_answers_in_the_other_sides_voice() -> None:
    rng = np.random.default_rng(0)
    assistant_words, pirate_words = ["certainly", "here", "steps", "helpful", "answer"], ["arr", "matey", "ye", "rum", "ship"]
    texts, y, who, groups = [], [], [], []
    for q in range(30):
        for name, vocab in (("helper", assistant_words), ("pirate", pirate_words)):
            texts.append(" ".join(rng.choice(vocab, 8)) + f" topic{q}")
            y.append(name == "helper")
            who.append(name)
            groups.append(f"q{q}")
    texts[1] = " ".join(assistant_words) + " topic0"  # a pirate answer in the assistant's voice
    out = role_adherence(texts, y, who, groups)
    assert out["in_role"][1] is False and sum(out["in_role"]) >= len(texts) - 3
    assert out["total"] == {"helper": 30, "pirate": 30} and out["kept"]["pirate"] <= 29


def test_a_transfer_guard_keeps_a_format_only_layer_from_being_chosen() -> None:
    acts, y, _, _, train, test, _ = persona_dataset()
    plain = evaluate_layers(acts, y, train, test, n_boot=20)
    assert plain["best_layer"] == 2
    seen = []

    def transfer(direction: torch.Tensor) -> list[float]:
        seen.append(tuple(direction.shape))
        return [0.9, 0.6, 0.5]  # as if layer 2 separated only the layout of the fitting prompts

    guarded = evaluate_layers(acts, y, train, test, n_boot=20, transfer=transfer)
    assert seen == [(3, 24)] and guarded["best_layer"] == 0 and guarded["transfer_auroc"] == [0.9, 0.6, 0.5]
    assert "another prompt format" in guarded["selection"]["rule"]
    with pytest.raises(ValueError, match="3 layers"):
        evaluate_layers(acts, y, train, test, n_boot=20, transfer=lambda d: [0.5])


def test_separation_of_a_fixed_direction_is_sign_aware() -> None:
    acts, y, *_, v = persona_dataset()
    axis = torch.stack([v, v, v])
    fwd, back = separation(acts, y, axis), separation(acts, y, -axis)
    assert fwd["auroc"][2] > 0.95 and back["auroc"][2] == pytest.approx(1 - fwd["auroc"][2])
    assert back["cohens_d"][2] == pytest.approx(-fwd["cohens_d"][2])
