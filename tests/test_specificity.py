"""Tests for axes_lib.specificity: paired effects against the unsteered answers, and ranks among controls."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from axes_lib.specificity import paired_effects, rank_among

LOOP = "the cat sat on the mat " * 8  # a sentence repeated: loops
PLAIN = "Paris is the capital of France, and it has been for a very long time."


def _rows(seed: int = 0):
    """Three settings over 4 queries x 3 personas, random scores; 'loopy' loops on every answer."""
    rng = np.random.default_rng(seed)
    rows = []
    for setting in ("none", "axis", "loopy"):
        for q in range(4):
            for p in range(3):
                rows.append({"setting": setting, "id": f"p{p}/q{q}", "query_id": f"q{q}",
                             "response": LOOP if setting == "loopy" else PLAIN,
                             "assistant_likeness": float(rng.uniform(0, 10)), "coherence": float(rng.uniform(0, 10))})
    return rows


def test_paired_effects_are_mean_differences_on_the_same_prompts():
    rows = _rows()
    effects = paired_effects(rows, "none", n_boot=200)
    frame = pd.DataFrame(rows).pivot(index="id", columns="setting")
    for scale in ("assistant_likeness", "coherence"):
        for setting in ("axis", "loopy"):
            expected = float((frame[scale][setting] - frame[scale]["none"]).mean())
            got = effects[setting][scale]
            assert got["mean"] == pytest.approx(expected)
            assert got["low"] <= got["mean"] <= got["high"] and got["n"] == 12
        assert effects["none"][scale]["mean"] == 0.0
    assert effects["loopy"]["loop_rate"] == 1.0 and effects["loopy"]["loop_change"] == 1.0
    assert effects["axis"]["loop_rate"] == 0.0 and effects["none"]["loop_change"] == 0.0


def test_a_constant_shift_has_a_zero_width_interval_and_missing_scores_are_left_out():
    rows = _rows()
    for r in rows:
        if r["setting"] == "axis":
            base = next(b for b in rows if b["setting"] == "none" and b["id"] == r["id"])
            r["assistant_likeness"] = base["assistant_likeness"] + 1.5
    rows[12]["coherence"] = None  # an "axis" answer the judge could not score
    effects = paired_effects(rows, "none", n_boot=200)["axis"]
    assert effects["assistant_likeness"]["mean"] == pytest.approx(1.5)
    assert effects["assistant_likeness"]["low"] == pytest.approx(1.5) == effects["assistant_likeness"]["high"]
    assert effects["coherence"]["n"] == 11 and math.isfinite(effects["coherence"]["mean"])


def test_paired_effects_need_the_baseline_for_every_record():
    rows = _rows()
    with pytest.raises(ValueError, match="baseline"):
        paired_effects(rows, "absent")
    with pytest.raises(ValueError, match="without"):
        paired_effects([r for r in rows if not (r["setting"] == "none" and r["id"] == "p0/q0")], "none")


def test_rank_among_controls():
    controls = [0.1, 0.5, -0.2, 0.5]
    top = rank_among(0.9, controls)
    assert top["rank"] == 1 and top["n_above"] == 0 and top["p"] == pytest.approx(1 / 5) and top["max"] == 0.5
    tie = rank_among(0.5, controls)
    assert tie["rank"] == 1 and tie["n_at_or_above"] == 2 and tie["p"] == pytest.approx(3 / 5)
    low = rank_among(-1.0, controls)
    assert low["rank"] == 5 and low["p"] == 1.0
    rng = np.random.default_rng(0)  # the rank is the value's place in the sorted list, larger first
    values = rng.normal(size=21)
    for i, v in enumerate(values):
        rest = np.delete(values, i)
        assert rank_among(float(v), rest)["rank"] == int(np.argsort(-values).tolist().index(i)) + 1
    with pytest.raises(ValueError):
        rank_among(0.0, [])
    with pytest.raises(ValueError):
        rank_among(float("nan"), controls)
