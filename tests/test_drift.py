"""Scripted conversations: each setting's conversation carries its own answers forward."""

from __future__ import annotations

import pytest
import torch

from axes_lib.drift import converse
from axes_lib.generation import generate
from axes_lib.interventions import Add
from axes_lib.prompts import format_conversation


def test_each_turn_sees_its_own_settings_past(smollm2):
    model, tokenizer = smollm2
    scripts = {"a": ["Hi, how are you?", "What did you just say?"], "b": ["Name a fruit.", "And a colour?"]}
    push = Add({5: torch.ones(model.config.hidden_size)}, [5], scale=30.0)
    rows = converse(model, tokenizer, scripts, {"plain": None, "pushed": push}, max_new_tokens=6, batch_size=4)
    assert [(r["script"], r["setting"], r["turn"]) for r in rows] == [
        (s, k, t) for t in (1, 2) for s in scripts for k in ("plain", "pushed")]
    by = {(r["script"], r["setting"], r["turn"]): r for r in rows}
    for script, turns in scripts.items():
        for setting, intervention in (("plain", None), ("pushed", push)):
            first = by[script, setting, 1]["response"]
            messages = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": first},
                        {"role": "user", "content": turns[1]}]
            prompt = format_conversation(messages, tokenizer=tokenizer)
            assert by[script, setting, 2]["prompt"] == prompt
            alone = generate(model, tokenizer, [prompt], max_new_tokens=6, interventions=intervention)[0]
            assert by[script, setting, 2]["response"] == alone
    assert any(by[s, "plain", 1]["response"] != by[s, "pushed", 1]["response"] for s in scripts)


def test_bad_scripts_are_refused_before_generating(smollm2):
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match="non-empty user turns"):
        converse(model, tokenizer, {"a": ["hi", " "]}, {"plain": None})
    with pytest.raises(ValueError, match="at least that many turns"):
        converse(model, tokenizer, {"a": ["hi"]}, {"plain": None}, n_turns=2)
