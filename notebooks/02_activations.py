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
# computed once and its KV cache reused.

# %% tags=["parameters"]
model_key = "smollm2"
layers = None  # None: every layer
batch_size = 32
artifacts_dir = "artifacts"

# %% tags=["hide-input"]
import time

from myst_nb import glue

from axes_lib.activations import extract, extract_methods, save_activations
from axes_lib.artifacts import Artifacts, Step
from axes_lib.io import read_jsonl
from axes_lib.models import load_model
from axes_lib.prompts import format_prompt, load_personas

paths = Artifacts(artifacts_dir, model_key)
if not paths.responses.exists():
    raise FileNotFoundError(f"{paths.responses} is missing: run notebook 01 for model_key={model_key!r} first")
step = Step(paths.manifest("activations"), dict(model_key=model_key, layers=layers, batch_size=batch_size))
responses = read_jsonl(paths.responses)
print(f"{len(responses)} responses from {paths.responses}")

# %%
model, tokenizer = load_model(model_key)
systems = {p.name: p.system for p in load_personas()}
prompts = [format_prompt(systems[r["persona"]], r["query"], model_type=model_key, tokenizer=tokenizer) for r in responses]
keep = [i for i, r in enumerate(responses) if r["response"].strip()]
layer_ids = list(range(model.config.num_hidden_layers)) if layers is None else list(layers)

# One teacher-forced pass over prompt + response reads both: by causality the last prompt token's state
# does not depend on the response that follows it.
start = time.perf_counter()
acts = extract_methods(model, tokenizer, [prompts[i] for i in keep], [responses[i]["response"] for i in keep],
                       layers=layers, batch_size=batch_size)
rows = {"last_token": keep, "response_mean": keep}
if len(keep) < len(responses):  # an empty answer has no response-mean, but its prompt has a last token
    print(f"{len(responses) - len(keep)} empty responses: response_mean skips them")
    acts["last_token"] = extract(model, tokenizer, prompts, layers=layers, batch_size=batch_size)
    rows["last_token"] = list(range(len(responses)))
seconds = time.perf_counter() - start
for method, values in acts.items():
    save_activations(paths.activations(method), values, rows[method], layer_ids, model=model_key, method=method,
                     responses=str(paths.responses))
    print(f"{method}: {tuple(values.shape)}")
print(f"both methods in {seconds:.1f} s ({len(keep) / seconds:.1f} prompts/s)")
step.done(extract_seconds=seconds, shapes={m: list(a.shape) for m, a in acts.items()})

# %% tags=["hide-input"]
glue("extract_seconds", round(seconds, 1), display=False)
glue("extract_prompts_per_s", round(len(keep) / seconds, 1), display=False)

# %% [markdown]
# ## The residual stream grows with depth
#
# Mean norm of the activations per layer. Later layers carry much larger vectors, which is why the
# book reports separations in standard-deviation units (Cohen's d) rather than raw projections.

# %%
from axes_lib.figures import norm_by_layer

norm_by_layer(acts)
