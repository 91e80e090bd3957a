"""Interventions along a direction, as values, and one installer for them.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from axes_lib.directions import unit, validate_direction
from axes_lib.models import base_model, decoder_layers

__all__ = ["Ablate", "Add", "Cap", "Intervention", "KINDS", "Steering", "SteeringStats", "check_layer_list", "steer"]

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


@dataclass
class SteeringStats:
    """Per-layer counts while an intervention is active (padding excluded where a mask is known), over every
    position and apart over prompt and response positions (forwards told `Steering.response_from`: `generate`'s)."""

    positions: dict[int, int] = field(default_factory=dict)
    fired: dict[int, int] = field(default_factory=dict)
    correction_sum: dict[int, float] = field(default_factory=dict)
    prompt_positions: dict[int, int] = field(default_factory=dict)
    prompt_fired: dict[int, int] = field(default_factory=dict)
    response_positions: dict[int, int] = field(default_factory=dict)
    response_fired: dict[int, int] = field(default_factory=dict)

    #: The fields of `summary()`, each a {layer: value} dict.
    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = ("fraction_fired", "fraction_fired_prompt", "fraction_fired_response",
                                               "mean_correction")

    def fraction_fired(self, part: str = "all") -> dict[int, float]:
        """Share of real positions the intervention moved, per layer: of all positions (0.0 when there were
        none), or of the "prompt" or "response" positions only (NaN when there were none)."""
        if part == "all":
            return {k: self.fired[k] / n if n else 0.0 for k, n in self.positions.items()}
        if part not in ("prompt", "response"):
            raise ValueError(f"part must be 'all', 'prompt' or 'response', got {part!r}")
        counts, fired = getattr(self, f"{part}_positions"), getattr(self, f"{part}_fired")
        return {k: fired[k] / n if n else math.nan for k, n in counts.items()}

    def mean_correction(self) -> dict[int, float]:
        """Mean signed move along the direction over the positions it moved (`tau - p` for a cap)."""
        return {k: self.correction_sum[k] / f if (f := self.fired[k]) else 0.0 for k in self.positions}

    def summary(self) -> dict[str, dict[int, float]]:
        return {"fraction_fired": self.fraction_fired(), "fraction_fired_prompt": self.fraction_fired("prompt"),
                "fraction_fired_response": self.fraction_fired("response"), "mean_correction": self.mean_correction()}


class _Positions:
    """The positions of the forward in progress: `grab`, a forward pre-hook on the base model, keeps its padding
    mask; the first hooked layer to ask computes which are real (not padding) and which response positions."""

    def __init__(self, state: Steering) -> None:
        self.state = state
        self.mask: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.response: torch.Tensor | None = None

    def grab(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.mask, self.valid, self.response = kwargs.get("attention_mask"), None, None

    def of(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Boolean `[batch, seq]` of real positions, and of response positions (None: not known)."""
        if self.valid is None:
            batch, seq = hidden.shape[:2]
            mask = self.mask
            if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != batch or mask.shape[1] < seq:
                self.valid = torch.ones(batch, seq, dtype=torch.bool, device=hidden.device)  # no 2-D mask: all real
            else:
                self.valid = mask[:, -seq:].to(device=hidden.device, dtype=torch.bool)
            start = self.state.start
            if start is not None:
                if start.ndim == 1 and len(start) != batch:
                    raise RuntimeError(f"Steering.response_from was given {len(start)} starts for a forward of {batch} rows")
                start = start.to(hidden.device).reshape(-1, 1)
                self.response = (torch.arange(seq, device=hidden.device)[None, :] >= start).expand(batch, seq)
        return self.valid, self.response


def _tally(valid: torch.Tensor, response: torch.Tensor | None, moved: Any) -> torch.Tensor:
    """Per row `[batch, 7]`: the counts of `SteeringStats`, in its fields' order (zeros for unknown parts)."""
    moved = torch.as_tensor(moved, dtype=torch.float64, device=valid.device).expand(valid.shape)
    changed = (moved != 0) & valid
    counts = [valid, changed, torch.where(valid, moved, 0.0)]
    if response is not None:
        counts += [valid & ~response, changed & ~response, valid & response, changed & response]
    out = torch.stack([c.sum(1, dtype=torch.float64) for c in counts], 1)
    return out if response is not None else torch.cat([out, out.new_zeros(len(out), 4)], 1)


class Steering:
    """What `steer` yields: the statistics per intervention (filled in on exit); for one intervention per
    prompt, `select(rows)`: which prompt each row of the next forwards is; and `response_from(start)`: where
    the response begins in them (`generate` calls both per batch)."""

    #: A response start past any forward's end: every position is a prompt position (a prefill).
    PROMPT = 2**62

    def __init__(self, interventions: list[Intervention], per_prompt: list[int] | None) -> None:
        self.interventions = interventions
        self.per_prompt = per_prompt  # index into `interventions` per prompt (-1: none); None: one for all rows
        self.stats: dict[Intervention, SteeringStats] = {i: SteeringStats() for i in interventions}
        self.rows: torch.Tensor | None = None
        self.start: torch.Tensor | None = None

    def select(self, rows: Sequence[int] | torch.Tensor) -> None:
        """The prompt index of each row of the forwards that follow."""
        self.rows = torch.as_tensor(rows, dtype=torch.long)

    def response_from(self, start: int | Sequence[int] | torch.Tensor | None) -> None:
        """Where the response begins in the forwards that follow: the index, among each forward's positions, of
        the first response position, one for all rows or one per row. 0: all are response positions (a decoding
        step); `Steering.PROMPT`: none is (a prompt's prefill); a teacher-forced pass gives each row's response
        start. None (the default): not known, where response-only interventions raise and statistics count the
        positions in the totals only."""
        self.start = None if start is None else torch.as_tensor(start, dtype=torch.long)

    @property
    def total(self) -> SteeringStats:
        """The statistics of the one intervention installed (for a whole-batch `steer`)."""
        if len(self.interventions) != 1:
            raise ValueError(f"{len(self.interventions)} interventions are installed: read .stats[intervention]")
        return self.stats[self.interventions[0]]


@contextmanager
def steer(model: Any, interventions: Intervention | Sequence[Intervention | None] | None) -> Iterator[Steering]:
    """Install `interventions` as forward hooks on the decoder layers for the duration of the block.

    One `Intervention` acts on every row of every forward. A sequence gives one intervention (or None)
    per prompt; then each forward's rows must be mapped to prompts with `Steering.select` — which
    `generation.generate(..., interventions=...)` does. Hooks act on every position, prompt and generated
    tokens alike, except a `response_only` intervention's, which act on the response positions the
    `Steering` object was told of (`Steering.response_from`, which `generate` calls) and raise in a forward
    it was told nothing of. Hooks are removed on exit, also on error. Nested blocks compose.
    """
    if interventions is None or isinstance(interventions, Intervention):
        distinct = [] if interventions is None else [interventions]
        per_prompt = None
    else:
        index: dict[int, int] = {}
        distinct, per_prompt = [], []
        for i, item in enumerate(interventions):
            if item is not None and not isinstance(item, Intervention):
                raise ValueError(f"intervention {i} is a {type(item).__name__}: give Intervention objects or None")
            if item is not None and id(item) not in index:
                index[id(item)] = len(distinct)
                distinct.append(item)
            per_prompt.append(-1 if item is None else index[id(item)])
    state = Steering(distinct, per_prompt)
    if not distinct:
        yield state
        return
    for item in distinct:
        item.check_model(model)
    device = next(model.parameters()).device
    layers = sorted({layer for item in distinct for layer in item.layers})
    # Per layer, in KINDS order: (class, unit vector, strength: a float, or one value per prompt, and where it
    # acts: None everywhere, True response positions only, or per prompt whether it is response-only).
    plan: dict[int, list[tuple[type[Intervention], torch.Tensor, Any, Any]]] = {}
    for layer in layers:
        for cls in KINDS.values():
            acting = [i for i in distinct if isinstance(i, cls) and layer in i.units]
            if not acting:
                continue
            if per_prompt is None:
                only = True if acting[0].response_only else None
                plan.setdefault(layer, []).append((cls, acting[0].units[layer].to(device), acting[0].strength[layer], only))
                continue
            # Every prompt gets its intervention's strength here, or the neutral one; one unit vector per layer.
            units = {tuple(i.units[layer].tolist()) for i in acting}
            if len(units) > 1:
                raise ValueError(f"per-prompt interventions of kind {cls.kind!r} use different directions at layer {layer}")
            values = [cls.neutral] * len(distinct)
            for i in acting:
                values[distinct.index(i)] = i.strength[layer]
            table = torch.tensor(values + [cls.neutral], device=device)  # index -1: prompts with no intervention
            flags = torch.tensor([i.response_only for i in distinct] + [False], device=device)[torch.tensor(per_prompt)]
            only = flags if any(i.response_only for i in acting) else None
            plan.setdefault(layer, []).append((cls, acting[0].units[layer].to(device), table[torch.tensor(per_prompt)], only))
    # Statistics rows: one per intervention, and a last one for prompts with none.
    groups = torch.tensor([k if k >= 0 else len(distinct) for k in per_prompt or [0]], device=device)
    sums = {layer: torch.zeros((len(distinct) + 1, 7), dtype=torch.float64, device=device) for layer in layers}
    positions = _Positions(state)

    def make_hook(layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            valid, response = positions.of(hidden)
            rows = None
            if per_prompt is not None:
                if state.rows is None or len(state.rows) != hidden.shape[0]:
                    raise RuntimeError("per-prompt interventions need each forward's rows: use generate(..., "
                                       "interventions=...), or call Steering.select(rows) before the forward")
                rows = state.rows.to(hidden.device)
            moved: Any = 0.0
            for cls, u, strength, only in plan[layer]:
                u = u.to(hidden.dtype)
                new, move = cls.apply(hidden, u, strength if rows is None else strength[rows][:, None, None])
                if only is not None:  # response-only: the prompt positions keep their states, bitwise
                    if response is None:
                        raise RuntimeError("a response_only intervention acts on generated positions only, and this "
                                           "forward's were not described: use generate(...), or call "
                                           "Steering.response_from(starts) before a teacher-forced pass")
                    gate = response if rows is None else response | ~only[rows][:, None]
                    new = torch.where(gate[..., None], new, hidden)
                    move = torch.where(gate, torch.as_tensor(move, device=hidden.device).expand(gate.shape), 0.0)
                hidden, moved = new, moved + move
            tally = _tally(valid, response, moved)
            if rows is None:
                sums[layer][0] += tally.sum(0)
            else:
                sums[layer].index_add_(0, groups[rows], tally)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    blocks = decoder_layers(model)
    handles = [base_model(model).register_forward_pre_hook(positions.grab, with_kwargs=True)]
    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield state
    finally:
        for handle in handles:
            handle.remove()
        names = [f.name for f in fields(SteeringStats)]  # the columns of `_tally`
        for layer, table in sums.items():
            for k, item in enumerate(distinct):
                if layer in item.units:
                    for name, value in zip(names, table[k].tolist()):
                        getattr(state.stats[item], name)[layer] = value if name == "correction_sum" else int(value)
