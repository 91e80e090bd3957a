# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Step 2 — Activations
#
# For every contrastive prompt we read the residual stream after each decoder layer, two ways:
#
# * **last-token** — the final prompt token, the position just before the model starts answering;
# * **response-mean** — the mean over the tokens of the generated response, in one teacher-forced pass
#   over prompt + response (Anthropic's method).
#
# `axes_lib.activations.extract_methods` reads both in one teacher-forced pass over prompt + response,
# with forward hooks, batch by batch: no LM head, the forward stops after the last requested layer,
# prompts are grouped by length, and each persona's system prompt — shared by all of its queries — is
# computed once and its KV cache reused. The activations (about 60 MB per method at full scale) are not
# committed: they are cached under `artifacts/activations/` with the key of the answers, model, layers and
# code that made them, and extracted again whenever any of these changes (steps 3 and 4 read them through the
# same function, so a fresh clone extracts them once, in whichever step needs them first).

# %% tags=["parameters"]
model_key = "smollm2"
layers = None  # None: every layer
batch_size = 32
artifacts_dir = "artifacts"

# %% tags=["hide-input"]
import time

from axes_lib.activations import contrastive_activations
from axes_lib.artifacts import Artifacts, Step
from axes_lib.models import load_model

paths = Artifacts(artifacts_dir, model_key)
if not paths.responses.exists():
    raise FileNotFoundError(f"{paths.responses} is missing: run notebook 01 for model_key={model_key!r} first")
step = Step(paths.manifest("activations"), dict(model_key=model_key, layers=layers, batch_size=batch_size))

# %%
model, tokenizer = load_model(model_key)
start = time.perf_counter()
acts = contrastive_activations(paths, layers=layers, batch_size=batch_size, model=model, tokenizer=tokenizer)
seconds = time.perf_counter() - start
for method, stored in acts.items():
    print(f"{method}: {tuple(stored.acts.shape)} (answers x layers x d_model)")
print(f"both methods in {seconds:.1f} s (read from the cache when it was made from the same answers, model and code)")
step.done(seconds_here=round(seconds, 1), shapes={m: list(a.acts.shape) for m, a in acts.items()})

# %% [markdown]
# ## The residual stream grows with depth
#
# Mean norm of the activations per layer. Later layers carry much larger vectors, which is why the
# book reports separations in standard-deviation units (Cohen's d) rather than raw projections.

# %%
from axes_lib.figures import norm_by_layer

norm_by_layer({m: a.acts for m, a in acts.items()})
