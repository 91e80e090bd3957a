"""Contrastive prompts: the seed's queries and personas (package data) and chat formatting.

The same user queries are asked under assistant and non-assistant system prompts; the difference
in activations between the two groups is the assistant axis. Queries and personas live in JSON files
under `axes_lib/data/` so that they can be read, diffed and cited without running Python.

Chat formatting uses the model's own tokenizer when one is given. Without one, built-in copies of
the ChatML (SmolLM2, Qwen 2.5) and Llama 3 templates render the same strings, so prompts can be built
and inspected without loading a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Sequence

__all__ = [
    "CHATML_DEFAULT_SYSTEM",
    "KINDS",
    "LAYOUTS",
    "LLAMA3_DATE",
    "LLAMA3_SYSTEM_PREAMBLE",
    "TEMPLATES",
    "Persona",
    "Query",
    "contrastive_prompts",
    "format_conversation",
    "format_prompt",
    "load_personas",
    "load_queries",
]

#: Persona kinds: the two sides of the contrast.
KINDS = ("assistant", "non_assistant")

#: Wordings of every persona's system prompt: the seed's (what the main results use), one matched layout
#: for all personas, and one sentence (personas.json, "layouts_note").
LAYOUTS = ("seed", "matched", "one_sentence")

#: Model types with a built-in chat template (used when no tokenizer is passed).
TEMPLATES = ("smollm2", "qwen", "qwen2.5-0.5b", "llama")

#: The system prompts the real ChatML templates insert when a conversation has none. Qwen2.5-Coder-0.5B's
#: GGUF carries Qwen 2.5's template unchanged, default system prompt included.
CHATML_DEFAULT_SYSTEM = {
    "smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "qwen": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "qwen2.5-0.5b": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}

#: Llama 3.x templates stamp "Today Date" into the system header: the real template takes the current
#: date (`strftime_now`) and falls back to this one. Prompts here always use this fixed date, also when
#: rendering through a tokenizer, so that prompts (and their activations) do not change from day to day.
LLAMA3_DATE = "26 Jul 2024"
LLAMA3_SYSTEM_PREAMBLE = f"Cutting Knowledge Date: December 2023\nToday Date: {LLAMA3_DATE}\n\n"

_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Query:
    """One user query of the contrastive set."""

    id: str
    category: str
    text: str


@dataclass(frozen=True)
class Persona:
    """A system prompt and which side of the contrast it belongs to (`kind`)."""

    name: str
    label: str
    kind: str
    system: str


def _read_json(name: str) -> dict[str, Any]:
    """One of the package's data files (`axes_lib/data/<name>`), parsed."""
    with resources.files("axes_lib").joinpath("data", name).open(encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=None)
def _all_queries() -> tuple[Query, ...]:
    """All queries, interleaved by category: 1st of each category, then 2nd of each, and so on."""
    data = _read_json("queries.json")
    by_category: dict[str, list[Query]] = {category: [] for category in data["categories"]}
    for record in data["queries"]:
        if record["category"] not in by_category:
            raise ValueError(f"queries.json: query {record['id']!r} has unknown category {record['category']!r}")
        by_category[record["category"]].append(Query(record["id"], record["category"], record["text"]))
    longest = max(len(queries) for queries in by_category.values())
    return tuple(
        queries[i] for i in range(longest) for queries in by_category.values() if i < len(queries)
    )


@lru_cache(maxsize=None)
def _all_personas(layout: str = "seed") -> tuple[Persona, ...]:
    """All personas in file order in one wording, checked: known kinds, unique names, every layout present."""
    data = _read_json("personas.json")
    missing = [r["name"] for r in data["personas"] if set(r.get("layouts", {})) != set(LAYOUTS[1:])]
    if missing:
        raise ValueError(f"personas.json: personas {missing} need exactly the layouts {list(LAYOUTS[1:])}")
    personas = tuple(Persona(r["name"], r["label"], r["kind"], r["system"] if layout == "seed" else r["layouts"][layout])
                     for r in data["personas"])
    for persona in personas:
        if persona.kind not in KINDS:
            raise ValueError(f"personas.json: persona {persona.name!r} has kind {persona.kind!r}; expected one of {KINDS}")
    names = [p.name for p in personas]
    if len(set(names)) != len(names):
        raise ValueError(f"personas.json: persona names must be unique, got {names}")
    return personas


def load_queries(n: int | None = None) -> list[Query]:
    """The seed's queries in interleaved category order; the first `n` of them cover every category for n >= 5.

    `load_queries(n)` equals `load_queries()[:n]`.
    """
    queries = _all_queries()
    if n is None:
        return list(queries)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    if not 1 <= n <= len(queries):
        raise ValueError(f"n must be between 1 and {len(queries)} (the number of queries), got {n}")
    return list(queries[:n])


def load_personas(kind: str | None = None, layout: str = "seed") -> list[Persona]:
    """All personas in file order (assistant ones first), or only those of one `kind`, with the system
    prompt in one of the `LAYOUTS` (default: the seed's wording)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None for all personas, got {kind!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return [p for p in _all_personas(layout) if kind is None or p.kind == kind]


def _check_messages(messages: Sequence[dict[str, str]]) -> None:
    """Raise ValueError unless `messages` is a non-empty list of {role, content} dicts with known roles."""
    if not messages:
        raise ValueError("messages is empty: give at least one {'role': 'user', 'content': ...} message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} needs a role ({'/'.join(_ROLES)}) and string content, got {message!r}")


def _chatml(messages: Sequence[dict[str, str]], default_system: str, add_generation_prompt: bool) -> str:
    """ChatML as SmolLM2's and Qwen 2.5's templates write it, default system prompt included."""
    parts = []
    if messages[0]["role"] != "system":
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def _llama3(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """Llama 3.1/3.2 Instruct's template (no tools): a system header always, contents stripped."""
    system = ""
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"].strip(), messages[1:]
    parts = [f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_SYSTEM_PREAMBLE}{system}<|eot_id|>"]
    parts += [
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in messages
    ]
    if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def format_conversation(
    messages: list[dict[str, str]],
    model_type: str = "smollm2",
    tokenizer: Any = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a chat (`[{"role", "content"}, ...]`) as the model's prompt string.

    With a tokenizer its own chat template renders it (with the Llama date pinned to `LLAMA3_DATE`);
    without one the built-in template for `model_type` (one of `TEMPLATES`) does.
    """
    _check_messages(messages)
    if tokenizer is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no chat template: pass tokenizer=None and one of "
                f"model_type={TEMPLATES} to use a built-in template"
            )
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, date_string=LLAMA3_DATE
        )
    if model_type in CHATML_DEFAULT_SYSTEM:
        return _chatml(messages, CHATML_DEFAULT_SYSTEM[model_type], add_generation_prompt)
    if model_type == "llama":
        return _llama3(messages, add_generation_prompt)
    raise ValueError(
        f"no built-in chat template for model_type {model_type!r}: use one of {TEMPLATES}, "
        "or pass the model's tokenizer"
    )


def format_prompt(system: str | None, query: str, model_type: str = "smollm2", tokenizer: Any = None) -> str:
    """One system prompt and one user query, ready for generation (the seed's signature).

    `system` None or empty sends no system message, so the template's own default applies (SmolLM2 and
    Qwen insert theirs; Llama 3 writes an empty system block after its date header).
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query is empty: a prompt needs a user query, got {query!r}")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": query})
    return format_conversation(messages, model_type=model_type, tokenizer=tokenizer)


def contrastive_prompts(
    queries: Iterable[Query],
    personas: Iterable[Persona],
    model_type: str = "smollm2",
    tokenizer: Any = None,
) -> list[dict[str, str]]:
    """Every (persona, query) pair as a record, persona-major so that equal system prompts are adjacent.

    Record keys: id ("persona/query_id", unique), persona, kind, query_id, category, query, prompt.
    """
    queries = list(queries)
    return [
        {
            "id": f"{persona.name}/{query.id}",
            "persona": persona.name,
            "kind": persona.kind,
            "query_id": query.id,
            "category": query.category,
            "query": query.text,
            "prompt": format_prompt(persona.system, query.text, model_type=model_type, tokenizer=tokenizer),
        }
        for persona in personas
        for query in queries
    ]
