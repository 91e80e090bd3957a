"""Shared-prefix KV tables: each distinct prompt prefix computed once, its keys and values reused by every
prompt that starts with it (extraction and generation alike)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from axes_lib.batching.plan import length_chunks, pad, positions
from axes_lib.models import base_model

__all__ = ["PrefixTable", "StopForward", "run_until_stop"]


class StopForward(Exception):
    """Raised by the hook on the last requested layer: the rest of the model is not needed."""


def run_until_stop(model: Any, **kwargs: Any) -> None:
    """A forward that a hook may end early by raising `StopForward` (nothing after that layer is needed)."""
    try:
        model(**kwargs)
    except StopForward:
        pass


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
        from axes_lib.batching.kvcache import growing_cache

        base = base_model(model)
        device = next(model.parameters()).device
        width = max(len(p) for p in prefixes)
        ids, mask = pad(prefixes, pad_id, "left")
        ids, mask = ids.to(device), mask.to(device)
        last = model.config.num_hidden_layers - 1 if last_layer is None else last_layer
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for rows in length_chunks([len(p) for p in prefixes], max_batch_tokens):
            cut = width - len(prefixes[rows[0]])  # the chunk's longest prefix starts here
            index = torch.tensor(rows, device=device)
            cache = growing_cache(model)
            if before_chunk is not None:
                before_chunk(rows)
            run_until_stop(base, input_ids=ids[index, cut:], attention_mask=mask[index, cut:],
                           position_ids=positions(mask[index, cut:]), cache=cache, use_cache=True)
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
        from axes_lib.batching.kvcache import growing_cache

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
