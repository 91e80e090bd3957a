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
# # Step 6 — Activation capping
#
# Capping intervenes only where it is needed: at each capped layer and position, with `p = h · u`,
# if `p < τ` the state is lifted to `h + (τ − p) · u`; everywhere else it is left exactly as it was.
# Thresholds are percentiles of the projections of the **assistant** personas' train prompts at each
# layer (Anthropic's paper caps at the 25th percentile over a band at 70–90 % depth; the seed found
# early-to-middle layers better at 3B). We sweep the percentile for three layer bands on the held-out
# queries under the non-assistant personas, and check that capping leaves assistant answers alone.
#
# The direction is the **response-mean** axis, as in Anthropic's paper: a cap acts on every position
# of the answer as it is generated, and that direction is estimated from exactly those positions
# (the mean over the response tokens), while the last-token direction describes one position, the
# end of the prompt. The thresholds come from the same positions: the projections of every response
# token of the assistant personas' train answers.

# %% tags=["parameters"]
model_key = "smollm2"
method = "response_mean"  # which direction to cap along (see the text above)
percentiles = [25, 50, 75, 90]
bands = None  # None: {"best": the band of step 4, "early": ~25-40 % depth, "late": ~70-90 % depth}; or {name: [layers]}
n_holdout_queries = 10  # held-out queries used (None: all of them)
max_new_tokens = 48
batch_size = 256  # rows per generate batch: several settings of the sweep at once
artifacts_dir = "artifacts"
resume = True  # False: regenerate every answer (make book FORCE=1); True reuses answers whose inputs are unchanged

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.calibration import calibration_answers, token_thresholds
from axes_lib.directions import load_direction
from axes_lib.figures import Plain
from axes_lib.interventions import Cap
from axes_lib.io import read_json, read_jsonl, write_json
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas
from axes_lib.splits import queries_in
from axes_lib.sweeps import Setting, response_projection, sweep

model_name(model_key)
if not percentiles or any(not 0 <= q <= 100 for q in percentiles):
    raise ValueError(f"percentiles must lie in [0, 100], got {percentiles}")
paths = Artifacts(artifacts_dir, model_key)
evaluation = read_json(paths.evaluation(method))
direction = load_direction(paths.direction(method))
split = read_json(paths.split)
all_layers = sorted(direction)
n_layers = len(all_layers)
if bands is None:
    width = len(evaluation["capping"]["layers"])
    bands = {"best": evaluation["capping"]["layers"],
             "early": list(range(round(0.25 * n_layers), round(0.25 * n_layers) + width)),
             "late": list(range(round(0.7 * n_layers), round(0.7 * n_layers) + width))}
for name, band in bands.items():
    bad = [i for i in band if i not in all_layers]
    if bad or not band:
        raise ValueError(f"band {name!r}: layers {bad or band} not available (model has {n_layers} layers)")
holdout = queries_in(split, "holdout", n_holdout_queries)

# Thresholds per band and percentile: percentiles of the projections of every response token of the
# assistant personas' train answers (step 4's recipe), the positions a cap acts on.
model, tokenizer = load_model(model_key)
calibration = calibration_answers(read_jsonl(paths.responses),
                                  split["train_queries"], tokenizer, model_key)
# One pass reads every band's layers.
by_q = token_thresholds(model, tokenizer, *calibration, direction, sorted({i for b in bands.values() for i in b}),
                        percentiles, batch_size=batch_size)
settings = [Setting("uncapped", None, {"band": "none", "percentile": None})]
for name, band in bands.items():
    for q, by_layer in by_q.items():
        tau = {i: by_layer[i] for i in band}
        settings.append(Setting(f"cap:{name}:p{q:g}", Cap(direction, band, threshold=tau),
                                {"band": name, "percentile": q, "thresholds": {str(k): v for k, v in tau.items()}}))
pd.DataFrame([{"band": n, "layers": ", ".join(map(str, b))} for n, b in bands.items()])

# %%
out_path, assistant_path = paths.sweep("capping"), paths.sweep("capping", assistant=True)
step = Step(manifest_of(out_path), dict(model_key=model_key, method=method, percentiles=percentiles, bands=bands,
                                        n_holdout_queries=n_holdout_queries, max_new_tokens=max_new_tokens),
            outputs=[out_path, assistant_path], resume=resume)  # resume: answers with unchanged inputs are reused
records = contrastive_prompts(holdout, load_personas(), model_type=model_key, tokenizer=tokenizer)
others = [r for r in records if r["kind"] != "assistant"]
assistants = [r for r in records if r["kind"] == "assistant"]
rows = sweep(model, tokenizer, others, settings, out_path, max_new_tokens, batch_size)
# Assistant personas: uncapped, and capped with each band's 25th-percentile setting (should change little).
check = [s for s in settings if s.intervention is None or s.info["percentile"] == 25]
assistant_rows = sweep(model, tokenizer, assistants, check, assistant_path, max_new_tokens, batch_size)
print(f"{len(rows)} persona answers, {len(assistant_rows)} assistant answers")

# %% [markdown]
# ## How far does capping move the answers towards the assistant?
#
# Each answer is fed back through the **unsteered** model and its response-mean projection is read at
# the capped layers of the `best` band. *Movement* is the fraction of the way from the uncapped
# persona answers' mean to the assistant personas' mean: 0 = no change, 1 = as assistant-like as
# the assistant answers.

# %%
measure_layers = bands["best"] if "best" in bands else next(iter(bands.values()))
prompt_of = {r["id"]: r["prompt"] for r in records}
every = rows + assistant_rows
proj = response_projection(model, tokenizer, [prompt_of[r["id"]] for r in every], [r["response"] for r in every],
                           direction, measure_layers, batch_size=batch_size)
for r, p in zip(every, proj):
    r["projection"] = float(p)
frame = pd.DataFrame(rows)
assistant_frame = pd.DataFrame(assistant_rows)
assistant_mean = assistant_frame.loc[assistant_frame.setting == "uncapped", "projection"].mean()
uncapped_mean = frame.loc[frame.setting == "uncapped", "projection"].mean()


def fired(stats, layers):
    return float(np.mean([stats["fraction_fired"][str(i)] if str(i) in stats["fraction_fired"]
                          else stats["fraction_fired"][i] for i in layers])) if stats else 0.0


summary = frame.groupby("setting", sort=False).agg(band=("band", "first"), percentile=("percentile", "first"),
                                                    projection=("projection", "mean")).reset_index()
summary["movement"] = (summary["projection"] - uncapped_mean) / (assistant_mean - uncapped_mean)
summary["fraction of positions capped"] = [
    fired(frame[frame.setting == s]["stats"].iloc[0], frame[frame.setting == s]["layers"].iloc[0])
    for s in summary["setting"]]
best = summary[summary.band != "none"].sort_values("movement", ascending=False).iloc[0]
default = summary[(summary.band == "best") & (summary.percentile == 25)] if "best" in bands else summary.iloc[[1]]
glue("cap_uncapped_projection", round(float(uncapped_mean), 2), display=False)
glue("cap_assistant_projection", round(float(assistant_mean), 2), display=False)
glue("cap_best_setting", Plain(best["setting"]), display=False)
glue("cap_best_movement", round(100 * float(best["movement"])), display=False)
glue("cap_default_movement", round(100 * float(default["movement"].iloc[0])), display=False)
glue("cap_measure_layers", Plain.list(measure_layers), display=False)
summary.round(3)

# %% [markdown]
# ## Assistant answers under the cap
#
# Capping should leave prompts that are already assistant-like (almost) unchanged: the share of
# assistant-persona answers that come out word for word the same.

# %%
base = assistant_frame[assistant_frame.setting == "uncapped"].set_index("id")["response"]
unchanged = {s: float((g.set_index("id")["response"] == base.reindex(g["id"]).values).mean())
             for s, g in assistant_frame[assistant_frame.setting != "uncapped"].groupby("setting")}
for s, v in unchanged.items():
    glue(f"cap_assistant_unchanged_{s.split(':')[1]}", round(100 * v), display=False)
write_json(paths.capping_summary(method),
           {"bands": bands, "uncapped_projection": uncapped_mean, "assistant_projection": assistant_mean,
            "measure_layers": measure_layers, "summary": summary.to_dict(orient="records"),
            "assistant_unchanged": unchanged})
step.done(n_answers=len(every))
pd.Series(unchanged, name="assistant answers unchanged").to_frame()

# %% [markdown]
# ## What the answers look like

# %%
pd.set_option("display.max_colwidth", 200)
frame[frame.id == others[0]["id"]][["setting", "response"]].set_index("setting")
