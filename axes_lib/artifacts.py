"""Where every artifact of a model lives: one object, so notebooks, `CappedModel` and tests name files alike.

Artifacts are named by model key (and extraction method where there are two), so the results of
several models sit side by side under one root.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axes_lib.io import write_manifest

__all__ = ["DEFAULT_ROOT", "Artifacts", "Step", "manifest_of"]

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
    def answer_filters(self) -> Path:
        """Step 4's loop rates, role adherence and the refits on filtered answers."""
        return self.root / "evaluations" / f"{self.stem}_answer_filters.json"

    def layout_responses(self, layout: str) -> Path:
        """Step 4's answers to a subset of the queries under another wording of the personas (`prompts.LAYOUTS`)."""
        return self.root / "responses" / f"{self.stem}_responses_{layout}.jsonl"

    def manifest(self, folder: str) -> Path:
        """The manifest of a step that writes several files into `folder` (activations, directions, ...)."""
        return self.root / folder / f"{self.stem}.manifest.json"

    @property
    def split(self) -> Path:
        return self.root / "evaluations" / f"{self.stem}_split.json"

    @property
    def responses(self) -> Path:
        """Step 1's contrastive answers."""
        return self.root / "responses" / f"{self.stem}_responses.jsonl"

    def sweep(self, name: str, assistant: bool = False) -> Path:
        """A sweep's answers (`name`: "additive", "capping", "specificity" (the random-direction controls), or a
        later step's: "bank", "drift", "qa", "stress");
        `assistant`: the assistant personas' reference rows."""
        return self.root / "responses" / f"{self.stem}_{name}{'_assistant' if assistant else ''}.jsonl"

    def capping_summary(self, method: str = "response_mean") -> Path:
        return self.root / "evaluations" / f"capping_{self.stem}_{method}.json"

    def figure(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"

    @property
    def demo(self) -> Path:
        """The demo's answer grid (its slider page and manifest sit beside it)."""
        return self.root / "demo" / f"{self.stem}_grid.json"

    def judgements(self, judge: str, sweep: str | None = None) -> Path:
        """The score cache of one judge over this model's answers (step 7), or over one `sweep`'s (a step that
        judges its own answers keeps its own file, so steps never write one store at once)."""
        return self.root / "evaluations" / f"judge_{self.stem}_{f'{sweep}_' if sweep else ''}{judge}.jsonl"

    @property
    def judge_evaluation(self) -> Path:
        """Step 7's judged summary: sweet spots, the query halves they were chosen and reported on."""
        return self.root / "evaluations" / f"judge_evaluation_{self.stem}.json"

    def summary(self, name: str) -> Path:
        """A later step's summary JSON (`name`: "persona_space", "side_effects", ...)."""
        return self.root / "evaluations" / f"{name}_{self.stem}.json"

    @property
    def persona_vectors(self) -> Path:
        """Persona space's role vectors: the mean response activation of every role of the bank, every layer."""
        return self.root / "directions" / f"{self.stem}_persona_vectors.safetensors"

    def specificity(self, method: str = "response_mean") -> Path:
        """Step 9's summary: each direction's judged effects and the axis's rank among the random ones."""
        return self.root / "evaluations" / f"specificity_{self.stem}_{method}.json"


def manifest_of(path: Path) -> Path:
    """The manifest beside an artifact (`x.jsonl` -> `x.manifest.json`)."""
    return path.with_suffix(".manifest.json")


class Step:
    """One notebook step's bookkeeping: its parameters, its manifest (written incomplete at the start and
    complete at the end, with the seconds it took), and a fresh start when `resume` is False."""

    def __init__(self, manifest: Path, params: Mapping[str, Any], outputs: Sequence[Path] = (),
                 resume: bool = True) -> None:
        self.manifest, self.params, self.started = Path(manifest), dict(params), time.perf_counter()
        if not resume:  # otherwise each output keeps what its own fingerprints say is still valid
            for path in outputs:
                Path(path).unlink(missing_ok=True)
        write_manifest(self.manifest, self.params, seconds=0.0, complete=False)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def done(self, **extra: Any) -> Path:
        """Mark the step complete, with what it wants to record beside its parameters."""
        return write_manifest(self.manifest, self.params, seconds=self.seconds, complete=True, **extra)
