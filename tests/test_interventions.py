"""Interventions as values: the operations against direct computations, their neutral elements, the
installer's hook lifecycle and statistics, and argument checks that run before any model work."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from axes_lib.interventions import KINDS, Ablate, Add, Cap, check_layer_list
from axes_lib.steering import steer

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def states_and_direction(draw):
    batch, seq, d = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    h = torch.tensor(draw(st.lists(finite, min_size=batch * seq * d, max_size=batch * seq * d))).reshape(batch, seq, d)
    u = torch.tensor(draw(st.lists(finite, min_size=d, max_size=d)))
    if u.norm() < 1e-2:
        u[0] = 1.0
    return h, u / u.norm()


def _tol(h: torch.Tensor, *values: float) -> float:
    return 1e-4 * max(1.0, float(h.abs().max()), *(abs(v) for v in values))


@settings(max_examples=200, deadline=None)
@given(states_and_direction(), st.floats(-20, 20, allow_nan=False))
def test_cap_lifts_to_threshold_along_u_only(hu, tau):
    h, u = hu
    out, move = Cap.apply(h, u, tau)
    p_before, p_after = h @ u, out @ u
    assert (p_after >= tau - _tol(h, tau)).all()
    keep = p_before >= tau
    assert torch.equal(out[keep], h[keep])  # bitwise unchanged where already at or above tau
    assert torch.equal(move == 0, keep)
    moved = out - h
    assert (moved - (moved @ u).unsqueeze(-1) * u).abs().max() <= _tol(h)


@settings(max_examples=100, deadline=None)
@given(states_and_direction(), st.floats(0, 100, allow_nan=False))
def test_add_shifts_every_position_by_the_scale(hu, scale):
    h, u = hu
    out, move = Add.apply(h, u, scale)
    torch.testing.assert_close((out - h) @ u, torch.full(h.shape[:2], scale), atol=_tol(h, scale), rtol=1e-4)
    assert move == scale


@settings(max_examples=100, deadline=None)
@given(states_and_direction(), st.floats(-20, 20, allow_nan=False))
def test_ablate_equals_projecting_out_and_adding_back(hu, value):
    h, u = hu
    out, move = Ablate.apply(h, u, value)
    hd, ud = h.double(), u.double()
    direct = hd - (hd @ ud).unsqueeze(-1) * ud + value * ud  # independent computation in float64
    torch.testing.assert_close(out.double(), direct, atol=_tol(h, value), rtol=1e-4)
    torch.testing.assert_close((out @ u), torch.full(h.shape[:2], value), atol=_tol(h, value), rtol=1e-4)
    torch.testing.assert_close(move.double(), value - hd @ ud, atol=_tol(h, value), rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_neutral_strength_leaves_states_bitwise_unchanged(kind):
    cls = KINDS[kind]
    torch.manual_seed(0)
    h, u = torch.randn(3, 4, 8) * 10, torch.nn.functional.normalize(torch.randn(8), dim=0)
    per_row = torch.tensor([cls.neutral, 1.5, cls.neutral])[:, None, None]  # one row acts, the others are neutral
    out, _ = cls.apply(h, u, per_row)
    assert torch.equal(out[0], h[0]) and torch.equal(out[2], h[2])
    alone, _ = cls.apply(h[1:2], u, 1.5)
    assert torch.equal(out[1:2], alone)
    assert torch.equal(cls.apply(h, u, cls.neutral)[0], h)


def test_direction_norm_does_not_matter():
    h, u = torch.randn(2, 4, 6), torch.randn(6)
    for cls in KINDS.values():
        a, b = cls({0: u}, None, 0.5), cls({0: 8.0 * u}, None, 0.5)  # a power of two scales exactly
        assert torch.equal(a.units[0], b.units[0]) and a.fingerprint() == b.fingerprint()
        torch.testing.assert_close(cls.apply(h, a.units[0], 0.5)[0], cls.apply(h, b.units[0], 0.5)[0])


def test_fingerprint_follows_what_acts():
    u = torch.randn(16)
    base = Cap({3: u, 4: u}, [3], threshold=1.0)
    assert base.fingerprint() == Cap({3: u.clone()}, threshold=1.0).fingerprint()  # unused layers do not count
    for other in (Cap({3: -u}, threshold=1.0), Cap({3: u}, threshold=1.5), Add({3: u}, scale=1.0), Cap({4: u}, threshold=1.0),
                  Cap({3: u}, threshold=1.0, response_only=True)):
        assert other.fingerprint() != base.fingerprint()
    assert "positions" not in base.describe()  # descriptions (and fingerprints) from before the flag still hold


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda u: Add({1: u}, scale=-1.0), "scale must be >= 0"),
        (lambda u: Add({1: u}, scale=float("nan")), "scale must be finite"),
        (lambda u: Cap({1: u}, threshold=float("inf")), "threshold must be finite"),
        (lambda u: Cap({1: u}, threshold={2: 1.0}), "no value for layers"),
        (lambda u: Ablate({1: u}, value="x"), "value must be a number"),
        (lambda u: Add({1: u}, [], scale=1.0), "layers is empty"),
        (lambda u: Add({1: u, 3: u}, [3, 3], scale=1.0), "duplicates"),
        (lambda u: Add({1: u, 3: u}, [3.7], scale=1.0), "whole layer indices"),
        (lambda u: Add({1: u}, [2], scale=1.0), "no vector for layers"),
        (lambda u: Cap({1: torch.zeros_like(u)}, threshold=0.0), "zero vector"),
        (lambda u: Cap({1: u * float("nan")}, threshold=0.0), "non-finite"),
        (lambda u: Cap({1: u, 2: u[:-1]}, threshold=0.0), "one length"),
    ],
)
def test_bad_interventions_are_rejected_on_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make(torch.randn(8))


def test_check_layer_list():
    assert check_layer_list([3, 1.0]) == [3, 1]
    for bad in ([True], [-1], "12", [1, 1], [2.5]):
        with pytest.raises(ValueError):
            check_layer_list(bad)


# --- hooks on a real (tiny_llama, random) model --------------------------------------------------------




def _hook_counts(model):
    return [len(layer._forward_hooks) for layer in model.model.layers] + [len(model.model._forward_pre_hooks)]


def _states(model, ids):
    """Residual stream after each decoder layer, read as the input of the next block (or of the final
    norm), so it includes what any forward hook on the block returned. Index i + 1 = after layer i."""
    seen: list[torch.Tensor] = []
    readers = [*model.model.layers[1:], model.model.norm]
    handles = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone())) for m in readers]
    try:
        with torch.no_grad():
            model.model(ids)
    finally:
        for h in handles:
            h.remove()
    return [None, *seen]


def test_hooks_removed_after_exit_and_exception(tiny_llama):
    model, _ = tiny_llama
    before = _hook_counts(model)
    u = torch.randn(model.config.hidden_size)
    with steer(model, Add({1: u}, scale=1.0)):
        assert _hook_counts(model) != before
    assert _hook_counts(model) == before
    with pytest.raises(RuntimeError, match="boom"), steer(model, Cap({1: u}, threshold=0.0)):
        raise RuntimeError("boom")
    assert _hook_counts(model) == before


def test_add_shifts_layer_output_and_nesting_composes(tiny_llama):
    model, _ = tiny_llama
    torch.manual_seed(1)
    u = torch.randn(model.config.hidden_size)
    unit = u / u.norm()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    clean = _states(model, ids)
    with steer(model, Add({0: u}, scale=3.0)) as steering:
        steered = _states(model, ids)
    torch.testing.assert_close(steered[1], clean[1] + 3.0 * unit)
    stats = steering.total
    assert stats.positions[0] == ids.numel() and stats.fraction_fired()[0] == 1.0 and stats.mean_correction()[0] == 3.0
    with steer(model, Add({0: u}, scale=1.0)), steer(model, Add({0: u}, scale=2.0)):
        nested = _states(model, ids)
    torch.testing.assert_close(nested[1], steered[1])


def test_cap_stats_and_threshold_semantics(tiny_llama):
    model, _ = tiny_llama
    u = torch.randn(model.config.hidden_size)
    unit = u / u.norm()
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])
    clean = _states(model, ids)
    p = clean[2][0] @ unit
    ordered = p.sort().values
    tau = float(ordered[3] + ordered[4]) / 2  # between two projections: no rounding ties
    with steer(model, Cap({1: u}, threshold=tau)) as steering:
        capped = _states(model, ids)
    q = capped[2][0] @ unit
    assert (q >= tau - 1e-4).all()
    fired = p < tau
    assert steering.total.fired[1] == int(fired.sum())
    assert steering.total.mean_correction()[1] == pytest.approx(float((tau - p[fired]).mean()), rel=1e-4)
    torch.testing.assert_close(capped[1], clean[1])  # layer 0 untouched


def test_ablate_on_the_model_sets_the_projection(tiny_llama):
    model, _ = tiny_llama
    u = torch.randn(model.config.hidden_size)
    unit = u / u.norm()
    ids = torch.tensor([[1, 5, 6, 7]])
    clean = _states(model, ids)
    with steer(model, Ablate({0: u}, value=2.0)) as steering:
        ablated = _states(model, ids)
    direct = clean[1] - (clean[1] @ unit).unsqueeze(-1) * unit + 2.0 * unit
    torch.testing.assert_close(ablated[1], direct, atol=1e-5, rtol=1e-5)
    assert steering.total.fraction_fired()[0] == 1.0


def test_padding_excluded_from_stats(tiny_llama):
    model, _ = tiny_llama
    u = torch.randn(model.config.hidden_size)
    ids = torch.tensor([[0, 0, 5, 6], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    with steer(model, Add({0: u}, scale=1.0)) as steering, torch.no_grad():
        model.model(ids, attention_mask=mask)
    assert steering.total.positions[0] == 6
    # Two hooked layers share each forward's count of real positions; counts add up over forwards.
    for item in (Add({0: u, 1: -u}, scale=1.0), Cap({0: u, 1: -u}, threshold=1e6)):
        with steer(model, item) as steering, torch.no_grad():
            model.model(ids, attention_mask=mask)
            model.model(ids[1:], attention_mask=mask[1:])
        assert steering.total.positions == {0: 10, 1: 10} and steering.total.fired == {0: 10, 1: 10}


def test_installer_checks_the_model(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="hidden_size"), steer(model, Add({0: torch.randn(7)}, scale=1.0)):
        pass
    with pytest.raises(ValueError, match="out of range"), steer(model, Add({9: torch.randn(model.config.hidden_size)}, scale=1.0)):
        pass


def test_per_prompt_interventions_need_rows(tiny_llama):
    model, _ = tiny_llama
    item = Add({1: torch.randn(model.config.hidden_size)}, scale=1.0)
    with pytest.raises(RuntimeError, match="rows"), steer(model, [item, None]), torch.no_grad():
        model.model(torch.tensor([[5, 6], [7, 8]]))
    with steer(model, [item, None]) as steering, torch.no_grad():  # rows given by hand: row 0 is prompt 1 (None)
        steering.select([1, 0])
        model.model(torch.tensor([[5, 6], [7, 8]]))
    assert steering.stats[item].positions == {1: 2} and steering.stats[item].fired == {1: 2}


def test_stats_add_up_over_many_forwards(tiny_llama):
    model, _ = tiny_llama
    u = torch.randn(model.config.hidden_size)
    ids = torch.tensor([[5, 6, 7]])
    with steer(model, Cap({0: u}, threshold=1e6)) as steering, torch.no_grad():
        for _ in range(300):
            model.model(ids)
    assert steering.total.positions[0] == steering.total.fired[0] == 900


def test_quantile_thresholds_match_numpy():
    import numpy as np

    from axes_lib.calibration import quantile_thresholds

    torch.manual_seed(0)
    projections = {3: torch.randn(1001), 7: torch.randn(57) * 5 + 2}
    got = quantile_thresholds(projections, 25)
    for layer, values in projections.items():
        assert abs(got[layer] - float(np.percentile(values.double().numpy(), 25))) < 1e-9
    with pytest.raises(ValueError, match="percentile"):
        quantile_thresholds(projections, 101)


def test_neutral_values_are_what_the_classes_say():
    assert Add.neutral == 0.0 and Cap.neutral == -math.inf and math.isnan(Ablate.neutral)


def test_response_only_acts_where_the_response_starts(tiny_llama):
    """In a forward nobody described (a teacher-forced pass) a response-only cap refuses to run; told each row's
    response start, it leaves the positions before it bitwise unchanged and caps the others exactly as an
    all-positions cap would cap those states."""
    from axes_lib.steering import Steering

    model, _ = tiny_llama
    torch.manual_seed(5)
    u = torch.randn(model.config.hidden_size)
    ids = torch.tensor([[1, 5, 6, 7, 8, 9], [3, 4, 5, 6, 7, 8]])
    clean = _states(model, ids)
    tau = float((clean[2] @ (u / u.norm())).median())
    cap = Cap({1: u}, threshold=tau, response_only=True)
    with pytest.raises(RuntimeError, match="response_from"), steer(model, cap):
        _states(model, ids)
    with steer(model, cap) as steering:
        steering.response_from(Steering.PROMPT)
        prompt_only = _states(model, ids)
        steering.response_from([2, 4])
        capped = _states(model, ids)
    assert all(torch.equal(a, b) for a, b in zip(prompt_only[1:], clean[1:]))
    everywhere, _ = Cap.apply(clean[2], cap.units[1], tau)  # layer 1's input is untouched, so its output is the clean one
    for row, start in enumerate([2, 4]):
        assert torch.equal(capped[2][row, :start], clean[2][row, :start])
        assert torch.equal(capped[2][row, start:], everywhere[row, start:])
    stats = steering.total
    assert stats.positions[1] == 2 * ids.numel() and stats.prompt_positions[1] == ids.numel() + 6
    assert stats.response_positions[1] == 6 and stats.prompt_fired[1] == 0
    proj = clean[2] @ cap.units[1]
    assert stats.response_fired[1] == int((proj[0, 2:] < tau).sum() + (proj[1, 4:] < tau).sum()) > 0
    with pytest.raises(ValueError, match="response_only"):
        Cap({1: u}, threshold=0.0, response_only=1)
