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
# # Step 8 — Steering demo
#
# See for yourself what the two interventions do to the answers. Pick a non-assistant persona and a
# held-out query, choose **additive steering** (add `scale · u` at the best layer, with the scale in
# units of the projection's standard deviation there) or **activation capping** (lift positions whose
# projection is below the `q`-th percentile of the assistant personas' projections, on the capping
# band of step 4), and move the slider. The steered answer is shown beside the unsteered one.
#
# The page you are reading has no Python kernel behind it, so the slider below moves over answers
# generated **in advance** by this notebook: every persona × query × mode × strength, greedily, with
# the same hooks as steps 5 and 6. The widget is plain HTML and JavaScript embedded in the page
# (nothing is loaded from the network); the same widget is saved as a standalone file under
# `artifacts/demo/`. In Jupyter, set `live = True` to get a live version that generates a new answer
# for any strength you choose.

# %% tags=["parameters"]
model_key = "smollm2"
method = "response_mean"  # which direction to steer along (see the text above)
personas = None  # None: the first three non-assistant personas; or a list of persona names
n_demo_queries = 3  # held-out queries, taken from different categories where possible
add_scales_sd = [0, 1, 2, 4, 6, 8]  # additive scales, in units of the projection SD at the steered layer
cap_percentiles = [None, 10, 25, 50, 75, 90]  # capping thresholds as percentiles; None: no cap
max_new_tokens = 40
batch_size = 128  # the whole grid (personas x queries x strengths) in one or two batches
live = False  # True (in Jupyter, with a kernel): also show the live ipywidgets demo; keep False under papermill
artifacts_dir = "artifacts"
overwrite = False

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import HTML, display
from myst_nb import glue

from axes_lib.activations import contrastive_activations, token_projections
from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.calibration import calibration_answers, projection_sd, quantile_thresholds
from axes_lib.demo import build_grid, live_demo, slider_html, slider_page
from axes_lib.directions import load_direction
from axes_lib.interventions import Add, Cap
from axes_lib.io import atomic_write_text, claim_artifacts, read_json, read_jsonl, write_json
from axes_lib.models import load_model, model_name
from axes_lib.prompts import load_personas
from axes_lib.splits import indices_in, queries_in

model_name(model_key)
if any(s < 0 for s in add_scales_sd):
    raise ValueError(f"add_scales_sd must be >= 0, got {add_scales_sd}")
if any(q is not None and not 0 <= q <= 100 for q in cap_percentiles):
    raise ValueError(f"cap_percentiles must be None or lie in [0, 100], got {cap_percentiles}")
paths = Artifacts(artifacts_dir, model_key)
evaluation = read_json(paths.evaluation(method))
direction = load_direction(paths.direction(method))
split = read_json(paths.split)
add_layers = [evaluation["best_layer"]]
cap_layers = list(evaluation["capping"]["layers"])

# Personas: the non-assistant ones (by default the first three).
others = [p for p in load_personas() if p.kind != "assistant"]
if personas is None:
    chosen = others[:3]
else:
    by_name = {p.name: p for p in others}
    unknown = [n for n in personas if n not in by_name]
    if unknown:
        raise ValueError(f"unknown non-assistant personas {unknown}; choose from {sorted(by_name)}")
    chosen = [by_name[n] for n in personas]

# Queries: held-out ones (never used to fit the direction), one category after another.
holdout = queries_in(split, "holdout")
by_category: dict[str, list] = {}
for q in holdout:
    by_category.setdefault(q.category, []).append(q)
interleaved = [q for group in zip(*by_category.values()) for q in group]
interleaved += [q for q in holdout if q not in interleaved]
queries = interleaved[:n_demo_queries]

# Units: the projection SD at the steered layer (as in step 5) and capping thresholds at percentiles of
# the projections of every response token of the assistant personas' train answers (as in steps 4 and 6).
responses = read_jsonl(paths.responses)
model, tokenizer = load_model(model_key)
sd = projection_sd(contrastive_activations(paths, model=model, tokenizer=tokenizer)[method].at(indices_in(responses, split, "train"), add_layers),
                   direction, add_layers)
calibration = calibration_answers(responses, split["train_queries"], tokenizer, model_key)
token_proj = token_projections(model, tokenizer, *calibration, direction, cap_layers, batch_size=batch_size)


def cap_thresholds(q: float) -> dict[int, float]:
    return quantile_thresholds(token_proj, q)


add_scales = [{i: k * sd[i] for i in add_layers} for k in add_scales_sd]
cap_values = [None if q is None else cap_thresholds(q) for q in cap_percentiles]
pd.DataFrame([
    {"mode": "add", "layers": ", ".join(map(str, add_layers)),
     "strengths": ", ".join(f"{k:g} SD" for k in add_scales_sd), "unit": f"1 SD = {sd[add_layers[0]]:.2f}"},
    {"mode": "cap", "layers": ", ".join(map(str, cap_layers)),
     "strengths": ", ".join("none" if q is None else f"p{q:g}" for q in cap_percentiles),
     "unit": "percentile of assistant token projections"},
]).set_index("mode")

# %% [markdown]
# ## The answer grid
#
# Every combination is generated once, greedily, in batches: the unsteered answers, then each additive
# scale and each capping threshold over all persona × query prompts. Scale 0 runs under the hooks as
# well (adding zero changes nothing, so it reproduces the unsteered answer); "no cap" reuses the
# unsteered answers.

# %%
params = dict(model_key=model_key, method=method, personas=[p.name for p in chosen], queries=[q.id for q in queries],
              add_scales_sd=add_scales_sd, cap_percentiles=cap_percentiles, max_new_tokens=max_new_tokens)
grid_path = paths.demo
manifest_path = manifest_of(grid_path)
claim_artifacts(manifest_path, params, overwrite=overwrite)  # refuses to replace a grid made with other parameters
step = Step(manifest_path, params)
modes = {
    "add": [(f"+{k:g} SD" if k else "0 (off)", Add(direction, add_layers, scale=scale))
            for k, scale in zip(add_scales_sd, add_scales)],
    "cap": [("no cap" if q is None else f"p{q:g}", None if tau is None else Cap(direction, cap_layers, threshold=tau))
            for q, tau in zip(cap_percentiles, cap_values)],
}
grid = build_grid(
    model, tokenizer, chosen, queries, modes, max_new_tokens=max_new_tokens, batch_size=batch_size, model_type=model_key,
    metadata={"model": model_key, "method": method, "projection_sd": {str(k): v for k, v in sd.items()},
              "cap_percentiles": cap_percentiles},
)
grid_seconds = step.seconds
n_answers = len(chosen) * len(queries) * (1 + len(add_scales_sd) + sum(q is not None for q in cap_percentiles))
write_json(grid_path, grid)
page_path = atomic_write_text(grid_path.with_name(f"{paths.stem}_slider.html"),
                              slider_page(grid, title=f"Steering demo — {model_key}, {method} direction"))
step.done(grid_seconds=grid_seconds, n_generated=n_answers, files=[grid_path.name, page_path.name])
glue("demo_n_personas", len(chosen), display=False)
glue("demo_n_queries", len(queries), display=False)
glue("demo_n_answers", n_answers, display=False)
glue("demo_grid_seconds", f"{grid_seconds:.0f}", display=False)
print(f"{n_answers} answers generated in {grid_seconds:.0f} s; grid: {grid_path}; standalone widget: {page_path}")

# %% [markdown]
# ## The slider
#
# Persona and query on top, then the intervention and its strength. On the left the unsteered answer,
# on the right the steered one; the line below it gives the layers and the share of positions there
# that the intervention changed (a nonzero additive scale changes every position; a cap only those whose
# projection is below the threshold). A link to this page ending in `#persona=1&query=0&mode=cap&strength=2`
# opens the widget on that setting (indices count from 0).

# %%
display(HTML(slider_html(grid)))

# %% [markdown]
# How often does each setting change the answer at all? The share of persona × query answers that
# differ from the unsteered one, per mode and strength:

# %%
changed = []
for mode, spec in grid["modes"].items():
    for s, strength in enumerate(spec["strengths"]):
        diff = [spec["answers"][p][q][s] != grid["unsteered"][p][q]
                for p in range(len(chosen)) for q in range(len(queries))]
        changed.append({"mode": mode, "strength": strength["label"], "answers changed": f"{100 * sum(diff) / len(diff):.0f} %",
                        "positions changed": "" if strength["fired"] is None else f"{100 * strength['fired']:.0f} %"})
pd.DataFrame(changed).set_index(["mode", "strength"])

# %% [markdown]
# ## Live version (Jupyter only)
#
# With a running kernel the same controls can generate on demand: `axes_lib.demo.live_demo` builds an
# ipywidgets panel whose slider takes any scale (in SD units) or any capping percentile, and runs a real
# steered generation whenever a control changes. Run this notebook in Jupyter with `live = True` to
# show it. It is off by default because a static page cannot run it, and because ipywidgets' own
# JavaScript would have to be fetched from a CDN for the book to even draw the controls; under papermill
# `live` stays `False` and no widget is created.

# %%
if live:
    panel = live_demo(model, tokenizer, direction, chosen, queries, add_layers=add_layers, cap_layers=cap_layers,
                      cap_thresholds=cap_thresholds, add_unit=sd[add_layers[0]], add_max=float(max(add_scales_sd) or 10),
                      max_new_tokens=max_new_tokens, model_type=model_key)
    display(panel)
    panel.refresh()
else:
    print("live demo off (live = False); in Jupyter, set live = True in the parameters cell and rerun")
