"""Scripted conversations: the model answers written-in-advance user turns one after another, several
conversations (and settings) at once, and each answer's projection on the axis is read afterwards.

A conversation is a list of user turns (`bank.load_drift`). At turn t the prompt holds every earlier user
turn and the model's own earlier answers *in that setting*, so a capped conversation sees its capped past.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from axes_lib.generation import generate
from axes_lib.interventions import Intervention
from axes_lib.prompts import format_conversation

__all__ = ["converse"]


def converse(model: Any, tokenizer: Any, scripts: Mapping[str, Sequence[str]],
             settings: Mapping[str, Intervention | None], model_type: str = "smollm2", system: str | None = None,
             max_new_tokens: int = 64, batch_size: int = 16, n_turns: int | None = None) -> list[dict[str, Any]]:
    """Every script under every setting, turn by turn (greedy). Returns one row per (script, setting, turn):
    script, setting, turn (1-based), user, response, prompt (the formatted conversation up to this turn)."""
    if not scripts or not settings:
        raise ValueError("need at least one script and one setting")
    for name, turns in scripts.items():
        if not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"script {name!r} needs non-empty user turns")
    length = min(len(t) for t in scripts.values()) if n_turns is None else n_turns
    if length < 1 or any(len(t) < length for t in scripts.values()):
        raise ValueError(f"n_turns={n_turns}: every script needs at least that many turns")
    pairs = [(s, k) for s in scripts for k in settings]
    history = {pair: ([{"role": "system", "content": system}] if system else []) for pair in pairs}
    rows = []
    for t in range(length):
        prompts = []
        for script, setting in pairs:
            history[script, setting].append({"role": "user", "content": scripts[script][t]})
            prompts.append(format_conversation(history[script, setting], model_type=model_type, tokenizer=tokenizer))
        answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           interventions=[settings[k] for _, k in pairs])
        for (script, setting), prompt, answer in zip(pairs, prompts, answers):
            history[script, setting].append({"role": "assistant", "content": answer})
            rows.append({"script": script, "setting": setting, "turn": t + 1, "user": scripts[script][t],
                         "response": answer, "prompt": prompt})
    return rows
