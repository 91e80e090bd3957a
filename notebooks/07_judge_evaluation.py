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
# # Step 7 — Judging the steered answers
#
# Steps 5 and 6 wrote the model's answers to the held-out queries under the six non-assistant
# personas, at every additive scale and capping threshold, plus the unsteered answers and the
# assistant personas' own answers. Here a judge scores each answer on the seed's two 0–10 scales:
# **assistant-likeness** ("how much does this sound like a helpful AI assistant?") and **coherence**
# ("how well-formed and logical is the response?"). The *sweet spot* of a sweep is the strength with the
# highest mean assistant-likeness whose mean coherence stays within a stated margin of the unsteered
# answers'.
#
# The judge is Claude (`axes_lib.judge.ClaudeJudge`) when an Anthropic API key is configured, and
# otherwise the **offline judge** (`axes_lib.offline_judge`), so the book builds without network:
# assistant-likeness from a TF-IDF classifier trained on step 1's contrastive answers (train queries
# only), coherence from the unsteered model's per-token log-likelihood of the answer and its
# repetition statistics. Before trusting it, we validate it on the held-out queries.

# %% tags=["parameters"]
model_key = "smollm2"
judge_kind = "auto"  # auto: Claude when an API key is configured, else offline; or "offline" / "claude"
claude_model = None  # None: the default of axes_lib.judge
coherence_margin = 1.0  # sweet spot: mean coherence at most this many points below the unsteered answers
n_validation = 60  # held-out answers, each also broken every way steering breaks text, for the synthetic check
n_boot = 1000
batch_size = 32
artifacts_dir = "artifacts"
resume = True  # False: judge everything again (Claude's own cache still answers without new requests)

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts, Step
from axes_lib.figures import Plain, gold_scatter, judged_curves, save
from axes_lib.io import read_jsonl, write_json
from axes_lib.judge import (
    BROKEN_KINDS,
    Item,
    OfflineJudge,
    agreement,
    available_claude_key,
    default_judge,
    judge_rows,
    means,
    query_halves,
    query_mean,
    scores_of,
    summarise,
    sweet_spot,
    unique_texts,
)
from axes_lib.judge.repetition import loop_coverage
from axes_lib.models import model_name
from axes_lib.sweeps import fraction_fired

model_name(model_key)
if judge_kind not in ("auto", "offline", "claude"):
    raise ValueError(f"judge_kind must be 'auto', 'offline' or 'claude', got {judge_kind!r}")
if coherence_margin < 0:
    raise ValueError(f"coherence_margin must be >= 0, got {coherence_margin}")
paths = Artifacts(artifacts_dir, model_key)
root = paths.root
step = Step(root / "evaluations" / f"judge_{model_key}.manifest.json", dict(
    model_key=model_key, judge_kind=judge_kind, claude_model=claude_model, coherence_margin=coherence_margin,
    n_validation=n_validation, n_boot=n_boot))
answers = {}
for name in ("additive", "additive_assistant", "capping", "capping_assistant"):
    path = paths.sweep(name.removesuffix("_assistant"), assistant=name.endswith("_assistant"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook {'05' if 'add' in name else '06'} with "
                                f"model_key={model_key!r} first")
    answers[name] = [{**r, "source": name} for r in read_jsonl(path)]

offline = OfflineJudge(model_key, root, batch_size=batch_size)  # validated below
is_claude = judge_kind == "claude" or (judge_kind == "auto" and available_claude_key())
if is_claude:
    judge = default_judge(model_key, root, offline=False, **({} if claude_model is None else {"model": claude_model}))
else:
    judge = offline
print(f"judge: {judge.id}; answers: " + ", ".join(f"{k} {len(v)}" for k, v in answers.items()))

# %% [markdown]
# ## Is the offline judge any good?
#
# A judge is a measuring instrument, so it is checked first on the kind of data it will measure, with
# its ways of going wrong. The **gold set** (`artifacts/gold/`, its README is the data sheet) holds
# real answers of the sweeps and of step 1, labelled on the rubric blind to the setting that wrote
# them, with loops, drift and off-topic answers well represented. The offline judge fits its two
# linear maps on the answers to half of the gold queries; everything below is on the **other half**.
# For each scale: the Spearman correlation with the labels, and the AUROC of the clearly good
# (label ≥ 7) over the clearly bad (≤ 3), each with a 95 % interval that resamples queries. The
# previous offline judge (v2) scored the same answers; its numbers stand beside.

# %%
baselines = {}
old_path = offline.gold_dir / f"{offline.gold.name}_gold_judge_offline-v2.jsonl"
if old_path.is_file():
    baselines["offline v2 (previous)"] = {r["id"]: r for r in read_jsonl(old_path)}
if is_claude:  # Claude is validated by the same code on the same answers
    gold_rows = [offline.gold.rows[i] for i in offline.gold.test]
    claude_scores = judge.score([Item(r["query"], r["response"]) for r in gold_rows])
    baselines[judge.id] = {r["id"]: {"assistant_likeness": s.assistant_likeness, "coherence": s.coherence}
                           for r, s in zip(gold_rows, claude_scores) if s.ok}
validation = offline.validation(n_synthetic=n_validation, n_boot=n_boot, baselines=baselines)
gold_table = pd.DataFrame([
    {"judge": name, "scale": scale.replace("_", "-"), "n": v["n"],
     "Spearman": f"{v['spearman']:.2f} [{v['spearman_ci95'][0]:.2f}, {v['spearman_ci95'][1]:.2f}]",
     "AUROC ≥7 vs ≤3": f"{v['auroc']:.2f} [{v['auroc_ci95'][0]:.2f}, {v['auroc_ci95'][1]:.2f}]"}
    for name, per_scale in validation["gold"].items() for scale, v in per_scale.items()]).set_index(["judge", "scale"])
mine = validation["gold"][offline.id]
for scale, short in (("assistant_likeness", "al"), ("coherence", "coh")):
    glue(f"gold_{short}_spearman", round(mine[scale]["spearman"], 2), display=False)
    glue(f"gold_{short}_spearman_lo", round(mine[scale]["spearman_ci95"][0], 2), display=False)
    glue(f"gold_{short}_spearman_hi", round(mine[scale]["spearman_ci95"][1], 2), display=False)
    glue(f"gold_{short}_auroc", round(mine[scale]["auroc"], 2), display=False)
    glue(f"gold_{short}_auroc_lo", round(mine[scale]["auroc_ci95"][0], 2), display=False)
    glue(f"gold_{short}_auroc_hi", round(mine[scale]["auroc_ci95"][1], 2), display=False)
    if "offline v2 (previous)" in validation["gold"]:
        old = validation["gold"]["offline v2 (previous)"][scale]
        glue(f"gold_{short}_v2_spearman", round(old["spearman"], 2), display=False)
        glue(f"gold_{short}_v2_auroc", round(old["auroc"], 2), display=False)
agreement_ab = validation["self_agreement"]
glue("offline_judge_id", Plain(offline.id), display=False)
glue("gold_n", len(offline.gold.rows), display=False)
glue("gold_n_test", validation["n_gold_test"], display=False)
glue("gold_n_fit", validation["n_gold_fit"], display=False)
glue("gold_recheck_n", agreement_ab["coherence"]["n"], display=False)
glue("gold_recheck_al", round(agreement_ab["assistant_likeness"]["spearman"], 2), display=False)
glue("gold_recheck_coh", round(agreement_ab["coherence"]["spearman"], 2), display=False)
glue("gold_recheck_within1", round(100 * agreement_ab["coherence"]["within_one"]), display=False)
holdout_al = validation["assistant_likeness_holdout"]
glue("offline_auroc", round(holdout_al["auroc"], 3), display=False)
glue("offline_auroc_lo", round(holdout_al["auroc_ci95"][0], 3), display=False)
glue("offline_auroc_hi", round(holdout_al["auroc_ci95"][1], 3), display=False)
glue("offline_n_holdout", holdout_al["n"], display=False)
gold_table

# %% [markdown]
# Judge against label, on the test half (each dot one answer; jitter added to the integer labels):

# %%
test_rows = [offline.gold.rows[i] for i in offline.gold.test]
test_scores = offline.score([Item(r["query"], r["response"]) for r in test_rows])
fig = gold_scatter(test_rows, test_scores, title=f"{offline.id} against the gold labels (test half)")
save(fig, paths.figure("judge_gold"))
fig

# %% [markdown]
# **Each way steering breaks text.** Held-out assistant answers, intact and broken each way the sweeps
# break answers: looped on one of their phrases, a word stuttered, drifting into an answer to another
# query, replaced by an answer to another query (fluent but off-topic), and random tokens. Mean
# coherence, and the AUROC of intact over broken:

# %%
synthetic = validation["synthetic"]
for kind in ("normal", *BROKEN_KINDS):
    glue(f"synthetic_{kind}", round(synthetic["mean"].get(kind, float("nan")), 1), display=False)
glue("synthetic_n", synthetic["n"], display=False)
glue("synthetic_min_auroc", round(min(synthetic["auroc_normal_vs"].values(), default=float("nan")), 2), display=False)
pd.DataFrame({"mean coherence": synthetic["mean"],
              "AUROC intact vs this": {"normal": None, **synthetic["auroc_normal_vs"]}}).round(2)

# %% [markdown]
# **Three examples per failure kind** (gold test half): the label, then the judge's score.

# %%
pd.set_option("display.max_colwidth", 160)
examples = []
for kind in ("none", "loop", "stutter", "drift", "off_topic", "fragment"):
    picked = [(r, s) for r, s in zip(test_rows, test_scores) if r["failure"] == kind][:3]
    examples += [{"failure": kind, "answer": r["response"][:160], "gold coherence": r["coherence"],
                  "judge coherence": round(s.coherence, 1), "gold assistant-likeness": r["assistant_likeness"],
                  "judge assistant-likeness": round(s.assistant_likeness, 1)} for r, s in picked]
pd.DataFrame(examples).set_index("failure")

# %% [markdown]
# **Mean coherence by failure** on the gold test half: the judge beside the labels.

# %%
groups = {"off_topic": ("off_topic", "drift"), "loop": ("loop", "stutter"), "none": ("none",)}
by_failure = {}
for name, kinds in groups.items():
    pairs = [(r["coherence"], s.coherence) for r, s in zip(test_rows, test_scores) if r["failure"] in kinds]
    by_failure[name] = {"n": len(pairs), "gold": float(np.mean([g for g, _ in pairs])) if pairs else float("nan"),
                        "judge": float(np.mean([j for _, j in pairs])) if pairs else float("nan")}
    for key in ("gold", "judge"):
        glue(f"test_{name}_{key}_coh", round(by_failure[name][key], 1), display=False)
    glue(f"test_{name}_n", by_failure[name]["n"], display=False)
pd.DataFrame(by_failure).T.round(2)

# %% [markdown]
# ## Judging the sweeps
#
# Every answer of steps 5 and 6 is judged once; judgements are stored in
# `artifacts/evaluations/judge_{model}_{judge}.jsonl` and reused by later runs.

# %%
store = paths.judgements("claude" if is_claude else "offline")
if not resume:
    store.unlink(missing_ok=True)
every = [r for rows in answers.values() for r in rows]
judge_started = step.seconds
# Claude gets every answer in one call, so that a large sweep goes through the Message Batches API (its
# own cache keeps each finished judgement); the offline judge works in chunks, each stored as it ends.
judged = judge_rows(judge, every, store, chunk_size=len(every) if is_claude else 128)
judge_seconds = step.seconds - judge_started
frame = pd.DataFrame(judged)
n_missing = int(frame["assistant_likeness"].isna().sum())
if n_missing == len(frame):
    raise RuntimeError(f"{judge.id} scored none of the {len(frame)} answers; first error: {judged[0]['judge_error']}")
glue("judge_id", Plain(judge.id), display=False)
glue("judge_name", Plain("Claude (" + judge.id.split(":")[1] + ")" if is_claude else "the offline judge"), display=False)
glue("n_judged", len(frame), display=False)
glue("n_missing", n_missing, display=False)
print(f"{len(frame)} answers judged by {judge.id} in {judge_seconds:.0f} s; {n_missing} without a score")
frame.groupby(["source", "setting"], sort=False)[["assistant_likeness", "coherence"]].mean().round(2)

# %% [markdown]
# ## Additive steering
#
# Mean scores with 95 % bootstrap intervals against the scale, in the model's units (left) and in
# projection-SD units (right). Dotted lines: the unsteered persona answers; dashed: the assistant
# personas' answers. The star marks the sweet spot.

# %%
additive = [r for r in judged if r["source"] == "additive"]
reference = means([r for r in judged if r["source"] == "additive_assistant"])
add_summary = summarise(additive, ["setting", "unit", "scale", "scale_sd"], n_boot=n_boot)
base = next(s for s in add_summary if s["unit"] == "raw" and s["scale"] == 0)
baseline = {s: base[f"{s}_mean"] for s in ("assistant_likeness", "coherence")}
raw = [s for s in add_summary if s["unit"] == "raw"]
sd_rows = [base] + [s for s in add_summary if s["unit"] == "sd"]  # the unsteered answers sit at 0 SD

# The sweet spot is chosen on half of the held-out queries and reported on the other half.
choose_q, report_q = query_halves(additive)


def honest_sweet_spot(rows, by, x, keep):
    """Choose on the answers to `choose_q`, report the choice on those to `report_q` (intervals over queries)."""
    chosen_rows = [r for r in rows if r["query_id"] in choose_q]
    summary = [s for s in summarise(chosen_rows, by, n_boot=n_boot) if keep(s)]
    base_ = next(s for s in summary if s[x] == 0)
    pick = sweet_spot(summary, base_["coherence_mean"], coherence_margin, x=x)
    held = [r for r in rows if r["query_id"] in report_q and r["setting"] == pick["setting"]]
    unsteered = [r for r in rows if r["query_id"] in report_q and r["setting"] == base_["setting"]]
    return pick, {scale: query_mean(held, scale, n_boot) for scale in ("assistant_likeness", "coherence")}, {
        scale: query_mean(unsteered, scale, n_boot) for scale in ("assistant_likeness", "coherence")}


sweet_raw, sweet_raw_report, base_report = honest_sweet_spot(additive, ["setting", "unit", "scale", "scale_sd"], "scale",
                                                             lambda s: s["unit"] == "raw")
sweet_sd, sweet_sd_report, _ = honest_sweet_spot(additive, ["setting", "unit", "scale", "scale_sd"], "scale_sd",
                                                 lambda s: s["unit"] == "sd" or s["setting"] == base["setting"])
fig = judged_curves([
    {"title": "scale in model units", "xlabel": "scale", "x": "scale", "rows": raw, "xscale": "symlog",
     "baseline": baseline, "reference": reference, "sweet_spot": sweet_raw and sweet_raw["scale"]},
    {"title": "scale in projection SDs", "xlabel": "scale (SD of projections)", "x": "scale_sd", "rows": sd_rows,
     "baseline": baseline, "reference": reference, "sweet_spot": sweet_sd and sweet_sd["scale_sd"]},
], title=f"Additive steering, judged by {judge.id}")
save(fig, paths.figure("steering_evaluation"))
largest = max(raw, key=lambda s: s["scale"])
edge = sweet_raw["scale"] == largest["scale"]
glue("add_baseline_al", round(baseline["assistant_likeness"], 1), display=False)
glue("add_baseline_coh", round(baseline["coherence"], 1), display=False)
glue("assistant_al", round(reference["assistant_likeness"], 1) if reference else float("nan"), display=False)
glue("assistant_coh", round(reference["coherence"], 1) if reference else float("nan"), display=False)
glue("add_n_choose", len(choose_q), display=False)
glue("add_n_report", len(report_q), display=False)
for name, pick, report in (("add_sweet", sweet_raw, sweet_raw_report), ("add_sweet_sd", sweet_sd, sweet_sd_report)):
    glue(name + ("_scale" if name == "add_sweet" else ""), Plain(f"{pick['scale'] if name == 'add_sweet' else pick['scale_sd']:g}"),
         display=False)
    for scale, short in (("assistant_likeness", "al"), ("coherence", "coh")):
        glue(f"{name}_{short}", round(report[scale]["mean"], 1), display=False)
        glue(f"{name}_{short}_ci", Plain(f"{report[scale]['low']:.1f}–{report[scale]['high']:.1f}"), display=False)
for scale, short in (("assistant_likeness", "al"), ("coherence", "coh")):
    glue(f"add_report_base_{short}", round(base_report[scale]["mean"], 1), display=False)
    glue(f"add_report_base_{short}_ci", Plain(f"{base_report[scale]['low']:.1f}–{base_report[scale]['high']:.1f}"),
         display=False)
glue("add_sweet_at_edge", Plain("is the largest scale of the grid: the optimum may lie beyond it" if edge else
                                "lies inside the grid, below its largest scale"), display=False)
glue("add_largest_scale", Plain(f"{largest['scale']:g}"), display=False)
glue("add_largest_al", round(largest["assistant_likeness_mean"], 1), display=False)
glue("add_largest_coh", round(largest["coherence_mean"], 1), display=False)
glue("coherence_margin", Plain(f"{coherence_margin:g}"), display=False)

# Loops and off-topic answers among the sweeps' answers: what the judge gives them.
loops = [r for r in judged if r["source"] in ("additive", "capping") and loop_coverage(r["response"]) > 0.3]
gold_by_text = {(g["query"], g["response"]): g for g in offline.gold.rows}
off_topic = [r for r in judged if r["source"] in ("additive", "capping")
             and gold_by_text.get((r["query"], r["response"]), {}).get("failure") in ("off_topic", "drift")]
for name, rows_ in (("loops", loops), ("off_topic", off_topic)):
    glue(f"judged_{name}_n", len(rows_), display=False)
    glue(f"judged_{name}_coh", round(float(np.mean([r["coherence"] for r in rows_])), 1) if rows_ else float("nan"),
         display=False)
fig

# %% [markdown]
# Per setting, with the share of answers that loop (more than 30 % of their words repeat earlier
# material), since steering can buy assistant-likeness with broken text:

# %%
loop_share = {s: float(np.mean([loop_coverage(r["response"]) > 0.3 for r in additive if r["setting"] == s]))
              for s in {r["setting"] for r in additive}}
glue("add_loops_base", round(100 * loop_share[base["setting"]]), display=False)
glue("add_loops_sweet", round(100 * loop_share[sweet_raw["setting"]]), display=False)
glue("add_loops_largest", round(100 * loop_share[largest["setting"]]), display=False)
table = pd.DataFrame(add_summary)
table["loops %"] = [round(100 * loop_share[s]) for s in table["setting"]]
table.drop(columns=["setting"]).round(2)

# %% [markdown]
# ## Activation capping
#
# One panel per layer band (the bands are disjoint), against the percentile that sets the threshold (a
# higher percentile lifts more positions), for the cap on all positions. Lines as above; the sweet spot
# is chosen over every band, percentile and variant (all positions or response positions only).

# %%
capping = [{**r, "positions": r.get("positions") or "all"} for r in judged if r["source"] == "capping"]
cap_summary = summarise(capping, ["setting", "band", "percentile", "positions"], n_boot=n_boot)
uncapped = next(s for s in cap_summary if s["band"] == "none")
cap_baseline = {s: uncapped[f"{s}_mean"] for s in ("assistant_likeness", "coherence")}
cap_rows = [{**r, "percentile": r["percentile"] if r["percentile"] is not None else 0.0} for r in capping]
cap_sweet, cap_sweet_report, cap_base_report = honest_sweet_spot(cap_rows, ["setting", "band", "percentile", "positions"],
                                                                 "percentile", lambda s: True)
bands = list(dict.fromkeys(s["band"] for s in cap_summary if s["band"] != "none"))
cap_reference_rows = [r for r in judged if r["source"] == "capping_assistant" and r["setting"] == "uncapped"]
cap_reference = means(cap_reference_rows)
panels = []
for band in bands:
    rows_ = [s for s in cap_summary if s["band"] == band and s["positions"] == "all"]
    mark = cap_sweet["percentile"] if cap_sweet["band"] == band and cap_sweet["positions"] == "all" else None
    band_layers = next(r["layers"] for r in capping if r["band"] == band)
    panels.append({"title": f"band '{band}' (layers {', '.join(map(str, band_layers))})",
                   "xlabel": "threshold percentile", "x": "percentile", "rows": rows_, "baseline": cap_baseline,
                   "reference": cap_reference, "sweet_spot": mark})
fig = judged_curves(panels, title=f"Activation capping, judged by {judge.id}")
save(fig, paths.figure("capping_evaluation"))
glue("cap_baseline_al", round(cap_baseline["assistant_likeness"], 1), display=False)
glue("cap_baseline_coh", round(cap_baseline["coherence"], 1), display=False)
glue("cap_sweet_setting", Plain(cap_sweet["setting"]), display=False)
for scale, short in (("assistant_likeness", "al"), ("coherence", "coh")):
    glue(f"cap_sweet_{short}", round(cap_sweet_report[scale]["mean"], 1), display=False)
    glue(f"cap_sweet_{short}_ci", Plain(f"{cap_sweet_report[scale]['low']:.1f}–{cap_sweet_report[scale]['high']:.1f}"),
         display=False)
    glue(f"cap_report_base_{short}", round(cap_base_report[scale]["mean"], 1), display=False)
fig

# %%
pd.DataFrame(cap_summary).drop(columns=["setting"]).round(2)

# %% [markdown]
# ## Which band works for capping?
#
# Each band and variant gets its own sweet spot, chosen like the others on half of the held-out queries
# among its percentiles and the uncapped answers, and reported on the other half: judged
# assistant-likeness and coherence, the **gain** in assistant-likeness over the uncapped answer to the
# same prompt, the **loop rate** (answers with more than 30 % of their words inside repeated material,
# `judge.repetition.loop_coverage`) and the fraction of **response positions** the cap lifted. Every
# interval resamples whole queries. The band that works best is the one whose sweet spot scores highest
# on the choosing half; it *works* if its gain's interval on the other half lies above zero.

# %%
def with_field(rows, name, value):
    return [{**r, name: value(r)} for r in rows]


def report_of(rows):
    """The report-half numbers of a set of answers: both scales, loops, response positions capped (query intervals)."""
    rows = with_field(with_field(rows, "loop", lambda r: float(loop_coverage(r["response"]) > 0.3)),
                      "capped", lambda r: fraction_fired(r, "response"))
    return {name: query_mean(rows, name, n_boot) for name in ("assistant_likeness", "coherence", "loop", "capped")}


reported = [r for r in cap_rows if r["query_id"] in report_q]
uncapped_al = {r["id"]: r["assistant_likeness"] for r in reported if r["band"] == "none"}
uncapped_report = report_of([r for r in reported if r["band"] == "none"])
band_results = []
for band in bands:
    for positions in ("all", "response"):
        rows_ = [r for r in cap_rows if r["band"] == "none" or (r["band"] == band and r["positions"] == positions)]
        if len(rows_) == sum(r["band"] == "none" for r in cap_rows):
            continue  # no such variant in the sweep
        pick, _, _ = honest_sweet_spot(rows_, ["setting", "band", "percentile", "positions"], "percentile", lambda s: True)
        held = [r for r in reported if r["setting"] == pick["setting"]]
        paired = [r for r in held if r["assistant_likeness"] is not None and uncapped_al.get(r["id"]) is not None]
        band_results.append({
            "band": band, "positions": positions, "layers": next(r["layers"] for r in capping if r["band"] == band),
            "setting": pick["setting"], "percentile": pick["percentile"], "choose_al": pick["assistant_likeness_mean"],
            **report_of(held),
            "gain": query_mean(with_field(paired, "gain", lambda r: r["assistant_likeness"] - uncapped_al[r["id"]]),
                               "gain", n_boot)})


def ci(x, scale=1.0, digits=1):
    return Plain(f"{scale * x['mean']:.{digits}f} ({scale * x['low']:.{digits}f}–{scale * x['high']:.{digits}f})")


for res in band_results:
    key = f"cap_{res['band']}_{'all' if res['positions'] == 'all' else 'resp'}"
    glue(f"{key}_q", Plain("none (uncapped)" if res["percentile"] == 0 else f"p{res['percentile']:g}"), display=False)
    for name in ("assistant_likeness", "coherence", "gain"):
        glue(f"{key}_{name}", ci(res[name]), display=False)
    glue(f"{key}_loops", ci(res["loop"], 100, 0), display=False)
    glue(f"{key}_capped", ci(res["capped"], 100, 0), display=False)
glue("cap_uncapped_loops", ci(uncapped_report["loop"], 100, 0), display=False)
glue("cap_uncapped_al", ci(uncapped_report["assistant_likeness"]), display=False)
glue("cap_uncapped_coh", ci(uncapped_report["coherence"]), display=False)
capped_picks = [res for res in band_results if res["percentile"] != 0]
works = [res for res in capped_picks if res["gain"]["low"] > 0]
glue("cap_n_work", len(works), display=False)
glue("cap_n_variants", len(band_results), display=False)
if capped_picks:
    top = max(capped_picks, key=lambda res: res["choose_al"])
    where = (f"the {top['band']} band (layers {top['layers'][0]}–{top['layers'][-1]})"
             + (", capping response positions only," if top["positions"] == "response" else ""))
    gain = f"{top['gain']['mean']:.1f} points (95 % CI {top['gain']['low']:.1f}–{top['gain']['high']:.1f})"
    if top in works:
        answer = (f"{where} works best: at the {top['percentile']:g}th percentile it raises assistant-likeness by "
                  f"{gain} on held-out queries it was not chosen on, with coherence {ci(top['coherence'])} "
                  f"against {ci(uncapped_report['coherence'])} uncapped")
    else:
        answer = (f"no band works reliably: the most promising, {where} at the {top['percentile']:g}th percentile, "
                  f"changes assistant-likeness by {gain} on held-out queries, an interval that includes zero")
else:
    answer = "no band works: on the choosing half, no band's cap scored above the uncapped answers"
glue("cap_answer", Plain(answer), display=False)
print(answer)
pd.DataFrame([{"band": res["band"], "positions": res["positions"], "chosen": res["setting"],
               **{name: ci(res[name]) for name in ("assistant_likeness", "coherence", "gain")},
               "loops %": ci(res["loop"], 100, 0), "response positions capped %": ci(res["capped"], 100, 0)}
              for res in band_results]).set_index(["band", "positions"])

# %% [markdown]
# Capping should leave the assistant personas' own answers alone: their judged scores uncapped and
# under each band's all-positions cap at the lowest percentile.

# %%
cap_assistant = summarise([r for r in judged if r["source"] == "capping_assistant"], ["setting"], n_boot=n_boot)
pd.DataFrame(cap_assistant).round(2)

# %% [markdown]
# ## Do the two judges agree?
#
# When Claude judged the answers, the offline judge scores them too, and we report the Spearman rank
# correlation per scale over the same answers. Without an API key this comparison is skipped.

# %%
if is_claude:
    offline_judged = judge_rows(offline, every, paths.judgements("offline"))
    distinct = unique_texts(judged)  # equal answers (e.g. the unsteered baselines of 05 and 06) count once
    agree = agreement(scores_of([judged[i] for i in distinct]), scores_of([offline_judged[i] for i in distinct]))
    text = (f"Spearman ρ {agree['assistant_likeness']['spearman']:.2f} on assistant-likeness and "
            f"{agree['coherence']['spearman']:.2f} on coherence, over {agree['coherence']['n']} distinct answers")
else:
    agree = None
    reason = "no Anthropic API key is configured" if not available_claude_key() else f"judge_kind is {judge_kind!r}"
    text = f"not measured in this build, where only the offline judge ran ({reason})"
glue("judge_agreement", Plain(text), display=False)
print(text)

# %%
write_json(root / "evaluations" / f"judge_evaluation_{model_key}.json", {
    "judge": judge.id, "coherence_margin": coherence_margin, "validation": validation,
    "additive": {"raw": raw, "sd": sd_rows, "baseline": baseline, "assistant": reference,
                 "queries_choose": sorted(choose_q), "queries_report": sorted(report_q),
                 "sweet_spot_raw": sweet_raw, "sweet_spot_raw_report": sweet_raw_report,
                 "sweet_spot_sd": sweet_sd, "sweet_spot_sd_report": sweet_sd_report, "unsteered_report": base_report},
    "capping": {"summary": cap_summary, "baseline": cap_baseline, "assistant": cap_reference, "sweet_spot": cap_sweet,
                "sweet_spot_report": cap_sweet_report, "uncapped_report": cap_base_report,
                "assistant_under_cap": cap_assistant, "bands": band_results, "bands_uncapped": uncapped_report,
                "answer": answer},
    "agreement": agree,
})
step.done(judge=judge.id, n_answers=len(frame), n_missing=n_missing, judge_seconds=round(judge_seconds, 1))
glue("judge_seconds", round(judge_seconds), display=False)
