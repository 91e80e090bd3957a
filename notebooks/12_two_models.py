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
# # Step 12 — Two models side by side
#
# Steps 1–9 ran twice: on the default SmolLM2-135M-Instruct (Llama architecture) and on Qwen2.5-Coder-0.5B-Instruct
# (Qwen2 architecture), with the same personas, queries and procedure; only the chat template (each model's own)
# and the sizes set in each model's parameters file differ. This step reads what both runs wrote — the held-out
# separation of each extraction method with its controls (step 4), the judged sweet spots and capping bands
# (step 7) and the random-direction controls (step 9) — and puts them side by side, on **relative depth** (layer
# divided by the last layer's index) so that a 30-layer and a 24-layer model align.
#
# Nothing here loads a model: it costs seconds, however long each model's own run took.

# %% tags=["parameters"]
model_key = "smollm2"
artifacts_dir = "artifacts"
other_model = "qwen2.5-0.5b"
other_artifacts_dir = "artifacts/qwen2.5-0.5b"  # the second run's artifacts (its parameters file's artifacts_dir)
method = "response_mean"  # the direction steps 5-9 steered along, in both runs

# %% tags=["hide-input"]
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts
from axes_lib.compare import METHODS, model_summary
from axes_lib.figures import METHOD_LABEL, Plain, save
from axes_lib.figures_models import interventions_by_model, separation_by_depth
from axes_lib.io import read_jsonl
from axes_lib.models import model_name

if model_key == other_model:
    raise ValueError(f"compare two different models: model_key and other_model are both {model_key!r}")
runs = {model_key: artifacts_dir, other_model: other_artifacts_dir}
summaries = [model_summary(root, key, method) for key, root in runs.items()]
labels = [model_name(key).split("/")[-1] for key in runs]
first, second = summaries
tagged = {"first": first, "second": second}  # the glue keys' prefix for each model

# The two runs must have asked the same questions of the same personas (each may ask fewer of them).
data = {key: read_jsonl(Artifacts(root, key).responses) for key, root in runs.items()}
personas = {key: sorted({r["persona"] for r in rows}) for key, rows in data.items()}
if personas[model_key] != personas[other_model]:
    raise ValueError(f"the runs used different personas: {personas}")
queries = {key: {r["query_id"]: r["query"] for r in rows} for key, rows in data.items()}
shared = set(queries[model_key]) & set(queries[other_model])
if any(queries[model_key][q] != queries[other_model][q] for q in shared):
    raise ValueError("the runs asked different questions under the same query ids")
for (tag, summary), key, label in zip(tagged.items(), runs, labels):
    glue(f"{tag}_name", Plain(label), display=False)
    glue(f"{tag}_n_layers", summary["n_layers"], display=False)
    glue(f"{tag}_n_queries", len(queries[key]), display=False)
    glue(f"{tag}_n_answers", len(data[key]), display=False)
    glue(f"{tag}_judge", Plain(summary["judge"]), display=False)
    glue(f"{tag}_n_report_queries", summary["n_report_queries"], display=False)
glue("n_personas", len(personas[model_key]), display=False)
glue("n_shared_queries", len(shared), display=False)
print(f"{labels[0]}: {len(data[model_key])} answers to {len(queries[model_key])} queries; "
      f"{labels[1]}: {len(data[other_model])} answers to {len(queries[other_model])} queries; {len(shared)} queries shared")

# %% [markdown]
# ## How each model answers in persona
#
# Step 4's checks of the contrastive answers: the share that play their persona's role (by the voice classifier of
# step 4, fitted per model on its own answers) and the share that loop (over 30 % of their words repeat earlier
# material), for the assistant and the non-assistant personas.

# %% tags=["hide-input"]
answers = pd.DataFrame([{"model": label, **{k: round(v, 1) for k, v in s["answers"].items()}}
                        for s, label in zip(summaries, labels)]).set_index("model")
answers.columns = ["loops, assistant (%)", "in role, assistant (%)", "loops, non-assistant (%)", "in role, non-assistant (%)"]
for tag, summary in tagged.items():
    for key, value in summary["answers"].items():
        glue(f"{tag}_{key}", round(value), display=False)
glue("answers_table", answers, display=False)
answers

# %% [markdown]
# ## Where the axis is, and how well it separates
#
# For each model and extraction method: the layer step 4 chose (on validation prompts, by a rule that excludes a
# pure prompt-format signal), its held-out Cohen's d with the query bootstrap's interval and the two-level one
# (personas within kind, and queries), balanced accuracy beside the majority baseline, AUROC, and the controls:
# the rank among 1,000 random directions and among the 84 ways to call three of the nine personas "assistant",
# and the balanced accuracy when each persona, assistant ones included, is held out in turn.

# %% tags=["hide-input"]
def separation_row(label: str, m: str, ext: dict) -> dict:
    return {
        "model": label, "method": METHOD_LABEL[m], "layers": ext["n_layers"], "chosen layer": ext["layer"],
        "depth": round(ext["depth"], 2), "Cohen's d [query CI]": ext["cohens_d"].text(),
        "two-level CI": f"{ext['cohens_d_two_way'].low:.2f}–{ext['cohens_d_two_way'].high:.2f}",
        "shuffled null q95": round(ext["shuffled_q95"], 2), "balanced acc.": round(ext["balanced_accuracy"], 3),
        "majority baseline": round(ext["majority_baseline"], 3), "AUROC": round(ext["auroc"], 3),
        "rank / random dirs": f"{ext['random_rank']} / {ext['n_random'] + 1}",
        "rank / partitions": f"{ext['partition_rank']} / {ext['n_partitions']}",
        "leave-one-persona-out bal. acc.": round(ext["loo_balanced_accuracy"], 3),
    }


separation = pd.DataFrame([separation_row(label, m, s["extraction"][m]) for s, label in zip(summaries, labels) for m in METHODS])
for tag, summary in tagged.items():
    for m, short in (("last_token", "lt"), ("response_mean", "rm")):
        ext = summary["extraction"][m]
        glue(f"{tag}_{short}_layer", ext["layer"], display=False)
        glue(f"{tag}_{short}_depth", round(ext["depth"], 2), display=False)
        glue(f"{tag}_{short}_d", round(ext["cohens_d"].mean, 2), display=False)
        glue(f"{tag}_{short}_d_ci", Plain(f"{ext['cohens_d_two_way'].low:.2f}–{ext['cohens_d_two_way'].high:.2f}"), display=False)
        glue(f"{tag}_{short}_bacc", round(ext["balanced_accuracy"], 2), display=False)
        glue(f"{tag}_{short}_baseline", round(ext["majority_baseline"], 2), display=False)
        glue(f"{tag}_{short}_random_rank", Plain(f"{ext['random_rank']} of {ext['n_random'] + 1}"), display=False)
        glue(f"{tag}_{short}_partition_rank", Plain(f"{ext['partition_rank']} of {ext['n_partitions']}"), display=False)
        glue(f"{tag}_{short}_loo", round(ext["loo_balanced_accuracy"], 2), display=False)
glue("separation_table", separation.set_index(["model", "method"]).T, display=False)
separation.set_index(["model", "method"]).T

# %% tags=["hide-input"]
fig = separation_by_depth(summaries, labels)
save(fig, Artifacts(artifacts_dir, model_key).figure("two_models_separation"))
glue("separation_figure", fig, display=False)
fig

# %% [markdown]
# ## The seed's first claim: last-token separates better than response-mean
#
# The seed found higher Cohen's d for last-token than for response-mean extraction on both of its 3B models. Here
# the claim is read per model from the chosen layers' held-out d and their two-level intervals (the two methods
# are scored on the same held-out prompts, so overlapping intervals do not make a tie certain, and separate ones
# do make the order clear).

# %% tags=["hide-input"]
def extraction_verdict(summary: dict) -> tuple[str, str]:
    """(short answer, sentence) on whether last-token separates better than response-mean."""
    lt, rm = summary["extraction"]["last_token"], summary["extraction"]["response_mean"]
    a, b = lt["cohens_d_two_way"], rm["cohens_d_two_way"]
    higher = "last-token" if lt["cohens_d"].mean > rm["cohens_d"].mean else "response-mean"
    apart = a.low > b.high or b.low > a.high
    short = f"{higher} higher" + ("" if apart else ", intervals overlap")
    holds = "holds" if higher == "last-token" and apart else "leans the seed's way" if higher == "last-token" else "does not hold"
    return short, (f"{holds}: d {lt['cohens_d'].mean:.2f} ({a.low:.2f}–{a.high:.2f}) for last-token at layer {lt['layer']} "
                   f"against {rm['cohens_d'].mean:.2f} ({b.low:.2f}–{b.high:.2f}) for response-mean at layer {rm['layer']}")


extraction_claim = {label: extraction_verdict(s) for s, label in zip(summaries, labels)}
for tag, label in zip(tagged, labels):
    glue(f"{tag}_extraction_claim", Plain(extraction_claim[label][1]), display=False)
    print(f"{label}: {extraction_claim[label][1]}")

# %% [markdown]
# ## Steering and capping: sweet spots and which band works
#
# Step 7 chose each intervention's sweet spot on one half of the held-out queries (the highest assistant-likeness
# whose coherence stays within its margin of the unsteered answers) and reports it on the other half; the capping
# bands are disjoint by depth (early, middle, late, each on all positions and on response positions only), each at
# the percentile step 7 chose. Step 9 repeated both sweet spots along random directions.

# %% tags=["hide-input"]
def intervention_row(label: str, summary: dict, kind: str) -> dict:
    spot = summary[kind]
    if spot is None:
        return {"model": label, "intervention": kind, "sweet spot": "none: no strength beats the unsteered answers "
                                                                    "within the coherence margin"}
    al, co = spot["assistant_likeness"], spot["coherence"]
    spec = summary.get("specificity", {}).get("add" if kind == "additive" else "cap")
    return {"model": label, "intervention": kind,
            "sweet spot": spot["setting"] + (f" ({spot['scale_sd']:.1f} SD)" if kind == "additive" else ""),
            "assistant-likeness [CI]": al.text(1), "unsteered": spot["base_assistant_likeness"].text(1),
            "coherence [CI]": co.text(1), "unsteered coherence": spot["base_coherence"].text(1),
            "rank among random directions": f"{spec['rank']} / {spec['n_controls'] + 1} (p {spec['p']:.2f})" if spec else "not run"}


def sweet_spot_sentence(summary: dict, kind: str) -> str:
    spot = summary[kind]
    if spot is None:
        return "none: no strength beats the unsteered answers within the coherence margin"
    al, base = spot["assistant_likeness"], spot["base_assistant_likeness"]
    spec = summary.get("specificity", {}).get("add" if kind == "additive" else "cap")
    rank = (f"; it ranks {spec['rank']} of {spec['n_controls'] + 1} among random directions treated the same way"
            if spec else "")
    setting = spot["setting"] + (f" ({spot['scale_sd']:.1f} projection SDs)" if kind == "additive" else "")
    return (f"{setting} changes assistant-likeness by {al.minus(base):+.1f} points on the report half ({al.text(1)} against "
            f"{base.mean:.1f}), with coherence {spot['coherence'].mean:.1f} against {spot['base_coherence'].mean:.1f}{rank}")


interventions = pd.DataFrame([intervention_row(label, s, kind) for s, label in zip(summaries, labels)
                              for kind in ("additive", "capping")])
for tag, summary in tagged.items():
    for kind in ("additive", "capping"):
        glue(f"{tag}_{kind}_sentence", Plain(sweet_spot_sentence(summary, kind)), display=False)
    glue(f"{tag}_bands_answer", Plain(summary["bands_answer"]), display=False)
glue("interventions_table", interventions.set_index(["model", "intervention"]), display=False)
interventions.set_index(["model", "intervention"])

# %% tags=["hide-input"]
fig = interventions_by_model(summaries, labels)
save(fig, Artifacts(artifacts_dir, model_key).figure("two_models_interventions"))
glue("interventions_figure", fig, display=False)
fig

# %% [markdown]
# ## The seed's second claim: early-to-middle layers cap better than late ones
#
# Read from the disjoint bands on all positions: the gain in assistant-likeness over the uncapped answers on the
# report half, with its interval, for the best of the early and middle bands against the late band (the paper's
# 70–90 % depth).

# %% tags=["hide-input"]
def band_verdict(summary: dict) -> str:
    bands = {b["band"]: b for b in summary["bands"] if b["positions"] == "all"}
    if "late" not in bands or not {"early", "middle"} & set(bands):
        return "cannot be read: the run has no late band, or no early or middle one"
    best = max((bands[b] for b in ("early", "middle") if b in bands), key=lambda b: b["gain"].mean)
    late = bands["late"]
    apart = best["gain"].low > late["gain"].high or late["gain"].low > best["gain"].high
    holds = ("holds" if best["gain"].mean > late["gain"].mean and apart else
             "leans the seed's way" if best["gain"].mean > late["gain"].mean else "does not hold")
    return (f"{holds}: the {best['band']} band (layers {best['layers'][0]}–{best['layers'][-1]}) gains "
            f"{best['gain'].text(1)} against {late['gain'].text(1)} for the late band "
            f"(layers {late['layers'][0]}–{late['layers'][-1]})" + ("" if apart else "; the intervals overlap"))


for (tag, summary), label in zip(tagged.items(), labels):
    glue(f"{tag}_band_claim", Plain(band_verdict(summary)), display=False)
    print(f"{label}: {band_verdict(summary)}")

# %% [markdown]
# ## What agrees across the two families
#
# Each statement below is answered per model from the numbers above; it *agrees* when both models give the same
# answer, and cannot be compared when one model's run has nothing to answer it with (no additive sweet spot, so
# nothing to set against capping or to repeat along random directions).

# %% tags=["hide-input"]
def best_band(summary: dict) -> str:
    bands = [b for b in summary["bands"] if b["positions"] == "all"]
    return max(bands, key=lambda b: b["gain"].mean)["band"] if bands else "none"


def beats_random(summary: dict, kind: str) -> str:
    spec = summary.get("specificity", {}).get(kind)
    return "not run" if spec is None else "yes" if spec["rank"] == 1 else "no"


statements = {
    "non-assistant answers loop more often than assistant answers": lambda s: (
        "yes" if s["answers"]["loop_rate_non_assistant"] > s["answers"]["loop_rate_assistant"] else "no"),
    "the response-mean axis beats all random directions in held-out separation": lambda s: (
        "yes" if s["extraction"]["response_mean"]["random_rank"] == 1 else "no"),
    "the real assistant split is the best of the 84 persona partitions (response-mean)": lambda s: (
        "yes" if s["extraction"]["response_mean"]["partition_rank"] == 1 else "no"),
    "the extraction method with the higher held-out d": lambda s: extraction_verdict(s)[0].split(",")[0],
    "the chosen response-mean layer's third of depth": lambda s: ("early", "middle", "late")[
        min(2, int(3 * s["extraction"]["response_mean"]["depth"]))],
    "additive steering has a sweet spot (a scale above 0) within the coherence margin": lambda s: (
        "yes" if s["additive"] else "no"),
    "the capping band with the largest gain (all positions)": best_band,
    "capping gains more assistant-likeness than additive steering at the sweet spots": lambda s: (
        "n/a" if not (s["additive"] and s["capping"]) else "yes" if s["capping"]["assistant_likeness"].minus(
            s["capping"]["base_assistant_likeness"]) > s["additive"]["assistant_likeness"].minus(s["additive"]["base_assistant_likeness"]) else "no"),
    "additive steering along the axis beats every random direction": lambda s: beats_random(s, "add"),
    "capping along the axis beats every random direction": lambda s: beats_random(s, "cap"),
}
UNREADABLE = ("n/a", "not run")  # a statement that needs what one model's run did not produce (e.g. no sweet spot)
agreement = pd.DataFrame([{"statement": name, labels[0]: fn(first), labels[1]: fn(second)} for name, fn in statements.items()])
readable = ~agreement[labels[0]].isin(UNREADABLE) & ~agreement[labels[1]].isin(UNREADABLE)
agreement["agree"] = (agreement[labels[0]] == agreement[labels[1]]).where(readable, "cannot be compared")
both = f"{labels[0]}: {{}}; {labels[1]}: {{}}"
agreed = [f"{r.statement} ({r[labels[0]]})" for _, r in agreement[agreement["agree"].eq(True)].iterrows()]
differ = [f"{r.statement} ({both.format(r[labels[0]], r[labels[1]])})" for _, r in agreement[agreement["agree"].eq(False)].iterrows()]
unread = [f"{r.statement} ({both.format(r[labels[0]], r[labels[1]])})" for _, r in agreement[~readable].iterrows()]
glue("n_statements", len(agreement), display=False)
glue("n_comparable", int(readable.sum()), display=False)
glue("n_agree", len(agreed), display=False)
glue("agree_list", Plain("; ".join(agreed) or "none"), display=False)
glue("disagree_list", Plain("; ".join(differ) or "none"), display=False)
glue("unreadable_list", Plain("; ".join(unread) or "none"), display=False)
glue("agreement_table", agreement.set_index("statement"), display=False)
agreement.set_index("statement")


def compared(a: float, b: float, apart: bool, more: str, less: str) -> str:
    return (more if a > b else less) if apart else f"{more if a > b else less} (the intervals overlap)"


rm1, rm2 = first["extraction"]["response_mean"]["cohens_d_two_way"], second["extraction"]["response_mean"]["cohens_d_two_way"]
headline = [
    "the second model's response-mean axis separates the personas " + compared(
        rm2.mean, rm1.mean, rm2.low > rm1.high or rm1.low > rm2.high, "better than the first's", "less well than the first's"),
    f"{second['answers']['in_role_non_assistant']:.0f} % of its non-assistant answers read as in role "
    f"against {first['answers']['in_role_non_assistant']:.0f} %",
    "additive steering " + ("finds a strength that helps within the coherence margin on both models" if second["additive"] and first["additive"]
                            else "finds no strength that helps within the coherence margin on the second model" if first["additive"]
                            else "finds no strength that helps within the coherence margin on the first model" if second["additive"]
                            else "finds no strength that helps within the coherence margin on either model"),
    "capping " + ("finds one on both" if first["capping"] and second["capping"] else "does not find one on both"),
]
glue("headline", Plain("; ".join(headline)), display=False)
print("; ".join(headline))
