"""The one installer of interventions (`steer`) and what it counts while they act (`SteeringStats`).

`steer` installs one intervention (`axes_lib.interventions`) for every prompt, or one per prompt, as
forward hooks on the decoder layers; `generation.generate(..., interventions=[...])` is the per-prompt
case and tells the installer which rows each forward holds (`Steering.select`) and where the response
starts (`Steering.response_from`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from axes_lib.interventions import KINDS, Intervention
from axes_lib.models import base_model, decoder_layers

__all__ = ["Steering", "SteeringStats", "steer"]


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
