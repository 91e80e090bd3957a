"""axes_lib: hooks, metrics and helpers for finding and steering along an LLM's assistant axis.

One module per concern: models, prompts, activations, directions, metrics, steering, generation,
capped (the seed's `CappedModel`), judge (a package: the Claude and offline judges, judged sweeps),
figures, io. `import axes_lib` itself stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["CappedModel", "OfflineJudge", "default_judge"]


def __getattr__(name: str) -> Any:
    if name == "CappedModel":
        from axes_lib.capped import CappedModel

        return CappedModel
    if name in ("OfflineJudge", "default_judge"):
        from axes_lib.judge import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'axes_lib' has no attribute {name!r}")
