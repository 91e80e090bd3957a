"""What the benchmark runs on: the model (embedded SmolLM2 or a random-weight Qwen-shaped model) and the prompts.

Prompts come from `axes_lib.prompts` (the seed's queries and 3 assistant + 6 non-assistant personas):
a stated subset, the first `n_queries` queries with categories interleaved (20 = the first 4 of each of
the 5 categories), under every persona, formatted with the tokenizer's chat template.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

MODEL_CONFIGS = ("smollm2", "qwen", "qwen-tiny")

# Qwen/Qwen2.5-3B-Instruct's architecture, written out so no hub access is needed (random weights).
QWEN_3B = dict(
    hidden_size=2048,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    intermediate_size=11008,
    vocab_size=151936,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    hidden_act="silu",
    tie_word_embeddings=True,
    use_sliding_window=False,
    attention_dropout=0.0,
    bos_token_id=151643,
    eos_token_id=151645,
)
# The same architecture shrunk for a CPU dry run of the `qwen` path (same vocab, so same embedding shape rules).
QWEN_TINY = dict(QWEN_3B, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)


def qwen_config(size: str) -> Any:
    """A `Qwen2Config` for `qwen` (Qwen2.5-3B-Instruct's shape) or `qwen-tiny`."""
    from transformers import Qwen2Config

    params = dict(QWEN_3B if size == "qwen" else QWEN_TINY)
    theta = params.pop("rope_theta")
    config = Qwen2Config(**params)
    # transformers 5 keeps rope settings in `rope_parameters`; older versions read `rope_theta`.
    if getattr(config, "rope_parameters", None) is not None:
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    config.rope_theta = theta
    return config


def load_bench_model(
    model_config: str, device: str, dtype: torch.dtype | None = None, tokenizer_dir: str | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, description). `qwen*` models have random weights (seed 0) and use SmolLM2's tokenizer,
    read from `tokenizer_dir` (a folder with SmolLM2's tokenizer files) or from the embedded model's cache."""
    from axes_lib.models import default_dtype, load_model, smollm2_path

    if model_config not in MODEL_CONFIGS:
        raise ValueError(f"unknown --model-config {model_config!r}: use one of {MODEL_CONFIGS}")
    dtype = dtype or default_dtype(device)
    if model_config == "smollm2":
        model, tok = load_model("smollm2", device=device, dtype=dtype)
        return model, tok, {"model": "smollm2", "weights": "SmolLM2-135M-Instruct (embedded GGUF, dequantized)"}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir or smollm2_path())  # ids < vocab of the Qwen config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = qwen_config(model_config)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    desc = {
        "model": model_config,
        "weights": "random (torch.manual_seed(0)), architecture of Qwen/Qwen2.5-3B-Instruct"
        + (" shrunk for a CPU dry run" if model_config == "qwen-tiny" else ""),
        "config": {k: v for k, v in (QWEN_3B if model_config == "qwen" else QWEN_TINY).items()},
        "tokenizer": "SmolLM2-135M-Instruct (text only; its ids are < the Qwen vocab)",
    }
    return model, tok, desc


@dataclass
class Workload:
    prompts: list[str]
    kinds: list[str]  # "assistant" / "non_assistant" per prompt
    personas: list[str]
    query_ids: list[str]
    source: str

    def indices(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == kind]

    def pairs(self) -> list[tuple[int, int]]:
        """(assistant, non-assistant) prompt index pairs for the peers' pair-based APIs.

        Per query, non-assistant persona j is paired with assistant persona j mod n_assistant, so with 6
        non-assistant and 3 assistant personas every assistant prompt appears twice and every other prompt
        once: the mean of pair differences equals mean(assistant) - mean(non-assistant).
        """
        by_query: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, (q, k) in enumerate(zip(self.query_ids, self.kinds, strict=True)):
            by_query[q][k].append(i)
        out = []
        for q in dict.fromkeys(self.query_ids):
            pos, neg = by_query[q]["assistant"], by_query[q]["non_assistant"]
            if not pos or not neg:
                continue
            out.extend((pos[j % len(pos)], n) for j, n in enumerate(neg))
        if not out:
            raise ValueError("no (assistant, non-assistant) pairs: every query needs prompts of both kinds")
        return out


def build_workload(tokenizer: Any, n_queries: int, model_type: str = "smollm2") -> Workload:
    """Chat-formatted prompts from `axes_lib.prompts`: the first `n_queries` queries (categories interleaved)
    under each of the 3 assistant and 6 non-assistant personas, formatted with the tokenizer's chat template."""
    from axes_lib import prompts as ap

    queries = ap.load_queries(n_queries)
    personas = ap.load_personas("assistant") + ap.load_personas("non_assistant")
    records = ap.contrastive_prompts(queries, personas, model_type=model_type, tokenizer=tokenizer)
    return Workload(
        prompts=[r["prompt"] for r in records],
        kinds=[r["kind"] for r in records],
        personas=[str(r["persona"]) for r in records],
        query_ids=[str(r["query_id"]) for r in records],
        source=f"axes_lib.prompts: load_queries({n_queries}) x load_personas() ({len(personas)} personas), tokenizer chat template",
    )


# Fixed responses for random-weight models (their generations are noise and may use ids the tokenizer lacks).
FIXED_RESPONSES = [
    "The capital of France is Paris, a city on the Seine known for its museums and cafes.",
    "Start small: pick one habit, practise it every day for a week, and write down how it went.",
    "I think both sides have a point, but the evidence leans toward the simpler explanation here.",
    "Once upon a time a lighthouse keeper found a bottle with a map inside, and the map was of his own island.",
    "First, gather the tools. Second, measure twice. Third, cut once and sand the edges smooth before painting.",
    "Honestly it depends on what you need, but for most people the cheaper option works just as well.",
]
