"""One model's findings as a summary (step 12's input), read from the files its steps wrote."""

from __future__ import annotations

import shutil

import pytest

from axes_lib.artifacts import DEFAULT_ROOT, Artifacts
from axes_lib.compare import METHODS, Interval, _answers, _sweet_spot, model_summary
from axes_lib.io import read_json


def test_the_summary_holds_what_the_evaluations_hold():
    paths = Artifacts(DEFAULT_ROOT, "smollm2")
    summary = model_summary(DEFAULT_ROOT, "smollm2")
    for method in METHODS:
        evaluation = read_json(paths.evaluation(method))
        best, ext = evaluation["query_split"]["best"], summary["extraction"][method]
        column = best["column"]
        assert ext["layer"] == evaluation["best_layer"] and ext["depth"] == best["layer"] / (len(evaluation["query_split"]["layers"]) - 1)
        assert ext["cohens_d"] == Interval(best["cohens_d"], best["cohens_d_low"], best["cohens_d_high"])
        assert ext["cohens_d_two_way"].low == evaluation["two_way_interval"]["cohens_d_low"][column]
        assert ext["random_rank"] == evaluation["random_directions"]["rank_cohens_d"]["rank"][column]
        assert ext["partition_rank"] == evaluation["partition_null"]["rank_cohens_d"]["rank"][column]
    judged = read_json(paths.judge_evaluation)
    assert summary["capping"]["setting"] == judged["capping"]["sweet_spot"]["setting"]
    assert summary["capping"]["assistant_likeness"].mean == judged["capping"]["sweet_spot_report"]["assistant_likeness"]["mean"]
    assert [b["setting"] for b in summary["bands"]] == [b["setting"] for b in judged["capping"]["bands"]]
    assert summary["n_layers"] == 30


def test_answer_rates_per_kind():
    responses = [{"persona": "a", "kind": "assistant"}, {"persona": "a", "kind": "assistant"},
                 {"persona": "p", "kind": "non_assistant"}, {"persona": "q", "kind": "non_assistant"}]
    filters = {"loop_rate": {"a": 10.0, "p": 50.0, "q": 70.0}, "role_adherence": {"in_role": [True, False, True, True]}}
    assert _answers(filters, responses) == {"loop_rate_assistant": 10.0, "in_role_assistant": 50.0,
                                            "loop_rate_non_assistant": 60.0, "in_role_non_assistant": 100.0}
    with pytest.raises(ValueError, match="covers 3 answers"):
        _answers({**filters, "role_adherence": {"in_role": [True] * 3}}, responses)


def test_a_sweet_spot_at_the_unsteered_setting_is_none():
    stats = {"assistant_likeness": {"mean": 1.0, "low": 0.5, "high": 1.5}, "coherence": {"mean": 2.0, "low": 1.0, "high": 3.0}}
    assert _sweet_spot({"setting": "add:0", "scale": 0.0}, stats, stats) is None
    assert _sweet_spot({"setting": "uncapped"}, stats, stats) is None
    assert _sweet_spot(None, stats, stats) is None
    spot = _sweet_spot({"setting": "add:5", "scale": 5.0, "scale_sd": 1.0, "n": 30}, stats, stats)
    assert spot["setting"] == "add:5" and "n" not in spot and spot["coherence"] == Interval(2.0, 1.0, 3.0)


def test_a_missing_step_is_named(tmp_path):
    shutil.copytree(DEFAULT_ROOT / "evaluations", tmp_path / "evaluations")
    (tmp_path / "evaluations" / "judge_evaluation_smollm2.json").unlink()
    with pytest.raises(FileNotFoundError, match="judge_evaluation_smollm2.json.*run steps 01-07"):
        model_summary(tmp_path, "smollm2")
