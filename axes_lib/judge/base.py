"""What every judge shares: the `Item` / `Score` types, the `Judge` protocol, the rubric and the score tool.

A judge scores answers for assistant-likeness and coherence (0-10 each). The rubric is versioned data
(`axes_lib/data/rubrics.json`); an LLM judge answers through the `record_scores` tool, whose input is
validated here (two finite numbers in [0, 10]) before it counts.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "SCALES",
    "TOOL_NAME",
    "InvalidReply",
    "Item",
    "Judge",
    "Score",
    "check_rubric",
    "get_field",
    "coerce_item",
    "load_rubric",
    "parse_message",
    "parse_tool_input",
    "score_tool",
]

TOOL_NAME = "record_scores"
SCALES = ("assistant_likeness", "coherence")
_RUBRIC_KEYS = ("version", "system", "assistant_likeness", "coherence", "template")


@dataclass(frozen=True)
class Item:
    """One answer to judge: the user's query and the model's response; `meta` travels with it but is never sent."""

    query: str
    response: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    """A judgement: both scales in [0, 10], or `None` with `error` saying why no valid score was obtained."""

    assistant_likeness: float | None
    coherence: float | None
    judge: str
    error: str | None = None
    rationale: str | None = None

    @property
    def ok(self) -> bool:
        """True when both scales hold a valid number."""
        return self.error is None and self.assistant_likeness is not None and self.coherence is not None


@runtime_checkable
class Judge(Protocol):
    """Anything that scores items: `score` keeps input order; `id` names the judge, model and rubric."""

    id: str

    def score(self, items: Sequence[Item]) -> list[Score]:
        """Score each item; the i-th Score belongs to the i-th item."""
        ...

    def score_one(self, query: str, response: str) -> Score:
        """Score a single (query, response) pair."""
        ...


def coerce_item(obj: Any, index: int) -> Item:
    """Accept Item, a (query, response) pair or a mapping with query/response (and optional meta)."""
    if isinstance(obj, Item):
        item = obj
    elif isinstance(obj, Mapping) and "query" in obj and "response" in obj:
        item = Item(obj["query"], obj["response"], dict(obj.get("meta") or {}))
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        item = Item(obj[0], obj[1])
    else:
        raise TypeError(f"item {index} is a {type(obj).__name__}: pass Item(query, response), a (query, response) pair or a dict with those keys")
    if not isinstance(item.query, str) or not isinstance(item.response, str):
        raise TypeError(
            f"item {index}: query and response must be str, got {type(item.query).__name__} and {type(item.response).__name__}"
        )
    return item


# --------------------------------------------------------------------------------------------------
# Rubric and the score tool


def load_rubric(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Load the judge rubric (`axes_lib/data/rubrics.json` by default) and check it has every part."""
    if path is None:
        text = resources.files("axes_lib").joinpath("data", "rubrics.json").read_text(encoding="utf-8")
        where = "axes_lib/data/rubrics.json"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    return check_rubric(json.loads(text), where)


def check_rubric(rubric: Any, where: str = "rubric") -> dict[str, str]:
    """The rubric as a str -> str dict, after checking every part is there and the template uses every placeholder."""
    if not isinstance(rubric, Mapping):
        raise ValueError(f"{where}: a rubric is a JSON object with keys {list(_RUBRIC_KEYS)}, got {type(rubric).__name__}")
    missing = [k for k in _RUBRIC_KEYS if not isinstance(rubric.get(k), str) or not rubric.get(k).strip()]
    if missing:
        raise ValueError(f"{where}: missing or empty rubric field(s) {missing}; a rubric needs {list(_RUBRIC_KEYS)}")
    placeholders = {"query", "response", "assistant_likeness", "coherence"}
    found = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(rubric["template"])}
    if not placeholders <= found:
        raise ValueError(
            f"{where}: template lacks placeholder(s) {sorted(placeholders - found)}; it must use $query, $response, "
            "$assistant_likeness and $coherence"
        )
    return {k: str(v) for k, v in rubric.items()}


def score_tool() -> dict[str, Any]:
    """The `record_scores` tool definition: two numbers in [0, 10] and a short rationale."""
    number = {"type": "number", "minimum": 0, "maximum": 10}
    return {
        "name": TOOL_NAME,
        "description": "Record the scores of the response being judged. Call exactly once.",
        "input_schema": {
            "type": "object",
            "properties": {
                "assistant_likeness": {**number, "description": "0-10: how much the response sounds like a helpful AI assistant."},
                "coherence": {**number, "description": "0-10: how well-formed and logical the response is."},
                "rationale": {"type": "string", "description": "One short sentence explaining the scores."},
            },
            "required": ["assistant_likeness", "coherence", "rationale"],
        },
    }


# --------------------------------------------------------------------------------------------------
# Reading a judge's answer


class InvalidReply(ValueError):
    """The reply (or a stored record) had no usable pair of scores."""


def get_field(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key access, for SDK models and plain dicts alike."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise InvalidReply(f"{name} is {type(value).__name__} {shown}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidReply(f"{name} is {number}, not a finite number")
    if not 0.0 <= number <= 10.0:
        raise InvalidReply(f"{name}={number:g} is outside 0-10")
    return number


def parse_tool_input(data: Any) -> tuple[float, float, str | None]:
    """Validate a record_scores input: both scales numeric, finite and in [0, 10]; rationale optional."""
    if not isinstance(data, Mapping):
        raise InvalidReply(f"tool input is {type(data).__name__}, not an object")
    missing = [k for k in SCALES if k not in data]
    if missing:
        raise InvalidReply(f"tool input lacks {missing}")
    al = _check_number("assistant_likeness", data["assistant_likeness"])
    co = _check_number("coherence", data["coherence"])
    rationale = data.get("rationale")
    rationale = rationale.strip()[:500] if isinstance(rationale, str) else None
    return al, co, rationale


def parse_message(message: Any) -> tuple[float, float, str | None]:
    """Scores from a Messages API reply (SDK object or dict): the first record_scores tool call, validated."""
    content = get_field(message, "content") or []
    for block in content:
        if get_field(block, "type") == "tool_use" and get_field(block, "name") == TOOL_NAME:
            return parse_tool_input(get_field(block, "input"))
    kinds = [str(get_field(b, "type")) for b in content]
    raise InvalidReply(
        f"no {TOOL_NAME} tool call in the reply (content blocks {kinds}, stop_reason={get_field(message, 'stop_reason')!r})"
    )
