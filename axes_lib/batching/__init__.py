"""Batching in one place: planning (`plan`: token sequences, shared prefixes, length-sorted batches, `pad`),
shared-prefix KV tables (`prefix`) and the KV caches with cascade attention (`kvcache`, imported lazily:
transformers' attention registry takes seconds to load)."""

from axes_lib.batching.plan import TokenSeq, assign_prefixes, batches, pad, positions
from axes_lib.batching.prefix import PrefixTable

__all__ = ["PrefixTable", "TokenSeq", "assign_prefixes", "batches", "pad", "positions"]
