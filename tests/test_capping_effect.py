"""Capping on the embedded model with the committed defaults (direction, layer band and thresholds of step 4).

Persona answers must move towards the assistant side, as the unsteered model reads them; assistant
answers, which the cap was calibrated on, must barely move. Uses the committed artifacts.
"""

from __future__ import annotations

import numpy as np
import pytest

from axes_lib.artifacts import Artifacts
from axes_lib.capped import CappedModel
from axes_lib.io import read_json
from axes_lib.prompts import contrastive_prompts, load_personas, load_queries
from axes_lib.sweeps import response_projection

KEY = "smollm2"
PATHS = Artifacts(model_key=KEY)


@pytest.fixture(scope="module")
def capped():
    if not (PATHS.direction().is_file() and PATHS.evaluation().is_file()):
        pytest.skip("no committed direction / evaluation for smollm2 (run notebooks 01-04)")
    return CappedModel.from_model_key(KEY)


def test_capping_lifts_persona_answers_and_spares_assistant_answers(capped):
    split = read_json(PATHS.split)
    queries = [q for q in load_queries() if q.id in set(split["holdout_queries"])][:2]
    records = contrastive_prompts(queries, load_personas(), model_type=KEY, tokenizer=capped.tokenizer)
    prompts = [r["prompt"] for r in records]
    before = capped.generate_uncapped(prompts, max_new_tokens=24, batch_size=32)
    after = capped.generate(prompts, max_new_tokens=24, batch_size=32)
    assert capped.last_stats is not None and all(0 < f < 1 for f in capped.last_stats.fraction_fired().values())

    def projection(answers):
        return response_projection(capped.model, capped.tokenizer, prompts, answers, capped.direction, capped.layers)

    p_before, p_after = projection(before), projection(after)
    persona = np.array([r["kind"] != "assistant" for r in records])
    gap = np.nanmean(p_before[~persona]) - np.nanmean(p_before[persona])
    assert gap > 0, "uncapped assistant answers should project above persona answers on the assistant axis"
    # persona answers move towards the assistant answers ...
    assert np.nanmean(p_after[persona]) > np.nanmean(p_before[persona])
    # ... and assistant answers move by much less than the distance between the two groups
    assert abs(np.nanmean(p_after[~persona]) - np.nanmean(p_before[~persona])) < 0.25 * gap
