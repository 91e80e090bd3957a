"""Issue 16's data: the persona bank, easy short-answer questions, drift conversations, stress messages and
neutral text (package data under `axes_lib/data/`, described in its README.md).

The persona bank holds roles in six `FAMILIES`: three assistant roles (the reference side of the axis) and
forty-odd non-assistant roles. Every role has three wordings of one system prompt (`Role.wording`, layout in
persona_bank.json) and one sentence. The seed's nine personas are not in the bank: their results come from
`prompts.load_personas()`, which keeps them unchanged; `SEED_SUBSET` names them.

`load_qa` and `is_correct` score short answers by whole-word match in the response's first sentence.
Everything here is plain Python (no torch), and every file is checked when it is first read, so a malformed
file fails before any expensive work.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Literal, Sequence

from axes_lib.prompts import KINDS, Query, _read_json, format_prompt

__all__ = [
    "DRIFT_DOMAINS",
    "EXAMPLE_QUESTIONS",
    "FAMILIES",
    "INTRO_JOINER",
    "N_WORDINGS",
    "SEED_SUBSET",
    "STRESS_STYLES",
    "QAItem",
    "Role",
    "bank_prompts",
    "example_indices",
    "first_sentence",
    "is_correct",
    "load_bank",
    "load_drift",
    "load_neutral",
    "load_qa",
    "load_stress",
    "normalise",
]

#: Role families, in the bank's order; "assistant" is the reference side of the axis.
FAMILIES = ("assistant", "professional", "everyday", "fantastical", "emotional", "adversarial")

#: The six example questions every role answers in its own voice (not among the evaluation queries).
EXAMPLE_QUESTIONS = (
    "What is the capital of Spain?",
    "Why is grass green?",
    "How can I wake up earlier?",
    "Is coffee good for you?",
    "Write a poem about the moon.",
    "How do I make toast?",
)

#: Wordings per role; wording k uses `example_indices(k)`.
N_WORDINGS = 3

#: Between a wording's intro and its example blocks.
INTRO_JOINER = " This is how you answer:\n\n"

#: The seed's nine personas (personas.json), kept unchanged in `prompts.load_personas()`.
SEED_SUBSET = (
    "helpful_assistant",
    "knowledgeable_assistant",
    "friendly_assistant",
    "angsty_teenager",
    "conspiracy_theorist",
    "wandering_poet",
    "chronic_contrarian",
    "used_car_salesman",
    "pirate",
)

#: Domains of the scripted drift conversations (drift.json).
DRIFT_DOMAINS = ("coding", "writing_feedback", "emotional_support", "meta_reflection")

#: Styles of the stress-test messages (stress.json).
STRESS_STYLES = ("roleplay", "pretend", "persistent_instruction", "jailbreak_style", "identity_challenge")

_N_EXAMPLES_PER_WORDING = 4
_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def example_indices(k: int) -> tuple[int, ...]:
    """Which example answers wording `k` shows: four, rotated by 2k (0-3, 2-5, then 4, 5, 0, 1)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < N_WORDINGS:
        raise ValueError(f"wording must be an int in 0..{N_WORDINGS - 1}, got {k!r}")
    return tuple((2 * k + i) % len(EXAMPLE_QUESTIONS) for i in range(_N_EXAMPLES_PER_WORDING))


@dataclass(frozen=True)
class Role:
    """One role of the persona bank: three intros, its answers to `EXAMPLE_QUESTIONS`, and one sentence."""

    name: str
    label: str
    family: str
    intros: tuple[str, ...]
    examples: tuple[str, ...]
    one_sentence: str

    @property
    def kind(self) -> str:
        """The side of the contrast: "assistant" for the assistant family, else "non_assistant"."""
        return KINDS[0] if self.family == "assistant" else KINDS[1]

    def wording(self, k: int) -> str:
        """System prompt wording `k`: intros[k], then four example blocks '"QUESTION"\\nANSWER' (see the layout)."""
        blocks = [f'"{EXAMPLE_QUESTIONS[i]}"\n{self.examples[i]}' for i in example_indices(k)]
        return self.intros[k] + INTRO_JOINER + "\n\n".join(blocks)

    def system(self, layout: int | Literal["one_sentence"]) -> str:
        """The system prompt in one layout: a wording index (0, 1, 2) or "one_sentence"."""
        if layout == "one_sentence":
            return self.one_sentence
        return self.wording(layout)  # type: ignore[arg-type]  # raises ValueError for anything else


def _strings(value: Any, n: int) -> bool:
    """True when `value` is a list of exactly `n` non-empty strings."""
    return isinstance(value, list) and len(value) == n and all(isinstance(s, str) and s.strip() for s in value)


def _role(record: dict[str, Any], index: int) -> Role:
    """One bank record as a `Role`, or a ValueError naming the role and what is wrong with it."""
    name = record.get("name")
    who = f"persona_bank.json: role {name!r}" if isinstance(name, str) and name else f"persona_bank.json: role #{index}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{who}: name must be a snake_case string")
    for key in ("label", "one_sentence"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ValueError(f"{who}: {key} must be a non-empty string")
    if record.get("family") not in FAMILIES:
        raise ValueError(f"{who}: unknown family {record.get('family')!r}; expected one of {FAMILIES}")
    if not _strings(record.get("intros"), N_WORDINGS) or len(set(record["intros"])) != N_WORDINGS:
        raise ValueError(f"{who}: intros must be {N_WORDINGS} different non-empty strings")
    if not _strings(record.get("examples"), len(EXAMPLE_QUESTIONS)):
        raise ValueError(f"{who}: examples must be {len(EXAMPLE_QUESTIONS)} non-empty strings, one per example question")
    extra = set(record) - {"name", "label", "family", "intros", "examples", "one_sentence"}
    if extra:
        raise ValueError(f"{who}: unknown keys {sorted(extra)}")
    return Role(name, record["label"], record["family"], tuple(record["intros"]), tuple(record["examples"]),
                record["one_sentence"])


@lru_cache(maxsize=None)
def _all_roles() -> tuple[Role, ...]:
    """Every role in file order, checked (see `_role`), with unique names that do not reuse the seed's."""
    data = _read_json("persona_bank.json")
    if tuple(data.get("example_questions", ())) != EXAMPLE_QUESTIONS:
        raise ValueError(f"persona_bank.json: example_questions must be {list(EXAMPLE_QUESTIONS)}")
    roles = tuple(_role(record, i) for i, record in enumerate(data["roles"]))
    seen: set[str] = set()
    for role in roles:
        if role.name in seen or role.name in SEED_SUBSET:
            raise ValueError(f"persona_bank.json: role {role.name!r} is not unique (repeated, or a seed persona's name)")
        seen.add(role.name)
    return roles


def load_bank(families: Iterable[str] | None = None, n_per_family: int | None = None) -> list[Role]:
    """The bank's roles grouped by family in `FAMILIES` order (file order within a family).

    `families` keeps only those families; `n_per_family` keeps the first n roles of each (ValueError when a
    family has fewer).
    """
    wanted = FAMILIES if families is None else tuple(families)
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown or not wanted:
        raise ValueError(f"families must be a non-empty selection of {FAMILIES}, got {list(wanted)}")
    if n_per_family is not None and (isinstance(n_per_family, bool) or not isinstance(n_per_family, int)
                                     or n_per_family < 1):
        raise ValueError(f"n_per_family must be a positive int or None, got {n_per_family!r}")
    roles = _all_roles()
    out: list[Role] = []
    for family in (f for f in FAMILIES if f in wanted):
        members = [r for r in roles if r.family == family]
        if n_per_family is not None:
            if len(members) < n_per_family:
                raise ValueError(f"family {family!r} has {len(members)} roles, fewer than n_per_family={n_per_family}")
            members = members[:n_per_family]
        out += members
    return out


def bank_prompts(
    roles: Iterable[Role],
    queries: Iterable[Query],
    wordings: Sequence[int | Literal["one_sentence"]] = (0, 1, 2),
    model_type: str = "smollm2",
    tokenizer: Any = None,
) -> list[dict[str, Any]]:
    """Every (role, wording, query) as a record, role-major then wording, so equal system prompts are adjacent.

    Keys: id ("role/wN/query_id", or "role/one_sentence/query_id"; unique), role, family, kind ("assistant" or
    "non_assistant"), wording, query_id, category, query, prompt (`prompts.format_prompt`).
    """
    queries, roles = list(queries), list(roles)
    for layout in wordings:
        if layout != "one_sentence":
            example_indices(layout)  # type: ignore[arg-type]  # validates before any prompt is built
    if len(set(wordings)) != len(wordings):
        raise ValueError(f"wordings must not repeat, got {list(wordings)}")
    records = []
    for role in roles:
        for layout in wordings:
            system = role.system(layout)
            tag = "one_sentence" if layout == "one_sentence" else f"w{layout}"
            records += [
                {
                    "id": f"{role.name}/{tag}/{query.id}",
                    "role": role.name,
                    "family": role.family,
                    "kind": role.kind,
                    "wording": layout,
                    "query_id": query.id,
                    "category": query.category,
                    "query": query.text,
                    "prompt": format_prompt(system, query.text, model_type=model_type, tokenizer=tokenizer),
                }
                for query in queries
            ]
    return records


# -- short-answer questions ----------------------------------------------------------------------------

@dataclass(frozen=True)
class QAItem:
    """One easy question and its accepted answers (normalised, see `normalise`)."""

    id: str
    category: str
    question: str
    answers: tuple[str, ...]


def normalise(text: str) -> str:
    """Accents removed, lowercase, every character but letters, digits and whitespace made a space, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^\w\s]|_", " ", plain).split())


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


def first_sentence(text: str) -> str:
    """The text up to the first '.', '!' or '?' followed by whitespace or the end, or the first line break
    (leading whitespace skipped). Decimal points do not end a sentence; abbreviations ("Dr.") do."""
    text = text.lstrip()
    match = _SENTENCE_END.search(text)
    return text[: match.start()] if match else text


def is_correct(response: str, item: QAItem) -> bool:
    """Whether any accepted answer occurs as a whole word or phrase in the response's normalised first sentence."""
    sentence = f" {normalise(first_sentence(response))} "
    return any(f" {answer} " in sentence for answer in item.answers)


@lru_cache(maxsize=None)
def _all_qa() -> tuple[QAItem, ...]:
    data = _read_json("qa.json")
    items = []
    for record in data["items"]:
        who = f"qa.json: item {record.get('id')!r}"
        if record.get("category") not in data["categories"]:
            raise ValueError(f"{who}: unknown category {record.get('category')!r}")
        if not isinstance(record.get("question"), str) or not record["question"].strip():
            raise ValueError(f"{who}: question must be a non-empty string")
        answers = record.get("answers")
        if not isinstance(answers, list) or not answers or any(not isinstance(a, str) or not a for a in answers):
            raise ValueError(f"{who}: answers must be a non-empty list of non-empty strings")
        if any(normalise(a) != a for a in answers):
            raise ValueError(f"{who}: answers must be stored normalised, got {answers}")
        items.append(QAItem(record["id"], record["category"], record["question"], tuple(answers)))
    for key in ("id", "question"):
        values = [getattr(item, key) for item in items]
        if len(set(values)) != len(values):
            raise ValueError(f"qa.json: item {key}s must be unique")
    return tuple(items)


def load_qa(categories: Iterable[str] | None = None) -> list[QAItem]:
    """The short-answer questions in file order, or only those of some categories."""
    items = _all_qa()
    if categories is None:
        return list(items)
    wanted = set(categories)
    known = {item.category for item in items}
    if not wanted <= known:
        raise ValueError(f"unknown categories {sorted(wanted - known)}; known: {sorted(known)}")
    return [item for item in items if item.category in wanted]


# -- drift, stress and neutral text --------------------------------------------------------------------

@lru_cache(maxsize=None)
def _drift() -> tuple[tuple[str, tuple[str, ...]], ...]:
    domains = _read_json("drift.json")["domains"]
    if tuple(domains) != DRIFT_DOMAINS:
        raise ValueError(f"drift.json: domains must be {list(DRIFT_DOMAINS)} in this order, got {list(domains)}")
    for domain, turns in domains.items():
        if not isinstance(turns, list) or not turns or any(not isinstance(t, str) or not t.strip() for t in turns):
            raise ValueError(f"drift.json: domain {domain!r} needs a non-empty list of non-empty user turns")
    return tuple((domain, tuple(turns)) for domain, turns in domains.items())


def load_drift() -> dict[str, list[str]]:
    """The scripted user turns of each drift domain, in `DRIFT_DOMAINS` order."""
    return {domain: list(turns) for domain, turns in _drift()}


def _records(name: str, key: str, fields: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    """A list of string records from one data file, checked: exactly `fields`, non-empty, unique ids."""
    records = _read_json(name)[key]
    for record in records:
        if set(record) != set(fields) or any(not isinstance(record[f], str) or not record[f].strip() for f in fields):
            raise ValueError(f"{name}: record {record.get('id')!r} needs exactly the non-empty string fields {fields}")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: ids must be unique")
    return tuple(records)


@lru_cache(maxsize=None)
def _stress() -> tuple[dict[str, str], ...]:
    records = _records("stress.json", "messages", ("id", "style", "text", "role"))
    for record in records:
        if record["style"] not in STRESS_STYLES:
            raise ValueError(f"stress.json: message {record['id']!r} has unknown style {record['style']!r}")
    return records


def load_stress() -> list[dict[str, str]]:
    """The stress-test user messages (id, style, text, role), in file order (copies)."""
    return [dict(record) for record in _stress()]


@lru_cache(maxsize=None)
def _neutral() -> tuple[dict[str, str], ...]:
    return _records("neutral_text.json", "passages", ("id", "title", "text"))


def load_neutral() -> list[dict[str, str]]:
    """The neutral passages (id, title, text), in file order (copies)."""
    return [dict(record) for record in _neutral()]
