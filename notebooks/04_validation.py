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
n_perm = 1000  # row-level label permutations (persona-level: all partitions, below)
n_random_separation = 1000  # random directions per layer, scored for separation (step 9 steers along 20)
n_holdout_personas = 2
capping_percentile = 25.0  # the 25th percentile, as Anthropic's paper (that it is of per-token projections is our reading)
capping_band = 5  # number of layers capped by default, centred on the best layer
layout_train_queries = 10  # prompt-format controls: train queries asked in the other wordings (layer choice)
layout_holdout_queries = 20  # ... and held-out queries (reported); None: all of them
layout_max_new_tokens = 64  # as step 1
batch_size = 128
loop_threshold = 0.3  # an answer "loops" when this share of its words repeats earlier material
artifacts_dir = "artifacts"
resume = True  # False: regenerate the prompt-format answers (make book FORCE=1)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from axes_lib.activations import contrastive_activations, extract_methods
from axes_lib.artifacts import Artifacts, Step
from axes_lib.calibration import calibration_answers, token_thresholds
from axes_lib.controls import leave_one_persona_out, partition_null, random_direction_null, role_adherence, separation
from axes_lib.directions import load_direction
from axes_lib.figures import (
    Plain,
    controls_by_layer,
    direction_discovery,
    format_transfer,
    layer_comparison,
    projection_histograms,
    save,
)
from axes_lib.io import read_jsonl, write_json
from axes_lib.judge.repetition import loop_coverage
from axes_lib.metrics import cohens_d, crossed_interval, project
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas
from axes_lib.splits import queries_in, split_by_persona, split_by_query
from axes_lib.sweeps import Setting, sweep
from axes_lib.validation import evaluate_layers, null_summary, shuffled_null

model_name(model_key)
paths = Artifacts(artifacts_dir, model_key)
layouts = {name: paths.layout_responses(name) for name in ("matched", "one_sentence")}
step = Step(paths.manifest("evaluations"), dict(
    model_key=model_key, holdout_frac=holdout_frac, seed=seed, n_boot=n_boot, n_perm=n_perm,
    n_random_separation=n_random_separation, n_holdout_personas=n_holdout_personas, capping_percentile=capping_percentile, capping_band=capping_band,
    layout_train_queries=layout_train_queries, layout_holdout_queries=layout_holdout_queries,
    layout_max_new_tokens=layout_max_new_tokens, loop_threshold=loop_threshold),
    outputs=list(layouts.values()), resume=resume)
responses = read_jsonl(paths.responses)
train, test = split_by_query(responses, holdout_frac=holdout_frac, seed=seed)  # the split of notebook 03
fit, val = split_by_query(responses, holdout_frac=holdout_frac, seed=seed + 1, indices=train)
p_train, p_test = split_by_persona(responses, n_holdout=n_holdout_personas, seed=seed)
held_personas = sorted({responses[i]["persona"] for i in p_test if responses[i]["kind"] != "assistant"})
print(f"query split: fit {len(fit)}, validation {len(val)}, holdout {len(test)} prompts")
print(f"persona split: train {len(p_train)}, test {len(p_test)}; held-out personas: {held_personas}")

# %% [markdown]
# ## The same contrast in two other prompt formats
#
# The seed's persona prompts do not share one layout: the teenager and pirate prompts have no example
# answers, and the assistant prompts are the longest. A direction read at the last prompt token can
# separate the two sides by layout alone. So every persona is also worded two more ways
# (`axes_lib/data/personas.json`, "layouts"): one **matched layout** (name and role, one sentence, the
# same six example questions answered in the persona's voice, lengths within 10 % of their mean) and
# **one sentence** (the format of Anthropic's role prompts). The model answers a few train queries
# (used only to choose layers) and the held-out queries in both wordings.

# %%
model, tokenizer = load_model(model_key)
seed_acts = contrastive_activations(paths, model=model, tokenizer=tokenizer)  # step 2's, from its cache
split = {"train_queries": sorted({responses[i]["query_id"] for i in train}),
         "holdout_queries": sorted({responses[i]["query_id"] for i in test})}
layout_queries = {"train": queries_in(split, "train", layout_train_queries),
                  "holdout": queries_in(split, "holdout", layout_holdout_queries)}
layout_rows = {}
for name, out_path in layouts.items():
    records = contrastive_prompts([*layout_queries["train"], *layout_queries["holdout"]], load_personas(layout=name),
                                  model_type=model_key, tokenizer=tokenizer)
    layout_rows[name] = sweep(model, tokenizer, records, [Setting("unsteered", None)], out_path,
                              layout_max_new_tokens, batch_size)
    prompt_of = {r["id"]: r["prompt"] for r in records}
    keep = [r for r in layout_rows[name] if r["response"].strip()]
    layout_rows[name] = {"rows": keep, "acts": extract_methods(
        model, tokenizer, [prompt_of[r["id"]] for r in keep], [r["response"] for r in keep], batch_size=32)}
    print(f"{name}: {len(keep)} answers ({len(layout_queries['train'])} train + {len(layout_queries['holdout'])} held-out queries)")


def layout_side(name, side):
    """Rows of a prompt-format set on one side of the query split, and their labels."""
    ids = {q.id for q in layout_queries[side]}
    rows = [j for j, r in enumerate(layout_rows[name]["rows"]) if r["query_id"] in ids]
    return rows, np.array([layout_rows[name]["rows"][j]["kind"] == "assistant" for j in rows])


def d_of(x, y):
    """Cohen's d per layer of the rows `r` of projections `x` (`[n, L]`) with labels `y`."""
    return lambda r: cohens_d(x[r][y[r]], x[r][~y[r]])


def layout_labels(name):
    return np.array([r["kind"] == "assistant" for r in layout_rows[name]["rows"]])


def transfer_auroc(method, name, side):
    """AUROC per layer of a fitted direction `[L, d]` on a prompt-format set (nothing refitted)."""
    rows, y = layout_side(name, side)
    acts = layout_rows[name]["acts"][method][rows]
    return lambda direction: separation(acts, y, direction)["auroc"]


# %% [markdown]
# ## Fit, choose a layer, score, and the controls
#
# Per method: the direction and threshold are fitted on the train queries; the **best layer** is the one
# with the highest min(validation AUROC, AUROC on the one-sentence prompts to train queries), so a layer
# that only reads the seed prompts' layout cannot win; the held-out queries are scored once. Around
# that number, the controls:
#
# * **label permutations** ({glue:text}`n_perm`), train labels shuffled row by row and refitted;
# * **every persona partition**: each of the ways to call three personas "assistant", fitted and scored
#   like the real split (the exact null for labels permuted by whole persona);
# * **random directions** ({glue:text}`n_random_separation` per layer, orthogonal to the axis);
# * **leave one persona out**, each of the nine (assistant ones too) held out of the fit in turn;
# * **two-way intervals**: the holdout d resampled by persona (within kind) *and* by query.

# %%
calibration = calibration_answers(responses, {responses[i]["query_id"] for i in train}, tokenizer, model_key)
evaluations, nulls, panels, control_panels, format_panels = {}, {}, [], {}, {}
who = np.array([r["persona"] for r in responses])
query = np.array([r["query_id"] for r in responses])
assistant_names = sorted({r["persona"] for r in responses if r["kind"] == "assistant"})
for method in ("last_token", "response_mean"):
    stored = seed_acts[method]
    acts, rows_of, layers = stored.acts, stored.positions, stored.layers
    is_assistant = np.array([responses[r]["kind"] == "assistant" for r in stored.rows])
    by_query = evaluate_layers(acts, is_assistant, rows_of(fit), rows_of(test), layers=layers, val_idx=rows_of(val),
                               n_boot=n_boot, seed=seed, transfer=transfer_auroc(method, "one_sentence", "train"))
    by_persona = evaluate_layers(acts, is_assistant, rows_of(p_train), rows_of(p_test), layers=layers,
                                 n_boot=n_boot, seed=seed)
    best = by_query["best_layer"]
    col = layers.index(best)
    nulls[method] = null_summary(shuffled_null(acts, is_assistant, rows_of(fit), rows_of(test), layers=layers,
                                               n_perm=n_perm, seed=seed), by_query["test"])
    w, q = who[stored.rows], query[stored.rows]
    partitions = partition_null(acts, w, assistant_names, rows_of(fit), rows_of(test), layers=layers)
    direction = load_direction(paths.direction(method))
    axis = torch.stack([direction[i] for i in layers])
    randoms = random_direction_null(acts, is_assistant, rows_of(test), axis, n=n_random_separation, seed=seed,
                                    layers=layers)
    lopo = leave_one_persona_out(acts, is_assistant, w, rows_of(fit), rows_of(test), layers=layers)
    # Two-way interval of the holdout d at every layer: personas resampled within kind, queries resampled.
    t = np.array(rows_of(test))
    x_test = project(acts[t], direction, layers=layers).double().numpy()
    y_test = is_assistant[t]
    kind = np.where(y_test, "assistant", "other")
    low, high = crossed_interval(d_of(x_test, y_test), w[t], q[t], strata=kind, n_boot=n_boot, seed=seed)
    # Prompt formats: the committed direction on held-out prompts in each wording, and a direction fitted
    # on the matched layout's own train queries.
    own = evaluate_layers(layout_rows["matched"]["acts"][method], layout_labels("matched"),
                          layout_side("matched", "train")[0], layout_side("matched", "holdout")[0],
                          n_boot=n_boot, seed=seed, layers=layers)
    transfer = {name: separation(layout_rows[name]["acts"][method][layout_side(name, "holdout")[0]],
                                 layout_side(name, "holdout")[1], axis) for name in layouts}
    evaluations[method] = {
        "model": model_key, "method": method, "best_layer": best,
        "query_split": by_query, "persona_split": by_persona, "shuffled_null": nulls[method],
        "partition_null": {k: v for k, v in partitions.items() if k not in ("cohens_d", "auroc", "partitions")},
        "random_directions": randoms, "leave_one_persona_out": lopo,
        "two_way_interval": {"cohens_d_low": low.tolist(), "cohens_d_high": high.tolist(),
                             "resampled": "personas within kind, and queries"},
        "prompt_formats": {"matched_own_fit": {k: own[k] for k in ("layers", "test", "best_layer", "n")},
                           "transfer": transfer},
    }
    control_panels[method] = {"layers": layers, "axis": by_query["test"]["auroc"], "controls": {
        "best other persona partition": partitions["rank_auroc"]["null_max"],
        "random directions, max": randoms["rank_auroc"]["null_max"],
        "shuffled labels, 95th pct": nulls[method]["rank_auroc"]["null_q95"],
        "leave one persona out": lopo["auroc"]}}
    format_panels[method] = {"layers": layers, "best_layer": best, "curves": {
        "seed prompts (fit on them)": by_query["test"]["auroc"],
        "matched layout, fitted on it": own["test"]["auroc"],
        "matched layout, seed direction": transfer["matched"]["auroc"],
        "one sentence, seed direction": transfer["one_sentence"]["auroc"]}}
    # Default capping settings for CappedModel: a band around the best layer, thresholds at a percentile
    # of the projections of every response token of the train assistant answers on the committed
    # direction (notebook 03, all train queries) -- the positions a cap acts on during generation.
    half = capping_band // 2
    band = [i for i in range(best - half, best - half + capping_band) if i in layers]
    thresholds = token_thresholds(model, tokenizer, *calibration, direction, band, [capping_percentile])[capping_percentile]
    evaluations[method]["capping"] = {
        "layers": band, "percentile": capping_percentile, "direction": method,
        "source": "projections of every response token of the assistant personas' train answers",
        "thresholds": {str(k): v for k, v in thresholds.items()}}
    write_json(paths.evaluation(method), evaluations[method])
    panels.append({"method": method, "layer": best, "threshold": by_query["train"]["threshold"][col],
                   "assistant": x_test[y_test, col], "other": x_test[~y_test, col]})


# %% [markdown]
# ## Loops and answers out of role
#
# The response-mean axis averages over the answer's tokens, so it can learn whatever else differs
# between the two sides' answers. Two such differences are visible in the text: the persona answers
# loop more often, and many persona answers drop the role (the 135M model often answers as an
# assistant whatever the prompt says). Below: the loop rate per persona, and the response-mean
# separation refitted (same splits, same rule) on the answers that do not loop, and on the answers
# that play their own side's role by the judge's voice classifier, cross-fitted by query so that no
# answer is scored by a classifier that saw its query.

# %%
loops = np.array([loop_coverage(r["response"]) > loop_threshold for r in responses])
adherence = role_adherence([r["response"] for r in responses], [r["kind"] == "assistant" for r in responses],
                           who, query)
in_role = np.array(adherence["in_role"])
loop_table = pd.DataFrame({"persona": who, "kind": [r["kind"] for r in responses], "loops": loops,
                           "in role": in_role}).groupby(["kind", "persona"]).mean().round(3) * 100
stored = seed_acts["response_mean"]
is_assistant = np.array([responses[r]["kind"] == "assistant" for r in stored.rows])
subsets = {"all answers": np.ones(len(responses), bool), "without loops": ~loops, "in role only": in_role}
filtered = {}
for label, keep in subsets.items():
    f_rows, t_rows, v_rows = (stored.positions([i for i in idx if keep[i]]) for idx in (fit, test, val))
    ev = evaluate_layers(stored.acts, is_assistant, f_rows, t_rows, layers=stored.layers, val_idx=v_rows,
                         n_boot=n_boot, seed=seed)
    b = ev["best"]
    filtered[label] = {"answers kept": int(keep.sum()), "best layer": ev["best_layer"], "holdout d": round(b["cohens_d"], 2),
                       "d 95% CI": f"[{b['cohens_d_low']:.2f}, {b['cohens_d_high']:.2f}]",
                       "holdout AUROC": round(b["auroc"], 3), "balanced accuracy": round(b["balanced_accuracy"], 3)}
write_json(paths.answer_filters,
           {"loop_threshold": loop_threshold,
            "loop_rate": {persona: float(v) for (_, persona), v in loop_table["loops"].items()},
            "role_adherence": {k: v for k, v in adherence.items() if k != "probability"}, "refits": filtered})
rate = {kind: float(loops[[r["kind"] == kind for r in responses]].mean()) for kind in ("assistant", "non_assistant")}
glue("loop_rate_assistant", round(100 * rate["assistant"]), display=False)
glue("loop_rate_other", round(100 * rate["non_assistant"]), display=False)
glue("in_role_kept", int(in_role.sum()), display=False)
glue("in_role_total", len(responses), display=False)
glue("in_role_other_kept", int(in_role[[r["kind"] != "assistant" for r in responses]].sum()), display=False)
glue("in_role_other_total", sum(r["kind"] != "assistant" for r in responses), display=False)
for label, key in (("without loops", "noloop"), ("in role only", "inrole"), ("all answers", "all")):
    glue(f"filtered_{key}_d", filtered[label]["holdout d"], display=False)
    glue(f"filtered_{key}_ci", Plain(filtered[label]["d 95% CI"]), display=False)
    glue(f"filtered_{key}_layer", filtered[label]["best layer"], display=False)
    glue(f"filtered_{key}_n", filtered[label]["answers kept"], display=False)
step.done()
loop_table

# %%
pd.DataFrame(filtered).T

# %% [markdown]
# ## Separation by layer
#
# Holdout Cohen's d per layer with its bootstrap CI (rows resampled); dotted lines mark the best layer,
# dashed lines the 95th percentile of the shuffled-label null.

# %%
fig = direction_discovery({m: e["query_split"] for m, e in evaluations.items()}, nulls)
save(fig, paths.figure("direction_discovery"))
fig

# %%
summary = []
for method, ev in evaluations.items():
    q_split = ev["query_split"]
    b, col = q_split["best"], q_split["layers"].index(ev["best_layer"])
    val = q_split["val"]
    old = min(range(len(q_split["layers"])), key=lambda c: (-val["balanced_accuracy"][c], -val["cohens_d_low"][c], c))
    part, rnd, lopo = ev["partition_null"], ev["random_directions"], ev["leave_one_persona_out"]
    two = ev["two_way_interval"]
    persona_acc = ev["persona_split"]["test"]["balanced_accuracy"][col]
    on_side = {p: v[col] for p, v in lopo["on_own_side"].items()}
    summary.append({
        "method": method, "best layer": ev["best_layer"], "holdout d": round(b["cohens_d"], 2),
        "d 95% CI (rows)": f"[{b['cohens_d_low']:.2f}, {b['cohens_d_high']:.2f}]",
        "d 95% CI (persona x query)": f"[{two['cohens_d_low'][col]:.2f}, {two['cohens_d_high'][col]:.2f}]",
        "accuracy": round(b["accuracy"], 3), "majority baseline": round(q_split["majority_baseline"], 3),
        "balanced accuracy": round(b["balanced_accuracy"], 3), "AUROC": round(b["auroc"], 3),
        "permutation p (d)": ev["shuffled_null"]["rank_cohens_d"]["p_value"][col],
        f"rank among {part['n_partitions']} partitions (d)": int(part["rank_cohens_d"]["rank"][col]),
        f"rank among {rnd['n']} random directions (AUROC)": int(rnd["rank_auroc"]["rank"][col]),
        "leave-one-persona-out AUROC": round(lopo["auroc"][col], 3)})
    g = {
        "best_layer": ev["best_layer"], "best_d": round(b["cohens_d"], 2), "best_d_low": round(b["cohens_d_low"], 2),
        "best_d_high": round(b["cohens_d_high"], 2), "two_way_low": round(two["cohens_d_low"][col], 2),
        "two_way_high": round(two["cohens_d_high"][col], 2), "best_acc": round(100 * b["accuracy"], 1),
        "best_bal_acc": round(100 * b["balanced_accuracy"], 1), "best_auroc": round(b["auroc"], 3),
        "majority": round(100 * q_split["majority_baseline"], 1), "persona_acc": round(100 * persona_acc, 1),
        "old_rule_layer": q_split["layers"][old], "max_d": round(max(q_split["test"]["cohens_d"]), 2),
        "perm_p": Plain(f"{ev['shuffled_null']['rank_cohens_d']['p_value'][col]:.3g}"),
        "perm_max_p": Plain(f"{ev['shuffled_null']['p_value_max_abs_cohens_d']:.3g}"),
        "null_max_d": round(float(np.max(ev["shuffled_null"]["max_abs_cohens_d"])), 2),
        "null_q95_d": round(ev["shuffled_null"]["rank_cohens_d"]["null_q95"][col], 2),
        "partition_rank_d": int(part["rank_cohens_d"]["rank"][col]),
        "partition_rank_auroc": int(part["rank_auroc"]["rank"][col]),
        "partition_best_other_d": round(part["rank_cohens_d"]["null_max"][col], 2),
        "partition_best_other": Plain(", ".join(p.replace("_", " ") for p in part["best_other"][col])),
        "partition_first_layers": sum(r == 1 for r in part["rank_cohens_d"]["rank"]),
        "partition_first_layers_auroc": sum(r == 1 for r in part["rank_auroc"]["rank"]),
        "random_rank": int(rnd["rank_auroc"]["rank"][col]), "random_max_auroc": round(rnd["rank_auroc"]["null_max"][col], 3),
        "random_max_d": round(rnd["rank_cohens_d"]["null_max"][col], 2),
        "lopo_auroc": round(lopo["auroc"][col], 3), "lopo_bal_acc": round(100 * lopo["balanced_accuracy"][col], 1),
        "lopo_worst": Plain(min(on_side, key=on_side.get).replace("_", " ")),
        "lopo_worst_share": round(100 * min(on_side.values())),
        "lopo_assistants": Plain(", ".join(f"{p.replace('_', ' ')} {100 * on_side[p]:.0f} %" for p in lopo["assistant_personas"])),
        "capping_layers": Plain.list(ev["capping"]["layers"]),
    }
    for key, value in g.items():
        glue(f"{method}_{key}", value, display=False)
glue("n_perm", n_perm, display=False)
glue("n_random_separation", n_random_separation, display=False)
glue("n_partitions", evaluations["last_token"]["partition_null"]["n_partitions"], display=False)
glue("held_out_personas", Plain.list(held_personas), display=False)
stronger = max(evaluations, key=lambda m: evaluations[m]["query_split"]["best"]["cohens_d"])
glue("stronger_method", Plain(stronger.replace("_", "-")), display=False)
pd.DataFrame(summary).set_index("method").T

# %% [markdown]
# ## The axis against its controls
#
# Holdout AUROC per layer of the axis, of the best of the other persona partitions, of the best random
# direction, of the 95th percentile of shuffled labels, and of leave-one-persona-out (each persona
# classified by a direction fitted without it).

# %%
fig = controls_by_layer(control_panels)
save(fig, paths.figure("controls_by_layer"))
fig

# %% [markdown]
# ## Prompt formats: the layout signal
#
# AUROC per layer on held-out queries: the seed prompts; the matched layout with a direction fitted on
# its own train queries; and the seed direction read on the matched-layout and one-sentence prompts.
# The dotted line is the layer chosen by the rule above.

# %%
fig = format_transfer(format_panels)
save(fig, paths.figure("format_transfer"))
lengths = {p.name: len(p.system) for p in load_personas()}
early = evaluations["last_token"]["query_split"]["layers"][1]
for method, panel in format_panels.items():
    c = panel["layers"].index(panel["best_layer"])
    for label, key in (("seed prompts (fit on them)", "seed"), ("matched layout, fitted on it", "matched_own"),
                       ("matched layout, seed direction", "matched_transfer"), ("one sentence, seed direction", "one_sentence")):
        glue(f"{method}_format_{key}_auroc", round(panel["curves"][label][c], 3), display=False)
        glue(f"{method}_format_{key}_auroc_early", round(panel["curves"][label][1], 3), display=False)
# How far the last-token projection at an early layer follows the system prompt's length, persona by persona.
stored = seed_acts["last_token"]
t = stored.positions(test)
proj_early = project(stored.acts[t][:, [1]], {early: load_direction(paths.direction("last_token"))[early]},
                     layers=[early])[:, 0].numpy()
by_persona = pd.DataFrame({"persona": who[[stored.rows[j] for j in t]], "projection": proj_early}).groupby("persona").mean()
by_persona["system prompt characters"] = [lengths[p] for p in by_persona.index]
rho = by_persona.corr(method="spearman").iloc[0, 1]
glue("early_layer", early, display=False)
glue("early_length_rho", round(float(rho), 2), display=False)
fig

# %%
by_persona.round(2)

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
