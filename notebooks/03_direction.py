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
# # Step 3 — The direction
#
# Per layer, the assistant axis is the difference of means,
# `direction = mean(assistant activations) − mean(non-assistant activations)`,
# a vector pointing from persona behaviour towards assistant behaviour. It is computed on the
# **train** queries only: a fifth of the queries (stratified by category) is held out, and no query
# appears on both sides, so step 4 can validate on prompts the direction has never seen.

# %% tags=["parameters"]
model_key = "smollm2"
holdout_frac = 0.2
seed = 0
artifacts_dir = "artifacts"

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
import torch
from myst_nb import glue

from axes_lib.activations import contrastive_activations
from axes_lib.artifacts import Artifacts, Step
from axes_lib.directions import compute_direction, save_direction
from axes_lib.io import read_jsonl, write_json
from axes_lib.splits import split_by_query

paths = Artifacts(artifacts_dir, model_key)
step = Step(paths.manifest("directions"), dict(model_key=model_key, holdout_frac=holdout_frac, seed=seed))
responses = read_jsonl(paths.responses)
train, test = split_by_query(responses, holdout_frac=holdout_frac, seed=seed)
split = {"holdout_frac": holdout_frac, "seed": seed,
         "train_queries": sorted({responses[i]["query_id"] for i in train}),
         "holdout_queries": sorted({responses[i]["query_id"] for i in test})}
write_json(paths.split, split)
print(f"train: {len(train)} prompts / {len(split['train_queries'])} queries; "
      f"holdout: {len(test)} prompts / {len(split['holdout_queries'])} queries")

# %%
directions = {}
for method, stored in contrastive_activations(paths).items():
    is_assistant = torch.tensor([responses[stored.rows[j]]["kind"] == "assistant" for j in stored.positions(train)])
    train_acts = stored.at(train)
    directions[method] = compute_direction(train_acts[is_assistant], train_acts[~is_assistant], layers=stored.layers)
    save_direction(paths.direction(method), directions[method], model=model_key, method=method,
                   n_layers=len(stored.layers), split="query", holdout_frac=holdout_frac, seed=seed,
                   n_assistant=int(is_assistant.sum()), n_other=int((~is_assistant).sum()))
    print(f"{method}: direction over {len(stored.layers)} layers from {int(is_assistant.sum())} assistant and "
          f"{int((~is_assistant).sum())} non-assistant train prompts")
step.done()

# %% [markdown]
# ## How the direction changes with depth
#
# Left: the direction's norm per layer (it grows with the residual stream). Right: cosine similarity
# between the last-token and response-mean directions at each layer — whether the two extraction
# methods find the same axis.

# %%
from axes_lib.figures import direction_overview

fig, cosines = direction_overview(directions)
glue("method_cosine_max", round(max(cosines.values()), 2), display=False)
glue("method_cosine_argmax", max(cosines, key=cosines.get), display=False)
fig
