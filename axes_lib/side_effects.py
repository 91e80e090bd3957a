"""What an intervention costs the model outside the persona it targets: next-token KL and perplexity.

Anthropic's case for activation capping over additive steering (arXiv 2601.10387) is that a cap leaves the
model's behaviour alone where the activation is already in range. `next_token_kl` measures it on
teacher-forced text: per text, the mean over its scored positions of KL(unsteered || steered) between the
next-token distributions, and the steered model's negative log-likelihood of the text itself (`perplexity`:
exp of the token-weighted mean), for several interventions in one pass per batch. Accuracy on short-answer
questions is generation (`generation.generate`) scored by `bank.is_correct` (notebook 11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from axes_lib.batching.plan import pad
from axes_lib.interventions import Intervention
from axes_lib.steering import steer

__all__ = ["next_token_kl", "perplexity"]


def _forward_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return torch.log_softmax(logits.float(), dim=-1)


def next_token_kl(model: Any, tokenizer: Any, texts: Sequence[tuple[str, str]],
                  interventions: Mapping[str, Intervention | None], batch_size: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """For each named intervention: per text, `kl` (mean nats per scored position), `nll` (summed nats of
    the scored tokens under the steered model) and `tokens` (how many were scored).

    A text is `(context, continuation)`: the positions that predict the continuation's tokens are scored
    (the context is read, steered like the rest, but not scored). The unsteered forward is the reference
    of every KL; an intervention None gives KL 0 and the unsteered NLL.
    """
    if not texts:
        raise ValueError("no texts to score")
    for i, (_, continuation) in enumerate(texts):
        if not continuation.strip():
            raise ValueError(f"text {i} has an empty continuation: nothing to score")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = []
    for context, continuation in texts:
        head = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not head:  # the first token has nothing to be predicted from: it becomes the context
            head, tail = tail[:1], tail[1:]
        encoded.append((head, tail))
    out = {name: {"kl": np.zeros(len(texts)), "nll": np.zeros(len(texts)), "tokens": np.zeros(len(texts), int)}
           for name in interventions}
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, mask = pad([encoded[i][0] + encoded[i][1] for i in rows], pad_id, side="right")
        ids, mask = ids.to(device), mask.to(device)
        # Position t predicts token t + 1: the scored positions are those before each continuation token.
        scored = torch.zeros_like(mask, dtype=torch.bool)
        for r, i in enumerate(rows):
            head, tail = encoded[i]
            scored[r, len(head) - 1:len(head) + len(tail) - 1] = True
        target = ids.roll(-1, dims=1)
        base = _forward_logprobs(model, ids, mask)
        for name, intervention in interventions.items():
            if intervention is None:
                steered = base
            else:
                with steer(model, intervention):
                    steered = _forward_logprobs(model, ids, mask)
            kl = (base.exp() * (base - steered)).sum(-1)  # KL(unsteered || steered) per position
            nll = -steered.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            for r, i in enumerate(rows):
                s = scored[r]
                out[name]["kl"][i] = float(kl[r, s].mean())
                out[name]["nll"][i] = float(nll[r, s].sum())
                out[name]["tokens"][i] = int(s.sum())
    return out


def perplexity(nll: np.ndarray, tokens: np.ndarray) -> float:
    """exp of the token-weighted mean NLL over texts."""
    return float(np.exp(np.sum(nll) / np.sum(tokens)))
