"""Deliberately broken texts, for checking that a coherence score falls when a text breaks."""

from __future__ import annotations

import random
from typing import Any

from axes_lib.judge.coherence import encode

__all__ = ["BROKEN_KINDS", "break_text"]

BROKEN_KINDS = ("shuffled_words", "repeated_phrase", "random_tokens")


def break_text(text: str, kind: str, rng: random.Random, tokenizer: Any = None) -> str:
    """A deliberately broken version of a real answer, about as long as it.

    `shuffled_words`: the same words in random order; `repeated_phrase`: the answer's first few words
    looped to its length; `random_tokens`: as many tokens as the answer, drawn uniformly from the
    tokenizer's vocabulary (special tokens excluded; needs `tokenizer`).
    """
    words = text.split()
    if kind == "shuffled_words":
        shuffled = words[:]
        rng.shuffle(shuffled)
        return " ".join(shuffled)
    if kind == "repeated_phrase":
        phrase = words[: max(2, min(5, len(words) // 4))]
        return " ".join((phrase * (len(words) // max(len(phrase), 1) + 1))[: max(len(words), 2 * len(phrase))])
    if kind == "random_tokens":
        if tokenizer is None:
            raise ValueError("break_text(kind='random_tokens') needs the model's tokenizer")
        special = set(tokenizer.all_special_ids)
        n = max(1, len(encode(tokenizer, [text])[0]))
        vocab = [i for i in range(len(tokenizer)) if i not in special]
        return tokenizer.decode([rng.choice(vocab) for _ in range(n)], skip_special_tokens=True)
    raise ValueError(f"unknown kind of broken text {kind!r}: use one of {BROKEN_KINDS}")
