"""Contrastive data files and prompt formatting, against the real SmolLM2 and Qwen 2.5 (0.5B) chat templates.

The 3B Qwen 2.5 and Llama 3.2 tokenizers are not available offline, so their built-in templates are checked
against strings written out from the models' published chat templates.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from axes_lib.prompts import (
    LLAMA3_DATE,
    Persona,
    Query,
    contrastive_prompts,
    format_conversation,
    format_prompt,
    load_personas,
    load_queries,
)

DATA = Path(__file__).resolve().parents[1] / "axes_lib" / "data"
SAMPLES = Path(__file__).resolve().parent / "data" / "persona_samples.json"
SEED_PERSONAS = {"angsty_teenager", "conspiracy_theorist", "wandering_poet", "chronic_contrarian", "used_car_salesman"}

CONVERSATIONS = {
    "system+user": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}],
    "user only": [{"role": "user", "content": "No system prompt here."}],
    "multi-turn": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                   {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    "multi-turn, no system": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                              {"role": "user", "content": "c"}],
    "newlines and quotes": [{"role": "system", "content": 'Line one.\n\n"Quoted"\nArr, ye\'ll see.'},
                            {"role": "user", "content": "Why?\n"}],
}


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def qwen_tokenizer(qwen05_path):
    """The embedded Qwen 2.5 0.5B's own tokenizer (with the chat template its GGUF carries)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen05_path)


# -- data files -------------------------------------------------------------------------------------

def test_seed_data_shape():
    queries = load_queries()
    assert len(queries) == 100 and len({q.id for q in queries}) == 100
    assert set(Counter(q.category for q in queries).values()) == {20}
    assert len({q.text for q in queries}) == 100
    assert all(isinstance(q, Query) and q.text.strip() == q.text and q.text[-1] in "?." for q in queries)
    texts = {q.text for q in queries}
    assert {"What is the capital of France?", "Why is the sky blue?"} <= texts
    personas = load_personas()
    assert Counter(p.kind for p in personas) == {"assistant": 3, "non_assistant": 6}
    assert SEED_PERSONAS <= {p.name for p in personas}
    assert len({p.name for p in personas}) == len({p.label for p in personas}) == 9
    assert all(isinstance(p, Persona) and p.system.strip() for p in personas)


def test_data_files_are_plain_json_with_versions():
    queries = json.loads((DATA / "queries.json").read_text(encoding="utf-8"))
    personas = json.loads((DATA / "personas.json").read_text(encoding="utf-8"))
    assert queries.get("version") and personas.get("version")
    assert sorted(queries["categories"]) == sorted({q["category"] for q in queries["queries"]})
    for q in queries["queries"]:  # ids name their category: fact-01, advice-07, ...
        assert set(q) == {"id", "category", "text"}
        prefix, number = q["id"].rsplit("-", 1)
        assert q["category"].startswith(prefix) and len(number) == 2
    assert all(set(p) == {"name", "label", "kind", "system", "layouts"} for p in personas["personas"])


def test_persona_prompts_fit_the_token_budget(tokenizer):
    lengths = {p.name: len(tokenizer(p.system)["input_ids"]) for p in load_personas()}
    assert max(lengths.values()) < 400, lengths


def test_small_n_covers_every_category():
    assert len({q.category for q in load_queries(5)}) == 5
    assert load_queries(7) == load_queries(100)[:7] == load_queries()[:7]
    assert [q.id for q in load_queries(6)] == ["fact-01", "advice-01", "opinion-01", "creative-01", "howto-01", "fact-02"]
    for n in (0, -1, 101):
        with pytest.raises(ValueError, match="between 1 and 100"):
            load_queries(n)
    with pytest.raises(TypeError):
        load_queries(2.5)


def test_personas_by_kind():
    assistants, others = load_personas("assistant"), load_personas("non_assistant")
    assert len(assistants) == 3 and len(others) == 6
    assert assistants + others == load_personas()
    with pytest.raises(ValueError, match="kind must be"):
        load_personas("villain")


# -- chat templates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize(("model_type", "fixture"), [("smollm2", "tokenizer"), ("qwen2.5-0.5b", "qwen_tokenizer")])
def test_builtin_chatml_equals_the_real_template(request, model_type, fixture, name, add_generation_prompt):
    real_tokenizer = request.getfixturevalue(fixture)
    messages = CONVERSATIONS[name]
    ours = format_conversation(messages, model_type, add_generation_prompt=add_generation_prompt)
    real = real_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == real
    assert format_conversation(messages, tokenizer=real_tokenizer, add_generation_prompt=add_generation_prompt) == real


def test_every_persona_prompt_equals_smollm2_template(tokenizer):
    query = load_queries(1)[0].text
    for persona in load_personas():
        assert format_prompt(persona.system, query) == format_prompt(persona.system, query, tokenizer=tokenizer)
    default = format_prompt(None, query, tokenizer=tokenizer)
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert format_prompt(None, query) == format_prompt("", query) == default


def test_contrastive_prompts_equal_qwen05_template(qwen_tokenizer):
    queries, personas = load_queries(2), load_personas()
    ours = contrastive_prompts(queries, personas, model_type="qwen2.5-0.5b")
    assert ours == contrastive_prompts(queries, personas, tokenizer=qwen_tokenizer)
    default = format_prompt(None, queries[0].text, tokenizer=qwen_tokenizer)
    assert default.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    assert format_prompt(None, queries[0].text, model_type="qwen2.5-0.5b") == format_prompt("", queries[0].text,
                                                                                            model_type="qwen2.5-0.5b") == default


def test_builtin_qwen_template():
    assert format_prompt("S", "Q", model_type="qwen") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt(None, "Q", model_type="qwen") == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert format_conversation(CONVERSATIONS["multi-turn"], "qwen", add_generation_prompt=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>\n")


def test_builtin_llama_template():
    header = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
              "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
    assert LLAMA3_DATE == "26 Jul 2024"
    assert format_prompt("S", "Q", model_type="llama") == (
        header + "S<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # No system prompt: Llama 3 still writes the system block, with its date header and nothing after it.
    assert format_prompt(None, "Q", model_type="llama") == (
        header + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # Contents are stripped (`| trim` in the template); no generation prompt when not asked for.
    messages = [{"role": "system", "content": "  S \n"}, {"role": "user", "content": "\na "},
                {"role": "assistant", "content": "b\n"}, {"role": "user", "content": "c"}]
    assert format_conversation(messages, "llama", add_generation_prompt=False) == (
        header + "S<|eot_id|><|start_header_id|>user<|end_header_id|>\n\na<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nb<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nc<|eot_id|>")


def test_tokenizer_templates_get_the_pinned_date(tokenizer):
    dated = copy.deepcopy(tokenizer)
    dated.chat_template = "{{ date_string }}|{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert format_prompt("S", "Q", tokenizer=dated) == f"{LLAMA3_DATE}|SQ"


def test_bad_input(tokenizer):
    with pytest.raises(ValueError, match="query is empty"):
        format_prompt("S", "  ")
    with pytest.raises(ValueError, match="no built-in chat template"):
        format_prompt("S", "Q", model_type="mistral")
    with pytest.raises(ValueError, match="messages is empty"):
        format_conversation([])
    with pytest.raises(ValueError, match="message 1 needs a role"):
        format_conversation([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])
    with pytest.raises(ValueError, match="message 0 needs a role"):
        format_conversation([{"role": "user", "content": None}])
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        format_prompt("S", "Q", tokenizer=bare)


def test_contrastive_records_are_persona_major():
    queries, personas = load_queries(3), load_personas()[2:5]
    records = contrastive_prompts(queries, personas, model_type="llama")
    assert [(r["persona"], r["query_id"]) for r in records] == [(p.name, q.id) for p in personas for q in queries]
    assert set(records[0]) == {"id", "persona", "kind", "query_id", "category", "query", "prompt"}
    assert len({r["id"] for r in records}) == len(records) and records[0]["id"] == f"{personas[0].name}/{queries[0].id}"
    for r in records:
        persona = next(p for p in personas if p.name == r["persona"])
        assert r["kind"] == persona.kind
        assert r["prompt"] == format_prompt(persona.system, r["query"], model_type="llama")
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in contrastive_prompts(queries, personas))


# -- evidence that the personas are adopted ---------------------------------------------------------

def test_persona_samples_match_the_current_personas():
    """tests/data/persona_samples.json must be regenerated (scripts/persona_samples.py) when a prompt changes."""
    samples = json.loads(SAMPLES.read_text(encoding="utf-8"))
    assert samples["model"] == "smollm2"
    assert samples["generation"]["do_sample"] is False and samples["generation"]["max_new_tokens"] == 48
    personas = {p.name: p for p in load_personas()}
    assert [e["name"] for e in samples["personas"]] == list(personas)
    for entry in samples["personas"]:
        persona = personas[entry["name"]]
        assert entry["system_sha256"] == hashlib.sha256(persona.system.encode()).hexdigest(), (
            f"{entry['name']}: system prompt changed since the samples were written; rerun scripts/persona_samples.py")
        assert entry["kind"] == persona.kind and len(entry["samples"]) == 4
        assert all(s["response"].strip() for s in entry["samples"])


def test_matched_layout_has_the_same_parts_for_every_persona() -> None:
    """The format control's premise: the same six example questions, in the same place, at similar lengths."""
    import re

    from axes_lib.prompts import LAYOUTS

    seed, matched, one = (load_personas(layout=layout) for layout in LAYOUTS)
    assert [p.name for p in seed] == [p.name for p in matched] == [p.name for p in one]
    assert [p.kind for p in seed] == [p.kind for p in matched]
    questions = [re.findall(r'^"(.+)"$', p.system, flags=re.M) for p in matched]
    assert all(q == questions[0] for q in questions) and len(questions[0]) == 6
    assert all(re.match(r"You are [^,]+, [^.]+\. .+ This is how you answer:\n\n", p.system) for p in matched)
    lengths = [len(p.system) for p in matched]
    assert max(lengths) <= 1.2 * min(lengths)
    # The seed's own layouts differ (two personas have no examples): the reason for the control.
    assert any(not re.findall(r'^"(.+)"$', p.system, flags=re.M) for p in seed)
    assert all("\n" not in p.system and p.system.count(".") == 1 and p.system.endswith(".") for p in one)
    with pytest.raises(ValueError, match="layout"):
        load_personas(layout="fancy")


def test_the_tests_copy_of_the_qwen_template_is_the_real_one(qwen05_path):
    """tests/data/qwen2.5_chat_template.jinja (the tiny Qwen2's template in test_notebooks) is the embedded model's."""
    ours = Path(__file__).parent / "data" / "qwen2.5_chat_template.jinja"
    assert ours.read_text() == (qwen05_path / "chat_template.jinja").read_text()
