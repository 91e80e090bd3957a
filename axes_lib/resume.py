"""Results keyed by what produced them: content fingerprints, so a resumed run never serves a stale row.

A resumable result (a generated answer, a judge score) is stored with the fingerprint of its inputs:
the prompt text, the intervention (kind, layers, strengths and the direction's bytes), the generation
settings, the model's identity and the version of the code path that generates. A rerun reuses a row
only when its fingerprint matches; anything else is computed again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from axes_lib.io import _json_default

__all__ = ["fingerprint", "model_identity"]


def fingerprint(*parts: Any) -> str:
    """sha256 (16 hex digits) of the parts as canonical JSON: equal inputs, equal fingerprint."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_identity(model: Any) -> dict[str, str]:
    """Which weights compute: architecture and config (without paths or versions), a digest of a sample of
    every parameter, and the dtype and device type (greedy answers can differ between them)."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items()
              if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype", "use_cache")}
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(param.detach().flatten()[:1024].float().cpu().numpy().tobytes())
    first = next(model.parameters())
    return {"config": fingerprint(config), "weights": digest.hexdigest()[:16], "dtype": str(first.dtype),
            "device": first.device.type}
