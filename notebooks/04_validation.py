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
# # Step 4 — Validation
#
# Does the axis separate prompts it was not fitted on? For each layer and both extraction methods we
# fit the direction and a decision threshold on the train queries, project the held-out prompts on the
# unit direction, and report **Cohen's d** (pooled SD, with a bootstrap 95 % CI) and **accuracy**.
#
# Three safeguards against fooling ourselves:
#
# * **The best layer is chosen on a validation split inside train** (a fifth of the train queries), so
#   the holdout numbers reported for it are not the maximum of 30 noisy estimates.
# * **A shuffled-label null**: the same pipeline with train labels permuted shows what a mean-difference
#   axis reaches by chance in this dimension (576) with this many prompts.
# * **A harder split by persona**: train on four non-assistant personas, test on the other two. A
#   direction that only memorised six personas would fail here.

# %% tags=["parameters"]
model_key = "smollm2"
holdout_frac = 0.2
seed = 0
n_boot = 1000
n_perm = 20
n_holdout_personas = 2
capping_percentile = 25.0  # Anthropic's paper caps at the 25th percentile of assistant token projections
capping_band = 5  # number of layers capped by default, centred on the best layer
artifacts_dir = "artifacts"

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
import numpy as np
from myst_nb import glue

from axes_lib.activations import load_activations
from axes_lib.artifacts import Artifacts, Step
from axes_lib.calibration import calibration_answers, token_thresholds
from axes_lib.directions import load_direction
from axes_lib.figures import Plain, direction_discovery, layer_comparison, projection_histograms, save
from axes_lib.io import read_jsonl, write_json
from axes_lib.metrics import project
from axes_lib.models import load_model
from axes_lib.splits import split_by_persona, split_by_query
from axes_lib.validation import evaluate_layers, shuffled_null

paths = Artifacts(artifacts_dir, model_key)
step = Step(paths.manifest("evaluations"), dict(
    model_key=model_key, holdout_frac=holdout_frac, seed=seed, n_boot=n_boot, n_perm=n_perm,
    n_holdout_personas=n_holdout_personas, capping_percentile=capping_percentile, capping_band=capping_band))
responses = read_jsonl(paths.responses)
train, test = split_by_query(responses, holdout_frac=holdout_frac, seed=seed)  # the split of notebook 03
fit, val = split_by_query(responses, holdout_frac=holdout_frac, seed=seed + 1, indices=train)
p_train, p_test = split_by_persona(responses, n_holdout=n_holdout_personas, seed=seed)
held_personas = sorted({responses[i]["persona"] for i in p_test if responses[i]["kind"] != "assistant"})
print(f"query split: fit {len(fit)}, validation {len(val)}, holdout {len(test)} prompts")
print(f"persona split: train {len(p_train)}, test {len(p_test)}; held-out personas: {held_personas}")


# %%
model, tokenizer = load_model(model_key)  # only for the capping thresholds (a teacher-forced pass)
calibration = calibration_answers(responses, {responses[i]["query_id"] for i in train}, tokenizer, model_key)
evaluations, nulls, panels = {}, {}, []
for method in ("last_token", "response_mean"):
    stored = load_activations(paths.activations(method))
    acts, rows_of, layers = stored.acts, stored.positions, stored.layers
    is_assistant = np.array([responses[r]["kind"] == "assistant" for r in stored.rows])
    by_query = evaluate_layers(acts, is_assistant, rows_of(fit), rows_of(test), layers=layers,
                               val_idx=rows_of(val), n_boot=n_boot, seed=seed)
    by_persona = evaluate_layers(acts, is_assistant, rows_of(p_train), rows_of(p_test), layers=layers,
                                 n_boot=n_boot, seed=seed)
    nulls[method] = shuffled_null(acts, is_assistant, rows_of(fit), rows_of(test), layers=layers,
                                  n_perm=n_perm, seed=seed)
    best = by_query["best_layer"]
    # Default capping settings for CappedModel: a band around the best layer, thresholds at a percentile
    # of the projections of every response token of the train assistant answers on the committed
    # direction (notebook 03, all train queries) -- the positions a cap acts on during generation.
    direction = load_direction(paths.direction(method))
    half = capping_band // 2
    band = [i for i in range(best - half, best - half + capping_band) if i in layers]
    thresholds = token_thresholds(model, tokenizer, *calibration, direction, band, [capping_percentile])[capping_percentile]
    evaluations[method] = {
        "model": model_key, "method": method, "best_layer": best,
        "query_split": by_query, "persona_split": by_persona, "shuffled_null": nulls[method],
        "capping": {"layers": band, "percentile": capping_percentile, "direction": method,
                    "source": "projections of every response token of the assistant personas' train answers",
                    "thresholds": {str(k): v for k, v in thresholds.items()}},
    }
    write_json(paths.evaluation(method), evaluations[method])
    col = layers.index(best)
    test_rows = rows_of(test)
    proj = project(acts[test_rows][:, [col]], {best: direction[best]}, layers=[best])[:, 0].numpy()
    panels.append({"method": method, "layer": best, "threshold": by_query["train"]["threshold"][col],
                   "assistant": proj[is_assistant[test_rows]], "other": proj[~is_assistant[test_rows]]})

step.done()

# %% [markdown]
# ## Separation by layer
#
# Holdout Cohen's d per layer with its bootstrap CI; dotted lines mark the best layer (chosen on the
# validation split), dashed lines the 95th percentile of the shuffled-label null.

# %%
fig = direction_discovery({m: e["query_split"] for m, e in evaluations.items()}, nulls)
save(fig, paths.figure("direction_discovery"))
fig

# %%
summary = []
for method, ev in evaluations.items():
    b = ev["query_split"]["best"]
    col = ev["query_split"]["layers"].index(ev["best_layer"])
    persona_acc = ev["persona_split"]["test"]["accuracy"][col]
    null_max = float(np.median(ev["shuffled_null"]["max_abs_cohens_d"]))
    summary.append({"method": method, "best layer": ev["best_layer"], "holdout d": round(b["cohens_d"], 2),
                    "d 95% CI": f"[{b['cohens_d_low']:.2f}, {b['cohens_d_high']:.2f}]",
                    "holdout accuracy": round(b["accuracy"], 3), "held-out-persona accuracy": round(persona_acc, 3),
                    "null: median max |d|": round(null_max, 2)})
    glue(f"{method}_best_layer", ev["best_layer"], display=False)
    glue(f"{method}_best_d", round(b["cohens_d"], 2), display=False)
    glue(f"{method}_best_d_low", round(b["cohens_d_low"], 2), display=False)
    glue(f"{method}_best_d_high", round(b["cohens_d_high"], 2), display=False)
    glue(f"{method}_best_acc", round(100 * b["accuracy"], 1), display=False)
    glue(f"{method}_persona_acc", round(100 * persona_acc, 1), display=False)
    glue(f"{method}_null_max_d", round(null_max, 2), display=False)
    glue(f"{method}_max_d", round(max(ev["query_split"]["test"]["cohens_d"]), 2), display=False)
    glue(f"{method}_capping_layers", Plain.list(ev["capping"]["layers"]), display=False)
glue("held_out_personas", Plain.list(held_personas), display=False)
stronger = max(evaluations, key=lambda m: evaluations[m]["query_split"]["best"]["cohens_d"])
glue("stronger_method", Plain(stronger.replace("_", "-")), display=False)
import pandas as pd

pd.DataFrame(summary).set_index("method")

# %% [markdown]
# ## Held-out queries vs held-out personas

# %%
fig = layer_comparison({m: {"query_split": e["query_split"], "persona_split": e["persona_split"]}
                        for m, e in evaluations.items()})
save(fig, paths.figure("layer_comparison"))
fig

# %% [markdown]
# ## Projections at the best layer
#
# Held-out prompts projected on the unit direction at each method's best layer, with the threshold
# fitted on the train prompts.

# %%
fig = projection_histograms(panels)
save(fig, paths.figure("projection_stats"))
fig
