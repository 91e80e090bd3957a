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
# # Step 10 — Persona space
#
# Anthropic's *The Assistant Axis* takes one vector per role — the mean response activation of the role's
# answers — runs a PCA over the roles at each layer, and finds that the first component lines up with the
# assistant axis. Here the roles are the project's persona bank (`axes_lib/data/persona_bank.json`: three
# assistant roles and the others in five families, three wordings each), answering held-out queries
# of step 3's split, and the axis is step 3's response-mean direction, fitted on the seed's nine personas
# only: the bank is data the axis never saw.
#
# Controls: a PCA's first component lines up with *some* contrast between roles by construction, so the
# assistant contrast's cosine is ranked among the contrasts of random sets of as many roles; a bootstrap
# over roles gives its interval; and the role vectors are also computed from only the answers that sound
# like their role (a sentence-embedding match against the role's own example answers).

# %% tags=["parameters"]
model_key = "smollm2"
bank_queries = 10  # held-out queries of step 3's split each role answers (None: all of them)
families = None  # None: every family of the bank
n_per_family = None  # None: every role of each family
wordings = [0, 1, 2]  # the bank's wordings of each role's system prompt
max_new_tokens = 64  # as step 1
batch_size = 128
n_null = 1000  # random role sets for the PC1 null
n_boot = 1000  # role bootstrap
seed = 0
artifacts_dir = "artifacts"
resume = True  # False: regenerate every answer

# %% tags=["hide-input"]
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from axes_lib.activations import extract
from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.bank import EXAMPLE_QUESTIONS, bank_prompts, load_bank
from axes_lib.directions import load_direction
from axes_lib.figures import Plain, save
from axes_lib.figures_space import pc1_alignment, role_map, role_ranking
from axes_lib.io import read_json, save_tensors, write_json
from axes_lib.judge.topic import embed, load_embedder
from axes_lib.metrics import rank_among
from axes_lib.models import load_model, model_name
from axes_lib.persona_space import (
    contrast,
    pc1_contrast_null,
    pc1_cosine,
    pca_by_layer,
    role_bootstrap,
    role_means,
    voice_match,
)
from axes_lib.splits import queries_in
from axes_lib.sweeps import Setting, sweep

model_name(model_key)
roles = load_bank(families=families, n_per_family=n_per_family)  # checked before the model loads
paths = Artifacts(artifacts_dir, model_key)
for path, step_no in ((paths.split, "03"), (paths.direction("response_mean"), "03"), (paths.evaluation("response_mean"), "04")):
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebook {step_no} for model_key={model_key!r} first")
split = read_json(paths.split)
queries = queries_in(split, "holdout", bank_queries)
axis_direction = load_direction(paths.direction("response_mean"))
axis_layer = read_json(paths.evaluation("response_mean"))["best_layer"]
out_path = paths.sweep("bank")
step = Step(manifest_of(out_path), dict(model_key=model_key, bank_queries=bank_queries, families=families,
                                        n_per_family=n_per_family, wordings=wordings, max_new_tokens=max_new_tokens),
            outputs=[out_path], resume=resume)
family_of = {r.name: r.family for r in roles}
print(f"{len(roles)} roles x {len(wordings)} wordings x {len(queries)} held-out queries; axis layer {axis_layer}")

# %% [markdown]
# ## The bank's answers
#
# Every role answers the queries under each of its wordings, greedily, resumably (as in step 1).

# %%
model, tokenizer = load_model(model_key)
records = bank_prompts(roles, queries, wordings, model_type=model_key, tokenizer=tokenizer)
rows = sweep(model, tokenizer, records, [Setting("unsteered", None)], out_path, max_new_tokens, batch_size)
prompt_of = {r["id"]: r["prompt"] for r in records}
info = {r["id"]: r for r in records}
rows = [{**info[r["id"]], "response": r["response"]} for r in rows if r["response"].strip()]
print(f"{len(rows)} non-empty answers of {len(records)}")
print(f"Answers to {queries[0].text!r} under each role's first wording (every fourth role):")
examples = pd.DataFrame([{"role": r["role"], "family": r["family"], "answer": r["response"][:240]}
                         for r in rows if r["wording"] == 0 and r["query_id"] == queries[0].id])
pd.set_option("display.max_colwidth", 240)
examples.set_index("role").iloc[::4]

# %% [markdown]
# ## Do the answers sound like their role?
#
# The 135M model drops many roles. An answer counts as **in role** when its sentence embedding
# (all-MiniLM-L6-v2, the judge's topic model) is closer to the centroid of its own role's example answers
# than to every assistant role's. As a check of the instrument, the *rank* of the own role among all roles
# (1 = its own role's examples are the closest of all) is compared with chance.

# %%
embedder = load_embedder()
centroids = {r.name: embed(*embedder, list(r.examples)).mean(axis=0) for r in roles}
answer_emb = embed(*embedder, [r["response"] for r in rows])
assistants = [r.name for r in roles if r.family == "assistant"]
match = voice_match(answer_emb, [r["role"] for r in rows], centroids, assistants)
in_role = match["in_role"]
by_family = pd.DataFrame({"family": [r["family"] for r in rows], "in role": in_role, "own role closest": match["rank"] == 1,
                          "own role in top 5": match["rank"] <= 5}).groupby("family").mean().round(3) * 100
by_family.loc["chance (top 1 / top 5)"] = [np.nan, round(100 / len(roles), 1), round(500 / len(roles), 1)]
by_family

# %% tags=["hide-input"]
glue("space_top1", round(100 * float(np.mean(match["rank"] == 1)), 1), display=False)
glue("space_top1_chance", round(100 / len(roles), 1), display=False)
glue("space_in_role", int(in_role.sum()), display=False)
glue("space_in_role_total", len(rows), display=False)
glue("space_in_role_pct", round(100 * float(in_role.mean())), display=False)

# %% [markdown]
# ## Role vectors and their principal components
#
# Response-mean activations of every answer at every layer, read by the unsteered model; one mean per role,
# from all its answers and from its in-role answers only (roles with fewer than three in-role answers are
# left out of that variant). PCA per layer, centred on the mean role.

# %%
acts = extract(model, tokenizer, [prompt_of[r["id"]] for r in rows], method="response_mean",
               responses=[r["response"] for r in rows], batch_size=32)
layers = list(range(acts.shape[1]))
axis = np.stack([axis_direction[i].double().numpy() for i in layers])
role_labels = [r["role"] for r in rows]
names, vectors = role_means(acts, role_labels)
families_of_names = [family_of[n] for n in names]
counts = pd.Series(role_labels)[in_role].value_counts()
kept_roles = [n for n in names if counts.get(n, 0) >= 3]
keep_rows = np.array([in_role[i] and role_labels[i] in kept_roles for i in range(len(rows))])
names_in, vectors_in = role_means(acts[torch.from_numpy(keep_rows)], [role_labels[i] for i in np.flatnonzero(keep_rows)])
save_tensors(paths.persona_vectors, {"all_answers": torch.from_numpy(vectors).float(), "in_role": torch.from_numpy(vectors_in).float()},
             {"roles_all": ",".join(names), "roles_in_role": ",".join(names_in), "layers": ",".join(map(str, layers)),
              "model": model_key, "method": "response_mean"})


def analyse(names, vectors):
    """PCA, the PC1 cosines with step 3's axis and with the bank's own assistant contrast, and their controls."""
    members = [names.index(a) for a in assistants if a in names]
    pca = pca_by_layer(vectors, n_components=5)
    bank_axis = contrast(vectors, members)
    null = pc1_contrast_null(vectors, members, n=n_null, seed=seed)
    out = {"names": names, "pca": pca, "bank_axis": bank_axis,
           "cos_axis": pc1_cosine(pca["components"], axis), "cos_bank": pc1_cosine(pca["components"], bank_axis),
           "null_q95": np.quantile(null, 0.95, axis=0), "null_median": np.median(null, axis=0)}
    for key in ("axis", "bank"):  # rank 1 = above every random role set; p = (1 + #null >= real) / (1 + n)
        ranks = rank_among(out[f"cos_{key}"], null)
        out[f"rank_{key}"], out[f"p_{key}"] = np.array(ranks["rank"], int), np.array(ranks["p_value"])
    boot = role_bootstrap(vectors, axis, n=n_boot, seed=seed)
    out["cos_axis_low"], out["cos_axis_high"] = np.quantile(boot, [0.025, 0.975], axis=0)
    out["axis_vs_bank"] = np.abs(np.einsum("ld,ld->l", axis, bank_axis)) / (np.linalg.norm(axis, axis=1) * np.linalg.norm(bank_axis, axis=1))
    return out


results = {"all answers": analyse(names, vectors), "in-role answers": analyse(names_in, vectors_in)}
table = pd.DataFrame({label: {
    "roles": len(r["names"]), "PC1 share at axis layer": round(float(r["pca"]["explained"][axis_layer, 0]), 3),
    "|cos(PC1, step 3 axis)|": round(float(r["cos_axis"][axis_layer]), 3),
    "95% CI (roles resampled)": f"[{r['cos_axis_low'][axis_layer]:.2f}, {r['cos_axis_high'][axis_layer]:.2f}]",
    "|cos(PC1, bank's assistant contrast)|": round(float(r["cos_bank"][axis_layer]), 3),
    "random role sets, 95th pct": round(float(r["null_q95"][axis_layer]), 3),
    f"rank of the step 3 axis among {n_null}": int(r["rank_axis"][axis_layer]),
    "layers where the step 3 axis beats the 95th pct": int((r["cos_axis"] > r["null_q95"]).sum()),
    "|cos(step 3 axis, bank contrast)|": round(float(r["axis_vs_bank"][axis_layer]), 3),
} for label, r in results.items()})
table

# %% tags=["hide-input"]
r = results["all answers"]
fig = pc1_alignment(layers, {"step 3 axis (seed personas)": r["cos_axis"], "the bank's assistant contrast": r["cos_bank"],
                             "step 3 axis, in-role answers only": results["in-role answers"]["cos_axis"]},
                    r["null_q95"], r["pca"]["explained"][:, 0], axis_layer)
save(fig, paths.figure("persona_space_pc1"))
for key, res in (("all", results["all answers"]), ("inrole", results["in-role answers"])):
    glue(f"space_{key}_cos", round(float(res["cos_axis"][axis_layer]), 2), display=False)
    glue(f"space_{key}_cos_low", round(float(res["cos_axis_low"][axis_layer]), 2), display=False)
    glue(f"space_{key}_cos_high", round(float(res["cos_axis_high"][axis_layer]), 2), display=False)
    glue(f"space_{key}_cos_bank", round(float(res["cos_bank"][axis_layer]), 2), display=False)
    glue(f"space_{key}_null_q95", round(float(res["null_q95"][axis_layer]), 2), display=False)
    glue(f"space_{key}_rank", int(res["rank_axis"][axis_layer]), display=False)
    glue(f"space_{key}_p", Plain(f"{res['p_axis'][axis_layer]:.3g}"), display=False)
    glue(f"space_{key}_bank_p", Plain(f"{res['p_bank'][axis_layer]:.3g}"), display=False)
    glue(f"space_{key}_pc1_share", round(100 * float(res["pca"]["explained"][axis_layer, 0])), display=False)
    glue(f"space_{key}_pc2_share", round(100 * float(res["pca"]["explained"][axis_layer, 1])), display=False)
    glue(f"space_{key}_layers_above", int((res["cos_axis"] > res["null_q95"]).sum()), display=False)
    glue(f"space_{key}_cos_min", round(float(res["cos_axis"].min()), 2), display=False)
    glue(f"space_{key}_cos_max", round(float(res["cos_axis"].max()), 2), display=False)
    glue(f"space_{key}_cos_argmax", int(np.argmax(res["cos_axis"])), display=False)
    glue(f"space_{key}_n_roles", len(res["names"]), display=False)
res = results["all answers"]
p_axis, rank_axis = float(res["p_axis"][axis_layer]), int(res["rank_axis"][axis_layer])
glue("space_verdict", Plain(
    f"lines up with the first principal component better than the contrast of {100 * (1 - (rank_axis - 1) / n_null):.0f} % of "
    f"random sets of as many roles (rank {rank_axis} of {n_null + 1}, p = {p_axis:.3g})" if p_axis < 0.05 else
    f"lines up with the first principal component no better than the contrast of a random set of as many roles "
    f"(rank {rank_axis} of {n_null + 1}, p = {p_axis:.3g})"), display=False)
glue("space_axis_layer", axis_layer, display=False)
glue("space_n_layers", len(layers), display=False)
glue("space_n_null", n_null, display=False)
glue("space_n_queries", len(queries), display=False)
glue("space_n_roles_bank", len(roles), display=False)
glue("space_axis_vs_bank", round(float(results["all answers"]["axis_vs_bank"][axis_layer]), 2), display=False)
fig

# %% [markdown]
# ## The roles on the first two components, and along the axis
#
# At the axis's layer (chosen in step 4 on the seed personas): each role's coordinates on PC1 and PC2,
# coloured by the projection of its vector on step 3's unit axis; then every role ranked by that projection.
# Does the axis put the assistant-like professionals next to the assistant and fantastical beings far from it?
# The family means are compared with a permutation test that shuffles family labels across roles.

# %%
unit = axis[axis_layer] / np.linalg.norm(axis[axis_layer])
projection = vectors[:, axis_layer] @ unit
fig = role_map(r["pca"]["scores"][axis_layer], names, families_of_names, projection, r["pca"]["explained"][axis_layer], axis_layer)
save(fig, paths.figure("persona_space_map"))
fig

# %%
fig = role_ranking(names, families_of_names, projection, axis_layer)
save(fig, paths.figure("persona_space_ranking"))
fams = np.array(families_of_names)
family_means = pd.Series(projection).groupby(fams).mean().sort_values(ascending=False)


def gap(labels, a="professional", b="fantastical"):
    """Mean projection of family a's roles minus family b's (labels: one family per role)."""
    return projection[labels == a].mean() - projection[labels == b].mean()


def shuffled(rng):
    """Family labels permuted among the non-assistant roles (the assistant roles keep theirs)."""
    out = fams.copy()
    out[fams != "assistant"] = rng.permutation(fams[fams != "assistant"])
    return out


rng = np.random.default_rng(seed)
observed = gap(fams)
perm = np.array([gap(shuffled(rng)) for _ in range(n_null)])
p_gap = (1 + np.sum(perm >= observed)) / (1 + n_null)
order = np.argsort(-projection)
rank_of = {names[i]: k + 1 for k, i in enumerate(order)}
glue("space_family_order", Plain(", ".join(family_means.index)), display=False)
glue("space_family_verdict", Plain(
    "puts the assistant-like professionals closer to the assistant than the fantastical beings" if p_gap < 0.05 and observed > 0 else
    "does not put the assistant-like professionals measurably closer to the assistant than the fantastical beings"), display=False)
glue("space_gap", round(float(observed), 1), display=False)
glue("space_gap_p", Plain(f"{p_gap:.3g}"), display=False)
glue("space_top_roles", Plain(", ".join(names[i].replace("_", " ") for i in order[:6])), display=False)
glue("space_bottom_roles", Plain(", ".join(names[i].replace("_", " ") for i in order[-5:])), display=False)
glue("space_assistant_ranks", Plain.list([rank_of[a] for a in assistants]), display=False)
fig

# %%
summary = {
    "model": model_key, "axis_layer": axis_layer, "n_roles": len(names), "n_answers": len(rows), "queries": [q.id for q in queries],
    "wordings": wordings, "example_questions": list(EXAMPLE_QUESTIONS), "voice_top1": float(np.mean(match["rank"] == 1)),
    "in_role": {"kept": int(in_role.sum()), "of": len(rows), "roles_kept": names_in},
    "family_means": family_means.round(3).to_dict(), "professional_minus_fantastical": float(observed), "p_family_gap": float(p_gap),
    "ranking": [names[i] for i in order],
    "analyses": {label: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in res.items() if k not in ("pca", "bank_axis")}
                 | {"explained": res["pca"]["explained"].tolist()} for label, res in results.items()},
}
write_json(paths.summary("persona_space"), summary)
step.done(n_answers=len(rows), n_roles=len(names))
family_means.round(2).to_frame("mean projection")
