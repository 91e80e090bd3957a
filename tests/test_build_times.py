"""The build-time table of the performance appendix, from papermill's metadata of executed notebooks."""

from __future__ import annotations

import json

import pytest

from benchmarks.build_times import main, markdown, notebook_times


def _executed(folder, name, seconds, parameters):
    meta = {"papermill": {"duration": seconds, "start_time": "2026-11-27T05:00:15+00:00", "parameters": parameters}}
    (folder / f"{name}.ipynb").write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))


def test_cold_build_total_and_verdict(tmp_path):
    _executed(tmp_path, "01_a", 2000.0, {"resume": False})
    _executed(tmp_path, "02_b", 130.0, {"resume": False, "n_queries": 100})
    (tmp_path / "notes.ipynb").write_text("{}")  # not a numbered step: ignored
    rows = notebook_times(tmp_path)
    assert [r["notebook"] for r in rows] == ["01_a", "02_b"] and all(r["cold"] for r in rows)
    out = tmp_path / "times.md"
    main([str(tmp_path), str(out)])
    text = out.read_text()
    assert "| **all** | | | **35.5** |" in text  # (2000 + 130) s = 35.5 min
    assert "cold build took 35.5 min against a budget of 35 min (missed)" in text
    main([str(tmp_path), str(out), "--no-budget"])  # the second model's run has no budget
    assert "cold build took 35.5 min." in out.read_text() and "budget" not in out.read_text()


def _with_parameters_cell(folder, name, source):
    path = folder / f"{name}.ipynb"
    notebook = json.loads(path.read_text())
    notebook["cells"] = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source, "outputs": []}]
    path.write_text(json.dumps(notebook))


def test_a_resumed_step_is_not_called_cold_and_one_that_cannot_resume_always_is(tmp_path):
    _executed(tmp_path, "01_a", 60.0, {"resume": False})
    _executed(tmp_path, "02_b", 60.0, {})
    _with_parameters_cell(tmp_path, "02_b", "model_key = 'x'\nresume = True  # reuse\n")
    _executed(tmp_path, "03_c", 60.0, {})
    _with_parameters_cell(tmp_path, "03_c", "model_key = 'x'\n")  # nothing to reuse
    assert [r["cold"] for r in notebook_times(tmp_path)] == [True, False, True]
    text = markdown(notebook_times(tmp_path))
    assert "resume allowed" in text and "need not be a cold-build time" in text and "budget" not in text


def test_unexecuted_notebook_is_an_error(tmp_path):
    (tmp_path / "01_a.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    with pytest.raises(ValueError, match="no papermill duration"):
        notebook_times(tmp_path)
    with pytest.raises(ValueError, match="no executed notebooks"):
        notebook_times(tmp_path / "missing")
