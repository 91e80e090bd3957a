"""`CappedModel`: the seed's one-object API — a model, its assistant axis and one intervention along it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from axes_lib.artifacts import DEFAULT_ROOT, Artifacts
from axes_lib.directions import load_direction_with_metadata
from axes_lib.generation import check_prompts, generate
from axes_lib.interventions import KINDS, Cap, Intervention
from axes_lib.io import read_json
from axes_lib.models import load_model, model_name
from axes_lib.steering import SteeringStats

__all__ = ["CappedModel"]


class CappedModel:
    """A model plus an intervention along its assistant axis: `generate` steers, `generate_uncapped` does not.

    The default is the seed's activation cap (`interventions.Cap`); any intervention works the same way.
    """

    def __init__(self, model: Any, tokenizer: Any, intervention: Intervention):
        if not isinstance(intervention, Intervention):
            raise ValueError(f"intervention must be an Intervention (e.g. interventions.Cap), got {type(intervention).__name__}")
        intervention.check_model(model)
        self.model, self.tokenizer, self.intervention = model, tokenizer, intervention
        self.last_stats: SteeringStats | None = None

    @classmethod
    def from_model_key(
        cls,
        key: str = "smollm2",
        direction: str | Path | None = None,
        method: str = "response_mean",
        kind: str | type[Intervention] = Cap,
        layers: Sequence[int] | None = None,
        evaluation: str | Path | None = None,
        device: str | None = None,
        artifacts_dir: str | Path | None = None,
        **strength: Any,
    ) -> CappedModel:
        """Load the model for `key` with its committed direction and an intervention of `kind` on it.

        The strength is passed by its name (`threshold=` for a cap, `scale=` for `"add"`, `value=` for
        `"ablate"`). Layers, and a cap's thresholds, default to the committed evaluation's capping
        settings. Everything is checked against the direction file before the model loads.
        `artifacts_dir`: where the key's artifacts are; by default `artifacts/<key>/` when that folder exists
        (a second model's run, e.g. `qwen2.5-0.5b`), else `artifacts/` (the default model's).
        """
        model_name(key)  # a bad key fails before anything is loaded
        cls_ = KINDS.get(kind) if isinstance(kind, str) else kind
        if cls_ is None or not (isinstance(cls_, type) and issubclass(cls_, Intervention)):
            raise ValueError(f"unknown intervention kind {kind!r}: use one of {sorted(KINDS)} or an Intervention class")
        unknown = set(strength) - {cls_.strength_name}
        if unknown:
            raise ValueError(f"{cls_.__name__} takes its strength as {cls_.strength_name}=, not {sorted(unknown)}")
        paths = Artifacts(artifacts_dir if artifacts_dir is not None else default_root(key), key)
        path = Path(direction) if direction is not None else paths.direction(method)
        vectors, meta = load_direction_with_metadata(path)
        value = strength.get(cls_.strength_name)
        if layers is None or (cls_ is Cap and value is None):
            defaults = _capping_defaults(Path(evaluation) if evaluation else paths.evaluation(method))
            layers = defaults["layers"] if layers is None else layers
            if cls_ is Cap and value is None:
                value = {int(k): float(v) for k, v in defaults["thresholds"].items()}
        intervention = cls_(vectors, layers, **({} if value is None else {cls_.strength_name: value}))
        if "n_layers" in meta:  # the direction file knows its model's shape: check before loading it
            intervention.check_model(_Shape(int(meta["n_layers"]), int(meta["d_model"])))
        model, tokenizer = load_model(key, device=device)
        return cls(model, tokenizer, intervention)

    @property
    def layers(self) -> list[int]:
        return self.intervention.layers

    @property
    def direction(self) -> dict[int, Any]:
        """The unit direction at the intervention's layers."""
        return dict(self.intervention.units)

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 128, **kwargs: Any) -> str | list[str]:
        """Generate with the intervention active (greedy by default); one prompt or a batch."""
        items, single = check_prompts(prompts)
        stats: dict[Intervention, SteeringStats] = {}
        out = generate(self.model, self.tokenizer, items, max_new_tokens=max_new_tokens, interventions=self.intervention,
                       stats=stats, **kwargs)
        self.last_stats = stats[self.intervention]
        return out[0] if single else out

    def generate_uncapped(self, prompts: str | Sequence[str], max_new_tokens: int = 128, **kwargs: Any) -> str | list[str]:
        """Generate without any intervention, with the same settings as `generate`."""
        items, single = check_prompts(prompts)
        out = generate(self.model, self.tokenizer, items, max_new_tokens=max_new_tokens, **kwargs)
        return out[0] if single else out


def default_root(key: str) -> Path:
    """The committed artifacts of a model key: `artifacts/<key>/` when a run wrote there, else `artifacts/`."""
    own = DEFAULT_ROOT / Artifacts(DEFAULT_ROOT, key).stem
    return own if (own / "directions").is_dir() else DEFAULT_ROOT


class _Shape:
    """The two numbers of a model config that a direction is checked against."""

    def __init__(self, num_hidden_layers: int, hidden_size: int) -> None:
        self.num_hidden_layers, self.hidden_size = num_hidden_layers, hidden_size


def _capping_defaults(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"no evaluation at {path} to take default layers and thresholds from: run notebooks 03-04 "
            "for this model, or pass layers= and the strength explicitly"
        )
    evaluation = read_json(path)
    if "capping" not in evaluation:
        raise ValueError(f"{path} has no 'capping' section: regenerate it with notebook 04, or pass layers= and threshold=")
    return evaluation["capping"]
