"""axes_lib: hooks, metrics and helpers for finding and steering along an LLM's assistant axis."""

from __future__ import annotations

__version__ = "0.1.0"
