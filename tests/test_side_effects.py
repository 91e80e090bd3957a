"""Next-token KL and perplexity of steered models, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axes_lib.interventions import Add
from axes_lib.side_effects import next_token_kl, perplexity

TEXTS = [("", "The water cycle moves water from the sea to the sky and back."),
         ("<|im_start|>user\nWhy is grass green?<|im_end|>\n<|im_start|>assistant\n", "Because of chlorophyll."),
         ("Bread rises because", " yeast makes gas.")]


def test_unsteered_nll_is_the_models_own_loss_and_kl_is_zero(smollm2):
    model, tokenizer = smollm2
    out = next_token_kl(model, tokenizer, TEXTS, {"none": None}, batch_size=2)["none"]
    assert np.all(out["kl"] == 0)
    for i, (context, continuation) in enumerate(TEXTS):
        head = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        labels = ids.clone()
        labels[0, :max(len(head), 1)] = -100  # score the continuation (its first token when there is no context)
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        n = int((labels != -100).sum())
        assert out["tokens"][i] == n
        assert out["nll"][i] == pytest.approx(float(loss) * n, rel=1e-4)
    assert perplexity(out["nll"], out["tokens"]) == pytest.approx(np.exp(out["nll"].sum() / out["tokens"].sum()))


def test_steering_costs_kl_and_batching_does_not_change_it(smollm2):
    model, tokenizer = smollm2
    d = model.config.hidden_size
    direction = {3: torch.ones(d)}
    settings = {"zero": Add(direction, [3], scale=0.0), "strong": Add(direction, [3], scale=8.0)}
    together = next_token_kl(model, tokenizer, TEXTS, settings, batch_size=3)
    alone = [next_token_kl(model, tokenizer, [t], settings, batch_size=1) for t in TEXTS]
    assert np.allclose(together["zero"]["kl"], 0, atol=1e-5)
    assert np.all(together["strong"]["kl"] > 1e-3)
    for i in range(len(TEXTS)):
        assert together["strong"]["kl"][i] == pytest.approx(alone[i]["strong"]["kl"][0], rel=1e-3, abs=1e-5)
        assert together["strong"]["nll"][i] == pytest.approx(alone[i]["strong"]["nll"][0], rel=1e-3)


def test_empty_continuation_is_refused(smollm2):
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match="empty continuation"):
        next_token_kl(model, tokenizer, [("context", "  ")], {"none": None})
