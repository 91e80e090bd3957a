"""Interventions: properties of the pure functions, hook lifecycle, and effects on the embedded model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from axes_lib.steering import apply_add, apply_cap, make_intervention, steering

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def states_and_direction(draw):
    batch, seq, d = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 8))
    h = torch.tensor(draw(st.lists(finite, min_size=batch * seq * d, max_size=batch * seq * d))).reshape(batch, seq, d)
    u = torch.tensor(draw(st.lists(finite, min_size=d, max_size=d)))
    if u.norm() < 1e-2:
        u[0] = 1.0
    return h, u


@settings(max_examples=200, deadline=None)
@given(states_and_direction(), st.floats(-20, 20, allow_nan=False))
def test_cap_properties(hu, tau):
    h, u = hu
    out = apply_cap(h, u, tau)
    unit = u / u.norm()
    p_before, p_after = h @ unit, out @ unit
    assert out.shape == h.shape
    assert (p_after >= tau - 1e-5 * max(1.0, abs(tau), float(h.abs().max()))).all()
    keep = p_before >= tau
    assert torch.equal(out[keep], h[keep])  # bitwise unchanged where already at or above tau
    # the lifted positions moved only along u
    moved = out - h
    residual = moved - (moved @ unit).unsqueeze(-1) * unit
    assert residual.abs().max() <= 1e-4 * max(1.0, float(h.abs().max()))


@settings(max_examples=100, deadline=None)
@given(states_and_direction(), st.floats(0, 100, allow_nan=False))
def test_add_properties(hu, scale):
    h, u = hu
    assert torch.equal(apply_add(h, u, 0.0), h)
    out = apply_add(h, u, scale)
    assert out.shape == h.shape
    shift = (out - h) @ (u / u.norm())
    torch.testing.assert_close(shift, torch.full_like(shift, scale), atol=1e-3 * max(1.0, scale), rtol=1e-4)


def test_direction_norm_does_not_matter():
    h, u = torch.randn(2, 4, 6), torch.randn(6)
    torch.testing.assert_close(apply_cap(h, u, 0.5), apply_cap(h, 7.0 * u, 0.5))
    torch.testing.assert_close(apply_add(h, u, 2.0), apply_add(h, 0.1 * u, 2.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "add", "scale": -1.0}, "scale must be >= 0"),
        ({"mode": "add", "scale": float("nan")}, "scale must be finite"),
        ({"mode": "cap", "threshold": float("inf")}, "threshold must be finite"),
        ({"mode": "cap"}, "needs a threshold"),
        ({"mode": "mul", "scale": 1.0}, "unknown mode"),
        ({"mode": "add", "scale": 1.0, "layers": []}, "layers is empty"),
    ],
)
def test_make_intervention_rejects(kwargs, message):
    kwargs = {"layers": [1, 2], **kwargs}
    with pytest.raises(ValueError, match=message):
        make_intervention(**kwargs)


# --- hooks on a real (tiny, random) model --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from axes_lib.models import load_model

    return load_model(str(tiny_model_dir("llama")))


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


def test_hooks_removed_after_exit_and_exception(tiny):
    model, _ = tiny
    before = _hook_counts(model)
    direction = {1: torch.randn(model.config.hidden_size)}
    with steering(model, direction, mode="add", scale=1.0):
        assert _hook_counts(model) != before
    assert _hook_counts(model) == before
    with pytest.raises(RuntimeError, match="boom"), steering(model, direction, mode="cap", threshold=0.0):
        raise RuntimeError("boom")
    assert _hook_counts(model) == before


def test_add_shifts_layer_output_and_nesting_composes(tiny):
    model, _ = tiny
    torch.manual_seed(1)
    u = torch.randn(model.config.hidden_size)
    unit = u / u.norm()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    clean = _states(model, ids)
    # hidden_states[i + 1] is the output of decoder layer i (for i < last)
    with steering(model, {0: u}, mode="add", scale=3.0) as stats:
        steered = _states(model, ids)
    torch.testing.assert_close(steered[1], clean[1] + 3.0 * unit)
    assert stats.positions[0] == ids.numel() and stats.fraction_fired()[0] == 1.0 and stats.mean_correction()[0] == 3.0
    with steering(model, {0: u}, mode="add", scale=1.0), steering(model, {0: u}, mode="add", scale=2.0):
        nested = _states(model, ids)
    torch.testing.assert_close(nested[1], steered[1])


def test_cap_stats_and_threshold_semantics(tiny):
    model, _ = tiny
    u = torch.randn(model.config.hidden_size)
    unit = u / u.norm()
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10]])
    clean = _states(model, ids)
    p = clean[2][0] @ unit
    ordered = p.sort().values
    tau = float(ordered[3] + ordered[4]) / 2  # between two projections: no rounding ties
    with steering(model, {1: u}, mode="cap", threshold=tau) as stats:
        capped = _states(model, ids)
    q = capped[2][0] @ unit
    assert (q >= tau - 1e-4).all()
    fired = p < tau
    assert stats.fired[1] == int(fired.sum())
    assert stats.mean_correction()[1] == pytest.approx(float((tau - p[fired]).mean()), rel=1e-4)
    torch.testing.assert_close(capped[1], clean[1])  # layer 0 untouched


def test_padding_excluded_from_stats(tiny):
    model, _ = tiny
    u = torch.randn(model.config.hidden_size)
    ids = torch.tensor([[0, 0, 5, 6], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    with steering(model, {0: u}, mode="add", scale=1.0) as stats, torch.no_grad():
        model.model(ids, attention_mask=mask)
    assert stats.positions[0] == 6
    # Two hooked layers share each forward's count of real positions; counts add up over forwards.
    for mode, strength in (("add", {"scale": 1.0}), ("cap", {"threshold": 1e6})):
        with steering(model, {0: u, 1: -u}, mode=mode, **strength) as stats, torch.no_grad():
            model.model(ids, attention_mask=mask)
            model.model(ids[1:], attention_mask=mask[1:])
        assert stats.positions == {0: 10, 1: 10} and stats.fired == {0: 10, 1: 10}


def test_steering_rejects_mismatched_direction(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="hidden_size"):
        with steering(model, {0: torch.randn(7)}, mode="add", scale=1.0):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with steering(model, {9: torch.randn(model.config.hidden_size)}, mode="add", scale=1.0):
            pass
    with pytest.raises(ValueError, match="no vector for layers"):
        with steering(model, {0: torch.randn(model.config.hidden_size)}, layers=[1], mode="add", scale=1.0):
            pass


def test_quantile_thresholds_match_numpy():
    import numpy as np

    from axes_lib.steering import quantile_thresholds

    torch.manual_seed(0)
    projections = {3: torch.randn(1001), 7: torch.randn(57) * 5 + 2}
    got = quantile_thresholds(projections, 25)
    for layer, values in projections.items():
        assert abs(got[layer] - float(np.percentile(values.double().numpy(), 25))) < 1e-9
    with pytest.raises(ValueError, match="percentile"):
        quantile_thresholds(projections, 101)


def test_stats_add_up_over_many_forwards(tiny):
    """The tally folds its parts as it goes (a long generation); the totals are unchanged by it."""
    model, _ = tiny
    u = torch.randn(model.config.hidden_size)
    ids = torch.tensor([[5, 6, 7]])
    with steering(model, {0: u}, mode="cap", threshold=1e6) as stats, torch.no_grad():
        for _ in range(300):
            model.model(ids)
    assert stats.positions[0] == stats.fired[0] == 900
