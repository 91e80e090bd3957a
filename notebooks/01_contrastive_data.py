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
# # Step 1 — Contrastive data
#
# The same queries are put to the model under *assistant* system prompts and under *non-assistant*
# persona prompts (an angsty teenager, a conspiracy theorist, a wandering poet, …). Whatever differs
# between the two sets of activations — with the query held fixed — is what the assistant axis is
# made of. Responses are generated greedily and in batches, and appended to a JSONL file as they
# come, so an interrupted run resumes where it stopped without losing or duplicating anything.

# %% tags=["parameters"]
model_key = "smollm2"
n_queries = 100  # the seed's 100 queries (20 in each of 5 categories); fewer for a smoke run
personas = None  # None: all 3 assistant + 6 non-assistant personas; or a list of persona names
max_new_tokens = 64
batch_size = 128
artifacts_dir = "artifacts"
resume = True  # False: regenerate every answer (make book FORCE=1); True reuses answers whose inputs are unchanged

# %% tags=["hide-input"]
import pandas as pd
from myst_nb import glue

from axes_lib.artifacts import Artifacts, Step, manifest_of
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas, load_queries
from axes_lib.sweeps import Setting, sweep

model_name(model_key)  # a bad key fails here, before anything is loaded
out_path = Artifacts(artifacts_dir, model_key).responses
manifest_path = manifest_of(out_path)
queries = load_queries(n_queries)
chosen = [p for p in load_personas() if personas is None or p.name in personas]
if personas is not None and len(chosen) != len(set(personas)):
    raise ValueError(f"unknown personas {sorted(set(personas) - {p.name for p in chosen})}")
params = dict(model_key=model_key, n_queries=n_queries, personas=personas, max_new_tokens=max_new_tokens)

# %% [markdown]
# ## The personas
#
# Three assistant personas and six non-assistant ones. The wording was tuned until the 135M model
# really takes the personas on; the answers below are the evidence.

# %%
pd.set_option("display.max_colwidth", 120)
pd.DataFrame([{"persona": p.label, "kind": p.kind, "system prompt": p.system} for p in chosen])

# %% [markdown]
# ## Generate, resuming from what is already on disk

# %%
# Each answer is stored with the fingerprint of its prompt text, the model and the generation settings:
# a rerun reuses exactly the answers whose inputs are unchanged (an edited persona regenerates its own).
step = Step(manifest_path, params, outputs=[out_path], resume=resume)
model, tokenizer = load_model(model_key)
records = contrastive_prompts(queries, chosen, model_type=model_key, tokenizer=tokenizer)
responses = sweep(model, tokenizer, records, [Setting("unsteered", None)], out_path, max_new_tokens, batch_size,
                  chunk=4 * batch_size)  # appended (and fsynced) after every 4 batches

# %% tags=["hide-input"]
seconds = step.seconds
step.done(n_responses=len(responses))
glue("n_responses", len(responses), display=False)
glue("n_queries", len(queries), display=False)
glue("n_personas", len(chosen), display=False)
glue("generation_seconds", round(seconds), display=False)
print(f"{len(responses)} responses in {out_path} ({seconds:.0f} s this run)")

# %% [markdown]
# ## What the personas answer
#
# The same few queries, one column per persona. Assistant personas should answer plainly; the others
# in their own voice.

# %%
frame = pd.DataFrame(responses)
sample_ids = list(dict.fromkeys(frame["query_id"]))[:: max(1, len(set(frame["query_id"])) // 4)][:4]
table = frame[frame["query_id"].isin(sample_ids)].pivot(index="persona", columns="query", values="response")
table
