"""Results keyed by what produced them: content fingerprints, so a resumed run never serves a stale row.

A resumable result (a generated answer, a judge score) is stored with the fingerprint of its inputs:
the prompt text, the intervention (kind, layers, strengths and the direction's bytes), the generation
settings, the model's identity and the version of the code path that generates. A rerun reuses a row
only when its fingerprint matches; anything else is computed again.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from axes_lib.io import _json_default

__all__ = ["code_fingerprint", "fingerprint", "imported_names", "model_identity", "module_closure"]

_PACKAGE = Path(__file__).resolve().parent


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


def _unit(name: str) -> list[Path]:
    """The source files an import of `name` stands for: a top-level module's file, or every file of a
    subpackage (`axes_lib.judge.offline` -> all of `judge/`, whose `__init__` hands out its modules lazily).
    Not an axes_lib module (a class imported by name, another package): no files."""
    parts = name.split(".")
    if parts[0] != "axes_lib" or len(parts) < 2:
        return []
    if (_PACKAGE / parts[1]).is_dir():
        return sorted((_PACKAGE / parts[1]).rglob("*.py"))
    file = _PACKAGE / f"{parts[1]}.py"
    return [file] if file.is_file() else []


def imported_names(source: str, filename: str = "<source>") -> list[str]:
    """The axes_lib modules (and names imported from them) that Python source imports anywhere in it,
    function-level imports too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from axes_lib import io`
    return sorted(n for n in names if n.split(".")[0] == "axes_lib")


def module_closure(modules: Iterable[str]) -> list[Path]:
    """Source files of the named axes_lib modules and of every axes_lib module they import, at any depth,
    plus `axes_lib/__init__.py` (whose lazy imports run only when their names are used, so are not followed).
    A subpackage counts whole."""
    files: set[Path] = {_PACKAGE / "__init__.py"}
    todo = [f for m in modules for f in _unit(m)]
    while todo:
        file = todo.pop()
        if file not in files:
            files.add(file)
            todo.extend(f for name in imported_names(file.read_text(encoding="utf-8"), str(file)) for f in _unit(name) if f not in files)
    return sorted(files)


def code_fingerprint(modules: Iterable[str]) -> str:
    """sha256 (16 hex digits) of the sources of `modules` and the axes_lib modules they import
    (`module_closure`), and of each package data file whose name one of those sources mentions: the code
    (and data) an artifact depends on, so editing an unrelated module or data file keeps it."""
    sources = module_closure(modules)
    texts = "\n".join(file.read_text(encoding="utf-8") for file in sources)
    data = [p for p in sorted((_PACKAGE / "data").rglob("*")) if p.is_file() and p.name in texts]
    digest = hashlib.sha256()
    for file in [*sources, *data]:
        digest.update(file.relative_to(_PACKAGE).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
