"""Batched, deterministic generation: left padding, length-sorted batches, greedy by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks


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
    **generate_kwargs: Any,
) -> list[str]:
    """Generate a response per fully formatted prompt, in input order; greedy unless `do_sample`.

    Prompts are sorted by length and batched with left padding, so a batch wastes little on padding
    and the outputs do not depend on the order the prompts were given in.
    """
    items, _ = check_prompts(prompts)
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(items, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(items)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(items)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad_id, **generate_kwargs}
    if not do_sample:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    bar = tqdm(total=len(items), desc="generate", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[r, width - len(encoded[i]) :] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        for r, i in enumerate(rows):
            outputs[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True).strip()
        bar.update(len(rows))
    bar.close()
    return outputs
