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
overwrite = False  # True: replace artifacts made with other parameters
resume = True  # False: recompute from scratch (what make book FORCE 1 does)

# %%
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
from myst_nb import glue

from axes_lib.generation import generate
from axes_lib.io import append_jsonl, claim_artifacts, read_jsonl, write_manifest
from axes_lib.models import load_model, model_name
from axes_lib.prompts import contrastive_prompts, load_personas, load_queries

model_name(model_key)  # a bad key fails here, before anything is loaded
out_path = Path(artifacts_dir) / "responses" / f"{model_key}_responses.jsonl"
manifest_path = out_path.with_suffix(".manifest.json")
queries = load_queries(n_queries)
chosen = [p for p in load_personas() if personas is None or p.name in personas]
if personas is not None and len(chosen) != len(set(personas)):
    raise ValueError(f"unknown personas {sorted(set(personas) - {p.name for p in chosen})}")
# The texts themselves are part of the parameters: responses to an edited persona or query are never resumed.
prompt_data = hashlib.sha256(json.dumps([[p.name, p.system] for p in chosen] + [[q.id, q.text] for q in queries])
                             .encode()).hexdigest()[:16]
params = dict(model_key=model_key, n_queries=n_queries, personas=personas, max_new_tokens=max_new_tokens,
              prompt_data=prompt_data)
started = time.perf_counter()

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
if not resume or not claim_artifacts(manifest_path, params, overwrite=overwrite):
    out_path.unlink(missing_ok=True)  # other parameters (with overwrite=True) or a forced rerun: start afresh
write_manifest(manifest_path, params, seconds=0.0, complete=False)
done = {(r["persona"], r["query_id"]) for r in read_jsonl(out_path)} if out_path.exists() else set()

model, tokenizer = load_model(model_key)
records = contrastive_prompts(queries, chosen, model_type=model_key, tokenizer=tokenizer)
todo = [r for r in records if (r["persona"], r["query_id"]) not in done]
print(f"{len(records)} prompts, {len(done)} already generated, {len(todo)} to go")
chunk = 4 * batch_size  # appended (and fsynced) after each chunk
for start in range(0, len(todo), chunk):
    part = todo[start : start + chunk]
    answers = generate(model, tokenizer, [r["prompt"] for r in part], max_new_tokens=max_new_tokens,
                       batch_size=batch_size, progress=True)
    append_jsonl(out_path, [{k: v for k, v in r.items() if k != "prompt"} | {"response": a}
                            for r, a in zip(part, answers)])
    print(f"  {start + len(part)}/{len(todo)}")

# %%
responses = [r for r in read_jsonl(out_path) if (r["persona"], r["query_id"]) in
             {(x["persona"], x["query_id"]) for x in records}]
assert len(responses) == len(records) == len({(r["persona"], r["query_id"]) for r in responses})
seconds = time.perf_counter() - started
write_manifest(manifest_path, params, seconds=seconds, complete=True, n_responses=len(responses))
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
