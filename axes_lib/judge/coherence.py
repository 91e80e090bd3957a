"""Coherence for the offline judge: how the unsteered model reads a response, mapped to 0–10.

Three features of a response: the mean per-token log-likelihood `ℓ` under the unsteered model (given
its prompt, teacher-forced), the fraction of repeated token 3-grams `ρ`, and the distinct-token ratio
`δ`. `CoherenceScale` maps each to [0, 1] between a degenerate anchor and a typical anchor taken from
normal answers, and multiplies them (the formula is in `axes_lib.judge.offline`'s docstring).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "CoherenceFeatures",
    "CoherenceScale",
    "coherence_features",
    "encode",
    "repetition_stats",
    "response_logprobs",
    "unigram_logprob",
]

_NGRAM = 3


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


def repetition_stats(tokens: Sequence[Any], n: int = _NGRAM) -> tuple[float, float]:
    """`(repeated n-gram fraction, distinct-token ratio)` of a token sequence.

    The first is the share of the text's n-grams that already occurred earlier in it (0 for a text of
    fewer than n tokens); the second the number of distinct tokens over the number of tokens (1 for
    an empty text).
    """
    tokens = list(tokens)
    if not tokens:
        return 0.0, 1.0
    distinct = len(set(tokens)) / len(tokens)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0, distinct
    seen: set[tuple[Any, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams), distinct


def unigram_logprob(token_lists: Iterable[Sequence[Any]]) -> float:
    """Mean log-probability per token of texts under a unigram model of their own tokens (minus its entropy)."""
    counts: dict[Any, int] = {}
    for tokens in token_lists:
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no tokens to fit a unigram model on")
    p = np.array(list(counts.values()), dtype=float) / total
    return float((p * np.log(p)).sum())


@dataclass(frozen=True)
class CoherenceFeatures:
    """What coherence is computed from: mean token log-likelihood, repeated 3-gram fraction, distinct-token ratio."""

    mean_logprob: float
    repeated_ngram_fraction: float
    distinct_token_ratio: float
    n_tokens: int


def coherence_features(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16,
    progress: bool = False,
) -> list[CoherenceFeatures | None]:
    """Coherence features of each response given its prompt (None for an empty response)."""
    logps = response_logprobs(model, tokenizer, prompts, responses, batch_size=batch_size, progress=progress)
    out: list[CoherenceFeatures | None] = []
    for ids, lp in zip(encode(tokenizer, responses), logps):
        if lp.size == 0:
            out.append(None)
            continue
        rep, distinct = repetition_stats(ids[: lp.size])
        out.append(CoherenceFeatures(float(lp.mean()), rep, distinct, int(lp.size)))
    return out


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


@dataclass(frozen=True)
class CoherenceScale:
    """Maps `CoherenceFeatures` to 0–10 (formula in `axes_lib.judge.offline`'s docstring); fit on normal answers with `fit`."""

    logprob_floor: float
    logprob_ref: float
    repeat_ref: float
    distinct_ref: float
    reference_percentile: float
    n_reference: int

    @classmethod
    def fit(cls, features: Sequence[CoherenceFeatures], logprob_floor: float, reference_percentile: float = 25.0) -> CoherenceScale:
        """Anchors from normal answers' features (the percentile for `ℓ` and `δ`, its mirror for `ρ`) and the floor `ℓ₀`."""
        feats = [f for f in features if f is not None]
        if len(feats) < 5:
            raise ValueError(f"a coherence scale needs the features of at least 5 normal answers, got {len(feats)}")
        if not 0 < reference_percentile < 100:
            raise ValueError(f"reference_percentile must lie in (0, 100), got {reference_percentile}")
        ref = float(np.percentile([f.mean_logprob for f in feats], reference_percentile))
        if not ref > logprob_floor:
            raise ValueError(f"normal answers' log-likelihood ({ref:.2f} nats/token) is not above the floor "
                             f"({logprob_floor:.2f}): is this the model that wrote them?")
        rep = float(np.percentile([f.repeated_ngram_fraction for f in feats], 100 - reference_percentile))
        distinct = float(np.percentile([f.distinct_token_ratio for f in feats], reference_percentile))
        return cls(float(logprob_floor), ref, min(rep, 0.99), max(distinct, 1e-3), float(reference_percentile), len(feats))

    def parts(self, f: CoherenceFeatures) -> tuple[float, float, float]:
        """The three factors `(s_ℓ, s_ρ, s_δ)`, each in [0, 1]."""
        s_ll = _clip01((f.mean_logprob - self.logprob_floor) / (self.logprob_ref - self.logprob_floor))
        s_rep = _clip01((1.0 - f.repeated_ngram_fraction) / (1.0 - self.repeat_ref))
        s_dist = _clip01(f.distinct_token_ratio / self.distinct_ref)
        return s_ll, s_rep, s_dist

    def __call__(self, f: CoherenceFeatures | None) -> float:
        """Coherence on 0–10; 0 for an empty response (None features)."""
        if f is None:
            return 0.0
        s_ll, s_rep, s_dist = self.parts(f)
        return 10.0 * s_ll * s_rep * s_dist

    def to_dict(self) -> dict[str, float]:
        """The anchors as a JSON-ready dict (what the coherence cache stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoherenceScale:
        """The scale `to_dict` stored."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})
