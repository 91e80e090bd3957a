"""Deliberately broken texts, one per way steering breaks an answer, for checking that a judge sees each."""

from __future__ import annotations

import random
from typing import Any

from axes_lib.judge.reading import encode

__all__ = ["BROKEN_KINDS", "break_text"]

#: Every kind `break_text` makes; those after the first three need an answer to another query (`other`).
BROKEN_KINDS = ("loop", "stutter", "random_tokens", "drift", "off_topic")


def break_text(text: str, kind: str, rng: random.Random, tokenizer: Any = None, other: str | None = None) -> str:
    """A broken version of a real answer, about as long as it.

    `loop`: the answer's first words, then one of its phrases repeated to its length; `stutter`: a word of
    it repeated in a run through the middle; `random_tokens`: as many tokens as the answer, drawn uniformly
    from the vocabulary (needs `tokenizer`); `drift`: its first third, then `other` (an answer to another
    query); `off_topic`: `other` itself, a fluent answer to something else.
    """
    words = text.split()
    n = len(words)
    if kind == "loop":
        start = words[: max(1, n // 5)]
        phrase = words[len(start): len(start) + max(3, min(6, n // 6))] or start
        return " ".join((start + phrase * (n // len(phrase) + 1))[: max(n, len(start) + 2 * len(phrase))])
    if kind == "stutter":
        word = words[n // 3] if words else "the"
        return " ".join(words[: n // 3] + [word] * max(6, n // 2) + words[n // 3 + 1:])[: max(len(text), 1) * 2]
    if kind == "random_tokens":
        if tokenizer is None:
            raise ValueError("break_text(kind='random_tokens') needs the model's tokenizer")
        special = set(tokenizer.all_special_ids)
        count = max(1, len(encode(tokenizer, [text])[0]))
        vocab = [i for i in range(len(tokenizer)) if i not in special]
        return tokenizer.decode([rng.choice(vocab) for _ in range(count)], skip_special_tokens=True)
    if kind in ("drift", "off_topic"):
        if not other:
            raise ValueError(f"break_text(kind={kind!r}) needs `other`, an answer to another query")
        return other if kind == "off_topic" else " ".join(words[: max(1, n // 3)] + other.split()[: n - n // 3])
    raise ValueError(f"unknown kind of broken text {kind!r}: use one of {BROKEN_KINDS}")
