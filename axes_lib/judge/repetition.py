"""Loops at any span length: the share of a text's words that repeat something said before.

Steering breaks text by looping — a phrase, a sentence or a list item said again and again, or a word
stuttered. Words are compared after folding case and digits (so "1. Apple 2. Apple" is the same item
twice); a word is *covered* when it lies inside a run of `span` words that already occurred earlier, or
in a run of one word repeated three or more times in a row. Periodic loops of any period repeat their
`span`-word windows once they run a little longer than one period, so one window length finds them all.
"""

from __future__ import annotations

import re

__all__ = ["loop_coverage", "words"]

_WORD = re.compile(r"\w+|[^\w\s]+")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens, digits folded to '#'."""
    return [re.sub(r"\d", "#", w.lower()) for w in _WORD.findall(text)]


def loop_coverage(text: str, span: int = 4, stutter: int = 3) -> float:
    """Share (0–1) of the text's tokens that repeat earlier material (see the module docstring); 0 for no text."""
    tokens = words(text)
    n = len(tokens)
    if n == 0:
        return 0.0
    covered = [False] * n
    seen: set[tuple[str, ...]] = set()
    for i in range(n - span + 1):
        window = tuple(tokens[i:i + span])
        if window in seen:
            for j in range(i, i + span):
                covered[j] = True
        seen.add(window)
    run = 1
    for i in range(1, n):
        run = run + 1 if tokens[i] == tokens[i - 1] and tokens[i].isalnum() else 1
        if run >= stutter:
            for j in range(i - run + 2, i + 1):
                covered[j] = True
    return sum(covered) / n
