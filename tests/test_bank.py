"""Issue 16's data files (persona bank, QA, drift, stress, neutral text) and their loader, `axes_lib.bank`.

Invariants only: the files can grow without these tests changing. No model is loaded.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from axes_lib import bank
from axes_lib.bank import (
    DRIFT_DOMAINS,
    EXAMPLE_QUESTIONS,
    FAMILIES,
    SEED_SUBSET,
    STRESS_STYLES,
    QAItem,
    Role,
    bank_prompts,
    example_indices,
    first_sentence,
    is_correct,
    load_bank,
    load_drift,
    load_neutral,
    load_qa,
    load_stress,
    normalise,
)
from axes_lib.prompts import format_prompt, load_personas, load_queries

DATA = Path(__file__).resolve().parents[1] / "axes_lib" / "data"
MINIMUM = {"professional": 8, "everyday": 8, "fantastical": 8, "emotional": 7, "adversarial": 7}
QUOTED_QUESTION = re.compile(r'^"([^"\n]+)"$', re.MULTILINE)


@pytest.fixture
def fresh_caches():
    """Clear the loader's caches before and after a test that swaps the data it reads."""
    caches = (bank._all_roles, bank._all_qa, bank._drift, bank._stress, bank._neutral)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


# -- persona bank ----------------------------------------------------------------------------------------

def test_bank_families_and_counts():
    roles = load_bank()
    counts = Counter(r.family for r in roles)
    assert counts["assistant"] == 3
    assert sum(n for family, n in counts.items() if family != "assistant") >= 40
    assert all(counts[family] >= n for family, n in MINIMUM.items()), counts
    assert set(counts) == set(FAMILIES)
    assert [r.family for r in roles] == sorted((r.family for r in roles), key=FAMILIES.index)
    assert {r.kind for r in roles if r.family == "assistant"} == {"assistant"}
    assert {r.kind for r in roles if r.family != "assistant"} == {"non_assistant"}


def test_bank_names_unique_and_disjoint_from_the_seed():
    roles = load_bank()
    names = [r.name for r in roles]
    assert len(set(names)) == len(names)
    assert len({r.label for r in roles}) == len(roles)
    seed = {p.name for p in load_personas()}
    assert seed == set(SEED_SUBSET)
    assert not seed & set(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)


def test_bank_file_layout_and_example_questions():
    data = json.loads((DATA / "persona_bank.json").read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["description"] and data["layout"]
    assert tuple(data["example_questions"]) == EXAMPLE_QUESTIONS
    assert set(data["families"]) == set(FAMILIES)
    queries = {q.text for q in load_queries()}
    assert not queries & set(EXAMPLE_QUESTIONS), "example questions must not be evaluation queries"


def test_every_role_has_three_different_intros_and_six_examples():
    for role in load_bank():
        assert len(role.intros) == 3 and len(set(role.intros)) == 3, role.name
        assert all(intro.startswith("You are ") for intro in role.intros), role.name
        for intro in role.intros:  # one or two sentences (quoted catchphrases and titles like "Mr." aside)
            plain = re.sub(r'"[^"]*"|\b(?:Mr|Ms|Dr)\. ', "Q", intro)
            assert 1 <= len(re.findall(r"[.!?](?:\s|$)", plain)) <= 2, (role.name, intro)
        assert len(role.examples) == len(EXAMPLE_QUESTIONS), role.name
        assert all(e.strip() == e and e for e in role.examples), role.name
        assert role.one_sentence.startswith("You are ") and role.one_sentence.count(". ") == 0, role.name


def test_example_answers_are_distinct_across_roles():
    roles = load_bank()
    answers = [normalise(e) for r in roles for e in r.examples]
    assert len(set(answers)) == len(answers), [a for a, n in Counter(answers).items() if n > 1]
    intros = [i for r in roles for i in r.intros]
    assert len(set(intros)) == len(intros)
    assert len({r.one_sentence for r in roles}) == len(roles)


def test_wording_lengths_within_20_percent_of_the_median():
    lengths = {(r.name, k): len(r.wording(k)) for r in load_bank() for k in range(3)}
    median = statistics.median(lengths.values())
    outside = {key: n for key, n in lengths.items() if not 0.8 * median <= n <= 1.2 * median}
    assert not outside, (median, outside)


def test_wording_contains_its_intro_and_four_rotated_examples():
    assert [example_indices(k) for k in range(3)] == [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 0, 1)]
    for role in load_bank():
        for k in range(3):
            text = role.wording(k)
            assert text.startswith(role.intros[k] + " This is how you answer:\n\n")
            asked = QUOTED_QUESTION.findall(text)
            assert asked == [EXAMPLE_QUESTIONS[i] for i in example_indices(k)], (role.name, k)
            for i in range(len(EXAMPLE_QUESTIONS)):
                assert (f'"{EXAMPLE_QUESTIONS[i]}"\n{role.examples[i]}' in text) == (i in example_indices(k))
        assert role.system(1) == role.wording(1) and role.system("one_sentence") == role.one_sentence


def test_wording_rejects_bad_indices():
    role = load_bank()[0]
    for bad in (-1, 3, "0", True, "seed"):
        with pytest.raises(ValueError, match="wording must be"):
            role.system(bad)


def test_load_bank_selection():
    roles = load_bank(["emotional", "assistant"], n_per_family=2)
    assert [r.family for r in roles] == ["assistant", "assistant", "emotional", "emotional"]
    assert roles[2:] == load_bank(["emotional"])[:2]
    with pytest.raises(ValueError, match="families"):
        load_bank(["villains"])
    with pytest.raises(ValueError, match="fewer than"):
        load_bank(["assistant"], n_per_family=4)
    with pytest.raises(ValueError, match="n_per_family"):
        load_bank(n_per_family=0)


def test_bank_prompts_records():
    roles, queries = load_bank(n_per_family=1), load_queries(3)
    records = bank_prompts(roles, queries)
    assert len(records) == len(roles) * 3 * len(queries)
    assert len({r["id"] for r in records}) == len(records)
    first = records[0]
    assert first["id"] == f"{roles[0].name}/w0/{queries[0].id}"
    assert first["prompt"] == format_prompt(roles[0].wording(0), queries[0].text)
    assert set(first) == {"id", "role", "family", "kind", "wording", "query_id", "category", "query", "prompt"}
    # role-major, then wording: equal system prompts are adjacent
    assert [(r["role"], r["wording"]) for r in records[: 2 * len(queries)]] == (
        [(roles[0].name, 0)] * len(queries) + [(roles[0].name, 1)] * len(queries))
    last = records[-1]
    assert last["prompt"] == format_prompt(roles[-1].wording(2), queries[-1].text, model_type="smollm2")
    assert {r["kind"] for r in records if r["family"] == "assistant"} == {"assistant"}
    one = bank_prompts(roles[:1], queries[:1], wordings=("one_sentence",), model_type="llama")
    assert one[0]["id"] == f"{roles[0].name}/one_sentence/{queries[0].id}"
    assert one[0]["prompt"] == format_prompt(roles[0].one_sentence, queries[0].text, model_type="llama")
    with pytest.raises(ValueError, match="wording must be"):
        bank_prompts(roles, queries, wordings=(0, 5))


def _bank_with(mutate):
    data = json.loads((DATA / "persona_bank.json").read_text(encoding="utf-8"))
    broken = copy.deepcopy(data)
    mutate(broken["roles"])
    real = bank._read_json
    return lambda name: broken if name == "persona_bank.json" else real(name)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda roles: roles[5]["intros"].pop(), "intros must be 3"),
    (lambda roles: roles[5]["examples"].append("extra"), "examples must be 6"),
    (lambda roles: roles[5].update(family="villain"), "unknown family"),
    (lambda roles: roles[5].update(one_sentence="  "), "one_sentence must be"),
    (lambda roles: roles[5]["examples"].__setitem__(2, ""), "examples must be 6"),
    (lambda roles: roles[5]["intros"].__setitem__(1, roles[5]["intros"][0]), "3 different"),
])
def test_malformed_bank_names_the_role(monkeypatch, fresh_caches, mutate, message):
    name = json.loads((DATA / "persona_bank.json").read_text(encoding="utf-8"))["roles"][5]["name"]
    monkeypatch.setattr(bank, "_read_json", _bank_with(mutate))
    with pytest.raises(ValueError, match=rf"role '{name}'.*{message}"):
        load_bank()


@pytest.mark.parametrize("clash", ["duplicate", "seed"])
def test_bank_rejects_repeated_and_seed_names(monkeypatch, fresh_caches, clash):
    def mutate(roles):
        roles[7]["name"] = roles[6]["name"] if clash == "duplicate" else "pirate"
    monkeypatch.setattr(bank, "_read_json", _bank_with(mutate))
    with pytest.raises(ValueError, match="is not unique"):
        load_bank()


# -- short-answer questions ------------------------------------------------------------------------------

def test_qa_counts_and_uniqueness():
    items = load_qa()
    assert len(items) >= 300
    assert len({i.id for i in items}) == len(items) and len({i.question for i in items}) == len(items)
    counts = Counter(i.category for i in items)
    assert len(counts) >= 8 and max(counts.values()) <= 1.5 * min(counts.values()), counts
    for item in items:
        assert isinstance(item, QAItem) and item.answers and all(a == normalise(a) for a in item.answers), item
        question = f" {normalise(item.question)} "
        assert not any(f" {a} " in question for a in item.answers), f"{item.id}: an answer is in the question"
    assert load_qa(["capitals"]) == [i for i in items if i.category == "capitals"]
    with pytest.raises(ValueError, match="unknown categories"):
        load_qa(["astrology"])


def test_qa_numbers_have_numeral_and_word():
    for item in load_qa():
        if any(a.isdigit() for a in item.answers):
            assert any(not a.isdigit() for a in item.answers), item


def test_normalise_and_first_sentence():
    assert normalise("  Brasília, D.C.!\n It's 0 °C. ") == "brasilia d c it s 0 c"
    assert normalise("H₂O") == "h2o"
    assert first_sentence("\n  Paris is the capital. It is big.") == "Paris is the capital"
    assert first_sentence("It is 3.5 degrees! Cold.") == "It is 3.5 degrees"
    assert first_sentence("Madrid\nSecond line.") == "Madrid"
    assert first_sentence("no punctuation") == "no punctuation"


def test_is_correct():
    four = QAItem("t-1", "arithmetic", "What is 2 plus 2?", ("4", "four"))
    assert is_correct("2 plus 2 is 4.", four)
    assert is_correct("Two plus two equals four!", four)
    assert not is_correct("The answer is forty.", four)  # near miss: a longer number word
    assert not is_correct("It is 44.", four)
    assert not is_correct("It is five. Sorry, I meant four.", four)  # only the first sentence counts
    assert not is_correct("", four)
    city = QAItem("t-2", "capitals", "Capital of the US?", ("washington",))
    assert is_correct("The capital is Washington, D.C.", city)
    assert not is_correct("Washingtonia is a palm tree.", city)
    brazil = QAItem("t-3", "capitals", "Capital of Brazil?", ("brasilia",))
    assert is_correct("The capital of Brazil is Brasília.", brazil)
    assert not is_correct("The capital of Brazil is Rio de Janeiro.", brazil)
    phrase = QAItem("t-4", "general", "Which continent?", ("south america",))
    assert is_correct("It is in South America.", phrase)
    assert not is_correct("It is in America.", phrase)
    real = {i.id: i for i in load_qa()}["capitals-01"]
    assert is_correct(f"The capital is {real.answers[0].title()}.", real)


# -- drift, stress, neutral ------------------------------------------------------------------------------

def test_drift_domains():
    drift = load_drift()
    assert tuple(drift) == DRIFT_DOMAINS
    for domain, turns in drift.items():
        assert len(turns) >= 8, domain
        assert len(set(turns)) == len(turns)
        assert all(t.strip() == t and len(re.findall(r"[.!?](?:\s|$)", t)) <= 3 for t in turns), domain


def test_stress_messages():
    messages = load_stress()
    assert len(messages) >= 40
    assert {m["style"] for m in messages} == set(STRESS_STYLES)
    assert len({m["id"] for m in messages}) == len(messages) and len({m["text"] for m in messages}) == len(messages)
    assert all(m["text"].rstrip().endswith(("?", ".")) and m["role"] for m in messages)
    messages[0]["text"] = "changed"
    assert load_stress()[0]["text"] != "changed"  # callers get copies


def test_neutral_passages():
    passages = load_neutral()
    assert len(passages) >= 12
    assert len({p["id"] for p in passages}) == len(passages)
    for p in passages:
        assert 150 <= len(p["text"].split()) <= 250, (p["id"], len(p["text"].split()))


@pytest.mark.parametrize(("name", "loader", "message"), [
    ("stress.json", load_stress, "unknown style"),
    ("neutral_text.json", load_neutral, "non-empty string fields"),
    ("drift.json", load_drift, "domains must be"),
])
def test_malformed_other_files(monkeypatch, fresh_caches, name, loader, message):
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    if name == "stress.json":
        data["messages"][0]["style"] = "villainy"
    elif name == "neutral_text.json":
        data["passages"][0]["text"] = ""
    else:
        data["domains"].pop("coding")
    real = bank._read_json
    monkeypatch.setattr(bank, "_read_json", lambda n: data if n == name else real(n))
    with pytest.raises(ValueError, match=message):
        loader()


def test_role_is_frozen():
    role = load_bank()[0]
    assert isinstance(role, Role)
    with pytest.raises(AttributeError):
        role.name = "x"  # type: ignore[misc]
