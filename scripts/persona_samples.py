"""Write greedy sample answers of every persona: the evidence that the persona prompts are adopted.

    .venv/bin/python scripts/persona_samples.py                      # -> tests/data/persona_samples.json
    .venv/bin/python scripts/persona_samples.py --queries fact-01,fact-02,advice-01 --out /tmp/check.json

The default queries are the first four of `load_queries()` (one per category, in the interleaved
order), not hand-picked ones. Generation is greedy and batched with left padding through
`axes_lib.generation.generate`, the code path the notebooks use, so a rerun on the same versions
reproduces the file. Each persona's entry carries the sha256 of its system prompt, so a test can tell
when personas.json changed without the samples being regenerated.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

from axes_lib.generation import generate  # noqa: E402
from axes_lib.io import read_json, write_json  # noqa: E402
from axes_lib.models import load_model  # noqa: E402
from axes_lib.prompts import format_prompt, load_personas, load_queries  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "data" / "persona_samples.json"


def system_sha256(system: str) -> str:
    """Fingerprint of a system prompt, stored with its samples."""
    return hashlib.sha256(system.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="model key for axes_lib.models.load_model")
    parser.add_argument("--queries", default=None, help="comma-separated query ids (default: the first 4 of load_queries())")
    parser.add_argument("--personas", default=None, help="comma-separated persona names (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    all_queries = {q.id: q for q in load_queries()}
    if args.queries:
        missing = [i for i in args.queries.split(",") if i not in all_queries]
        if missing:
            parser.error(f"unknown query ids {missing}; ids look like {list(all_queries)[:5]}")
        queries = [all_queries[i] for i in args.queries.split(",")]
    else:
        queries = load_queries(4)
    personas = load_personas()
    if args.personas:
        wanted = args.personas.split(",")
        unknown = sorted(set(wanted) - {p.name for p in personas})
        if unknown:
            parser.error(f"unknown personas {unknown}; known: {[p.name for p in personas]}")
        personas = [p for p in personas if p.name in wanted]

    torch.manual_seed(0)
    model, tokenizer = load_model(args.model)
    started = time.perf_counter()
    prompts = [format_prompt(p.system, q.text, tokenizer=tokenizer) for p in personas for q in queries]
    responses = iter(generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, progress=True))
    seconds = time.perf_counter() - started

    record = {
        "description": "Greedy answers of each persona (axes_lib/data/personas.json) to the same queries: evidence "
                       "that the persona prompts are adopted. Written by scripts/persona_samples.py.",
        "model": args.model,
        "generation": {
            "do_sample": False, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
            "padding_side": "left", "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(model.parameters()).device), "chat_template": "tokenizer",
        },
        "personas_version": read_json(ROOT / "axes_lib" / "data" / "personas.json").get("version"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "seconds": round(seconds, 1),
        "query_ids": [q.id for q in queries],
        "personas": [
            {
                "name": p.name, "label": p.label, "kind": p.kind, "system_sha256": system_sha256(p.system),
                "samples": [{"query_id": q.id, "query": q.text, "response": next(responses)} for q in queries],
            }
            for p in personas
        ],
    }
    path = write_json(args.out, record)
    print(f"wrote {path} ({len(prompts)} answers in {seconds:.0f} s)")
    return path


if __name__ == "__main__":
    main()
