"""KV caches for batched generation: one that grows in place, and cascade attention over shared prefixes.

In this project's prompts every persona's long system prompt is shared by all of its queries. A
`PrefixTable` computes each such prefix once; a plain cache would then hold one copy of it per row, and
every decoding step would read all those copies. `cascade_cache` keeps one copy per prefix instead: each
row's cache holds only its own tokens, and `cascade_attention` computes attention in two parts, queries
against their prefix (one matrix product per prefix, for all rows sharing it) and queries against their
own tokens, joined in one softmax. The result equals ordinary attention up to float rounding.

Imported lazily: loading transformers' attention registry takes seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["CascadeLayer", "ReservedLayer", "cascade_attention", "cascade_cache", "growing_cache"]

NAME = "axes_cascade"  # the attention implementation's name while `cascade_attention` is active


class ReservedLayer(DynamicLayer):
    """A cache layer that writes new keys and values into a buffer with `reserve` positions of room ahead
    (doubling when full) instead of concatenating the whole cache at every decoding step."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = reserve
        self.used = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.used = 0
        end = self.used + key_states.shape[-2]
        if self.used == 0 or end > self.buffer_k.shape[-2]:
            room = max(end + self.reserve, 2 * end)
            shape = (*key_states.shape[:2], room, key_states.shape[-1])
            k, v = key_states.new_empty(shape), value_states.new_empty((*shape[:3], value_states.shape[-1]))
            if self.used:
                k[:, :, : self.used], v[:, :, : self.used] = self.keys, self.values
            self.buffer_k, self.buffer_v = k, v
        self.buffer_k[:, :, self.used : end] = key_states
        self.buffer_v[:, :, self.used : end] = value_states
        self.used = end
        self.keys, self.values = self.buffer_k[:, :, :end], self.buffer_v[:, :, :end]
        return self.keys, self.values


def growing_cache(model: Any, reserve: int = 0) -> Any:
    """A `DynamicCache` whose layers grow in place with `reserve` positions of room (`ReservedLayer`),
    which on CPU saves a third of generation time; masks and positions work exactly as for a
    `DynamicCache`. With `reserve=0` it is a plain one."""
    cache = DynamicCache(config=model.config)
    if reserve:
        cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class CascadeLayer(ReservedLayer):
    """A row's own keys and values (growing in place), beside one shared copy of each prefix.

    The cache reports the prefix width plus its own length, so masks and positions are built for the
    full `[prefix | own]` layout; `update` returns only the own part, and `cascade_attention` adds the prefix.
    """

    def __init__(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, groups: Sequence[slice | torch.Tensor],
                 reserve: int) -> None:
        super().__init__(reserve)
        self.prefix_k, self.prefix_v = prefix_k, prefix_v  # [n_prefixes, kv_heads, width, head_dim]
        self.groups = groups  # per prefix: the batch rows that use it (a slice or their indices)
        self.width = prefix_k.shape[-2]

    def get_seq_length(self) -> int:
        return self.width + self.used

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.width + self.used + query_length, 0


def cascade_cache(model: Any, kv: Sequence[tuple[torch.Tensor, torch.Tensor]], rows: Sequence[int], reserve: int) -> Any:
    """A cache for a batch whose row `i` starts with prefix `rows[i]` of `kv` (per layer `[n_prefixes, kv_heads,
    width, head_dim]`, left-padded to one width as in `PrefixTable`); only the prefixes used are kept."""
    used = sorted(set(rows))
    index = torch.tensor(used, device=kv[0][0].device)
    groups: list[slice | torch.Tensor] = []
    for prefix in used:  # a slice where the prefix's rows are side by side (views, not gathers), else their indices
        members = [i for i, r in enumerate(rows) if r == prefix]
        contiguous = members[-1] - members[0] + 1 == len(members)
        groups.append(slice(members[0], members[-1] + 1) if contiguous else torch.tensor(members, device=index.device))
    cache = DynamicCache(config=model.config)
    if len(cache.layers) != len(kv):
        raise ValueError(f"prefix table has {len(kv)} layers, the model {len(cache.layers)}")
    cache.layers = [CascadeLayer(k.index_select(0, index), v.index_select(0, index), groups, reserve) for k, v in kv]
    return cache


_ACTIVE: ContextVar[Any] = ContextVar(NAME, default=None)


@contextmanager
def cascade_attention(model: Any, cache: Any) -> Iterator[None]:
    """Run `model` with cascade attention over `cache` (from `cascade_cache`) inside the block."""
    _register()
    config = model.config
    previous = config._attn_implementation
    token = _ACTIVE.set(cache)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
        _ACTIVE.reset(token)


def _register() -> None:
    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, _attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks are SDPA's: boolean, True where a key is seen


def _full_mask(mask: torch.Tensor | None, b: int, q: int, p: int, s: int, device: Any) -> torch.Tensor:
    """`[b, 1, q, p + s]` boolean: the mask SDPA would get, built when the mask builder skipped it (no padding)."""
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"cascade attention expects a boolean mask, got {mask.dtype}")
        return mask.expand(b, 1, q, p + s)
    own = torch.arange(s, device=device)[None, :] <= torch.arange(q, device=device)[:, None] + (s - q)
    return torch.cat([torch.ones((q, p), dtype=torch.bool, device=device), own], dim=1).expand(b, 1, q, p + s)


def _count(rows: slice | torch.Tensor, b: int) -> int:
    return len(range(*rows.indices(b))) if isinstance(rows, slice) else len(rows)


def _attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None,
               dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    cache = _ACTIVE.get()
    layer = cache.layers[module.layer_idx] if cache is not None else None
    if not isinstance(layer, CascadeLayer):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    b, h, q, d = query.shape
    kv, s, p = key.shape[1], key.shape[2], layer.width
    rep = h // kv  # query head j reads key/value head j // rep
    rq = rep * q
    qg = query.reshape(b, kv, rq, d) * (d**-0.5 if scaling is None else scaling)
    dtype = torch.promote_types(query.dtype, torch.float32)  # softmax in float32 at least (bf16 on GPU)
    scores = torch.empty((b, kv, rq, p + s), dtype=dtype, device=query.device)
    scores[..., p:] = qg @ key.transpose(-1, -2)
    for g, rows in enumerate(layer.groups):  # one product per prefix for all the rows that share it
        n = _count(rows, b)
        part = qg[rows].transpose(0, 1).reshape(kv, n * rq, d) @ layer.prefix_k[g].transpose(-1, -2)
        scores[rows, :, :, :p] = part.view(kv, n, rq, p).transpose(0, 1).to(dtype)
    mask = _full_mask(attention_mask, b, q, p, s, query.device)
    mask = mask[:, :, None].expand(b, 1, rep, q, p + s).reshape(b, 1, rq, p + s)
    probs = scores.masked_fill_(~mask, torch.finfo(dtype).min).softmax(-1).to(value.dtype)
    out = probs[..., p:] @ value
    for g, rows in enumerate(layer.groups):
        n = _count(rows, b)
        part = probs[rows, :, :, :p].transpose(0, 1).reshape(kv, n * rq, p) @ layer.prefix_v[g]
        out[rows] += part.view(kv, n, rq, d).transpose(0, 1)
    return out.view(b, kv, rep, q, d).reshape(b, h, q, d).transpose(1, 2).contiguous(), None
