"""Batched generation and CappedModel: order-independence, determinism, bad input before work starts."""

from __future__ import annotations

import pytest
import torch

from axes_lib.capped import CappedModel
from axes_lib.directions import save_direction
from axes_lib.generation import generate
from axes_lib.interventions import Ablate, Add, Cap

PROMPTS = ["a b c d e f", "g h", "i j k", "l m n o p q r s t", "u"]


def _one_at_a_time(model, tokenizer, prompts, **kw):
    return [generate(model, tokenizer, [p], **kw)[0] for p in prompts]


def test_batched_equals_unbatched_and_keeps_order(tiny_llama):
    model, tokenizer = tiny_llama
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    assert batched == _one_at_a_time(model, tokenizer, PROMPTS, max_new_tokens=6)
    assert generate(model, tokenizer, PROMPTS[::-1], max_new_tokens=6, batch_size=2) == batched[::-1]


# Two "system prompts" of different lengths, their queries, and prompts sharing nothing: batches of 3
# mix prompts of both prefixes and of none.
SHARED = ["a b c d e f g h i j k l m n o p q r s t", "z y x w v u t s"]
GROUPED = [f"{system} {q}" for system in SHARED for q in ("u v", "w", "x y z a", "b")] + ["c d", f"{SHARED[0]} {SHARED[0]}"]


@pytest.mark.parametrize("cascade", [True, False])
@pytest.mark.parametrize("intervene", [False, True])
def test_shared_prefix_equals_unshared(tiny_llama, intervene, cascade):
    """Reusing a prefix's KV cache ([prefix | padding | rest] with the padding masked), as one copy per row
    or through cascade attention, changes no output."""
    from axes_lib.interventions import Cap

    model, tokenizer = tiny_llama
    torch.manual_seed(1)
    cap = Cap({1: torch.randn(model.config.hidden_size)}, threshold=0.5) if intervene else None

    def run(share):
        kw = dict(max_new_tokens=8, batch_size=3, share_prefix=share, min_prefix=4, cascade=cascade)
        return generate(model, tokenizer, GROUPED, interventions=cap, **kw)

    assert run(True) == run(False)
    assert model.config._attn_implementation == "sdpa"  # restored after cascade attention


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
@pytest.mark.parametrize("q", [1, 3])
@pytest.mark.parametrize("skipped_mask", [False, True])
def test_cascade_attention_equals_sdpa_over_the_full_cache(q, skipped_mask, device):
    """Cascade attention (shared prefixes + own keys, grouped query heads) against SDPA over each row's
    `[prefix | own]` keys and values, in float64."""
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import repeat_kv

    from axes_lib.batching import kvcache

    torch.manual_seed(0)
    b, h, kv, d, p, s = 5, 6, 2, 8, 7, 4
    prefix_of = [0, 1, 0, 2, 1]
    prefix_k, prefix_v = torch.randn(3, kv, p, d, dtype=torch.float64), torch.randn(3, kv, p, d, dtype=torch.float64)
    query = torch.randn(b, h, q, d, dtype=torch.float64)
    key, value = torch.randn(b, kv, s, d, dtype=torch.float64), torch.randn(b, kv, s, d, dtype=torch.float64)
    causal = torch.arange(s)[None, :] <= torch.arange(q)[:, None] + (s - q)
    if skipped_mask:  # what the mask builder passes when nothing is padded
        mask, full = None, torch.cat([torch.ones(q, p, dtype=torch.bool), causal], 1).expand(b, 1, q, p + s)
    else:  # left padding in the prefix table and in the rows' own tokens
        pad = torch.tensor([[0, 2, 0, 4, 2]]).T
        seen = torch.cat([torch.arange(p)[None, :] >= pad, torch.arange(s)[None, :] >= torch.tensor([[0, 0, 1, 0, 0]]).T], 1)
        mask = full = seen[:, None, None, :] & torch.cat([torch.ones(q, p, dtype=torch.bool), causal], 1)
    prefix_k, prefix_v, query, key, value = (t.to(device) for t in (prefix_k, prefix_v, query, key, value))
    mask, full = (None if m is None else m.to(device) for m in (mask, full))
    index = torch.tensor(prefix_of, device=device)
    ref = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(torch.cat([prefix_k[index], key], 2), h // kv), repeat_kv(torch.cat([prefix_v[index], value], 2), h // kv),
        attn_mask=full).transpose(1, 2)
    groups = [torch.tensor([i for i, g in enumerate(prefix_of) if g == j], device=device) for j in range(3)]
    cache = SimpleNamespace(layers=[kvcache.CascadeLayer(prefix_k, prefix_v, groups, reserve=0)])
    token = kvcache._ACTIVE.set(cache)
    try:
        got, _ = kvcache._attention(SimpleNamespace(layer_idx=0), query, key, value, mask)
    finally:
        kvcache._ACTIVE.reset(token)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prompts, message", [([], "no prompts"), (["ok", ""], "prompt 1 is empty")])
def test_generate_rejects(tiny_llama, prompts, message):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match=message):
        generate(model, tokenizer, prompts)


def test_capped_model_cap_and_add(tiny_llama):
    model, tokenizer = tiny_llama
    torch.manual_seed(0)
    direction = {1: torch.randn(model.config.hidden_size), 2: torch.randn(model.config.hidden_size)}
    plain = generate(model, tokenizer, PROMPTS, max_new_tokens=5)
    # a threshold far below every projection never fires: capped output equals uncapped, bit for bit
    never = CappedModel(model, tokenizer, Cap(direction, [1, 2], threshold=-1e6))
    assert never.generate(PROMPTS, max_new_tokens=5) == plain
    assert never.last_stats.fraction_fired() == {1: 0.0, 2: 0.0}
    assert never.generate_uncapped(PROMPTS[0], max_new_tokens=5) == plain[0]
    # a huge additive scale changes the text
    pushed = CappedModel(model, tokenizer, Add(direction, [1], scale=100.0))
    assert pushed.generate(PROMPTS, max_new_tokens=5) != plain
    assert pushed.last_stats.fraction_fired() == {1: 1.0}
    # directional ablation works through CappedModel with no other edit
    ablated = CappedModel(model, tokenizer, Ablate(direction, [1, 2], value=50.0))
    assert ablated.generate(PROMPTS, max_new_tokens=5) != plain and ablated.last_stats.fraction_fired() == {1: 1.0, 2: 1.0}


def test_from_model_key_validates_before_loading(tmp_path, monkeypatch):
    import axes_lib.capped as capped

    def fail(*a, **k):
        raise AssertionError("the model must not load for bad input")

    monkeypatch.setattr(capped, "load_model", fail)
    with pytest.raises(ValueError, match="unknown model key"):
        CappedModel.from_model_key("no-such-model")
    with pytest.raises(FileNotFoundError, match="no direction file"):
        CappedModel.from_model_key("smollm2", direction=tmp_path / "missing.safetensors")
    path = save_direction(tmp_path / "d.safetensors", {3: torch.ones(8), 4: torch.ones(8)}, n_layers=30)
    with pytest.raises(ValueError, match="threshold must be finite"):
        CappedModel.from_model_key("smollm2", direction=path, layers=[3], threshold=float("nan"))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        CappedModel.from_model_key("smollm2", direction=path, layers=[3], kind="add", scale=-2)
    with pytest.raises(ValueError, match="takes its strength as scale="):
        CappedModel.from_model_key("smollm2", direction=path, layers=[3], kind="add", threshold=2)
    with pytest.raises(ValueError, match="unknown intervention kind"):
        CappedModel.from_model_key("smollm2", direction=path, layers=[3], kind="mul", threshold=2)
    with pytest.raises(ValueError, match="duplicates"):
        CappedModel.from_model_key("smollm2", direction=path, layers=[3, 3], threshold=1.0)
    with pytest.raises(ValueError, match="no vector for layers"):
        CappedModel.from_model_key("smollm2", direction=path, layers=[99], threshold=1.0)
    with pytest.raises(FileNotFoundError, match="no evaluation"):
        CappedModel.from_model_key("smollm2", direction=path, evaluation=tmp_path / "none.json")
    # The direction file knows its model's depth: a layer beyond it fails before any load or download.
    short = save_direction(tmp_path / "x.safetensors", {3: torch.ones(8)}, n_layers=2)
    with pytest.raises(ValueError, match="layer 3 out of range: model has 2 layers"):
        CappedModel.from_model_key("smollm2", direction=short, layers=[3], threshold=1.0)


def test_capped_model_rejects_misfit_direction(tiny_llama):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="hidden_size"):
        CappedModel(model, tokenizer, Cap({1: torch.randn(5)}, threshold=1.0))
    with pytest.raises(ValueError, match="out of range"):
        CappedModel(model, tokenizer, Cap({7: torch.randn(model.config.hidden_size)}, threshold=1.0))


def test_own_prefixes_keep_one_batch(tiny_llama):
    """Generation gives a prompt that shares nothing a prefix of its own, so its batch is not split in two
    (a decoding step costs about as much for one row as for many)."""
    from axes_lib.batching import TokenSeq, assign_prefixes, batches

    _, tokenizer = tiny_llama
    encoded = tokenizer(GROUPED, add_special_tokens=False)["input_ids"]

    def plan(own):
        seqs = [TokenSeq(i, ids, len(ids) - 1, len(ids)) for i, ids in enumerate(encoded)]
        prefixes = assign_prefixes(seqs, 4, own=own)
        return seqs, prefixes, batches(seqs, len(seqs), max_tokens=10**9)

    seqs, prefixes, shared_only = plan(own=False)
    assert len(prefixes) == 2 and len(shared_only) == 2  # the two groups, then "c d" apart
    seqs, prefixes, with_own = plan(own=True)
    assert len(prefixes) == 3 and len(with_own) == 1
    for seq in seqs:  # every prompt keeps exactly its last token for its own pass, and its prefix is its start
        assert len(seq.rest) >= 1 and prefixes[seq.row] == seq.ids[: seq.prefix]
    assert len(seqs[8].rest) == 1  # "c d": its own prefix is all but its last token


@pytest.mark.parametrize("cascade", [True, False])
def test_per_prompt_interventions_equal_one_at_a_time(tiny_llama, cascade):
    """One generate call with each prompt steered by its own intervention gives every intervention's answers
    and stats as a run of that intervention alone (prompts of different ones never share a prefix)."""
    model, tokenizer = tiny_llama
    torch.manual_seed(2)
    direction = {0: torch.randn(model.config.hidden_size), 1: torch.randn(model.config.hidden_size)}
    settings = [None, Add(direction, [1], scale=0.5), Cap(direction, [0, 1], threshold=0.5),
                Add(direction, [0, 1], scale={0: 0.2, 1: 1.0}), Ablate(direction, [1], value=1.0),
                Cap(direction, [0, 1], threshold=0.5, response_only=True), Add(direction, [1], scale=0.5, response_only=True)]
    kw = dict(max_new_tokens=6, min_new_tokens=6, batch_size=4, min_prefix=4, cascade=cascade)
    alone, alone_stats = [], []
    for setting in settings:
        stats = {}
        alone.append(generate(model, tokenizer, GROUPED, interventions=setting, stats=stats, **kw))
        alone_stats.append(stats.get(setting))
    assert len({tuple(a) for a in alone}) == len(settings)  # every setting changes the answers: the test can fail
    stats = {}
    together = generate(model, tokenizer, GROUPED * len(settings), stats=stats, **{**kw, "batch_size": 16},
                        interventions=[s for s in settings for _ in GROUPED])
    assert [together[k * len(GROUPED):(k + 1) * len(GROUPED)] for k in range(len(settings))] == alone
    for setting, want in zip(settings[1:], alone_stats[1:]):
        got = stats[setting]
        assert got.positions == want.positions and got.fired == want.fired
        assert got.response_positions == want.response_positions and got.response_fired == want.response_fired
        assert got.correction_sum == pytest.approx(want.correction_sum, rel=1e-5)


def test_generate_checks_interventions_and_counts(tiny_llama):
    model, tokenizer = tiny_llama
    item = Add({1: torch.randn(model.config.hidden_size)}, scale=1.0)
    with pytest.raises(ValueError, match="one \\(or None\\) per prompt"):
        generate(model, tokenizer, ["a b", "c d"], interventions=[item])
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match="max_new_tokens must be a whole number"):
            generate(model, tokenizer, ["a b"], max_new_tokens=bad)


def _greedy_by_hand(model, tokenizer, prompt, n, cap_layer, unit, tau, capped_phases):
    """Greedy decoding written out (prefill, then one token per step) with a cap hook of the test's own that
    acts only in the phases named ("prompt": the prefill forward, "response": the decoding steps); EOS is
    suppressed, as `min_new_tokens` does."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    phase = ["prompt"]

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if phase[0] in capped_phases:
            lift = (tau - hidden.float() @ unit).clamp(min=0)
            hidden = torch.where((lift > 0)[..., None], hidden + lift[..., None] * unit, hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[cap_layer].register_forward_hook(hook)
    tokens = []
    try:
        with torch.no_grad():
            out = model(ids, use_cache=True)
            for step in range(n):
                logits = out.logits[0, -1].clone()
                logits[tokenizer.eos_token_id] = -float("inf")
                tokens.append(int(logits.argmax()))
                if step < n - 1:
                    phase[0] = "response"
                    out = model(torch.tensor([[tokens[-1]]]), cache=out.past_key_values, use_cache=True)
    finally:
        handle.remove()
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def test_response_only_cap_equals_a_cap_on_decoding_steps(tiny_llama):
    """Against greedy decoding by hand: a response-only cap is a cap on the decoding steps alone, and a cap
    without the flag one on every forward, prefill included (as before the flag existed)."""
    model, tokenizer = tiny_llama
    torch.manual_seed(3)
    u = torch.randn(model.config.hidden_size)
    unit, tau, n = u / u.norm(), 0.5, 8
    answers = {}
    for only, phases in ((False, ("prompt", "response")), (True, ("response",))):
        cap = Cap({1: u}, threshold=tau, response_only=only)
        got = [generate(model, tokenizer, [p], max_new_tokens=n, min_new_tokens=n, interventions=cap,
                        share_prefix=False, cascade=False)[0] for p in GROUPED[:4]]
        assert got == [_greedy_by_hand(model, tokenizer, p, n, 1, unit, tau, phases) for p in GROUPED[:4]]
        answers[only] = got
    plain = generate(model, tokenizer, GROUPED[:4], max_new_tokens=n, min_new_tokens=n)
    assert len({tuple(plain), tuple(answers[False]), tuple(answers[True])}) == 3  # the test can tell them apart


@pytest.mark.parametrize("share", [False, True])
def test_stats_split_prompt_and_response_positions(tiny_llama, share):
    """Every prompt token is a prompt position (a shared prefix counts once per prefix, in its table pass) and
    every generated token fed back a response position; a response-only intervention fires on no prompt position."""
    model, tokenizer = tiny_llama
    u = torch.randn(model.config.hidden_size)
    kw = dict(batch_size=3, share_prefix=share, min_prefix=4)

    def run(item, n):
        stats = {}
        generate(model, tokenizer, GROUPED, max_new_tokens=n, min_new_tokens=n, interventions=item, stats=stats, **kw)
        return stats[item]

    n, n_response = 5, len(GROUPED) * 4  # the last generated token is never fed back
    for only in (False, True):
        # Both fire wherever they act: a cap far above every projection, and additive steering.
        for item in (Cap({1: u}, threshold=1e6, response_only=only), Add({0: u, 2: u}, scale=1.0, response_only=only)):
            prefill, got, layers = run(item, 1), run(item, n), item.layers  # one new token: a prefill and no decoding
            assert prefill.response_positions == dict.fromkeys(layers, 0) and prefill.prompt_positions == prefill.positions
            if not share:
                n_prompt = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in GROUPED)
                assert prefill.positions == dict.fromkeys(layers, n_prompt)
            assert got.prompt_positions == prefill.positions
            assert got.response_positions == dict.fromkeys(layers, n_response)
            assert got.positions == {k: got.prompt_positions[k] + n_response for k in layers}
            assert got.fraction_fired("response") == dict.fromkeys(layers, 1.0)
            assert got.fraction_fired("prompt") == dict.fromkeys(layers, 0.0 if only else 1.0)
            assert got.fired == {k: got.prompt_fired[k] + got.response_fired[k] for k in layers}
