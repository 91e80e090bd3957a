"""extract() against an independent computation: `output_hidden_states` of plain, unbatched forwards."""

from __future__ import annotations

import copy

import pytest
import torch

from axes_lib.activations import extract, extract_methods, token_projections, token_projections_many

SYSTEMS = [
    "You are a helpful, precise assistant. Answer clearly and concisely, and stay polite and factual.",
    "You are a grumpy pirate. Talk like a pirate, arr, and complain about everything you are asked.",
]
QUERIES = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "How do I boil an egg properly without cracking the shell?",
    "Name a prime number.",
]
RESPONSES = [
    "Paris.",
    "Sunlight is scattered by air molecules, and blue light is scattered the most.",
    "Start it in cold water and heat it slowly.",
    "Seven is prime.",
] * 2


def _prompts(tokenizer) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": s}, {"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for s in SYSTEMS
        for q in QUERIES
    ]


def _reference(model, tokenizer, prompts, method, responses=None) -> torch.Tensor:
    """One unpadded forward per prompt with output_hidden_states. hidden_states[-1] is after the final
    norm, so the last layer's residual stream is taken from the norm's input instead."""
    rows = []
    pre_norm: list[torch.Tensor] = []
    handle = model.model.norm.register_forward_pre_hook(lambda module, args: pre_norm.append(args[0]))
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if method == "last_token":
            full, span = ids, slice(len(ids) - 1, len(ids))
        else:
            full = ids + tokenizer(responses[i], add_special_tokens=False)["input_ids"]
            span = slice(len(ids), len(full))
        with torch.no_grad():
            out = model.model(torch.tensor([full]), output_hidden_states=True)
        states = [*out.hidden_states[1:-1], pre_norm.pop()]
        rows.append(torch.stack([h[0, span].mean(0) for h in states]))
    handle.remove()
    return torch.stack(rows)


def _assert_matches(got: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(got, ref.float(), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def smollm2_f64(smollm2):
    """A float64 copy: late layers reach |h| ~ 500, where float32 rounding alone (~3e-5 per op) differs
    between any two batchings; in float64 the comparison checks the algorithm, not the rounding."""
    model, tokenizer = smollm2
    return copy.deepcopy(model).double(), tokenizer


@pytest.fixture(scope="module")
def references(smollm2_f64):
    model, tokenizer = smollm2_f64
    prompts = _prompts(tokenizer)
    return {m: _reference(model, tokenizer, prompts, m, RESPONSES) for m in ("last_token", "response_mean")}


@pytest.mark.parametrize(
    "method, share_prefix, padding_side",
    [("last_token", True, "left"), ("last_token", False, "right"),
     ("response_mean", True, "right"), ("response_mean", False, "left")],
)
def test_extract_matches_output_hidden_states(smollm2_f64, references, method, share_prefix, padding_side):
    model, tokenizer = smollm2_f64
    prompts = _prompts(tokenizer)
    ref = references[method]
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        got = extract(model, tokenizer, prompts, method=method, responses=RESPONSES, batch_size=3,
                      share_prefix=share_prefix, progress=False)
    finally:
        tokenizer.padding_side = old
    assert got.shape == (len(prompts), model.config.num_hidden_layers, model.config.hidden_size)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    # mixed prompt lengths in one batch: the batches above really do hold different lengths
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) > 2
    _assert_matches(got, ref)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_one_pass_reads_both_methods(smollm2_f64, references, share_prefix):
    """`extract_methods` reads the last token from the pass over prompt + response: both match the references."""
    model, tokenizer = smollm2_f64
    got = extract_methods(model, tokenizer, _prompts(tokenizer), RESPONSES, batch_size=3, share_prefix=share_prefix,
                          progress=False)
    assert sorted(got) == ["last_token", "response_mean"]
    for method, values in got.items():
        _assert_matches(values, references[method])


def test_float32_within_rounding(smollm2, references):
    """The float32 model agrees with the float64 reference to float32 precision, relative to each vector."""
    model, tokenizer = smollm2
    got = extract(model, tokenizer, _prompts(tokenizer), batch_size=3, progress=False)
    ref = references["last_token"].float()
    rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.max() < 1e-4


def test_layer_subset_and_order(smollm2):
    model, tokenizer = smollm2
    prompts = _prompts(tokenizer)[:3]
    full = extract(model, tokenizer, prompts, progress=False)
    sub = extract(model, tokenizer, prompts, layers=[12, 3], progress=False)
    torch.testing.assert_close(sub, full[:, [12, 3]], atol=1e-4, rtol=1e-5)


def test_early_stop_skips_later_layers(smollm2):
    model, tokenizer = smollm2
    calls: list[int] = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, layer in enumerate(model.model.layers)
    ]
    try:
        extract(model, tokenizer, _prompts(tokenizer)[:2], layers=[4], share_prefix=False, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls and max(calls) == 4


def test_hooks_removed(smollm2):
    model, tokenizer = smollm2
    before = [dict(layer._forward_hooks) for layer in model.model.layers]
    extract(model, tokenizer, _prompts(tokenizer)[:2], progress=False)
    assert [dict(layer._forward_hooks) for layer in model.model.layers] == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompts": []}, "empty"),
        ({"prompts": ["ok", " "]}, "prompt 1"),
        ({"method": "mean"}, "unknown method"),
        ({"method": "response_mean"}, "needs responses"),
        ({"method": "response_mean", "responses": ["a"]}, "1 responses for 2 prompts"),
        ({"layers": [30]}, "layer 30 out of range: model has 30 layers"),
        ({"layers": [-1]}, "non-negative whole layer indices"),
    ],
)
def test_bad_input(smollm2, kwargs, message):
    model, tokenizer = smollm2
    args = {"prompts": ["hello", "world"], **kwargs}
    with pytest.raises(ValueError, match=message):
        extract(model, tokenizer, progress=False, **args)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_random_weight_models(tiny_model_dir, family):
    """The hub code path (`load_model` on a saved folder) and extraction on Llama and Qwen2 architectures."""
    from axes_lib.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir(family)))
    assert model.dtype == torch.float32
    prompts = ["<s>a b c d e f g", "h i", "j k l m"]
    ref = _reference(model, tokenizer, prompts, "last_token")
    got = extract(model, tokenizer, prompts, batch_size=2, min_prefix=1, progress=False)
    _assert_matches(got, ref)


def test_token_projections_match_plain_forward(smollm2_f64):
    """Every response token's projection equals the one read from an unbatched output_hidden_states forward."""
    model, tokenizer = smollm2_f64
    prompts = _prompts(tokenizer)
    torch.manual_seed(0)
    layers = [2, 9, 29]
    direction = {layer: torch.randn(model.config.hidden_size, dtype=torch.float64) for layer in layers}
    got = token_projections(model, tokenizer, prompts, RESPONSES, direction, layers, batch_size=3)
    pre_norm: list[torch.Tensor] = []
    handle = model.model.norm.register_forward_pre_hook(lambda module, args: pre_norm.append(args[0]))
    expected: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for prompt, response in zip(prompts, RESPONSES):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = ids + tokenizer(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            states = [*model.model(torch.tensor([full]), output_hidden_states=True).hidden_states[1:-1], pre_norm.pop()]
        for layer in layers:
            u = direction[layer] / direction[layer].norm()
            expected[layer].append(states[layer][0, len(ids) :] @ u)
    handle.remove()
    for layer in layers:
        torch.testing.assert_close(got[layer], torch.cat(expected[layer]).float(), atol=1e-4, rtol=0)


def test_many_directions_in_one_pass_match_one_pass_each(smollm2_f64):
    """Projections and capping thresholds for several directions from one pass equal those of the
    single-direction functions run once per direction (the pass is shared, nothing else)."""
    from axes_lib.calibration import token_thresholds, token_thresholds_many
    from axes_lib.directions import random_directions

    model, tokenizer = smollm2_f64
    prompts = _prompts(tokenizer)
    torch.manual_seed(1)
    axis = {layer: torch.randn(model.config.hidden_size) for layer in range(model.config.num_hidden_layers)}
    directions = [axis, *random_directions(axis, 3, seed=0)]
    band = [4, 20, 21]
    many = token_projections_many(model, tokenizer, prompts, RESPONSES, directions, band, batch_size=2)
    assert len(many) == len(directions)
    for direction, got in zip(directions, many):
        one = token_projections(model, tokenizer, prompts, RESPONSES, direction, band, batch_size=3)
        assert sorted(got) == band
        for layer in band:
            torch.testing.assert_close(got[layer], one[layer], atol=1e-4, rtol=0)
    thresholds = token_thresholds_many(model, tokenizer, prompts, RESPONSES, directions, band, (25, 90))
    for direction, got in zip(directions, thresholds):
        one = token_thresholds(model, tokenizer, prompts, RESPONSES, direction, band, (25, 90))
        assert set(got) == {25, 90}
        for q in (25, 90):
            assert got[q] == pytest.approx(one[q], abs=1e-4)
    # Different directions give different thresholds (the controls are not the axis in disguise).
    assert len({round(t[90][20], 3) for t in thresholds}) == len(directions)
    with pytest.raises(ValueError, match="at least one direction"):
        token_projections_many(model, tokenizer, prompts, RESPONSES, [], band)


def test_contrastive_activations_are_cached_by_what_made_them(smollm2, tmp_path, monkeypatch):
    """Step 2's cache: a second call reads the file; changed answers or layers extract again."""
    import axes_lib.activations as activations
    from axes_lib.artifacts import Artifacts
    from axes_lib.io import write_jsonl

    model, tokenizer = smollm2
    paths = Artifacts(tmp_path, "smollm2")
    paths.responses.parent.mkdir(parents=True)
    rows = [{"persona": p, "kind": k, "query": "Why is the sky blue?", "response": r}
            for p, k, r in (("helpful_assistant", "assistant", "Rayleigh scattering."), ("pirate", "non_assistant", "Arr, the sea!"),
                            ("pirate", "non_assistant", ""))]
    write_jsonl(paths.responses, rows)
    calls = []
    real = activations.extract_methods
    monkeypatch.setattr(activations, "extract_methods", lambda *a, **k: calls.append(k["layers"]) or real(*a, **k))
    first = activations.contrastive_activations(paths, layers=[0, 2], model=model, tokenizer=tokenizer)
    assert first["response_mean"].rows == [0, 1] and first["last_token"].rows == [0, 1, 2]  # the empty answer
    n = len(calls)  # (two passes: the empty answer's prompt is read for its last token alone)
    again = activations.contrastive_activations(paths, layers=[0, 2], model=model, tokenizer=tokenizer)
    assert len(calls) == n and torch.equal(again["last_token"].acts, first["last_token"].acts)
    activations.contrastive_activations(paths, layers=[1], model=model, tokenizer=tokenizer)
    assert calls[-1] == [1] and len(calls) == 2 * n
    rows[1]["response"] = "Arr, the wind!"
    write_jsonl(paths.responses, rows)
    changed = activations.contrastive_activations(paths, layers=[1], model=model, tokenizer=tokenizer)
    assert len(calls) == 3 * n and not torch.equal(changed["response_mean"].acts[1], first["response_mean"].acts[1, [0]])
