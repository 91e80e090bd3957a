"""`CappedModel`: the seed's one-object API — a model, its assistant axis and a default intervention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from axes_lib.activations import check_layers
from axes_lib.directions import load_direction, validate_direction
from axes_lib.generation import check_prompts, generate
from axes_lib.io import read_json
from axes_lib.models import load_model, model_name
from axes_lib.steering import SteeringStats, make_intervention, steering

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def direction_path(key: str, method: str = "response_mean", root: Path = ARTIFACTS) -> Path:
    return root / "directions" / f"{key}_{method}.safetensors"


def evaluation_path(key: str, method: str = "response_mean", root: Path = ARTIFACTS) -> Path:
    return root / "evaluations" / f"direction_eval_{key}_{method}.json"


class CappedModel:
    """A model plus an intervention along its assistant axis: `generate` steers, `generate_uncapped` does not.

    `mode="cap"` lifts positions whose projection is below the per-layer threshold; `mode="add"` adds
    `scale` times the unit direction everywhere (the sibling used for scale sweeps).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        direction: Mapping[int, torch.Tensor],
        layers: Sequence[int],
        mode: str = "cap",
        threshold: float | Mapping[int, float] | None = None,
        scale: float | Mapping[int, float] | None = None,
    ):
        layers = check_layers(layers, model.config.num_hidden_layers)
        self.intervention = make_intervention(mode, layers, scale=scale, threshold=threshold)
        missing = [layer for layer in layers if layer not in direction]
        if missing:
            raise ValueError(f"direction has no vector for layers {missing}; it covers {sorted(direction)}")
        validate_direction({layer: direction[layer] for layer in layers}, model)
        self.model, self.tokenizer, self.direction = model, tokenizer, dict(direction)
        self.last_stats: SteeringStats | None = None

    @classmethod
    def from_model_key(
        cls,
        key: str = "smollm2",
        direction: str | Path | None = None,
        method: str = "response_mean",
        mode: str = "cap",
        layers: Sequence[int] | None = None,
        threshold: float | Mapping[int, float] | None = None,
        scale: float | Mapping[int, float] | None = None,
        evaluation: str | Path | None = None,
        device: str | None = None,
    ) -> CappedModel:
        """Load the model for `key` and its committed direction; layers and thresholds default to the
        committed evaluation's capping settings, and any of them can be overridden."""
        model_name(key)  # a bad key fails before anything is loaded
        path = Path(direction) if direction is not None else direction_path(key, method)
        vectors = load_direction(path)
        if layers is None or (mode == "cap" and threshold is None):
            defaults = _capping_defaults(Path(evaluation) if evaluation else evaluation_path(key, method))
            layers = defaults["layers"] if layers is None else layers
            if mode == "cap" and threshold is None:
                threshold = {int(k): float(v) for k, v in defaults["thresholds"].items()}
        make_intervention(mode, layers, scale=scale, threshold=threshold)  # validate before the model loads
        model, tokenizer = load_model(key, device=device)
        return cls(model, tokenizer, vectors, layers, mode=mode, threshold=threshold, scale=scale)

    @property
    def layers(self) -> list[int]:
        return self.intervention.layers

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 128, **kwargs: Any) -> str | list[str]:
        """Generate with the intervention active (greedy by default); one prompt or a batch."""
        items, single = check_prompts(prompts)
        strength = self.intervention.strength
        key = "scale" if self.intervention.mode == "add" else "threshold"
        with steering(self.model, self.direction, layers=self.layers, mode=self.intervention.mode, **{key: strength}) as stats:
            out = generate(self.model, self.tokenizer, items, max_new_tokens=max_new_tokens, **kwargs)
        self.last_stats = stats
        return out[0] if single else out

    def generate_uncapped(self, prompts: str | Sequence[str], max_new_tokens: int = 128, **kwargs: Any) -> str | list[str]:
        """Generate without any intervention, with the same settings as `generate`."""
        items, single = check_prompts(prompts)
        out = generate(self.model, self.tokenizer, items, max_new_tokens=max_new_tokens, **kwargs)
        return out[0] if single else out


def _capping_defaults(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"no evaluation at {path} to take default capping layers and thresholds from: run notebooks 03-04 "
            "for this model, or pass layers= and threshold= explicitly"
        )
    evaluation = read_json(path)
    if "capping" not in evaluation:
        raise ValueError(f"{path} has no 'capping' section: regenerate it with notebook 04, or pass layers= and threshold=")
    return evaluation["capping"]
