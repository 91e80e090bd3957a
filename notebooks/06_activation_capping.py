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
# Capping acts position by position: at each capped layer and position, with `p = h · u`, if `p < τ`
# the state is lifted to `h + (τ − p) · u`; everywhere else it is left exactly as it was. How often
# that happens is measured, not assumed: the summary below gives the fraction of positions capped.
# Anthropic's paper caps at the 25th percentile over a band at 70–90 % depth (that the percentile is of
# per-token projections is our reading, not checked against its text); the seed found
# early-to-middle layers better at 3B. So this is a layer study: three **disjoint** bands of equal width,
# named by depth (early ~20–35 %, middle ~45–60 %, late ~70–90 % of the layers), each swept over the
# threshold percentile on the held-out queries under the non-assistant personas. Step 4's capping band
# joins as a fourth band only if it shares no layer with them. A cap acts on every position by default,
# the system prompt included; a **response-only** variant of each band (at `response_percentiles`) leaves
# the prompt alone and caps the generated tokens only. Last, we check that capping leaves assistant
# answers alone.
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
response_percentiles = [90]  # the response-only variant of each band, at these of the percentiles
bands = None  # None: disjoint bands by depth (calibration.depth_bands), plus step 4's if disjoint; or {name: [layers]}
n_holdout_queries = 10  # held-out queries used (None: all of them)
max_new_tokens = 48
batch_size = 256  # rows per generate batch: several settings of the sweep at once
artifacts_dir = "artifacts"
resume = True  # False: regenerate every answer (make book FORCE=1); True reuses answers whose inputs are unchanged

# %% tags=["hide-input"]
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.calibration import calibration_answers, check_bands, depth_bands, shared_layers, token_thresholds
from axes_lib.directions import load_direction
from axes_lib.figures import Plain
from axes_lib.interventions import Cap
from axes_lib.io import read_json, read_jsonl, write_json
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas
from axes_lib.splits import queries_in
from axes_lib.sweeps import Setting, fraction_fired, response_projection, sweep

model_name(model_key)
if not percentiles or any(not 0 <= q <= 100 for q in percentiles):
    raise ValueError(f"percentiles must lie in [0, 100], got {percentiles}")
if any(q not in percentiles for q in response_percentiles):
    raise ValueError(f"response_percentiles {response_percentiles} must be among percentiles {percentiles}")
paths = Artifacts(artifacts_dir, model_key)
evaluation = read_json(paths.evaluation(method))
direction = load_direction(paths.direction(method))
split = read_json(paths.split)
n_layers = len(direction)
if sorted(direction) != list(range(n_layers)):
    raise ValueError(f"the direction covers layers {sorted(direction)}: need every layer of the model")
# The bands: disjoint (checked before the model loads), named by depth unless given.
step4_band = list(evaluation["capping"]["layers"])
bands = check_bands(depth_bands(n_layers) if bands is None else bands, n_layers)
step4_shares = shared_layers(step4_band, bands)
if not step4_shares and "best" not in bands:
    bands["best"] = step4_band
holdout = queries_in(split, "holdout", n_holdout_queries)


def span(band):
    """A band as prose: its layers and their depth."""
    return f"layers {band[0]}–{band[-1]} ({100 * band[0] / n_layers:.0f}–{100 * band[-1] / n_layers:.0f} % depth)"


if not step4_shares:
    relation = "shares no layer with the three and is swept as a fourth band, 'best'"
elif any(shared == step4_band == bands[name] for name, shared in step4_shares.items()):
    relation = f"is the {next(n for n, b in bands.items() if b == step4_band)} band itself"
else:
    relation = "overlaps " + " and ".join(f"the {name} band ({len(shared)} of its {len(step4_band)} layers)"
                                          for name, shared in step4_shares.items())
glue("cap_step4_band", Plain(span(step4_band)), display=False)
glue("cap_step4_relation", Plain(relation), display=False)
for name, band in bands.items():
    glue(f"cap_band_{name}", Plain(span(band)), display=False)
print(f"{n_layers} layers; bands: " + "; ".join(f"{name} {span(band)}" for name, band in bands.items())
      + f". Step 4's band, {span(step4_band)}, {relation}.")

# Thresholds per band and percentile: percentiles of the projections of every response token of the
# assistant personas' train answers (step 4's recipe), the positions a cap acts on.
model, tokenizer = load_model(model_key)
calibration = calibration_answers(read_jsonl(paths.responses),
                                  split["train_queries"], tokenizer, model_key)
# One pass reads every band's layers.
by_q = token_thresholds(model, tokenizer, *calibration, direction, sorted({i for b in bands.values() for i in b}),
                        percentiles, batch_size=batch_size)
settings = [Setting("uncapped", None, {"band": "none", "percentile": None, "positions": "none"})]
for only in (False, True):  # every band at every percentile on all positions, then the response-only variants
    for name, band in bands.items():
        for q, by_layer in by_q.items():
            if only and q not in response_percentiles:
                continue
            tau = {i: by_layer[i] for i in band}
            settings.append(Setting(f"cap:{name}:p{q:g}" + (":response" if only else ""),
                                    Cap(direction, band, threshold=tau, response_only=only),
                                    {"band": name, "percentile": q, "positions": "response" if only else "all",
                                     "thresholds": {str(k): v for k, v in tau.items()}}))
glue("cap_n_settings", len(settings), display=False)
pd.DataFrame([{"band": n, "layers": ", ".join(map(str, b)), "depth": span(b).split("(")[1].rstrip(")")}
              for n, b in bands.items()])

# %%
out_path, assistant_path = paths.sweep("capping"), paths.sweep("capping", assistant=True)
step = Step(manifest_of(out_path), dict(model_key=model_key, method=method, percentiles=percentiles, bands=bands,
                                        response_percentiles=response_percentiles,
                                        n_holdout_queries=n_holdout_queries, max_new_tokens=max_new_tokens),
            outputs=[out_path, assistant_path], resume=resume)  # resume: answers with unchanged inputs are reused
records = contrastive_prompts(holdout, load_personas(), model_type=model_key, tokenizer=tokenizer)
others = [r for r in records if r["kind"] != "assistant"]
assistants = [r for r in records if r["kind"] == "assistant"]
rows = sweep(model, tokenizer, others, settings, out_path, max_new_tokens, batch_size)
# Assistant personas: uncapped, and each band's all-positions cap at the lowest percentile (should change little).
check = [s for s in settings if s.intervention is None
         or (s.info["percentile"] == min(percentiles) and s.info["positions"] == "all")]
assistant_rows = sweep(model, tokenizer, assistants, check, assistant_path, max_new_tokens, batch_size)
print(f"{len(rows)} persona answers, {len(assistant_rows)} assistant answers")

# %% [markdown]
# ## How far does capping move the answers towards the assistant, and how much does it cap?
#
# Each answer is fed back through the **unsteered** model and its response-mean projection is read at
# the layers of step 4's capping band, where the axis separates best (the same layers for every
# band, so the bands are compared on one scale). *Movement* is the fraction of the way from the
# uncapped persona answers' mean to the assistant personas' mean: 0 = no change, 1 = as assistant-like
# as the assistant answers. Beside it, the fraction of positions the cap lifted, averaged over the
# band's layers: of the **response** positions (the generated tokens) and of **all** positions, system
# prompt and query included.

# %%
measure_layers = step4_band
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
frame["response capped"] = [fraction_fired(r, "response") for r in rows]
frame["all capped"] = [fraction_fired(r) for r in rows]
summary = frame.groupby("setting", sort=False).agg(
    band=("band", "first"), positions=("positions", "first"), percentile=("percentile", "first"),
    projection=("projection", "mean"), **{"response positions capped": ("response capped", "mean"),
                                          "all positions capped": ("all capped", "mean")}).reset_index()
summary["movement"] = (summary["projection"] - uncapped_mean) / (assistant_mean - uncapped_mean)
capped = summary[summary.band != "none"]
best = capped.sort_values("movement", ascending=False).iloc[0]
paper = capped[(capped.band == "late") & (capped.percentile == min(percentiles)) & (capped.positions == "all")]
glue("cap_uncapped_projection", round(float(uncapped_mean), 2), display=False)
glue("cap_assistant_projection", round(float(assistant_mean), 2), display=False)
glue("cap_best_setting", Plain(best["setting"]), display=False)
glue("cap_best_movement", round(100 * float(best["movement"])), display=False)
glue("cap_paper_movement", round(100 * float(paper["movement"].iloc[0])) if len(paper) else float("nan"), display=False)
glue("cap_measure_layers", Plain.list(measure_layers), display=False)
# How much a cap lifts: the range over bands, at the lowest and the highest percentile, and for the variants.


def value_range(values):
    """`lo–hi` of rounded values, one number when they agree."""
    lo, hi = round(float(min(values))), round(float(max(values)))
    return Plain(f"{lo}" if lo == hi else f"{lo}–{hi}")


everywhere, response_only = capped[capped.positions == "all"], capped[capped.positions == "response"]
for name, part, q in (("low", everywhere, min(percentiles)), ("high", everywhere, max(percentiles)),
                      ("resp", response_only, max(response_percentiles, default=max(percentiles)))):
    at = part[part.percentile == q]
    glue(f"cap_q_{name}", Plain(f"{q:g}"), display=False)
    for column, short in (("all positions capped", "all"), ("response positions capped", "response")):
        glue(f"cap_fired_{name}_{short}", value_range(100 * at[column] if len(at) else [float("nan")]), display=False)
summary.round(3)

# %% [markdown]
# ## Assistant answers under the cap
#
# Capping should leave prompts that are already assistant-like (almost) unchanged: the share of
# assistant-persona answers that come out word for word the same.

# %%
base = assistant_frame[assistant_frame.setting == "uncapped"].set_index("id")["response"]
unchanged = {s: float((g.set_index("id")["response"] == base.reindex(g["id"]).values).mean())
             for s, g in assistant_frame[assistant_frame.setting != "uncapped"].groupby("setting", sort=False)}
glue("cap_assistant_unchanged", value_range([100 * v for v in unchanged.values()]), display=False)
write_json(paths.capping_summary(method),
           {"bands": bands, "step4_band": step4_band, "step4_shares": step4_shares,
            "uncapped_projection": uncapped_mean, "assistant_projection": assistant_mean,
            "measure_layers": measure_layers, "summary": summary.to_dict(orient="records"),
            "assistant_unchanged": unchanged})
step.done(n_answers=len(every))
pd.Series(unchanged, name="assistant answers unchanged").to_frame()

# %% [markdown]
# ## What the answers look like

# %%
pd.set_option("display.max_colwidth", 200)
frame[frame.id == others[0]["id"]][["setting", "response"]].set_index("setting")
