"""Residual-stream activations after every decoder layer, captured with forward hooks.

`extract` runs one batched forward of the base model per batch (no LM head), stops after the last
requested layer, groups prompts by length so little is spent on padding, and — because the prompts
of this method share long prefixes (one system prompt per persona) — computes each shared token
prefix once and reuses its KV cache for every prompt that starts with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.directions import validate_direction
from axes_lib.models import base_model, decoder_layers

Method = Literal["last_token", "response_mean"]
METHODS: tuple[str, ...] = ("last_token", "response_mean")


class _StopForward(Exception):
    """Raised by the hook on the last requested layer: the rest of the model is not needed."""


@dataclass
class TokenSeq:
    """One tokenized prompt (+ response): which positions to read, and where it goes in the output."""

    index: int
    ids: list[int]
    start: int  # the last prompt token: the position last_token reads; a response follows it
    stop: int  # one past the last response token (start + 1 without a response)
    prefix: int = 0  # leading tokens taken from a shared prefix's KV cache
    row: int = -1  # that prefix's row in the PrefixTable

    @property
    def rest(self) -> list[int]:
        """The tokens computed in this sequence's own pass."""
        return self.ids[self.prefix :]


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Validate layer indices against the model; `None` means all layers."""
    if layers is None:
        return list(range(n_layers))
    layers = [int(layer) for layer in layers]
    if not layers:
        raise ValueError("layers is empty: pass None for all layers or at least one index")
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range: model has {n_layers} layers (0..{n_layers - 1})")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contains duplicates: {layers}")
    return layers


def _check_inputs(prompts: Sequence[str], methods: Sequence[str], responses: Sequence[str] | None) -> None:
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    if not methods:
        raise ValueError(f"no methods given: use one or more of {METHODS}")
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not a single string")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to extract")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is empty or not a string")
    if "response_mean" in methods:
        if responses is None:
            raise ValueError("method 'response_mean' needs responses: one generated response per prompt")
        if len(responses) != len(prompts):
            raise ValueError(f"got {len(responses)} responses for {len(prompts)} prompts: need one per prompt")
        for i, response in enumerate(responses):
            if not isinstance(response, str) or not response.strip():
                raise ValueError(f"response {i} is empty: response_mean needs at least one response token")


def _tokenize(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str] | None) -> list[TokenSeq]:
    """Prompts are fully formatted (chat template applied), so no special tokens are added here."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if responses is None:
        return [TokenSeq(i, ids, len(ids) - 1, len(ids)) for i, ids in enumerate(prompt_ids)]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    seqs = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not r:
            raise ValueError(f"response {i} tokenizes to no tokens")
        seqs.append(TokenSeq(i, p + r, len(p) - 1, len(p) + len(r)))
    return seqs


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(seqs: list[TokenSeq], min_prefix: int) -> list[tuple[int, list[TokenSeq]]]:
    """Group sequences that share a token prefix of at least `min_prefix` tokens.

    Sorted lexicographically, sequences with a common prefix are adjacent. The shared prefix stops
    before the first position any member reads, so every read position is computed in the suffix pass.
    """
    ordered = sorted(seqs, key=lambda s: s.ids)
    groups: list[tuple[int, list[TokenSeq]]] = []
    for seq in ordered:
        if groups:
            shared, members = groups[-1]
            common = min(shared, common_prefix(members[0].ids, seq.ids), seq.start)
            if common >= min_prefix:
                groups[-1] = (common, members + [seq])
                continue
        groups.append((min(len(seq.ids), seq.start), [seq]))
    # A group of one shares nothing; a group whose prefix is short is not worth a separate pass.
    return [(p if len(m) > 1 and p >= min_prefix else 0, m) for p, m in groups]


def assign_prefixes(seqs: list[TokenSeq], min_prefix: int, own: bool = False) -> list[list[int]]:
    """Give every sequence of a shared-prefix group its `prefix` and table `row`; returns the prefixes, by row.

    With `own`, a sequence that shares no prefix gets one of its own (everything before the first position
    it reads), so no batch is split into rows with and without a prefix. Generation wants this: a decoding
    step costs about the same for 1 row as for 16, so a split batch nearly doubles the time.
    """
    prefixes: list[list[int]] = []
    for length, members in prefix_groups(seqs, min_prefix):
        if length:
            groups = [(length, members)]
        elif own:
            groups = [(seq.start, [seq]) for seq in members]
        else:
            continue
        for size, group in groups:
            if size:
                for seq in group:
                    seq.prefix, seq.row = size, len(prefixes)
                prefixes.append(group[0].ids[:size])
    return prefixes


def batches(seqs: list[TokenSeq], batch_size: int, max_tokens: int) -> list[list[TokenSeq]]:
    """Batches sorted by the length of what each sequence computes itself, bounded in rows and padded tokens.

    Sequences with a shared prefix and those without one go into separate batches.
    """
    out: list[list[TokenSeq]] = []
    for part in ([s for s in seqs if s.prefix], [s for s in seqs if not s.prefix]):
        current: list[TokenSeq] = []
        for seq in sorted(part, key=lambda s: len(s.rest)):
            if current and (len(current) >= batch_size or len(seq.rest) * (len(current) + 1) > max_tokens):
                out.append(current)
                current = []
            current.append(seq)
        if current:
            out.append(current)
    return out


class _Capture:
    """Forward hooks that reduce each layer's output to the rows we need, in place into `outs`.

    `outs` maps what to read to where it goes: "last_token" and "response_mean" into
    `[n_prompts, n_layers, d_model]`, "response_tokens" (each response token's projection on `units`)
    into `[n_layers, n_response_tokens]`. One forward serves all of them.
    """

    def __init__(self, model: Any, layers: list[int], outs: dict[str, torch.Tensor],
                 units: dict[int, torch.Tensor] | None = None):
        self.blocks = decoder_layers(model)
        self.layers = layers
        self.column = {layer: col for col, layer in enumerate(layers)}
        self.last = max(layers)
        self.outs = outs
        self.units = units  # "response_tokens": unit direction per layer
        self.active = False
        self.batch: list[TokenSeq] = []
        self.rows: torch.Tensor | None = None  # output row per batch row
        self.read: torch.Tensor | None = None  # last_token: position per batch row
        self.weights: torch.Tensor | None = None  # response_mean: [b, t] averaging weights
        self.offsets: dict[int, int] = {}  # response_tokens: first output column of each sequence
        self.handles: list[Any] = []

    def begin(self, batch: list[TokenSeq], device: Any) -> None:
        """Set what to read from the next forward: one row per sequence, right-padded after its prefix."""
        width = max(len(s.rest) for s in batch)
        self.batch = batch
        self.rows = torch.tensor([s.index for s in batch])
        self.read = torch.tensor([s.start - s.prefix for s in batch], device=device)
        if "response_mean" in self.outs:
            weights = torch.zeros((len(batch), width), dtype=torch.float32)
            for row, seq in enumerate(batch):
                weights[row, seq.start + 1 - seq.prefix : seq.stop - seq.prefix] = 1.0 / (seq.stop - seq.start - 1)
            self.weights = weights.to(device)

    def __enter__(self) -> _Capture:
        for layer in range(self.last + 1):
            self.handles.append(self.blocks[layer].register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            if self.active and layer in self.column:
                col = self.column[layer]
                if "last_token" in self.outs:
                    batch = torch.arange(hidden.shape[0], device=hidden.device)
                    self.outs["last_token"][self.rows, col] = hidden[batch, self.read].float().cpu()
                if "response_mean" in self.outs:
                    values = torch.einsum("bt,btd->bd", self.weights, hidden.float())
                    self.outs["response_mean"][self.rows, col] = values.cpu()
                if "response_tokens" in self.outs:
                    assert self.units is not None
                    proj = (hidden.float() @ self.units[layer].to(hidden.device)).cpu()
                    for row, seq in enumerate(self.batch):
                        at = self.offsets[seq.index]
                        span = proj[row, seq.start + 1 - seq.prefix : seq.stop - seq.prefix]
                        self.outs["response_tokens"][col, at : at + len(span)] = span
            if layer == self.last:
                raise _StopForward

        return hook


def _run(model: Any, **kwargs: Any) -> None:
    try:
        model(**kwargs)
    except _StopForward:
        pass


def _length_chunks(lengths: Sequence[int], max_tokens: int, slack: float = 0.75) -> list[list[int]]:
    """Indices grouped longest first into chunks whose members are each at least `slack` times the chunk's
    longest, with at most `max_tokens` tokens (members x longest) per chunk."""
    chunks: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if chunks:
            longest = lengths[chunks[-1][0]]
            if lengths[i] >= slack * longest and (len(chunks[-1]) + 1) * longest <= max_tokens:
                chunks[-1].append(i)
                continue
        chunks.append([i])
    return chunks


@dataclass
class PrefixTable:
    """KV caches of several token prefixes, left-padded to one width, computed in a few batched passes.

    Every prompt that starts with one of the prefixes reuses its keys and values: a batch may mix
    prompts of different prefixes (one row of the table each), laid out as `[padding | prefix | rest]`
    with the padding masked and positions counted from the first real token.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [n_prefixes, kv_heads, width, head_dim]
    ids: torch.Tensor  # [n_prefixes, width]: the prefixes' tokens, left-padded
    mask: torch.Tensor  # [n_prefixes, width]: 1 on real tokens, 0 on the left padding

    @classmethod
    def build(cls, model: Any, prefixes: Sequence[list[int]], pad_id: int, last_layer: int | None = None,
              max_batch_tokens: int = 8192, before_chunk: Callable[[list[int]], None] | None = None) -> PrefixTable:
        """Run the prefixes through the decoder (up to `last_layer`), in chunks of similar length of at most
        `max_batch_tokens`: each chunk is cut to its longest prefix, so little is computed on padding.

        Forward hooks on the layers (steering, capture) see the prefix positions as in any other forward;
        `before_chunk(rows)` is told which prefixes each forward holds (per-prompt steering maps them).
        """
        from axes_lib.kvcache import growing_cache

        base = base_model(model)
        device = next(model.parameters()).device
        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prefixes), width), dtype=torch.long)
        for row, prefix in enumerate(prefixes):
            ids[row, width - len(prefix) :] = torch.tensor(prefix)
            mask[row, width - len(prefix) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        last = model.config.num_hidden_layers - 1 if last_layer is None else last_layer
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for rows in _length_chunks([len(p) for p in prefixes], max_batch_tokens):
            cut = width - len(prefixes[rows[0]])  # the chunk's longest prefix starts here
            index = torch.tensor(rows, device=device)
            cache = growing_cache(model)
            if before_chunk is not None:
                before_chunk(rows)
            _run(base, input_ids=ids[index, cut:], attention_mask=mask[index, cut:],
                 position_ids=_positions(mask[index, cut:]), cache=cache, use_cache=True)
            for layer, part in enumerate(cache.layers[: last + 1]):
                if len(kv) == layer:  # zeros on the padding left of every chunk (masked wherever they are read)
                    shape = (len(prefixes), *part.keys.shape[1:2], width, part.keys.shape[-1])
                    kv.append((part.keys.new_zeros(shape), part.values.new_zeros((*shape[:3], part.values.shape[-1]))))
                kv[layer][0][index, :, cut:] = part.keys
                kv[layer][1][index, :, cut:] = part.values
        return cls(kv, ids, mask)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def lengths(self, rows: Sequence[int]) -> torch.Tensor:
        """Real tokens of each row's prefix: the position of the first token after it."""
        return self.mask[list(rows)].sum(-1)

    def cache(self, model: Any, rows: Sequence[int], reserve: int = 0) -> Any:
        """A fresh cache holding each row's prefix (a view when all rows share one prefix); with `reserve`,
        one that grows in place with room for that many more positions (see `kvcache.growing_cache`)."""
        from axes_lib.kvcache import growing_cache

        cache = growing_cache(model, reserve)
        same = len(set(rows)) == 1
        index = torch.tensor(list(rows), device=self.mask.device)
        for layer, (k, v) in enumerate(self.kv):
            if same:
                k, v = k[rows[0] : rows[0] + 1].expand(len(rows), -1, -1, -1), v[rows[0] : rows[0] + 1].expand(len(rows), -1, -1, -1)
            else:
                k, v = k.index_select(0, index), v.index_select(0, index)
            cache.update(k, v, layer)
        return cache


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token (padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


@torch.inference_mode()
def extract(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    method: Method = "last_token",
    responses: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    share_prefix: bool = True,
    min_prefix: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Residual stream after each requested decoder layer: `[n_prompts, n_layers, d_model]`, float32, CPU.

    `last_token` reads the final prompt token (the position before generation starts);
    `response_mean` averages over the response tokens in one teacher-forced pass over prompt + response.
    Prompts must be fully formatted (chat template applied). Results do not depend on batching,
    padding side or prefix sharing (up to float rounding). `extract_methods` reads both in one pass.
    """
    return extract_methods(model, tokenizer, prompts, responses if method == "response_mean" else None, (method,),
                           layers, batch_size, max_batch_tokens, share_prefix, min_prefix, progress)[method]


@torch.inference_mode()
def extract_methods(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    methods: Sequence[Method] = METHODS,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    share_prefix: bool = True,
    min_prefix: int = 16,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """`{method: extract(..., method)}` for each of `methods`, from one forward pass.

    With responses, the pass runs over prompt + response, and by causality the last prompt token's
    state is the same as in a pass over the prompt alone: both readings for the price of the longer one.
    """
    methods = tuple(methods)
    _check_inputs(prompts, methods, responses)
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size}, {max_batch_tokens}")
    layers = check_layers(layers, model.config.num_hidden_layers)
    seqs = _tokenize(tokenizer, prompts, responses if "response_mean" in methods else None)
    outs = {m: torch.zeros(len(seqs), len(layers), model.config.hidden_size, dtype=torch.float32) for m in methods}
    with _Capture(model, layers, outs) as capture:
        _drive(model, tokenizer, seqs, capture, batch_size, max_batch_tokens, share_prefix, min_prefix,
               progress, f"extract {' + '.join(methods)}")
    return outs


def _drive(model: Any, tokenizer: Any, seqs: list[TokenSeq], capture: _Capture, batch_size: int, max_batch_tokens: int,
           share_prefix: bool, min_prefix: int, progress: bool, desc: str) -> None:
    """Run every sequence through the decoder with `capture` reading it: shared prefixes first, then batches."""
    base = base_model(model)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefixes = assign_prefixes(seqs, min_prefix) if share_prefix else []
    table = PrefixTable.build(model, prefixes, pad_id, capture.last, max_batch_tokens) if prefixes else None
    bar = tqdm(total=len(seqs), desc=desc, disable=not progress, leave=False)
    for batch in batches(seqs, batch_size, max_batch_tokens):
        width = max(len(s.rest) for s in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):  # right padding: positions are read by index
            ids[row, : len(seq.rest)] = torch.tensor(seq.rest)
            mask[row, : len(seq.rest)] = 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "use_cache": False}
        if batch[0].prefix:
            assert table is not None
            rows = [s.row for s in batch]
            kwargs.update(cache=table.cache(model, rows), use_cache=True,
                          attention_mask=torch.cat([table.mask[rows], mask.to(device)], dim=1),
                          position_ids=table.lengths(rows)[:, None] + torch.arange(width, device=device))
        else:
            kwargs["attention_mask"] = mask.to(device)
        capture.begin(batch, device)
        capture.active = True
        try:
            _run(base, **kwargs)
        finally:
            capture.active = False
        bar.update(len(batch))
    bar.close()


@torch.inference_mode()
def token_projections(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    direction: Mapping[int, torch.Tensor],
    layers: Sequence[int],
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Projection of every response token's residual stream on the unit direction, per layer.

    One teacher-forced pass over prompt + response (as `extract(method="response_mean")`), but instead
    of averaging, each response token's projection is kept: `{layer: Tensor[total response tokens]}`,
    concatenated in prompt order. These are the per-position values a cap acts on during generation.
    """
    _check_inputs(prompts, ("response_mean",), responses)
    layers = check_layers(layers, model.config.num_hidden_layers)
    missing = [layer for layer in layers if layer not in direction]
    if missing:
        raise ValueError(f"direction has no vector for layers {missing}")
    validate_direction({layer: direction[layer] for layer in layers}, model)  # zero, NaN or wrong length: fail here
    seqs = _tokenize(tokenizer, prompts, responses)
    units = {layer: (direction[layer] / direction[layer].norm()).float() for layer in layers}
    out = torch.zeros(len(layers), sum(s.stop - s.start - 1 for s in seqs), dtype=torch.float32)
    with _Capture(model, layers, {"response_tokens": out}, units) as capture:
        offset = 0
        for seq in seqs:
            capture.offsets[seq.index] = offset
            offset += seq.stop - seq.start - 1
        _drive(model, tokenizer, seqs, capture, batch_size, max_batch_tokens, True, 16, progress, "token projections")
    return {layer: out[col] for col, layer in enumerate(layers)}
