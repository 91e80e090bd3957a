"""Contrastive data files and prompt formatting, against the real SmolLM2 chat template."""

from __future__ import annotations

from collections import Counter

import pytest

from axes_lib.prompts import contrastive_prompts, format_conversation, format_prompt, load_personas, load_queries


def test_seed_data_shape():
    queries = load_queries()
    assert len(queries) == 100 and len({q.id for q in queries}) == 100
    assert set(Counter(q.category for q in queries).values()) == {20}
    personas = load_personas()
    assert Counter(p.kind for p in personas) == {"assistant": 3, "non_assistant": 6}
    assert {"angsty_teenager", "conspiracy_theorist", "wandering_poet", "chronic_contrarian",
            "used_car_salesman"} <= {p.name for p in personas}
    assert all(p.system.strip() for p in personas)


def test_small_n_covers_every_category():
    assert len({q.category for q in load_queries(5)}) == 5
    assert load_queries(7) == load_queries(100)[:7]
    with pytest.raises(ValueError, match="between 1 and 100"):
        load_queries(0)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": "No system prompt here."}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
         {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ],
)
def test_builtin_chatml_equals_smollm2_template(smollm2, messages):
    _, tokenizer = smollm2
    assert format_conversation(messages, "smollm2") == format_conversation(messages, tokenizer=tokenizer)


def test_builtin_qwen_and_llama_templates():
    assert format_prompt("S", "Q", model_type="qwen") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt(None, "Q", model_type="qwen").startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>")
    assert format_prompt("S", "Q", model_type="llama") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_bad_input():
    with pytest.raises(ValueError, match="query is empty"):
        format_prompt("S", "  ")
    with pytest.raises(ValueError, match="no built-in chat template"):
        format_prompt("S", "Q", model_type="mistral")
    with pytest.raises(ValueError, match="kind must be"):
        load_personas("villain")


def test_contrastive_records_are_persona_major():
    records = contrastive_prompts(load_queries(3), load_personas()[:2])
    assert [r["persona"] for r in records] == [records[0]["persona"]] * 3 + [records[3]["persona"]] * 3
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in records)
