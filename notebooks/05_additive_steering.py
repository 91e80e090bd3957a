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
# # Step 5 — Additive steering
#
# The simplest intervention: add `scale · u` (u the unit direction) to the residual stream at every
# position, prompt and generated tokens alike. We sweep the scale on the **held-out queries** under
# the six non-assistant personas and store every answer for the judge (step 7).
#
# Raw scales mean different things in different models (and at different depths), so the sweep also
# runs scales in units of the standard deviation of the projections at the steered layer.
#
# We steer along the **response-mean** axis at its best layer: the intervention acts on every
# position of the answer, and that direction is estimated from those positions (the last-token axis
# describes only the end of the prompt). Step 6 uses the same axis.

# %% tags=["parameters"]
model_key = "smollm2"
method = "response_mean"  # which direction to steer along (see the text above)
layers = None  # None: the best layer found in step 4
scales = [0, 5, 10, 20, 50, 100, 200]  # in the model's units (the seed's range goes to 100+)
sd_scales = [1, 2, 4, 8]  # in units of the projection SD at each steered layer
n_holdout_queries = 10  # held-out queries used (None: all of them)
max_new_tokens = 48
batch_size = 256  # rows per generate batch: several settings of the sweep at once
artifacts_dir = "artifacts"
resume = True  # False: regenerate every answer (make book FORCE=1); True reuses answers whose inputs are unchanged

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from myst_nb import glue

from axes_lib.activations import contrastive_activations
from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.calibration import projection_sd
from axes_lib.directions import load_direction
from axes_lib.figures import Plain
from axes_lib.interventions import Add
from axes_lib.io import read_json, read_jsonl
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas
from axes_lib.splits import indices_in, queries_in
from axes_lib.sweeps import Setting, response_projection, sweep

model_name(model_key)
if any(s < 0 for s in [*scales, *sd_scales]):
    raise ValueError(f"scales must be >= 0, got {scales} and {sd_scales}")
paths = Artifacts(artifacts_dir, model_key)
evaluation = read_json(paths.evaluation(method))
direction = load_direction(paths.direction(method))
split = read_json(paths.split)
layers = [evaluation["best_layer"]] if layers is None else list(layers)
holdout = queries_in(split, "holdout", n_holdout_queries)

# The projection SD per steered layer, over all train prompts (the unit of `sd_scales`).
train = indices_in(read_jsonl(paths.responses), split, "train")
sd = projection_sd(contrastive_activations(paths)[method].at(train, layers), direction, layers)
print(f"steering layers {layers}; projection SD there: " + ", ".join(f"{k}: {v:.2f}" for k, v in sd.items()))

mean_sd = float(np.mean(list(sd.values())))
settings = [Setting(f"add:{s:g}", Add(direction, layers, scale=float(s)) if s else None,
                    {"scale": float(s), "scale_sd": float(s / mean_sd), "unit": "raw"}) for s in scales]
settings += [Setting(f"add_sd:{k:g}", Add(direction, layers, scale={i: k * sd[i] for i in layers}),
                     {"scale": float(k * mean_sd), "scale_sd": float(k), "unit": "sd"}) for k in sd_scales]

# %%
out_path, assistant_path = paths.sweep("additive"), paths.sweep("additive", assistant=True)
step = Step(manifest_of(out_path), dict(model_key=model_key, method=method, layers=layers, scales=scales,
                                        sd_scales=sd_scales, n_holdout_queries=n_holdout_queries,
                                        max_new_tokens=max_new_tokens),
            outputs=[out_path, assistant_path], resume=resume)  # resume: answers with unchanged inputs are reused
model, tokenizer = load_model(model_key)
records = contrastive_prompts(holdout, load_personas(), model_type=model_key, tokenizer=tokenizer)
others = [r for r in records if r["kind"] != "assistant"]
assistants = [r for r in records if r["kind"] == "assistant"]
rows = sweep(model, tokenizer, others, settings, out_path, max_new_tokens, batch_size)
reference = Setting("assistant", None, {"scale": 0.0, "scale_sd": 0.0, "unit": "none"})
rows += sweep(model, tokenizer, assistants, [reference], assistant_path, max_new_tokens, batch_size)
print(f"{len(rows)} answers")

# %% [markdown]
# ## Does the text move along the axis?
#
# Before any judge: we feed each generated answer back through the **unsteered** model and project
# its response-mean activations at the steered layers on the direction. This measures the words that
# came out, not the intervention itself. The dotted line is where the assistant personas' answers sit.

# %%
prompt_of = {r["id"]: r["prompt"] for r in records}
proj = response_projection(model, tokenizer, [prompt_of[r["id"]] for r in rows], [r["response"] for r in rows],
                           direction, layers, batch_size=batch_size)
for r, p in zip(rows, proj):
    r["projection"] = float(p)
frame = pd.DataFrame(rows)
assistant_mean = frame.loc[frame.setting == "assistant", "projection"].mean()
table = (frame[frame.setting != "assistant"].groupby(["unit", "scale", "scale_sd"], sort=True)["projection"]
         .agg(["mean", "std", "count"]).reset_index())
table["empty answers"] = frame[frame.setting != "assistant"].groupby(["unit", "scale", "scale_sd"], sort=True)[
    "response"].apply(lambda s: int((s.str.strip() == "").sum())).values
step.done(n_answers=len(rows), projection_sd=sd, assistant_projection_mean=float(assistant_mean))
glue("add_layers", Plain.list(layers), display=False)
glue("add_sd", round(float(np.mean(list(sd.values()))), 2), display=False)
glue("add_assistant_projection", round(float(assistant_mean), 2), display=False)
glue("add_n_prompts", len(others), display=False)
print(f"assistant personas' answers: mean projection {assistant_mean:.2f}")
table

# %% [markdown]
# ## What the answers look like
#
# One held-out query under one persona, at every raw scale.

# %%
example = frame[(frame.unit == "raw") & (frame.id == others[0]["id"])][["scale", "response"]]
pd.set_option("display.max_colwidth", 200)
example.set_index("scale")
