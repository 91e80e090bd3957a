"""Interventions along a direction, as values (their installer is `axes_lib.steering.steer`).

An intervention is a small immutable object: its kind (one class per operation), the unit direction
at each layer it acts on, and a strength per layer. `apply` says what it does to a residual-stream
tensor; `neutral` is the strength that leaves a state bitwise unchanged, which is what lets one batch
hold prompts steered by different interventions. `steer` installs one intervention for every prompt,
or one per prompt (`generation.generate(..., interventions=[...])`), as forward hooks on the decoder
layers. A new operation is one subclass: sweeps, `CappedModel` and the demo read its description.

An intervention acts on every position, prompt and generated tokens alike, or with `response_only=True` on
the response positions only (generated tokens fed back while decoding), every prompt state bitwise unchanged.
The caller says which positions are the response (`Steering.response_from`; `generate` does): a forward it
said nothing of (a teacher-forced pass) refuses a response-only intervention rather than guess.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from axes_lib.directions import unit, validate_direction

__all__ = ["Ablate", "Add", "Cap", "Intervention", "KINDS", "check_layer_list"]

Strength = float | Mapping[int, float]
#: Every intervention class by its `kind`, in the order they act when several share a layer.
KINDS: dict[str, type[Intervention]] = {}


def check_layer_list(layers: Sequence[int], name: str = "layers") -> list[int]:
    """Layer indices as a list of distinct non-negative ints; rejects floats such as 3.7, bools and repeats."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ValueError(f"{name} must be a list of layer indices, got {layers!r}")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, (int, float)) or int(layer) != layer or layer < 0:
            raise ValueError(f"{name} must hold non-negative whole layer indices, got {layer!r} in {list(layers)}")
        out.append(int(layer))
    if not out:
        raise ValueError(f"{name} is empty: give at least one layer to intervene on")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} contains duplicates: {out}")
    return out


class Intervention:
    """An operation along a unit direction on some layers, with a strength per layer (see the module doc)."""

    kind: ClassVar[str]
    title: ClassVar[str]  # what a reader sees (demo, figures)
    strength_name: ClassVar[str]  # what the strength is called in arguments and records
    neutral: ClassVar[float]  # the strength that changes nothing
    allow_negative: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        KINDS[cls.kind] = cls

    def __init__(self, direction: Mapping[int, torch.Tensor] | torch.Tensor, layers: Sequence[int] | None,
                 strength: Strength, response_only: bool = False) -> None:
        if not isinstance(response_only, bool):
            raise ValueError(f"response_only must be True or False, got {response_only!r}")
        if isinstance(direction, torch.Tensor):
            if layers is None:
                raise ValueError("a single direction vector needs explicit layers")
            direction = {int(layer): direction for layer in check_layer_list(layers)}
        if not isinstance(direction, Mapping) or not direction:
            raise ValueError("direction must map layer indices to vectors (e.g. from directions.load_direction)")
        layers = check_layer_list(sorted(direction) if layers is None else layers)
        missing = [layer for layer in layers if layer not in direction]
        if missing:
            raise ValueError(f"direction has no vector for layers {missing}; it covers {sorted(direction)}")
        units = unit({layer: direction[layer].detach().cpu() for layer in sorted(layers)})  # checks every vector
        name = self.strength_name
        if isinstance(strength, Mapping):
            absent = [layer for layer in layers if layer not in strength]
            if absent:
                raise ValueError(f"{name} has no value for layers {absent}")
            values = {layer: self.check_strength(strength[layer], f"{name} at layer {layer}") for layer in units}
        else:
            one = self.check_strength(strength, name)
            values = dict.fromkeys(units, one)
        self.units: dict[int, torch.Tensor] = units
        self.strength: dict[int, float] = values
        self.response_only = response_only  # act on response (generated) positions only

    @classmethod
    def check_strength(cls, value: Any, name: str) -> float:
        """A finite number (>= 0 where a negative one would mean the opposite direction)."""
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        if value < 0 and not cls.allow_negative:
            raise ValueError(f"{name} must be >= 0, got {value} (to steer away from the assistant, negate the direction)")
        return value

    @property
    def layers(self) -> list[int]:
        return sorted(self.units)

    @property
    def d_model(self) -> int:
        return next(iter(self.units.values())).numel()

    @staticmethod
    def apply(hidden: torch.Tensor, u: torch.Tensor, strength: float | torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The new states and the signed move along `u` per position (a float when every position moved by it).

        `strength` is one number or a `[batch, 1, 1]` tensor (one per row); `u` is a unit vector in the
        states' dtype. The neutral strength must return `hidden` bitwise unchanged.
        """
        raise NotImplementedError

    def check_model(self, model_or_config: Any) -> None:
        """Raise unless every layer exists in the model and the vectors have its width (a config is enough)."""
        validate_direction(self.units, model_or_config)

    def describe(self) -> dict[str, Any]:
        """What this intervention is, as JSON: kind, layers, strength per layer, a digest of the unit vectors and,
        for a response-only one, `"positions": "response"` (absent otherwise, so older descriptions still hold)."""
        digest = hashlib.sha256()
        for layer in self.layers:
            digest.update(f"{layer}:".encode())
            digest.update(self.units[layer].numpy().tobytes())
        out = {"kind": self.kind, "layers": self.layers, self.strength_name: {str(k): v for k, v in self.strength.items()},
               "direction_sha256": digest.hexdigest()[:16]}
        return {**out, "positions": "response"} if self.response_only else out

    def fingerprint(self) -> str:
        """A short hash of `describe()`: equal for interventions that act identically."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        strengths = ", ".join(f"{k}: {v:g}" for k, v in self.strength.items())
        only = ", response_only=True" if self.response_only else ""
        return f"{type(self).__name__}(layers={self.layers}, {self.strength_name}={{{strengths}}}{only})"


class Add(Intervention):
    """Additive steering: `h + scale * u` at every position."""

    kind, title, strength_name, neutral, allow_negative = "add", "Additive steering", "scale", 0.0, False

    def __init__(self, direction: Mapping[int, torch.Tensor] | torch.Tensor, layers: Sequence[int] | None = None,
                 scale: Strength = 0.0, response_only: bool = False) -> None:
        super().__init__(direction, layers, scale, response_only)

    @staticmethod
    def apply(hidden: torch.Tensor, u: torch.Tensor, strength: float | torch.Tensor) -> tuple[torch.Tensor, Any]:
        if isinstance(strength, torch.Tensor):
            return hidden + strength.to(hidden.dtype) * u, strength[:, :, 0].float()
        return hidden + strength * u, strength


class Cap(Intervention):
    """Activation capping: positions whose projection `p = h·u` is below the threshold are lifted onto it."""

    kind, title, strength_name, neutral = "cap", "Activation capping", "threshold", -math.inf

    def __init__(self, direction: Mapping[int, torch.Tensor] | torch.Tensor, layers: Sequence[int] | None = None,
                 threshold: Strength = 0.0, response_only: bool = False) -> None:
        super().__init__(direction, layers, threshold, response_only)

    @staticmethod
    def apply(hidden: torch.Tensor, u: torch.Tensor, strength: float | torch.Tensor) -> tuple[torch.Tensor, Any]:
        p = (hidden.float() @ u.float()).unsqueeze(-1)
        below = p < strength
        correction = torch.where(below, strength - p, torch.zeros_like(p))
        return torch.where(below, hidden + correction.to(hidden.dtype) * u, hidden), correction.squeeze(-1)


class Ablate(Intervention):
    """Directional ablation: the projection on `u` is removed and replaced by a fixed `value` (0: plain ablation)."""

    kind, title, strength_name, neutral = "ablate", "Directional ablation", "value", math.nan

    def __init__(self, direction: Mapping[int, torch.Tensor] | torch.Tensor, layers: Sequence[int] | None = None,
                 value: Strength = 0.0, response_only: bool = False) -> None:
        super().__init__(direction, layers, value, response_only)

    @staticmethod
    def apply(hidden: torch.Tensor, u: torch.Tensor, strength: float | torch.Tensor) -> tuple[torch.Tensor, Any]:
        value = torch.as_tensor(strength, dtype=torch.float32, device=hidden.device)
        p = (hidden.float() @ u.float()).unsqueeze(-1)
        off = torch.isnan(value)
        move = torch.where(off, torch.zeros_like(p), value - p)
        return torch.where(off, hidden, hidden + move.to(hidden.dtype) * u), move.squeeze(-1)
