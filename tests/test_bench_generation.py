"""The generation benchmark's arithmetic: rates and the three estimates of the steered/unsteered ratio."""

from __future__ import annotations

import pytest
import torch

from benchmarks.generation import GenerationCase, summary
from benchmarks.measure import Timing
from benchmarks.report import generation_table


def test_ratios_from_interleaved_rounds():
    case = GenerationCase(prompts=["p"] * 4, new_tokens=10, band=[1, 2], direction={1: torch.ones(3), 2: torch.ones(3)},
                          scale=2.0, thresholds={1: 0.5, 2: 0.5})
    timings = {
        "generate_unsteered": Timing("generate_unsteered", [2.0, 4.0, 3.0]),
        "generate_additive": Timing("generate_additive", [2.5, 4.0, 2.0]),
        "generate_capped": Timing("generate_capped", [2.0, 5.0, 3.0]),
        "generate_prefix_copies": Timing("generate_prefix_copies", [3.0, 5.0, 4.0]),
    }
    generation, ratios = summary(timings, case)
    assert generation["unsteered_tokens_per_s"] == pytest.approx(40 / 2.0)  # 4 prompts x 10 tokens / fastest run
    assert ratios["additive_vs_unsteered"] == pytest.approx(2.0 / 2.0)
    assert ratios["additive_vs_unsteered_at_median"] == pytest.approx(3.0 / 2.5)
    assert ratios["additive_vs_unsteered_median_round"] == pytest.approx(sorted([2 / 2.5, 4 / 4, 3 / 2])[1])
    assert ratios["capped_vs_unsteered_median_round"] == pytest.approx(1.0)  # rounds 1 and 3 tie, round 2 is slower
    assert ratios["prefix_copies_vs_unsteered"] == pytest.approx(2.0 / 3.0)  # without cascade attention: slower
    result = {"generation": generation, "ratios": ratios,
              "correctness": {"same_token_count": True, "prefix_copies_outputs_equal": 4, "prompts": 4},
              "targets": {"additive_vs_unsteered": {"target": 0.95}}, "model": "m", "device": "cpu", "dtype": "float32",
              "machine": "box", "settings": {"repeats": 3}, "manifest": {"created": "2026-11-27T08:00", "code_version": "v"}}
    text = generation_table(result)
    assert "| additive steering | 20.0 | 1.00× | 1.20× | 1.00× |" in text and "the same number of" in text
    assert "| unsteered, no cascade attention | 13.3 | 0.67× | 0.75× | 0.75× |" in text and "4 of 4 greedy outputs" in text and "default run" in text
