"""How the unsteered model reads an answer: its fluency after its own query, and how specific it is to it.

Both are read under a neutral system prompt (`NEUTRAL_SYSTEM`), not the model's default assistant
prompt, so a fluent persona voice is not taken for a broken one:

* fluency `ℓ`: the mean per-token log-likelihood of the answer after its own query;
* relevance `ρ = ℓ − mean_k ℓ_k`: how much more likely the answer is after its own query than after
  `n_other` unrelated queries from the seed's bank (chosen per answer, deterministically). An answer
  that addresses its query gains from it; one that loops, drifts or talks about something else does not.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NEUTRAL_SYSTEM", "Reading", "encode", "read_answers", "response_logprobs"]

#: The system prompt answers are read under: it asks for no voice, so no voice is penalised.
NEUTRAL_SYSTEM = "The following is a conversation between a user and a writer."


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (how responses are appended to their prompts)."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 16,
    max_tokens: int = 8192,
    max_response_tokens: int = 256,
    progress: bool = False,
) -> list[np.ndarray]:
    """Log-probability of each response token given the prompt and the response so far (teacher forcing).

    Prompts are fully formatted (chat template applied) and responses are appended as tokens, as in
    `axes_lib.activations`. Sequences are sorted by length and batched with left padding (positions
    counted from the mask), so the LM head only runs on each batch's last `max response length`
    positions. Responses longer than `max_response_tokens` are cut there. An empty response gives an
    empty array. Returns one float64 array per response, in input order.
    """
    import torch
    from tqdm import tqdm

    from axes_lib.batching.plan import pad, positions

    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses: need one response per prompt")
    if batch_size < 1 or max_tokens < 1 or max_response_tokens < 1:
        raise ValueError(f"batch_size, max_tokens and max_response_tokens must be >= 1, got {batch_size}, {max_tokens}, {max_response_tokens}")
    prompt_ids = encode(tokenizer, prompts)
    response_ids = [ids[:max_response_tokens] for ids in encode(tokenizer, responses)]
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {i} is empty: the log-likelihood of a response needs its prompt")
    out: list[np.ndarray] = [np.zeros(0) for _ in prompts]
    todo = sorted((i for i, r in enumerate(response_ids) if r), key=lambda i: (len(prompt_ids[i]) + len(response_ids[i]), i))
    batches: list[list[int]] = []
    for i in todo:
        width = len(prompt_ids[i]) + len(response_ids[i])
        if batches and len(batches[-1]) < batch_size and width * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="log-likelihood", disable=not progress, leave=False):
            keep = max(len(response_ids[i]) for i in batch) + 1  # positions whose logits predict response tokens
            ids, mask = pad([prompt_ids[i] + response_ids[i] for i in batch], pad_id, "left")
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions(mask).to(device),
                           logits_to_keep=keep, use_cache=False).logits
            for row, i in enumerate(batch):  # logits: [b, keep, vocab]; position j predicts token j + 1
                n = len(response_ids[i])
                target = torch.tensor(response_ids[i], device=logits.device)
                # The last `n + 1` kept positions end the sequence; the first `n` of them predict the response.
                pred = logits[row, keep - n - 1: keep - 1].float()
                logp = pred.gather(-1, target[:, None])[:, 0] - torch.logsumexp(pred, dim=-1)
                out[i] = logp.double().cpu().numpy()
    return out


@dataclass(frozen=True)
class Reading:
    """An answer as the unsteered model reads it: fluency `ℓ` (nats/token), relevance `ρ`, tokens read."""

    fluency: float
    relevance: float
    n_tokens: int


def _others(query: str, response: str, bank: Sequence[str], k: int) -> list[str]:
    """`k` queries of the bank other than `query`, chosen by a hash of the pair (the same every run)."""
    seed = int(hashlib.sha256(f"{query}\0{response}".encode()).hexdigest()[:12], 16)
    pool = [q for q in bank if q != query]
    return random.Random(seed).sample(pool, min(k, len(pool)))


def read_answers(model: Any, tokenizer: Any, model_key: str, queries: Sequence[str], responses: Sequence[str],
                 n_other: int = 3, batch_size: int = 16, progress: bool = False) -> list[Reading | None]:
    """`Reading` of each answer after its query (None for an answer with no tokens), in one batched pass
    over the answers after their own and after `n_other` unrelated queries."""
    from axes_lib.prompts import format_prompt, load_queries

    if len(queries) != len(responses):
        raise ValueError(f"got {len(queries)} queries and {len(responses)} responses: need one query per response")
    bank = [q.text for q in load_queries()]
    contexts = [[q, *_others(q, r, bank, n_other)] for q, r in zip(queries, responses)]
    prompts = [format_prompt(NEUTRAL_SYSTEM, c, model_type=model_key, tokenizer=tokenizer) for cs in contexts for c in cs]
    repeated = [r for r, cs in zip(responses, contexts) for _ in cs]
    logps = response_logprobs(model, tokenizer, prompts, repeated, batch_size=batch_size, progress=progress)
    out: list[Reading | None] = []
    at = 0
    for cs in contexts:
        own, *other = logps[at:at + len(cs)]
        at += len(cs)
        if own.size == 0:
            out.append(None)
            continue
        fluency = float(own.mean())
        out.append(Reading(fluency, fluency - float(np.mean([o.mean() for o in other])) if other else 0.0, int(own.size)))
    return out
