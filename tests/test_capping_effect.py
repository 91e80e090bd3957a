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


def test_capped_qwen05_loads_offline_and_changes_a_persona_answer(qwen05, tmp_path, monkeypatch):
    """The embedded Qwen 2.5 0.5B, once cached, loads with no network, and a cap along a direction computed here
    (last token, 2 queries x 9 personas; no committed artifacts needed) turns a persona's answer."""
    import subprocess

    import torch
    from huggingface_hub import constants

    from axes_lib.activations import extract
    from axes_lib.calibration import percentile_thresholds
    from axes_lib.directions import compute_direction, save_direction
    from axes_lib.prompts import format_prompt

    key = "qwen2.5-0.5b"
    model, tokenizer = qwen05
    records = contrastive_prompts(load_queries(2), load_personas(), model_type=key)
    acts = extract(model, tokenizer, [r["prompt"] for r in records], method="last_token")
    is_assistant = torch.tensor([r["kind"] == "assistant" for r in records])
    direction = compute_direction(acts[is_assistant], acts[~is_assistant])
    band = list(range(6, 12))  # 25-50 % of the depth
    n_layers = model.config.num_hidden_layers
    thresholds = percentile_thresholds(acts[is_assistant], direction, list(range(n_layers)), band, q=25)
    path = save_direction(tmp_path / "direction.safetensors", direction, model=key, method="last_token",
                          n_layers=n_layers, d_model=model.config.hidden_size)

    real_run = subprocess.run

    def no_pip(argv, *args, **kwargs):
        assert "pip" not in argv, "a cached embedded model must load without downloading"
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    capped = CappedModel.from_model_key(key, direction=path, layers=band, threshold=thresholds)

    poet = next(p for p in load_personas() if p.name == "wandering_poet")
    prompt = format_prompt(poet.system, "Why is the sky blue?", model_type=key)
    before = capped.generate_uncapped(prompt, max_new_tokens=24)
    after = capped.generate(prompt, max_new_tokens=24)
    assert capped.last_stats is not None and all(f > 0 for f in capped.last_stats.fraction_fired().values())
    assert before.strip() and after.strip() and after != before
    # The capped answer reads as more assistant-like to the uncapped model than the persona's own answer.
    p_before, p_after = response_projection(capped.model, capped.tokenizer, [prompt] * 2, [before, after],
                                            capped.direction, capped.layers)
    assert p_after > p_before


def test_the_default_root_of_a_key_is_its_own_folder_when_a_run_wrote_there(tmp_path, monkeypatch):
    import axes_lib.capped as capped

    monkeypatch.setattr(capped, "DEFAULT_ROOT", tmp_path)
    assert capped.default_root("qwen2.5-0.5b") == tmp_path  # no folder of its own: the shared root
    (tmp_path / "qwen2.5-0.5b" / "directions").mkdir(parents=True)
    assert capped.default_root("qwen2.5-0.5b") == tmp_path / "qwen2.5-0.5b"
    assert capped.default_root("smollm2") == tmp_path


def test_capped_qwen05_from_its_committed_run(qwen05_path):
    """`CappedModel.from_model_key("qwen2.5-0.5b")` with nothing else: the committed direction, band and thresholds
    of the second model's run (artifacts/qwen2.5-0.5b/), and a persona's capped answer differs from its own."""
    from axes_lib.artifacts import DEFAULT_ROOT

    capped = CappedModel.from_model_key("qwen2.5-0.5b")
    evaluation = read_json(Artifacts(DEFAULT_ROOT / "qwen2.5-0.5b", "qwen2.5-0.5b").evaluation("response_mean"))
    assert capped.layers == evaluation["capping"]["layers"]
    pirate = next(p for p in load_personas() if p.name == "pirate")
    prompts = [r["prompt"] for r in contrastive_prompts(load_queries(2), [pirate], model_type="qwen2.5-0.5b")]
    before = capped.generate_uncapped(prompts, max_new_tokens=24)
    after = capped.generate(prompts, max_new_tokens=24)
    assert all(a.strip() for a in after) and after != before
