"""Draw the judge's gold set: real answers from the committed sweeps and contrastive data, stratified so
that loops, drift and off-topic answers are well represented, and written blind for labelling.

Writes `artifacts/gold/<model>_gold_items.jsonl` (id, query, response: all a labeller sees, shuffled),
`<model>_gold_items_recheck.jsonl` (50 of them again, for a second labelling pass) and
`<model>_gold_key.jsonl` (id -> source, setting, persona, query id: joined after labelling).
Run once: `python scripts/gold_sample.py [model_key]`. Deterministic (seed 0).
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from axes_lib.artifacts import Artifacts  # noqa: E402
from axes_lib.io import read_jsonl, write_jsonl  # noqa: E402

#: How many answers each stratum contributes, and the share of those drawn from looping answers.
QUOTAS = {"additive": 96, "capping": 72, "assistant_reference": 24, "contrastive_assistant": 24,
          "contrastive_persona": 24}
LOOP_SHARE = 0.5


def looping(text: str) -> bool:
    """More than 30 % of the word 3-grams repeat an earlier one (the reviewer's loop criterion)."""
    words = text.split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return bool(grams) and 1 - len(set(grams)) / len(grams) > 0.3


def main(model_key: str = "smollm2") -> None:
    paths = Artifacts(ROOT / "artifacts", model_key)
    pool: dict[str, list[dict]] = defaultdict(list)
    for name, stratum in (("additive", "additive"), ("capping", "capping")):
        for row in read_jsonl(paths.sweep(name)):
            pool[stratum].append({**row, "source": name})
        for row in read_jsonl(paths.sweep(name, assistant=True)):
            pool["assistant_reference"].append({**row, "source": f"{name}_assistant"})
    for row in read_jsonl(paths.responses):
        kind = "contrastive_assistant" if row["kind"] == "assistant" else "contrastive_persona"
        pool[kind].append({**row, "source": "responses", "setting": "unsteered"})
    rng = random.Random(0)
    seen: set[tuple[str, str]] = set()
    chosen = []
    for stratum, quota in QUOTAS.items():
        rows = [r for r in pool[stratum] if r["response"].strip()]
        rng.shuffle(rows)
        # Spread over settings: round-robin over settings, loops first until their share is filled.
        by_setting: dict[str, list[dict]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: not looping(r["response"])):
            by_setting[r["setting"]].append(r)
        n_loops, picked = int(quota * LOOP_SHARE), []
        while len(picked) < quota and any(by_setting.values()):
            for setting in sorted(by_setting):
                queue = by_setting[setting]
                while queue:
                    r = queue.pop(0) if sum(looping(p["response"]) for p in picked) < n_loops else queue.pop()
                    if (r["query"], r["response"]) not in seen:
                        break
                else:
                    continue
                seen.add((r["query"], r["response"]))
                picked.append({**r, "stratum": stratum})
                if len(picked) == quota:
                    break
        chosen += picked
    rng.shuffle(chosen)
    items, key = [], []
    for r in chosen:
        gid = hashlib.sha256(f"{r['query']}\0{r['response']}".encode()).hexdigest()[:12]
        items.append({"id": gid, "query": r["query"], "response": r["response"]})
        key.append({"id": gid, "stratum": r["stratum"], "source": r["source"], "setting": r["setting"],
                    "persona": r["persona"], "kind": r["kind"], "query_id": r["query_id"],
                    "loop_3gram": looping(r["response"])})
    out = ROOT / "artifacts" / "gold"
    write_jsonl(out / f"{model_key}_gold_items.jsonl", items)
    write_jsonl(out / f"{model_key}_gold_key.jsonl", key)
    # A random 50 for a second, independent labelling pass (self-agreement), in another order.
    write_jsonl(out / f"{model_key}_gold_items_recheck.jsonl", random.Random(1).sample(items, 50))
    print(f"{len(items)} items; loops {sum(k['loop_3gram'] for k in key)}; by stratum "
          + ", ".join(f"{s} {sum(k['stratum'] == s for k in key)}" for s in QUOTAS))


if __name__ == "__main__":
    main(*sys.argv[1:])
