"""Interventions along a direction: additive steering and activation capping, as forward hooks.

The intervention is data (mode, layers, per-layer strength); one context manager installs it on the
decoder layers and removes it on exit. It acts on every position — prompt and generated tokens alike
— so it works unchanged with batched generation and the KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from axes_lib.activations import batch_prompts, token_projections
from axes_lib.directions import unit, validate_direction
from axes_lib.models import base_model, decoder_layers

Mode = Literal["add", "cap"]
MODES: tuple[str, ...] = ("add", "cap")


def _unit_vector(u: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    u = u.to(device=like.device, dtype=torch.float32)
    norm = u.norm()
    if not norm > 0:
        raise ValueError("direction is the zero vector: it has no unit direction")
    return (u / norm).to(like.dtype)


def apply_add(h: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
    """`h + scale * u/|u|` at every position."""
    return h + scale * _unit_vector(u, h)


def apply_cap(h: torch.Tensor, u: torch.Tensor, tau: float) -> torch.Tensor:
    """Lift positions whose projection `p = h·u` is below `tau` onto `p = tau`; others are returned bitwise unchanged."""
    return _cap(h, _unit_vector(u, h), tau)[0]


def _cap(h: torch.Tensor, u: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Capped states, the mask of positions that were lifted, and the correction `tau - p` there."""
    p = (h.float() @ u.float()).unsqueeze(-1)
    below = p < tau
    correction = torch.where(below, tau - p, torch.zeros_like(p))
    return torch.where(below, h + correction.to(h.dtype) * u, h), below.squeeze(-1), correction.squeeze(-1)


def check_strength(value: float, name: str, allow_negative: bool = False) -> float:
    """A scale must be a finite number >= 0; a threshold any finite number.

    A threshold is a position on an axis whose origin is arbitrary (the residual stream is not centred),
    so a negative one is legitimate; a negative scale would steer away from the assistant.
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 and not allow_negative:
        raise ValueError(f"{name} must be >= 0, got {value} (to steer away from the assistant, negate the direction)")
    return value


@dataclass(frozen=True)
class Intervention:
    """What to do where: `mode` on `layers`, with a per-layer scale (add) or threshold (cap)."""

    mode: Mode
    strength: dict[int, float]

    @property
    def layers(self) -> list[int]:
        return sorted(self.strength)


def make_intervention(
    mode: str,
    layers: Sequence[int],
    scale: float | Mapping[int, float] | None = None,
    threshold: float | Mapping[int, float] | None = None,
) -> Intervention:
    """Validate and normalise the arguments of an intervention (before any model work)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use 'add' (additive steering) or 'cap' (activation capping)")
    layers = [int(layer) for layer in layers]
    if not layers:
        raise ValueError("layers is empty: give at least one layer to intervene on")
    value, name = (scale, "scale") if mode == "add" else (threshold, "threshold")
    if value is None:
        raise ValueError(f"mode {mode!r} needs a {name}")
    if isinstance(value, Mapping):
        missing = [layer for layer in layers if layer not in value]
        if missing:
            raise ValueError(f"{name} has no value for layers {missing}")
        checked = {
            layer: check_strength(value[layer], f"{name} at layer {layer}", allow_negative=mode == "cap")
            for layer in layers
        }
    else:
        one = check_strength(value, name, allow_negative=mode == "cap")
        checked = dict.fromkeys(layers, one)
    return Intervention(mode, checked)  # type: ignore[arg-type]


@dataclass
class SteeringStats:
    """Per-layer counts while an intervention is active (padding excluded where a mask is known)."""

    positions: dict[int, int] = field(default_factory=dict)
    fired: dict[int, int] = field(default_factory=dict)
    correction_sum: dict[int, float] = field(default_factory=dict)

    def fraction_fired(self) -> dict[int, float]:
        return {k: self.fired[k] / n if n else 0.0 for k, n in self.positions.items()}

    def mean_correction(self) -> dict[int, float]:
        """Mean size `tau - p` of the corrections applied, over the positions where the cap fired."""
        return {k: self.correction_sum[k] / f if (f := self.fired[k]) else 0.0 for k in self.positions}

    def summary(self) -> dict[str, dict[int, float]]:
        return {"fraction_fired": self.fraction_fired(), "mean_correction": self.mean_correction()}


class _Positions:
    """The real (non-padding) positions of the forward in progress: `grab`, a forward pre-hook on the base
    model, keeps its padding mask; the first hooked layer to ask computes them for all the others."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def grab(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.mask, self.valid, self.count = kwargs.get("attention_mask"), None, None

    def of(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean `[batch, seq]` of real positions, and their number."""
        if self.valid is None:
            self.valid = _valid_positions(self.mask, hidden)
            self.count = self.valid.sum()
        assert self.count is not None
        return self.valid, self.count


class _Tally:
    """Per layer, the device tensors the hooks made, summed once at exit: no host sync, and no kernel
    launched for the bookkeeping inside a hook beyond the counts it needs."""

    def __init__(self) -> None:
        self.parts: dict[int, list[torch.Tensor]] = {}

    def add(self, layer: int, part: torch.Tensor) -> None:
        parts = self.parts.setdefault(layer, [])
        parts.append(part)
        if len(parts) >= 256:  # a long generation: fold what is there, so the list stays short
            parts[:] = [torch.stack(parts).double().sum(0)]

    def totals(self) -> dict[int, list[float]]:
        return {layer: torch.stack(parts).double().sum(0).reshape(-1).tolist() for layer, parts in self.parts.items()}


@contextmanager
def steering(
    model: Any,
    direction: Mapping[int, torch.Tensor] | torch.Tensor,
    layers: Sequence[int] | None = None,
    mode: str = "cap",
    scale: float | Mapping[int, float] | None = None,
    threshold: float | Mapping[int, float] | None = None,
) -> Iterator[SteeringStats]:
    """Install an intervention as forward hooks on `layers` for the duration of the block.

    `direction` is a layer -> vector dict (or one vector used at every layer); it is normalised per layer.
    Yields a `SteeringStats` filled in when the block exits. Hooks are removed on exit, also on error.
    Nested blocks compose: the inner intervention acts on the outer one's output.
    """
    if isinstance(direction, torch.Tensor):
        if layers is None:
            raise ValueError("a single direction vector needs explicit layers")
        direction = {int(layer): direction for layer in layers}
    layers = sorted(direction) if layers is None else list(layers)
    intervention = make_intervention(mode, layers, scale=scale, threshold=threshold)
    missing = [layer for layer in intervention.layers if layer not in direction]
    if missing:
        raise ValueError(f"direction has no vector for layers {missing}; it covers {sorted(direction)}")
    chosen = {layer: direction[layer] for layer in intervention.layers}
    validate_direction(chosen, model)
    blocks = decoder_layers(model)
    device = next(model.parameters()).device
    units = {layer: vec.to(device) for layer, vec in unit(chosen).items()}
    tally = _Tally()
    positions = _Positions()
    shifts: dict[tuple[int, torch.dtype], torch.Tensor] = {}  # add: `scale * u` per layer, in the states' dtype

    def make_hook(layer: int) -> Any:
        strength = intervention.strength[layer]

        def hook(module: Any, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            valid, count = positions.of(hidden)
            if intervention.mode == "add":  # every real position moves by the scale: the count is the whole tally
                key = (layer, hidden.dtype)
                if key not in shifts:
                    shifts[key] = strength * units[layer].to(hidden.dtype)
                new = hidden + shifts[key]
                tally.add(layer, count)
            else:
                new, fired, correction = _cap(hidden, units[layer].to(hidden.dtype), strength)
                tally.add(layer, torch.stack([count, (fired & valid).sum(), (correction * valid).sum()]))
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    handles = [base_model(model).register_forward_pre_hook(positions.grab, with_kwargs=True)]
    stats = SteeringStats()
    try:
        for layer in intervention.layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        for layer, total in tally.totals().items():
            if intervention.mode == "add":  # the real positions, each moved by the scale
                n, fired, corr = total[0], total[0], intervention.strength[layer] * total[0]
            else:
                n, fired, corr = total
            stats.positions[layer], stats.fired[layer], stats.correction_sum[layer] = int(n), int(fired), corr


@contextmanager
def steering_rows(
    model: Any,
    direction: Mapping[int, torch.Tensor],
    settings: Sequence[Intervention | None],
    setting_of: Sequence[int],
) -> Iterator[list[SteeringStats]]:
    """Steer each prompt of a `generation.generate` call by its own setting, so one batch can hold many.

    `settings` are interventions (`make_intervention`; None: unsteered), `setting_of[i]` the setting of
    prompt `i` of the `generate` call made inside the block (pass it as `generate(..., groups=setting_of)`,
    so prompts of different settings never share a prefix's keys and values). At each layer a row gets its
    setting's scale (0 where it adds nothing) and threshold (-inf where it caps nothing): adding 0 or
    capping at -inf leaves a state bitwise unchanged, so each row is computed as under `steering` with its
    setting alone. Yields one `SteeringStats` per setting, filled in when the block exits.
    """
    setting_of = [int(k) for k in setting_of]
    if any(not 0 <= k < len(settings) for k in setting_of):
        raise ValueError(f"setting_of must index settings (0..{len(settings) - 1}), got {sorted(set(setting_of))}")
    used = [i for i in settings if i is not None]
    layers = sorted({layer for i in used for layer in i.layers})
    missing = [layer for layer in layers if layer not in direction]
    if missing:
        raise ValueError(f"direction has no vector for layers {missing}; it covers {sorted(direction)}")
    chosen = {layer: direction[layer] for layer in layers}
    if chosen:  # all unsteered: no hooks, nothing to check
        validate_direction(chosen, model)
    device = next(model.parameters()).device
    units = {layer: vec.to(device) for layer, vec in unit(chosen).items()} if chosen else {}
    # Per layer and mode where some setting acts: the strength of every prompt, through its setting.
    per_prompt: dict[tuple[int, str], torch.Tensor] = {}
    for layer in layers:
        for mode, off in (("add", 0.0), ("cap", -math.inf)):
            values = [i.strength.get(layer, off) if i is not None and i.mode == mode else off for i in settings]
            if any(v != off for v in values):
                per_prompt[layer, mode] = torch.tensor(values, device=device)[setting_of]
    group = torch.tensor(setting_of, device=device)
    sums = {layer: torch.zeros((len(settings), 3), dtype=torch.float64, device=device) for layer in layers}
    positions = _Positions()

    def make_hook(layer: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            rows = batch_prompts.get()
            if rows is None or len(rows) != hidden.shape[0]:
                raise RuntimeError("steering_rows acts inside axes_lib.generation.generate only (it maps batch rows to prompts)")
            rows = rows.to(hidden.device)
            u = units[layer].to(hidden.dtype)
            valid, _ = positions.of(hidden)
            fired = torch.zeros_like(valid)
            correction = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
            if (layer, "add") in per_prompt:
                scale = per_prompt[layer, "add"][rows]
                hidden = hidden + scale[:, None, None].to(hidden.dtype) * u
                fired |= (scale != 0)[:, None]
                correction += scale[:, None].float()
            if (layer, "cap") in per_prompt:
                hidden, below, lift = _cap(hidden, u, per_prompt[layer, "cap"][rows][:, None, None])
                fired |= below
                correction += lift
            row = torch.stack([valid.sum(1), (fired & valid).sum(1), (correction * valid).sum(1)], 1).double()
            sums[layer].index_add_(0, group[rows], row)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    blocks = decoder_layers(model)
    handles = [base_model(model).register_forward_pre_hook(positions.grab, with_kwargs=True)]
    stats = [SteeringStats() for _ in settings]
    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        for layer, table in sums.items():
            for k, (n, fired, corr) in enumerate(table.tolist()):
                if settings[k] is not None and layer in settings[k].strength:
                    stats[k].positions[layer], stats[k].fired[layer], stats[k].correction_sum[layer] = int(n), int(fired), corr


def _valid_positions(mask: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """Boolean `[batch, seq]` of real (non-padding) positions of the current forward, read from the 2-D
    padding mask; anything else (no mask, or one already expanded to 4-D) counts every position."""
    batch, seq = hidden.shape[:2]
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != batch or mask.shape[1] < seq:
        return torch.ones(batch, seq, dtype=torch.bool, device=hidden.device)
    return mask[:, -seq:].to(device=hidden.device, dtype=torch.bool)


def projection_sd(acts: torch.Tensor, direction: Mapping[int, torch.Tensor], layers: Sequence[int]) -> dict[int, float]:
    """Standard deviation of the projections on the unit direction per layer (columns of `acts` labelled by `layers`)."""
    units = unit(direction)
    return {layer: float((acts[:, col].double() @ units[layer].double()).std()) for col, layer in enumerate(layers)}


def percentile_thresholds(
    acts: torch.Tensor, direction: Mapping[int, torch.Tensor], layers: Sequence[int], band: Sequence[int], q: float = 25.0
) -> dict[int, float]:
    """Capping thresholds: the q-th percentile of the projections of (assistant, train) activations, per layer of `band`.

    `acts` columns are labelled by `layers`; Anthropic's paper caps at the 25th percentile over a band of layers.
    """
    _check_percentile(q)
    units = unit(direction)
    column = {layer: col for col, layer in enumerate(layers)}
    missing = [layer for layer in band if layer not in column or layer not in units]
    if missing:
        raise ValueError(f"no activations or direction for band layers {missing}")
    return {
        layer: float(torch.quantile(acts[:, column[layer]].double() @ units[layer].double(), q / 100))
        for layer in band
    }


def token_thresholds(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    direction: Mapping[int, torch.Tensor],
    band: Sequence[int],
    percentiles: Sequence[float] = (25.0,),
    batch_size: int = 32,
) -> dict[float, dict[int, float]]:
    """Capping thresholds from the positions a cap acts on: `{q: {layer: threshold}}`, the q-th percentile,
    per layer of `band`, of the projections of every response token of (assistant, train) answers, read
    in one teacher-forced pass.

    This is Anthropic's recipe: a cap fires on individual positions, so its threshold comes from the
    per-token distribution, not from one position per prompt (`percentile_thresholds`).
    """
    for q in percentiles:
        _check_percentile(q)
    proj = token_projections(model, tokenizer, prompts, responses, direction, list(band), batch_size=batch_size)
    return {q: quantile_thresholds(proj, q) for q in percentiles}


def quantile_thresholds(projections: Mapping[int, torch.Tensor], q: float) -> dict[int, float]:
    """The q-th percentile of each layer's projections (e.g. from `activations.token_projections`)."""
    _check_percentile(q)
    return {layer: float(torch.quantile(values.double(), q / 100)) for layer, values in projections.items()}


def _check_percentile(q: float) -> None:
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
