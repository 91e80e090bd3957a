"""Capping on the embedded model, with the committed direction and default settings (the seed's API)."""

from __future__ import annotations

import numpy as np
import pytest

from axes_lib.capped import CappedModel, direction_path, evaluation_path
from axes_lib.io import read_json
from axes_lib.prompts import format_prompt, load_personas, load_queries
from axes_lib.sweeps import response_projection

pytestmark = pytest.mark.skipif(
    not (direction_path("smollm2").is_file() and evaluation_path("smollm2").is_file()),
    reason="committed smollm2 direction/evaluation not present",
)


@pytest.fixture(scope="module")
def capped(smollm2):
    model, tokenizer = smollm2
    defaults = read_json(evaluation_path("smollm2"))["capping"]
    from axes_lib.directions import load_direction

    return CappedModel(model, tokenizer, load_direction(direction_path("smollm2")), defaults["layers"],
                       threshold={int(k): v for k, v in defaults["thresholds"].items()})


def _prompts(capped, kind, n_queries):
    split = read_json(evaluation_path("smollm2").parent / "smollm2_split.json")
    queries = [q for q in load_queries() if q.id in set(split["holdout_queries"])][:n_queries]
    return [format_prompt(p.system, q.text, tokenizer=capped.tokenizer) for p in load_personas(kind) for q in queries]


def test_capping_moves_persona_answers_up_the_axis(capped):
    prompts = _prompts(capped, "non_assistant", 2)
    plain = capped.generate_uncapped(prompts, max_new_tokens=24)
    lifted = capped.generate(prompts, max_new_tokens=24)
    assert capped.last_stats and max(capped.last_stats.fraction_fired().values()) > 0
    read = lambda answers: response_projection(capped.model, capped.tokenizer, prompts, answers,  # noqa: E731
                                               capped.direction, capped.layers)
    before, after = read(plain), read(lifted)
    assert np.nanmean(after) > np.nanmean(before)


def test_capping_leaves_assistant_answers_almost_unchanged(capped):
    prompts = _prompts(capped, "assistant", 2)
    same = np.mean([a == b for a, b in zip(capped.generate_uncapped(prompts, max_new_tokens=24),
                                           capped.generate(prompts, max_new_tokens=24))])
    assert same >= 0.5
