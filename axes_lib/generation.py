"""Batched, deterministic generation: left padding, length-sorted batches, greedy by default."""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.batching.plan import TokenSeq, assign_prefixes, batches, pad
from axes_lib.batching.prefix import PrefixTable
from axes_lib.interventions import Intervention
from axes_lib.steering import Steering, SteeringStats, steer

__all__ = ["GENERATION_VERSION", "check_prompts", "generate"]

#: Version of what `generate` computes for given inputs. Bump it when a change alters generated text
#: (sampling, prompt layout, cache or attention arithmetic, hook order): resumable results are keyed by it.
GENERATION_VERSION = 1


def check_prompts(prompts: str | Sequence[str]) -> tuple[list[str], bool]:
    """Normalise one prompt or a list to a list; says whether a single prompt was given."""
    single = isinstance(prompts, str)
    items = [prompts] if single else list(prompts)
    if not items:
        raise ValueError("no prompts given: pass one prompt string or a non-empty list")
    for i, prompt in enumerate(items):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {i} is empty or not a string")
    return items, single


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    do_sample: bool = False,
    progress: bool = False,
    share_prefix: bool = True,
    min_prefix: int = 16,
    cascade: bool | None = None,
    groups: Sequence[Hashable] | None = None,
    interventions: Intervention | Sequence[Intervention | None] | None = None,
    stats: dict[Intervention, SteeringStats] | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Generate a response per fully formatted prompt, in input order; greedy unless `do_sample`.

    Prompts are sorted by length and batched with left padding, so a batch wastes little on padding
    and the outputs do not depend on the order the prompts were given in. Prompts that share a token
    prefix of at least `min_prefix` tokens (one system prompt per persona) have that prefix computed
    once (`PrefixTable`); batches may mix prompts of different prefixes, each row laid out as
    `[prefix | padding | rest]` with the padding masked and positions counted from the mask, so the
    result equals the unshared computation up to float rounding. With `cascade`, a batch keeps one
    copy of each prefix instead of one per row, and attention reads it once per prefix
    (`kvcache.cascade_attention`). By default (None) it is used on CPU only: there it saves reading the
    prefix copies (1.34x on 64 mixed-persona prompts), while on a GPU its per-prefix loop of small kernels
    costs more than SDPA over the copies (2.6x slower on an H100, `make bench`). Prompts of different
    `groups` (one label per prompt) never share a prefix.

    `interventions` steers the generation (`steering.steer`): one intervention for every prompt, or
    one (or None) per prompt, so a batch can hold many settings; prompts of different interventions never
    share a prefix, since it is steered too. `stats`, if given, receives each intervention's statistics.
    Every forward tells the hooks which positions are the response (`Steering.response_from`): none in the
    prefill (shared-prefix passes included), all of them in each decoding step, whose input is the token
    generated last; a `response_only` intervention acts on those only.
    """
    items, _ = check_prompts(prompts)
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if groups is not None and len(groups) != len(items):
        raise ValueError(f"got {len(groups)} groups for {len(items)} prompts: need one label per prompt")
    per_prompt = interventions is not None and not isinstance(interventions, Intervention)
    if per_prompt:
        interventions = list(interventions)  # type: ignore[arg-type]
        if len(interventions) != len(items):
            raise ValueError(f"got {len(interventions)} interventions for {len(items)} prompts: need one (or None) per prompt")
        groups = [(None if groups is None else groups[i], id(item)) for i, item in enumerate(interventions)]
    with steer(model, interventions) as steering:  # type: ignore[arg-type]
        outputs = _generate(model, tokenizer, items, max_new_tokens, batch_size, do_sample, progress, share_prefix,
                            min_prefix, cascade, groups, steering, per_prompt, generate_kwargs)
    if stats is not None:
        stats.update(steering.stats)
    return outputs


def _generate(model: Any, tokenizer: Any, items: list[str], max_new_tokens: int, batch_size: int, do_sample: bool,
              progress: bool, share_prefix: bool, min_prefix: int, cascade: bool | None,
              groups: Sequence[Hashable] | None, steering: Steering, per_prompt: bool,
              generate_kwargs: dict[str, Any]) -> list[str]:
    """`generate` once its arguments are checked and its hooks installed; `steering` is told where the response
    starts in every forward and, for per-prompt interventions, which prompt each of its rows is."""
    from axes_lib.batching.kvcache import cascade_attention, cascade_cache, growing_cache

    device = next(model.parameters()).device
    cascade = device.type == "cpu" if cascade is None else cascade
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(items, add_special_tokens=False)["input_ids"]
    # A shared prefix stops before each prompt's last token: generation needs one new input position.
    seqs = [TokenSeq(i, ids, len(ids) - 1, len(ids)) for i, ids in enumerate(encoded)]
    prefixes: list[list[int]] = []
    if share_prefix:
        members: dict[Hashable, list[TokenSeq]] = {}
        for seq in seqs:
            members.setdefault(None if groups is None else groups[seq.index], []).append(seq)
        for part in members.values():
            offset = len(prefixes)
            prefixes += assign_prefixes(part, min_prefix, own=True)
            for seq in part:
                seq.row += offset if seq.prefix else 0
    table = None
    if prefixes:
        first = {seq.row: seq.index for seq in reversed(seqs) if seq.prefix}  # a prompt of each prefix
        steering.response_from(Steering.PROMPT)
        table = PrefixTable.build(model, prefixes, pad_id, before_chunk=None if not per_prompt else (
            lambda chunk: steering.select([first[row] for row in chunk])))
    outputs: list[str] = [""] * len(items)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad_id, **generate_kwargs}
    if not do_sample:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    bar = tqdm(total=len(items), desc="generate", disable=not progress, leave=False)
    for batch in batches(seqs, batch_size, max_tokens=sys.maxsize):
        batch = sorted(batch, key=lambda seq: seq.row)  # rows of one prefix side by side (cascade attention slices them)
        ids, mask = pad([seq.rest for seq in batch], pad_id, "left")  # generation continues every row at the end
        width = ids.shape[1]
        ids, mask = ids.to(device), mask.to(device)
        if batch[0].prefix:  # [prefix (left-padded) | padding | rest]; generate counts positions from the mask
            assert table is not None
            rows = [seq.row for seq in batch]
            ids = torch.cat([table.ids[rows], ids], dim=1)
            mask = torch.cat([table.mask[rows], mask], dim=1)
            if cascade:
                cache = cascade_cache(model, table.kv, rows, reserve=width + max_new_tokens)
            else:
                cache = table.cache(model, rows, reserve=width + max_new_tokens)
        else:
            cache = growing_cache(model, reserve=width + max_new_tokens)
        if per_prompt:
            steering.select([seq.index for seq in batch])
        steering.response_from(Steering.PROMPT)  # the prefill; after each forward, a decoding step follows
        decoding = model.register_forward_hook(lambda *_: steering.response_from(0))
        try:
            with cascade_attention(model, cache) if cascade and batch[0].prefix else nullcontext():
                out = model.generate(input_ids=ids, attention_mask=mask, cache=cache, **kwargs)
        finally:
            decoding.remove()
        for row, seq in enumerate(batch):
            outputs[seq.index] = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True).strip()
        bar.update(len(batch))
    bar.close()
    return outputs
