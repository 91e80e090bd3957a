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
n_validation = 60  # held-out answers (each also broken three ways) for the coherence check
n_reference = 150  # train answers whose features anchor the coherence scale (None: all of them)
n_boot = 1000
batch_size = 32
artifacts_dir = "artifacts"
resume = True  # False: judge everything again (Claude's own cache still answers without new requests)

# %% tags=["hide-input"]
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts, Step
from axes_lib.figures import Plain, judged_curves, save
from axes_lib.io import read_jsonl, write_json
from axes_lib.judge import (
    OfflineJudge,
    agreement,
    available_claude_key,
    default_judge,
    judge_rows,
    means,
    scores_of,
    summarise,
    sweet_spot,
    unique_texts,
)
from axes_lib.models import model_name

model_name(model_key)
if judge_kind not in ("auto", "offline", "claude"):
    raise ValueError(f"judge_kind must be 'auto', 'offline' or 'claude', got {judge_kind!r}")
if coherence_margin < 0:
    raise ValueError(f"coherence_margin must be >= 0, got {coherence_margin}")
paths = Artifacts(artifacts_dir, model_key)
root = paths.root
step = Step(root / "evaluations" / f"judge_{model_key}.manifest.json", dict(
    model_key=model_key, judge_kind=judge_kind, claude_model=claude_model, coherence_margin=coherence_margin,
    n_validation=n_validation, n_reference=n_reference, n_boot=n_boot))
answers = {}
for name in ("additive", "additive_assistant", "capping", "capping_assistant"):
    path = paths.sweep(name.removesuffix("_assistant"), assistant=name.endswith("_assistant"))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook {'05' if 'add' in name else '06'} with "
                                f"model_key={model_key!r} first")
    answers[name] = [{**r, "source": name} for r in read_jsonl(path)]

offline = OfflineJudge(model_key, root, n_reference=n_reference, batch_size=batch_size)  # validated below
is_claude = judge_kind == "claude" or (judge_kind == "auto" and available_claude_key())
if is_claude:
    judge = default_judge(model_key, root, offline=False, **({} if claude_model is None else {"model": claude_model}))
else:
    judge = offline
print(f"judge: {judge.id}; answers: " + ", ".join(f"{k} {len(v)}" for k, v in answers.items()))

# %% [markdown]
# ## Is the offline judge any good?
#
# **Assistant-likeness.** The classifier never saw the held-out queries. The AUROC says how often a
# random assistant-persona answer scores above a random non-assistant one (0.5 = chance).
#
# **Coherence.** We take held-out answers and break each of them three ways — the same words
# shuffled, the first few words looped to the same length, and as many random tokens from the
# vocabulary — and score all four versions. Broken texts must score clearly lower. Some of the
# model's own answers already loop, and those score low too: that is the judge working.

# %%
validation = offline.validation(n_coherence=n_validation)
al_val, co_val = validation["assistant_likeness"], validation["coherence"]
glue("offline_judge_id", Plain(offline.id), display=False)
glue("offline_auroc", round(al_val["auroc"], 3), display=False)
glue("offline_auroc_lo", round(al_val["auroc_ci95"][0], 3), display=False)
glue("offline_auroc_hi", round(al_val["auroc_ci95"][1], 3), display=False)
glue("offline_n_holdout", al_val["n_holdout"], display=False)
glue("offline_n_train", validation["n_train"], display=False)
glue("offline_mean_assistant", round(al_val["mean_assistant"], 1), display=False)
glue("offline_mean_non_assistant", round(al_val["mean_non_assistant"], 1), display=False)
glue("coherence_n", co_val["n"], display=False)
for kind in ("normal", "shuffled_words", "repeated_phrase", "random_tokens"):
    glue(f"coherence_{kind}", round(co_val["mean"].get(kind, float("nan")), 1), display=False)
glue("coherence_min_auroc", round(min(co_val.get("auroc_normal_vs", {"none": float("nan")}).values()), 3), display=False)
scale = offline.coherence_scale
glue("coherence_floor", round(scale.logprob_floor, 2), display=False)
glue("coherence_ref", round(scale.logprob_ref, 2), display=False)
glue("coherence_percentile", round(scale.reference_percentile), display=False)
print(f"assistant-likeness AUROC on held-out queries: {al_val['auroc']:.3f} "
      f"(95% interval over queries {al_val['auroc_ci95'][0]:.3f}-{al_val['auroc_ci95'][1]:.3f}; {al_val['n_holdout']} answers)")
pd.DataFrame({"mean coherence": co_val["mean"], "median": co_val["median"],
              "AUROC normal vs this": {"normal": None, **co_val["auroc_normal_vs"]}}).round(3)

# %% [markdown]
# One answer and its broken versions, as the judge saw them:

# %%
pd.set_option("display.max_colwidth", 200)
pd.Series(co_val["examples"], name="text").to_frame()

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
sweet_raw = sweet_spot(raw, baseline["coherence"], coherence_margin, x="scale")
sweet_sd = sweet_spot(sd_rows, baseline["coherence"], coherence_margin, x="scale_sd")
fig = judged_curves([
    {"title": "scale in model units", "xlabel": "scale", "x": "scale", "rows": raw, "xscale": "symlog",
     "baseline": baseline, "reference": reference, "sweet_spot": sweet_raw and sweet_raw["scale"]},
    {"title": "scale in projection SDs", "xlabel": "scale (SD of projections)", "x": "scale_sd", "rows": sd_rows,
     "baseline": baseline, "reference": reference, "sweet_spot": sweet_sd and sweet_sd["scale_sd"]},
], title=f"Additive steering, judged by {judge.id}")
save(fig, paths.figure("steering_evaluation"))
largest = max(raw, key=lambda s: s["scale"])
glue("add_baseline_al", round(baseline["assistant_likeness"], 1), display=False)
glue("add_baseline_coh", round(baseline["coherence"], 1), display=False)
glue("assistant_al", round(reference["assistant_likeness"], 1) if reference else float("nan"), display=False)
glue("assistant_coh", round(reference["coherence"], 1) if reference else float("nan"), display=False)
glue("add_sweet_scale", Plain(f"{sweet_raw['scale']:g}"), display=False)
glue("add_sweet_al", round(sweet_raw["assistant_likeness_mean"], 1), display=False)
glue("add_sweet_coh", round(sweet_raw["coherence_mean"], 1), display=False)
glue("add_sweet_sd", Plain(f"{sweet_sd['scale_sd']:g}"), display=False)
glue("add_sweet_sd_al", round(sweet_sd["assistant_likeness_mean"], 1), display=False)
glue("add_sweet_sd_coh", round(sweet_sd["coherence_mean"], 1), display=False)
glue("add_largest_scale", Plain(f"{largest['scale']:g}"), display=False)
glue("add_largest_al", round(largest["assistant_likeness_mean"], 1), display=False)
glue("add_largest_coh", round(largest["coherence_mean"], 1), display=False)
glue("coherence_margin", Plain(f"{coherence_margin:g}"), display=False)
fig

# %%
pd.DataFrame(add_summary).drop(columns=["setting"]).round(2)

# %% [markdown]
# ## Activation capping
#
# One panel per layer band, against the percentile that sets the threshold (a higher percentile lifts
# more positions). Lines as above; the sweet spot is chosen over every band and percentile.

# %%
capping = [r for r in judged if r["source"] == "capping"]
cap_summary = summarise(capping, ["setting", "band", "percentile"], n_boot=n_boot)
uncapped = next(s for s in cap_summary if s["band"] == "none")
cap_baseline = {s: uncapped[f"{s}_mean"] for s in ("assistant_likeness", "coherence")}
cap_sweet = sweet_spot([s for s in cap_summary if s["band"] != "none"] + [{**uncapped, "percentile": 0.0}],
                       cap_baseline["coherence"], coherence_margin, x="percentile")
bands = list(dict.fromkeys(s["band"] for s in cap_summary if s["band"] != "none"))
cap_reference_rows = [r for r in judged if r["source"] == "capping_assistant" and r["setting"] == "uncapped"]
cap_reference = means(cap_reference_rows)
panels = []
for band in bands:
    rows_ = [s for s in cap_summary if s["band"] == band]
    mark = cap_sweet["percentile"] if cap_sweet and cap_sweet["band"] == band else None
    band_layers = next(r["layers"] for r in capping if r["band"] == band)
    panels.append({"title": f"band '{band}' (layers {', '.join(map(str, band_layers))})",
                   "xlabel": "threshold percentile", "x": "percentile", "rows": rows_, "baseline": cap_baseline,
                   "reference": cap_reference, "sweet_spot": mark})
fig = judged_curves(panels, title=f"Activation capping, judged by {judge.id}")
save(fig, paths.figure("capping_evaluation"))
glue("cap_baseline_al", round(cap_baseline["assistant_likeness"], 1), display=False)
glue("cap_baseline_coh", round(cap_baseline["coherence"], 1), display=False)
glue("cap_sweet_setting", Plain(cap_sweet["setting"]), display=False)
glue("cap_sweet_al", round(cap_sweet["assistant_likeness_mean"], 1), display=False)
glue("cap_sweet_coh", round(cap_sweet["coherence_mean"], 1), display=False)
fig

# %%
pd.DataFrame(cap_summary).drop(columns=["setting"]).round(2)

# %% [markdown]
# Capping should leave the assistant personas' own answers alone: their judged scores uncapped and
# under each band's 25th-percentile cap.

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
                 "sweet_spot_raw": sweet_raw, "sweet_spot_sd": sweet_sd},
    "capping": {"summary": cap_summary, "baseline": cap_baseline, "assistant": cap_reference, "sweet_spot": cap_sweet,
                "assistant_under_cap": cap_assistant},
    "agreement": agree,
})
step.done(judge=judge.id, n_answers=len(frame), n_missing=n_missing, judge_seconds=round(judge_seconds, 1))
glue("judge_seconds", round(judge_seconds), display=False)
