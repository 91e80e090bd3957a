"""Artifact helpers: atomic writes, JSON/JSONL records, safetensors tensors and run manifests.

Every artifact goes through these functions so that an interrupted run never leaves a half-written
file behind (write to a temp name in the same folder, fsync, then `os.replace`), nothing is loaded
with pickle, and each artifact can say which parameters and which code made it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where tensors are handled, so the judge can use this module without it
    import torch

__all__ = [
    "PathLike",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_text",
    "claim_artifacts",
    "code_version",
    "load_tensors",
    "read_json",
    "read_jsonl",
    "save_tensors",
    "tensor_metadata",
    "write_json",
    "write_manifest",
]

PathLike = str | os.PathLike

_PACKAGE_DIR = Path(__file__).resolve().parent


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same folder and `os.replace`, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with mode 0o666 lets the umask decide permissions, like a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Atomically write UTF-8 text (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays, paths and sets into plain JSON values."""
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor (torch itself is not imported here)
        return obj.detach().cpu().tolist()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable: convert it to a list, number or str")


def write_json(path: PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON (numpy/torch values converted, key order kept)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)
    return atomic_write_text(path, text + "\n")


def write_jsonl(path: PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Atomically replace `path` with these records, one JSON object per line (as `append_jsonl` writes them)."""
    lines = [json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n" for rec in records]
    return atomic_write_text(path, "".join(lines))


def read_json(path: PathLike) -> Any:
    """Read a JSON file written by `write_json` (or anyone else); a malformed file is a ValueError naming it."""
    data = Path(path).read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); expected a JSON file written by write_json") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the file is corrupt or "
            "truncated: delete it and rerun the step that writes it"
        ) from exc


def _parse_line(raw: bytes) -> Any:
    """Decode and parse one JSONL line; raises UnicodeDecodeError or json.JSONDecodeError when it is not a record."""
    return json.loads(raw.decode("utf-8"))


def _is_truncated(raw: bytes) -> bool:
    """True when an unterminated last line is not a whole record: cut inside a character or inside the JSON text."""
    try:
        _parse_line(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True
    return False


def _warn_truncated(path: PathLike, raw: bytes, what: str, stacklevel: int) -> None:
    """Warn that the unterminated last line `raw` of `path` is dropped (stacklevel: the public caller's frame)."""
    warnings.warn(
        f"{path}: dropping a truncated last line ({len(raw)} bytes) left by an interrupted run{what}",
        stacklevel=stacklevel + 1,
    )


def _repair_tail(path: Path) -> None:
    """Make `path` end in a newline before appending: drop an unparseable partial last line, terminate a valid one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Scan backwards in chunks for the last newline.
        pos, start = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                start = pos + idx + 1
                break
        fh.seek(start)
        tail = fh.read()
        if _is_truncated(tail):
            _warn_truncated(path, tail, "", stacklevel=3)
            fh.truncate(start)
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def append_jsonl(path: PathLike, records: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> int:
    """Append records (one JSON object per line), flushed and fsynced, so a resumable run loses at most one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(records, Mapping):
        records = [records]
    lines = [json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n" for rec in records]
    _repair_tail(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def read_jsonl(path: PathLike) -> list[Any]:
    """Read a JSONL file; a truncated last line (no newline, unparseable) from an interrupted run is dropped with a warning.

    The file is split into lines as bytes and each line decoded on its own, so a run cut inside a multi-byte
    character loses only that last line; any other bad line is a ValueError naming the file and line.
    """
    pieces = Path(path).read_bytes().split(b"\n")
    out: list[Any] = []
    for number, raw in enumerate(pieces, start=1):
        if not raw.strip():
            continue
        if number == len(pieces) and _is_truncated(raw):  # no trailing newline and not a whole record
            _warn_truncated(path, raw, f" (line {number}); the next append_jsonl removes it", stacklevel=2)
            break
        try:
            out.append(_parse_line(raw))
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}: line {number} is not UTF-8 (byte {exc.start} of the line); only a truncated last line is tolerated"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {number} is not valid JSON ({exc.msg}); only a truncated last line is tolerated"
            ) from exc
    return out


def save_tensors(path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically save named tensors with string metadata as safetensors (no pickle)."""
    from safetensors.torch import save

    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"safetensors metadata must map str to str: key {key!r} has a {type(value).__name__} value; pass str(value) or json.dumps(value)")
    for name, tensor in tensors.items():
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"tensor {name!r} is a {type(tensor).__name__}: save_tensors takes torch.Tensor values")
    # clone(): safetensors refuses tensors that share storage (e.g. rows of one matrix).
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    return atomic_write_bytes(path, save(plain, metadata=metadata))


def load_tensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load `(tensors, metadata)` from a safetensors file written by `save_tensors`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tensor file at {path}: run the step that writes it first, or check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except SafetensorError as exc:
        raise ValueError(
            f"{path}: not a readable safetensors file ({exc}); it is corrupt or of another format: delete it and "
            "rerun the step that writes it"
        ) from exc
    return tensors, metadata


def tensor_metadata(path: PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its tensors ({} when it is unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError):
        return {}


def _sources_hash() -> str:
    """sha256 over the axes_lib sources (Python files and data files), by relative path and content."""
    digest = hashlib.sha256()
    for file in sorted(_PACKAGE_DIR.rglob("*")):
        if not file.is_file() or "__pycache__" in file.parts or file.suffix in {".pyc", ".pyo"}:
            continue
        digest.update(file.relative_to(_PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _git_describe() -> str | None:
    """`git describe --always --dirty` of the repo holding axes_lib, or None outside git."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def code_version() -> str:
    """Which code made an artifact: `git:<describe> src:<hash of axes_lib sources>` (the hash alone outside git)."""
    git = _git_describe()
    src = f"src:{_sources_hash()}"
    return f"git:{git} {src}" if git else src


def write_manifest(path: PathLike, params: Mapping[str, Any], seconds: float, **extra: Any) -> Path:
    """Write a run manifest (params, code version, seconds, creation time, versions, extras) beside an artifact."""
    manifest: dict[str, Any] = {
        "params": dict(params),
        "code_version": code_version(),
        "seconds": round(float(seconds), 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": _torch_version()},
    }
    clash = set(extra) & set(manifest)
    if clash:
        raise ValueError(f"extra manifest fields {sorted(clash)} clash with the standard ones {sorted(manifest)}: rename them")
    manifest.update(extra)
    return write_json(path, manifest)


def claim_artifacts(manifest_path: PathLike, params: Mapping[str, Any], overwrite: bool = False) -> bool:
    """Refuse to mix artifacts of different parameters under one name; True when earlier work can be reused.

    If a manifest exists beside the artifacts and its parameters differ from `params`, raise unless
    `overwrite` (then the caller starts afresh); nothing is ever silently replaced by another run's output.
    """
    path = Path(manifest_path)
    if not path.is_file():
        return False
    expected = 'a run manifest, a JSON object with a "params" object (as write_manifest writes)'
    remedy = "pass overwrite=True to replace those artifacts, or delete the file"
    try:
        manifest = read_json(path)
    except ValueError as exc:
        if overwrite:
            return False
        raise ValueError(f"{exc}; expected {expected}: {remedy}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("params"), dict):
        if overwrite:
            return False
        if isinstance(manifest, dict):
            found = f'an object without a "params" object (keys {sorted(manifest)})'
        else:
            found = f"a JSON {type(manifest).__name__}"
        raise ValueError(f"{path}: expected {expected}, found {found}; {remedy}")
    old = manifest["params"]
    new = json.loads(json.dumps(dict(params), default=_json_default))
    if old == new:
        return True
    if overwrite:
        return False
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ValueError(
        f"{path} was made with other parameters (differ: {changed}); pass overwrite=True to replace those "
        "artifacts, or write to another artifacts_dir"
    )


def _torch_version() -> str | None:
    """The installed torch version, read from package metadata so that torch need not be imported."""
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # noqa: BLE001 - a manifest without the version is still a manifest
        return None
