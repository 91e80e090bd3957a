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

# %%
# NBVAL_CHECK_OUTPUT
import json
import time
from pathlib import Path

import torch
from myst_nb import glue

from axes_lib.directions import compute_direction, save_direction
from axes_lib.io import load_tensors, read_jsonl, write_json, write_manifest
from axes_lib.splits import split_by_query

started = time.perf_counter()
root = Path(artifacts_dir)
responses = read_jsonl(root / "responses" / f"{model_key}_responses.jsonl")
train, test = split_by_query(responses, holdout_frac=holdout_frac, seed=seed)
split = {"holdout_frac": holdout_frac, "seed": seed,
         "train_queries": sorted({responses[i]["query_id"] for i in train}),
         "holdout_queries": sorted({responses[i]["query_id"] for i in test})}
write_json(root / "evaluations" / f"{model_key}_split.json", split)
print(f"train: {len(train)} prompts / {len(split['train_queries'])} queries; "
      f"holdout: {len(test)} prompts / {len(split['holdout_queries'])} queries")

# %%
directions = {}
for method in ("last_token", "response_mean"):
    tensors, meta = load_tensors(root / "activations" / f"{model_key}_{method}.safetensors")
    acts, rows = tensors["acts"], tensors["rows"].tolist()
    layers = json.loads(meta["layers"])
    position = {r: i for i, r in enumerate(rows)}
    train_rows = [position[i] for i in train if i in position]
    is_assistant = torch.tensor([responses[rows[j]]["kind"] == "assistant" for j in train_rows])
    train_acts = acts[train_rows]
    directions[method] = compute_direction(train_acts[is_assistant], train_acts[~is_assistant], layers=layers)
    save_direction(root / "directions" / f"{model_key}_{method}.safetensors", directions[method],
                   model=model_key, method=method, n_layers=len(layers), split="query",
                   holdout_frac=holdout_frac, seed=seed,
                   n_assistant=int(is_assistant.sum()), n_other=int((~is_assistant).sum()))
    print(f"{method}: direction over {len(layers)} layers from {int(is_assistant.sum())} assistant and "
          f"{int((~is_assistant).sum())} non-assistant train prompts")

write_manifest(root / "directions" / f"{model_key}.manifest.json",
               dict(model_key=model_key, holdout_frac=holdout_frac, seed=seed), seconds=time.perf_counter() - started)

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
