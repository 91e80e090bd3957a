"""Where every artifact of a model lives: one object, so notebooks, `CappedModel` and tests name files alike.

Artifacts are named by model key (and extraction method where there are two), so the results of
several models sit side by side under one root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "Artifacts"]

#: The committed artifacts of this repository.
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "artifacts"


@dataclass(frozen=True)
class Artifacts:
    """Paths of one model's artifacts under `root` (nothing is read or created here)."""

    root: Path = DEFAULT_ROOT
    model_key: str = "smollm2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def stem(self) -> str:
        """The model key as a file-name part (a local folder or hub id contributes its last component)."""
        return Path(self.model_key).name if "/" in self.model_key else self.model_key

    def direction(self, method: str = "response_mean") -> Path:
        return self.root / "directions" / f"{self.stem}_{method}.safetensors"

    def evaluation(self, method: str = "response_mean") -> Path:
        return self.root / "evaluations" / f"direction_eval_{self.stem}_{method}.json"

    def activations(self, method: str) -> Path:
        return self.root / "activations" / f"{self.stem}_{method}.safetensors"

    @property
    def split(self) -> Path:
        return self.root / "evaluations" / f"{self.stem}_split.json"

    @property
    def responses(self) -> Path:
        """Step 1's contrastive answers."""
        return self.root / "responses" / f"{self.stem}_responses.jsonl"

    def sweep(self, name: str, assistant: bool = False) -> Path:
        """A sweep's answers (`name`: "additive" or "capping"); `assistant`: the assistant personas' reference rows."""
        return self.root / "responses" / f"{self.stem}_{name}{'_assistant' if assistant else ''}.jsonl"

    def capping_summary(self, method: str = "response_mean") -> Path:
        return self.root / "evaluations" / f"capping_{self.stem}_{method}.json"

    def figure(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"


def manifest_of(path: Path) -> Path:
    """The manifest beside an artifact (`x.jsonl` -> `x.manifest.json`)."""
    return path.with_suffix(".manifest.json")
