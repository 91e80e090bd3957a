"""Assistant-axis directions: per-layer mean differences, unit vectors, safetensors files, checks.

A direction is a `dict[int, Tensor]` mapping a layer index (0-based: the residual stream after decoder
layer i) to a float32 vector of length d_model that points from non-assistant toward assistant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from axes_lib.io import PathLike, code_version, load_tensors, save_tensors

__all__ = [
    "Direction",
    "check_acts",
    "compute_direction",
    "layer_labels",
    "load_direction",
    "load_direction_with_metadata",
    "random_directions",
    "save_direction",
    "unit",
    "validate_direction",
]

Direction = dict[int, torch.Tensor]

_FORMAT = "axes_lib.direction/1"


def check_acts(acts: torch.Tensor, name: str = "acts") -> None:
    """Raise ValueError unless `acts` is a non-empty `[n_prompts, n_layers, d_model]` tensor."""
    if not isinstance(acts, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [n_prompts, n_layers, d_model], got {type(acts).__name__}")
    if acts.ndim != 3:
        raise ValueError(f"{name} must be 3-D [n_prompts, n_layers, d_model], got shape {tuple(acts.shape)}")
    if min(acts.shape) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(acts.shape)}): need at least one prompt, layer and feature")


def layer_labels(layers: Sequence[int] | None, n_columns: int) -> list[int]:
    """Layer index of each activation column: `layers` checked against the column count, default 0..n-1."""
    if layers is None:
        return list(range(n_columns))
    labels = [int(i) for i in layers]
    if len(labels) != n_columns:
        raise ValueError(f"layers has {len(labels)} entries but the activations hold {n_columns} layer columns: give one layer index per column")
    if len(set(labels)) != len(labels) or min(labels) < 0:
        raise ValueError(f"layers must be distinct non-negative layer indices, got {labels}")
    return labels


def compute_direction(
    assistant_acts: torch.Tensor, other_acts: torch.Tensor, layers: Sequence[int] | None = None
) -> Direction:
    """Per-layer `mean(assistant) - mean(other)` (float64 sums, float32 result); `layers` labels the columns."""
    check_acts(assistant_acts, "assistant_acts")
    check_acts(other_acts, "other_acts")
    if assistant_acts.shape[1:] != other_acts.shape[1:]:
        raise ValueError(
            f"assistant_acts has [n_layers, d_model] = {list(assistant_acts.shape[1:])} but other_acts has "
            f"{list(other_acts.shape[1:])}: both must come from the same model and layers"
        )
    labels = layer_labels(layers, assistant_acts.shape[1])
    diff = assistant_acts.double().mean(dim=0) - other_acts.double().mean(dim=0)
    diff = diff.float()
    return {layer: diff[col].clone() for col, layer in enumerate(labels)}


def _check_direction(direction: Mapping[int, torch.Tensor]) -> None:
    """Raise ValueError unless `direction` is a non-empty layer -> finite 1-D vector map of one length."""
    if not isinstance(direction, Mapping) or not direction:
        raise ValueError(f"a direction must be a non-empty dict of layer index -> vector, got {type(direction).__name__}")
    lengths = set()
    for layer, vec in direction.items():
        if not isinstance(vec, torch.Tensor) or vec.ndim != 1:
            shape = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
            raise ValueError(f"direction layer {layer}: expected a 1-D tensor of length d_model, got {shape}")
        if not torch.isfinite(vec).all():
            raise ValueError(f"direction layer {layer}: vector has non-finite entries (NaN or inf)")
        lengths.add(vec.shape[0])
    if len(lengths) != 1:
        raise ValueError(f"direction vectors must all have one length d_model, got lengths {sorted(lengths)}")


def unit(direction: Mapping[int, torch.Tensor]) -> Direction:
    """Each layer's vector divided by its norm (float32), so projections read in activation units."""
    _check_direction(direction)
    out: Direction = {}
    for layer, vec in direction.items():
        v = vec.double()
        norm = float(v.norm())
        if not norm > 0.0:
            raise ValueError(f"direction layer {layer} is the zero vector: it has no unit direction")
        out[int(layer)] = (v / norm).float()
    return out


def random_directions(direction: Mapping[int, torch.Tensor], n: int, seed: int, orthogonal: bool = True) -> list[Direction]:
    """`n` random directions over the layers of `direction`, each at that layer's norm ‖d_ℓ‖: controls for it.

    Each layer's vector is Gaussian in d_model (isotropic), drawn independently per layer and per draw from
    a generator seeded by `seed` (float64, then float32); asking for more keeps the first ones. With `orthogonal` (the default) the component along
    d_ℓ is removed before the vector is scaled to ‖d_ℓ‖, so no control shares any of the axis at that layer.
    """
    _check_direction(direction)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number of random directions, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    layers = sorted(int(i) for i in direction)
    axis = torch.stack([direction[i].double() for i in layers])  # [n_layers, d_model]
    norms = axis.norm(dim=1, keepdim=True)
    if not (norms > 0).all():
        raise ValueError(f"direction is the zero vector at layers {[i for i, v in zip(layers, norms) if not v > 0]}")
    generator = torch.Generator().manual_seed(seed)  # one draw after the other: the first k of n are those of k
    draws = torch.stack([torch.randn(*axis.shape, dtype=torch.float64, generator=generator) for _ in range(n)])
    if orthogonal:
        u = axis / norms
        draws = draws - (draws * u).sum(-1, keepdim=True) * u
    draws = draws / draws.norm(dim=-1, keepdim=True) * norms
    return [{layer: draw[k].float() for k, layer in enumerate(layers)} for draw in draws]


def save_direction(path: PathLike, direction: Mapping[int, torch.Tensor], **metadata: Any) -> Path:
    """Save a direction as safetensors (`layer.{i}` keys) with metadata: d_model, layers, code version, and what is passed.

    Pass e.g. `model=`, `method=`, `n_layers=` (the model's), `n_assistant=`, `n_other=`; values that are
    not strings are stored as JSON text, since safetensors metadata is str -> str.
    """
    _check_direction(direction)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"direction files are written as .safetensors, got {path.name!r}: use {path.stem}.safetensors")
    layers = sorted(int(i) for i in direction)
    meta = {
        "format": _FORMAT,
        "d_model": str(next(iter(direction.values())).shape[0]),
        "layers": json.dumps(layers),
        "code_version": code_version(),
    }
    for key, value in metadata.items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {f"layer.{i}": direction[i].detach().float() for i in layers}
    return save_tensors(path, tensors, meta)


def load_direction_with_metadata(path: PathLike) -> tuple[Direction, dict[str, str]]:
    """Load `(direction, metadata)` from a `.safetensors` file or a seed legacy `.pt` dict (read without pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no direction file at {path}: compute it first (notebook 03) or check the path")
    if path.suffix == ".safetensors":
        tensors, metadata = load_tensors(path)
        direction: Direction = {}
        for name, vec in tensors.items():
            prefix, _, index = name.partition(".")
            if prefix != "layer" or not index.isdigit():
                raise ValueError(f"{path}: unexpected tensor {name!r}; a direction file holds only 'layer.<i>' tensors")
            direction[int(index)] = vec.float()
    elif path.suffix == ".pt":
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickled objects beyond tensors and containers
            raise ValueError(f"{path}: cannot read as a weights-only torch file of layer -> tensor ({exc})") from exc
        if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise ValueError(f"{path}: a legacy direction file holds dict[int, Tensor], got {type(raw).__name__}")
        try:
            direction = {int(k): v.float() for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: legacy direction keys must be layer indices, got {list(raw)[:5]}") from exc
        metadata = {"format": "legacy-pt", "source": str(path)}
    else:
        raise ValueError(f"{path}: unknown direction file type {path.suffix!r}; expected .safetensors (or a seed legacy .pt)")
    try:
        _check_direction(direction)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return dict(sorted(direction.items())), metadata


def load_direction(path: PathLike) -> Direction:
    """Load a direction (layer -> float32 vector) from `.safetensors` or a seed legacy `.pt` file."""
    return load_direction_with_metadata(path)[0]


def validate_direction(direction: Mapping[int, torch.Tensor], model: Any) -> None:
    """Raise ValueError if a layer is out of range for `model` (or its config), a vector is not hidden_size long, or non-finite."""
    config = getattr(model, "config", model)
    n_layers, hidden = config.num_hidden_layers, config.hidden_size
    if not isinstance(direction, Mapping) or not direction:
        raise ValueError(f"a direction must be a non-empty dict of layer index -> vector, got {type(direction).__name__}")
    for layer, vec in sorted(direction.items()):
        if not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range: model has {n_layers} layers (valid indices 0..{n_layers - 1})")
        if not isinstance(vec, torch.Tensor) or vec.ndim != 1 or vec.shape[0] != hidden:
            shape = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
            raise ValueError(f"layer {layer}: vector has shape {shape} but the model's hidden_size is {hidden}")
        if not torch.isfinite(vec).all():
            bad = int((~torch.isfinite(vec)).sum())
            raise ValueError(f"layer {layer}: vector has {bad} non-finite entries (NaN or inf); every entry must be finite")
        if not vec.any():
            raise ValueError(f"layer {layer}: vector is zero; a direction needs a non-zero vector to steer or project on")
