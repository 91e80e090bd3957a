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
# # Step 9 — Is it this axis? Random-direction controls
#
# Step 7 found settings where additive steering and capping along the axis make the persona answers
# more assistant-like. Would any direction do? Here each intervention is repeated along **random
# directions**, with exactly the procedure used for the axis, and judged the same way:
#
# - each random direction is Gaussian in d_model, drawn independently per layer, **orthogonalised to
#   the axis** at that layer (by default; see `orthogonal`) and scaled to the axis's norm ‖d_ℓ‖ there;
# - additive steering at step 7's sweet spot: the same layers and the same scale per layer (for a
#   scale in SD units, the SD of the random direction's own projections);
# - capping at step 7's capping setting: the same band, with thresholds at the same percentile of the
#   random direction's **own** per-token projections of the assistant personas' train answers;
# - the prompts: the held-out queries on which step 7 *reported* its sweet spots (not those it chose
#   them on), under the six non-assistant personas.
#
# Each setting's effect is the mean change in the judge's scores from the unsteered answer to the same
# prompt; the axis's effect is ranked among the random directions'.

# %% tags=["parameters"]
model_key = "smollm2"
method = "response_mean"  # the axis steered in steps 5-7
n_random = 20  # random directions per intervention
random_seed = 0
orthogonal = True  # random directions orthogonal to the axis at each layer (False: plain Gaussian draws)
additive_unit = "raw"  # which of step 7's additive sweet spots: "raw" (model units) or "sd" (projection SDs)
n_control_queries = 3  # report-half held-out queries used (None: all of them), each under the six personas
max_new_tokens = 48
batch_size = 256  # rows per generate batch: several settings at once
judge_kind = "auto"  # auto: the judge of step 7; or "offline" / "claude"
claude_model = None  # None: the model step 7's Claude judge used
n_boot = 1000
artifacts_dir = "artifacts"
resume = True  # False: regenerate and rejudge every answer; True reuses answers whose inputs are unchanged

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from myst_nb import glue

from axes_lib.activations import contrastive_activations
from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.calibration import calibration_answers, projection_sd, token_thresholds_many
from axes_lib.directions import load_direction, random_directions
from axes_lib.figures import Plain, control_strips, save
from axes_lib.interventions import Add, Cap
from axes_lib.io import read_json, read_jsonl, write_json
from axes_lib.judge import OfflineJudge, default_judge, judge_rows
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas, load_queries
from axes_lib.specificity import LOOP_COVERAGE, paired_effects, rank_among
from axes_lib.splits import indices_in
from axes_lib.sweeps import Setting, sweep

# Parameters are checked before anything is loaded.
model_name(model_key)
if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
    raise ValueError(f"n_random must be a positive int, got {n_random!r}")
if isinstance(random_seed, bool) or not isinstance(random_seed, int):
    raise ValueError(f"random_seed must be an int, got {random_seed!r}")
if additive_unit not in ("raw", "sd"):
    raise ValueError(f"additive_unit must be 'raw' or 'sd', got {additive_unit!r}")
if n_control_queries is not None and (not isinstance(n_control_queries, int) or n_control_queries < 1):
    raise ValueError(f"n_control_queries must be a positive int or None, got {n_control_queries!r}")
if judge_kind not in ("auto", "offline", "claude"):
    raise ValueError(f"judge_kind must be 'auto', 'offline' or 'claude', got {judge_kind!r}")
paths = Artifacts(artifacts_dir, model_key)
for path, step_no in ((paths.judge_evaluation, "07"), (paths.capping_summary(method), "06"), (paths.sweep("additive"), "05")):
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook {step_no} with model_key={model_key!r} first")
evaluation = read_json(paths.judge_evaluation)
direction = load_direction(paths.direction(method))
split = read_json(paths.split)
randoms = random_directions(direction, n_random, random_seed, orthogonal=orthogonal)
names = ["axis"] + [f"random{k:02d}" for k in range(n_random)]
by_name = dict(zip(names, [direction, *randoms]))

# Step 7's choices, made on the "choose" half of the held-out queries; we test on the other half.
add_pick = evaluation["additive"]["sweet_spot_raw" if additive_unit == "raw" else "sweet_spot_sd"]
cap_pick = evaluation["capping"]["sweet_spot"]
if add_pick is None or not add_pick["scale"]:
    add_pick = None  # step 7 chose no setting, or the unsteered one: there is no additive effect to test
    print("additive: step 7 chose no steered setting, so there is nothing to control for")
if cap_pick is None or cap_pick["band"] == "none":
    cap_pick = None
    print("capping: step 7 chose no capped setting, so there is nothing to control for")
report_ids = set(evaluation["additive"]["queries_report"])
queries = [q for q in load_queries() if q.id in report_ids][:n_control_queries]
if not queries:
    raise ValueError(f"step 7 reported on no held-out queries this step can use ({sorted(report_ids)})")
if add_pick:
    add_layers = next(r["layers"] for r in read_jsonl(paths.sweep("additive")) if r["setting"] == add_pick["setting"])
    if additive_unit == "sd":  # each direction's own projection SD over the train prompts (step 5's unit)
        train = indices_in(read_jsonl(paths.responses), split, "train")
        acts = contrastive_activations(paths)[method].at(train, add_layers)
if cap_pick:
    cap_band = read_json(paths.capping_summary(method))["bands"][cap_pick["band"]]
    cap_q = float(cap_pick["percentile"])


def add_scale(d):
    """The additive scale per layer for direction `d`: step 7's raw scale, or its SD multiple in `d`'s own SDs."""
    if additive_unit == "raw":
        return dict.fromkeys(add_layers, float(add_pick["scale"]))
    sd = projection_sd(acts, d, add_layers)
    return {i: float(add_pick["scale_sd"]) * sd[i] for i in add_layers}


pd.DataFrame([
    {"intervention": "additive", "step 7's choice": add_pick["setting"] if add_pick else "none",
     "layers": ", ".join(map(str, add_layers)) if add_pick else "",
     "strength": f"scale {add_pick['scale']:g}" if add_pick and additive_unit == "raw" else
     (f"{add_pick['scale_sd']:g} SD of each direction's projections" if add_pick else "")},
    {"intervention": "capping", "step 7's choice": cap_pick["setting"] if cap_pick else "none",
     "layers": ", ".join(map(str, cap_band)) if cap_pick else "",
     "strength": f"p{cap_q:g} of each direction's own per-token projections" if cap_pick else ""},
]).set_index("intervention")

# %% [markdown]
# ## Generating under every direction
#
# Capping thresholds for the axis and every random direction come from one teacher-forced pass over the
# assistant personas' train answers (the recipe of step 6). All settings run as one resumable sweep.

# %%
out_path = paths.sweep("specificity")
step = Step(manifest_of(out_path), dict(
    model_key=model_key, method=method, n_random=n_random, random_seed=random_seed, orthogonal=orthogonal,
    additive_unit=additive_unit, n_control_queries=n_control_queries, max_new_tokens=max_new_tokens,
    additive=add_pick and add_pick["setting"], capping=cap_pick and cap_pick["setting"]),
    outputs=[out_path], resume=resume)
model, tokenizer = load_model(model_key)
records = contrastive_prompts(queries, load_personas("non_assistant"), model_type=model_key, tokenizer=tokenizer)

settings = [Setting("unsteered", None, {"direction": "none", "draw": None})]
thresholds = {}
if cap_pick:
    started = step.seconds
    calibration = calibration_answers(read_jsonl(paths.responses), split["train_queries"], tokenizer, model_key)
    per_direction = token_thresholds_many(model, tokenizer, *calibration, list(by_name.values()), cap_band, [cap_q],
                                          batch_size=batch_size)
    thresholds = {name: t[cap_q] for name, t in zip(names, per_direction)}
    print(f"thresholds for {len(names)} directions in one pass: {step.seconds - started:.1f} s")
for k, (name, d) in enumerate(by_name.items()):
    info = {"direction": "axis" if name == "axis" else "random", "draw": None if name == "axis" else k - 1}
    if add_pick:
        scale = add_scale(d)
        settings.append(Setting(f"{name}:add", Add(d, add_layers, scale=scale),
                                {**info, "scale": float(np.mean(list(scale.values()))), "unit": additive_unit}))
    if cap_pick:
        tau = thresholds[name]
        settings.append(Setting(f"{name}:cap", Cap(d, cap_band, threshold=tau),
                                {**info, "band": cap_pick["band"], "percentile": cap_q,
                                 "thresholds": {str(i): v for i, v in tau.items()}}))
started = step.seconds
rows = sweep(model, tokenizer, records, settings, out_path, max_new_tokens, batch_size)
generation_seconds = step.seconds - started
print(f"{len(rows)} answers ({len(settings)} settings x {len(records)} prompts); sweep {generation_seconds:.0f} s")

# %% [markdown]
# ## Judging them
#
# The judge of step 7 scores every answer (its scores are kept in a store of this step's own, so steps
# never write one file at once). Per direction and intervention: the mean change from the unsteered
# answer to the same prompt, with a 95 % interval that resamples queries for the axis, and the share of
# answers that loop (more than 30 % of their words inside repeated material).

# %%
use_claude = evaluation["judge"].startswith("claude:") if judge_kind == "auto" else judge_kind == "claude"
if use_claude:
    claude = claude_model or evaluation["judge"].split(":")[1]
    judge = default_judge(model_key, paths.root, offline=False, model=claude)
else:
    judge = OfflineJudge(model_key, paths.root, model=model, tokenizer=tokenizer, batch_size=32)  # as in step 7
if judge.id != evaluation["judge"]:
    print(f"note: step 7 was judged by {evaluation['judge']}, this step by {judge.id}")
store = paths.judgements("claude" if use_claude else "offline", sweep="specificity")
if not resume:
    store.unlink(missing_ok=True)
started = step.seconds
judged = judge_rows(judge, rows, store, chunk_size=len(rows) if use_claude else 128)
judge_seconds = step.seconds - started
if all(r["assistant_likeness"] is None for r in judged):
    raise RuntimeError(f"{judge.id} scored none of the {len(judged)} answers; first error: {judged[0]['judge_error']}")
effects = paired_effects(judged, "unsteered", n_boot=n_boot)
print(f"judged by {judge.id} in {judge_seconds:.0f} s")

SCALE_SHORT = {"assistant_likeness": "al", "coherence": "coh"}
modes = {m: label for m, label, pick in (("add", "additive steering", add_pick), ("cap", "capping", cap_pick)) if pick}
ranks = {}
table = []
for mode, label in modes.items():
    axis = effects[f"axis:{mode}"]
    controls = [effects[f"{n}:{mode}"] for n in names[1:]]
    ranks[mode] = {scale: rank_among(axis[scale]["mean"], [c[scale]["mean"] for c in controls])
                   for scale in SCALE_SHORT}
    ranks[mode]["loop_change"] = rank_among(axis["loop_change"], [c["loop_change"] for c in controls])
    for name in names:
        e = effects[f"{name}:{mode}"]
        table.append({"intervention": label, "direction": name,
                      **{f"Δ {s.replace('_', '-')}": e[s]["mean"] for s in SCALE_SHORT},
                      "loops (%)": 100 * e["loop_rate"]})
pd.set_option("display.max_rows", 100)
summary_table = pd.DataFrame(table).set_index(["intervention", "direction"]).round(2)
summary_table

# %% [markdown]
# ## The axis among the random directions
#
# Each dot is one random direction's effect; the red diamond is the axis's, with its 95 % interval over
# queries. The dotted line is no change.

# %%
grid = []
for mode, label in modes.items():
    axis = effects[f"axis:{mode}"]
    controls = [effects[f"{n}:{mode}"] for n in names[1:]]
    grid.append([{"title": f"{label}: Δ {s.replace('_', '-')}", "xlabel": "change from unsteered (judge points)",
                  "controls": [c[s]["mean"] for c in controls], "axis": axis[s]["mean"],
                  "axis_ci": (axis[s]["low"], axis[s]["high"])} for s in SCALE_SHORT]
                + [{"title": f"{label}: Δ loop rate", "xlabel": "change in the share of looping answers",
                    "controls": [c["loop_change"] for c in controls], "axis": axis["loop_change"]}])
if grid:
    fig = control_strips(grid, title=f"The axis and {n_random} random directions, judged by {judge.id}")
    save(fig, paths.figure("specificity"))
else:
    fig = "step 7 chose no steered or capped setting: nothing to compare"
fig

# %%
NA = Plain("n/a")


def verdict(rank):
    n = rank["n_controls"]
    if rank["n_at_or_above"] == 0:
        return Plain(f"above all {n} random directions")
    if rank["n_above"] == n:
        return Plain(f"below all {n} random directions")
    return Plain(f"matched or exceeded by {rank['n_at_or_above']} of the {n} random directions")


def layers_text(layers):
    return Plain(f"layer{'s' if len(layers) > 1 else ''} {Plain.list(layers)}")


glue("spec_n_random", n_random, display=False)
glue("spec_min_p", round(1 / (n_random + 1), 3), display=False)
glue("spec_orthogonal", Plain("orthogonalised to the axis at each layer" if orthogonal else
                              "not orthogonalised to the axis"), display=False)
glue("spec_n_prompts", len(records), display=False)
glue("spec_n_queries", Plain(f"{len(queries)} {'query' if len(queries) == 1 else 'queries'}"), display=False)
glue("spec_n_settings", len(settings), display=False)
glue("spec_n_answers", len(rows), display=False)
glue("spec_judge_id", Plain(judge.id), display=False)
glue("spec_base_loops", round(100 * effects["unsteered"]["loop_rate"]), display=False)
glue("spec_add_setting", Plain(f"scale {add_pick['scale']:g} at {layers_text(add_layers)}"
                               if add_pick and additive_unit == "raw" else
                               f"{add_pick['scale_sd']:g} projection SDs at {layers_text(add_layers)}"
                               if add_pick else "none (step 7 chose no additive setting)"), display=False)
glue("spec_cap_setting", Plain(f"band '{cap_pick['band']}' (layers {Plain.list(cap_band)}) at the "
                               f"{cap_q:g}th percentile" if cap_pick else "none (step 7 chose no capping setting)"),
     display=False)
for mode in ("add", "cap"):
    for scale, short in SCALE_SHORT.items():
        key = f"spec_{mode}_{short}"
        if mode not in modes:
            for suffix in ("", "_ci", "_max", "_median", "_verdict", "_p"):
                glue(key + suffix, NA, display=False)
            continue
        axis, rank = effects[f"axis:{mode}"][scale], ranks[mode][scale]
        glue(key, round(axis["mean"], 2), display=False)
        glue(f"{key}_ci", Plain(f"{axis['low']:.2f} to {axis['high']:.2f}"), display=False)
        glue(f"{key}_max", round(rank["max"], 2), display=False)
        glue(f"{key}_median", round(rank["median"], 2), display=False)
        glue(f"{key}_verdict", verdict(rank), display=False)
        glue(f"{key}_p", round(rank["p"], 3), display=False)
    if mode in modes:
        loops = [effects[f"{n}:{mode}"]["loop_rate"] for n in names[1:]]
        glue(f"spec_{mode}_axis_loops", round(100 * effects[f"axis:{mode}"]["loop_rate"]), display=False)
        glue(f"spec_{mode}_random_loops", round(100 * float(np.median(loops))), display=False)
        glue(f"spec_{mode}_random_loops_max", round(100 * max(loops)), display=False)
    else:
        for suffix in ("axis_loops", "random_loops", "random_loops_max"):
            glue(f"spec_{mode}_{suffix}", NA, display=False)

write_json(paths.specificity(method), {
    "judge": judge.id, "step7_judge": evaluation["judge"], "orthogonal": orthogonal, "n_random": n_random,
    "random_seed": random_seed, "additive_unit": additive_unit, "queries": [q.id for q in queries],
    "additive": add_pick and {"setting": add_pick["setting"], "layers": add_layers},
    "capping": cap_pick and {"setting": cap_pick["setting"], "band": cap_band, "percentile": cap_q,
                             "thresholds": {n: {str(i): v for i, v in t.items()} for n, t in thresholds.items()}},
    "loop_coverage": LOOP_COVERAGE, "effects": effects, "ranks": ranks})
step.done(n_answers=len(rows), generation_seconds=round(generation_seconds, 1), judge_seconds=round(judge_seconds, 1))
glue("spec_seconds", round(step.seconds), display=False)
print(f"step took {step.seconds:.0f} s (generation {generation_seconds:.0f} s, judging {judge_seconds:.0f} s)")
