"""The seed's contrastive data (queries and personas, as package data files) and prompt formatting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Query:
    id: str
    category: str
    text: str


@dataclass(frozen=True)
class Persona:
    name: str
    label: str
    kind: str  # "assistant" or "non_assistant"
    system: str


@cache
def _queries() -> tuple[Query, ...]:
    return tuple(Query(**q) for q in json.loads((DATA / "queries.json").read_text())["queries"])


def load_queries(n: int | None = None) -> list[Query]:
    """The 100 queries (5 categories x 20); `n` takes the first n with categories interleaved, so a
    small n still covers every category."""
    queries = list(_queries())
    if n is None:
        return queries
    if not 1 <= n <= len(queries):
        raise ValueError(f"n must be between 1 and {len(queries)}, got {n}")
    by_cat: dict[str, list[Query]] = {}
    for q in queries:
        by_cat.setdefault(q.category, []).append(q)
    order = [q for group in zip(*by_cat.values()) for q in group]
    return order[:n]


def load_personas(kind: str | None = None) -> list[Persona]:
    """The 3 assistant and 6 non-assistant personas, optionally of one kind."""
    personas = [Persona(**p) for p in json.loads((DATA / "personas.json").read_text())["personas"]]
    if kind is not None and kind not in {"assistant", "non_assistant"}:
        raise ValueError(f"kind must be 'assistant' or 'non_assistant', got {kind!r}")
    return [p for p in personas if kind is None or p.kind == kind]


# Built-in chat templates for when no tokenizer is at hand; they mirror the models' own templates,
# including the system prompt each inserts when none is given.
CHATML_DEFAULT_SYSTEM = {
    "smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "qwen": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}
LLAMA3_SYSTEM_PREAMBLE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
TEMPLATES = ("smollm2", "qwen", "llama")


def _chatml(messages: list[dict[str, str]], default_system: str, add_generation_prompt: bool) -> str:
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _llama3(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    rest = messages[1:] if messages[0]["role"] == "system" else messages
    turns = [{"role": "system", "content": LLAMA3_SYSTEM_PREAMBLE + system}, *rest]
    text = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in turns
    )
    return text + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")


def format_conversation(messages: list[dict[str, str]], model_type: str = "smollm2", tokenizer: Any = None,
                        add_generation_prompt: bool = True) -> str:
    """A multi-turn conversation as the model's prompt string: the tokenizer's chat template when given,
    else the built-in template of the model family (`smollm2`/`qwen`: ChatML, `llama`: Llama 3)."""
    if not messages:
        raise ValueError("messages is empty: a conversation needs at least one user message")
    for i, m in enumerate(messages):
        if m.get("role") not in {"system", "user", "assistant"} or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} needs a role (system/user/assistant) and string content, got {m!r}")
    if tokenizer is not None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if model_type in CHATML_DEFAULT_SYSTEM:
        return _chatml(messages, CHATML_DEFAULT_SYSTEM[model_type], add_generation_prompt)
    if model_type == "llama":
        return _llama3(messages, add_generation_prompt)
    raise ValueError(f"no built-in chat template for model_type {model_type!r}: pass its tokenizer, or use one of {TEMPLATES}")


def format_prompt(system: str | None, query: str, model_type: str = "smollm2", tokenizer: Any = None) -> str:
    """One system prompt and one user query, ready for generation (the seed's signature)."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query is empty: a prompt needs a user query")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": query}]
    return format_conversation(messages, model_type, tokenizer)


def contrastive_prompts(queries: Sequence[Query], personas: Sequence[Persona], model_type: str = "smollm2",
                        tokenizer: Any = None) -> list[dict[str, Any]]:
    """One record per (persona, query), persona-major so prompts sharing a system prompt are adjacent."""
    return [{"persona": p.name, "kind": p.kind, "query_id": q.id, "category": q.category, "query": q.text,
             "prompt": format_prompt(p.system, q.text, model_type, tokenizer)} for p in personas for q in queries]
