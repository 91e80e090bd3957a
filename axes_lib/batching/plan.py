"""Batch planning: token sequences, shared prefixes, length-sorted batches and the one padding helper.

Prompts of this project share long prefixes (one system prompt per persona). Sequences that share a
token prefix have it computed once (`prefix.PrefixTable`); the rest is batched by length so little is
spent on padding. Every batch in the library is laid out by `pad`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["TokenSeq", "assign_prefixes", "batches", "common_prefix", "length_chunks", "pad", "positions",
           "prefix_groups"]


@dataclass
class TokenSeq:
    """One tokenized prompt (+ response): which positions to read, and where it goes in the output."""

    index: int
    ids: list[int]
    start: int  # the last prompt token: the position last_token reads; a response follows it
    stop: int  # one past the last response token (start + 1 without a response)
    prefix: int = 0  # leading tokens taken from a shared prefix's KV cache
    row: int = -1  # that prefix's row in the PrefixTable

    @property
    def rest(self) -> list[int]:
        """The tokens computed in this sequence's own pass."""
        return self.ids[self.prefix :]


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(seqs: list[TokenSeq], min_prefix: int) -> list[tuple[int, list[TokenSeq]]]:
    """Group sequences that share a token prefix of at least `min_prefix` tokens.

    Sorted lexicographically, sequences with a common prefix are adjacent. The shared prefix stops
    before the first position any member reads, so every read position is computed in the suffix pass.
    """
    ordered = sorted(seqs, key=lambda s: s.ids)
    groups: list[tuple[int, list[TokenSeq]]] = []
    for seq in ordered:
        if groups:
            shared, members = groups[-1]
            common = min(shared, common_prefix(members[0].ids, seq.ids), seq.start)
            if common >= min_prefix:
                groups[-1] = (common, members + [seq])
                continue
        groups.append((min(len(seq.ids), seq.start), [seq]))
    # A group of one shares nothing; a group whose prefix is short is not worth a separate pass.
    return [(p if len(m) > 1 and p >= min_prefix else 0, m) for p, m in groups]


def assign_prefixes(seqs: list[TokenSeq], min_prefix: int, own: bool = False) -> list[list[int]]:
    """Give every sequence of a shared-prefix group its `prefix` and table `row`; returns the prefixes, by row.

    With `own`, a sequence that shares no prefix gets one of its own (everything before the first position
    it reads), so no batch is split into rows with and without a prefix. Generation wants this: a decoding
    step costs about the same for 1 row as for 16, so a split batch nearly doubles the time.
    """
    prefixes: list[list[int]] = []
    for length, members in prefix_groups(seqs, min_prefix):
        if length:
            groups = [(length, members)]
        elif own:
            groups = [(seq.start, [seq]) for seq in members]
        else:
            continue
        for size, group in groups:
            if size:
                for seq in group:
                    seq.prefix, seq.row = size, len(prefixes)
                prefixes.append(group[0].ids[:size])
    return prefixes


def batches(seqs: list[TokenSeq], batch_size: int, max_tokens: int) -> list[list[TokenSeq]]:
    """Batches sorted by the length of what each sequence computes itself, bounded in rows and padded tokens.

    Sequences with a shared prefix and those without one go into separate batches.
    """
    out: list[list[TokenSeq]] = []
    for part in ([s for s in seqs if s.prefix], [s for s in seqs if not s.prefix]):
        current: list[TokenSeq] = []
        for seq in sorted(part, key=lambda s: len(s.rest)):
            if current and (len(current) >= batch_size or len(seq.rest) * (len(current) + 1) > max_tokens):
                out.append(current)
                current = []
            current.append(seq)
        if current:
            out.append(current)
    return out


def length_chunks(lengths: Sequence[int], max_tokens: int, slack: float = 0.75) -> list[list[int]]:
    """Indices grouped longest first into chunks whose members are each at least `slack` times the chunk's
    longest, with at most `max_tokens` tokens (members x longest) per chunk."""
    chunks: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if chunks:
            longest = lengths[chunks[-1][0]]
            if lengths[i] >= slack * longest and (len(chunks[-1]) + 1) * longest <= max_tokens:
                chunks[-1].append(i)
                continue
        chunks.append([i])
    return chunks


def pad(rows: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"] = "left",
        width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists as one `[n, width]` id tensor and its 0/1 mask, padded on `side` (left: generation
    continues every row at the end; right: positions are read by index)."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        where = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, where] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, where] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token (padding gets 0)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)
