"""The notebook runner executes a step exactly when something that produced its committed output changed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """The runner over a scratch repository of three steps; `execute` is replaced by a fake whose step N
    copies `artifacts/in_N.txt` (step 1: `gold.txt`) into `artifacts/out_N.txt`, so what a step writes
    follows from what it reads."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "artifacts" / "bench").mkdir(parents=True)
    (tmp_path / "requirements.txt").write_text("torch==1\n")
    (tmp_path / "artifacts" / "gold.txt").write_text("gold")
    for n in (1, 2, 3):
        (tmp_path / "notebooks" / f"0{n}_step.py").write_text(f"from axes_lib.io import read_json\nstep = {n}\n")
    for name, value in dict(ROOT=tmp_path, SOURCES=tmp_path / "notebooks", BOOK=tmp_path / "book",
                            ARTIFACTS=tmp_path / "artifacts").items():
        monkeypatch.setattr(module, name, value)
    calls = []

    def fake_execute(source, executed, params, force):
        n = int(source.stem[:2])
        art = tmp_path / "artifacts"
        run = "" if executed.parent == tmp_path / "book" else f"{executed.parent.name}_"  # a second model's run
        read = art / ("gold.txt" if n == 1 else f"{run}out_{n - 1}.txt")
        (art / f"{run}out_{n}.txt").write_text(f"{n}:{read.read_text()}")
        (art / "bench" / "timing.txt").write_text(str(len(calls)))  # never an input
        executed.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        calls.append(source.stem)

    monkeypatch.setattr(module, "execute", fake_execute)
    module.calls = calls
    module.tmp = tmp_path
    return module


def test_first_run_executes_every_step_and_a_second_none(runner):
    assert runner.run(None) == ["01_step", "02_step", "03_step"]
    assert runner.run(None) == []
    record = runner.read_record(runner.tmp / "book" / "02_step.ipynb")
    assert set(record["outputs"]) == {"artifacts/out_2.txt"}
    assert "artifacts/out_1.txt" in record["inputs"] and "artifacts/out_2.txt" not in record["inputs"]


def test_a_changed_input_reruns_the_steps_that_can_read_it(runner):
    runner.run(None)
    (runner.tmp / "artifacts" / "gold.txt").write_text("new gold")
    assert runner.run(None) == ["01_step", "02_step", "03_step"]
    assert (runner.tmp / "artifacts" / "out_3.txt").read_text() == "3:2:1:new gold"


def test_a_changed_source_reruns_that_step_and_only_the_steps_whose_inputs_then_differ(runner):
    runner.run(None)
    source = runner.tmp / "notebooks" / "03_step.py"
    source.write_text(source.read_text() + "# edited\n")
    assert runner.run(None) == ["03_step"]
    # Step 2 rewrites its output with the same content: step 3's inputs are unchanged, so it is not rerun.
    source = runner.tmp / "notebooks" / "02_step.py"
    source.write_text(source.read_text() + "# edited\n")
    assert runner.run(None) == ["02_step"]


def test_an_edited_output_reruns_its_readers_not_its_writer(runner):
    runner.run(None)
    (runner.tmp / "artifacts" / "out_1.txt").write_text("edited by hand")
    assert runner.run(None) == ["02_step", "03_step"]
    assert (runner.tmp / "artifacts" / "out_1.txt").read_text() == "edited by hand"


def test_a_missing_output_reruns_its_writer(runner):
    runner.run(None)
    (runner.tmp / "artifacts" / "out_2.txt").unlink()
    assert runner.run(None) == ["02_step"]


def test_params_and_requirements_and_force(runner):
    runner.run(None)
    params = runner.tmp / "params.yaml"
    params.write_text("n: 1\n")
    assert runner.run(params) == ["01_step", "02_step", "03_step"]
    assert runner.run(params) == []
    assert runner.read_record(runner.tmp / "book" / "01_step.ipynb")["params_file"] == "params.yaml"
    (runner.tmp / "requirements.txt").write_text("torch==2\n")
    assert runner.run(params) == ["01_step", "02_step", "03_step"]
    assert runner.run(params, force=True) == ["01_step", "02_step", "03_step"]


def test_library_code_counts_only_when_the_notebook_imports_it(runner, monkeypatch):
    import axes_lib.resume as resume

    version = {"axes_lib.metrics": "1"}
    monkeypatch.setattr(resume, "code_fingerprint", lambda modules: json.dumps([version.get(m, m) for m in modules]))
    source = runner.tmp / "notebooks" / "02_step.py"
    source.write_text("import axes_lib.metrics\nstep = 2\n")
    runner.run(None)
    version["axes_lib.metrics"] = "2"  # an edit of a module only step 2 imports
    assert runner.run(None) == ["02_step"]
    assert runner.library_modules("from axes_lib.io import (read_json,\n    write_json)\nimport axes_lib.metrics\n") == [
        "axes_lib.io", "axes_lib.io.read_json", "axes_lib.io.write_json", "axes_lib.metrics"]


def test_dry_run_executes_nothing(runner):
    assert runner.run(None, dry_run=True) == ["01_step", "02_step", "03_step"]
    assert runner.calls == []


def test_files_a_later_step_turns_out_to_write_are_not_inputs_of_earlier_steps(runner):
    """Artifacts committed before any record (step 3's output from an older build): the first run records them
    as inputs of steps 1 and 2, then step 3 rewrites them; the second run must not rerun steps 1 and 2."""
    (runner.tmp / "artifacts" / "out_3.txt").write_text("from an older build")
    assert runner.run(None) == ["01_step", "02_step", "03_step"]
    assert "artifacts/out_3.txt" in runner.read_record(runner.tmp / "book" / "01_step.ipynb")["inputs"]
    assert runner.run(None) == []
    (runner.tmp / "notebooks" / "04_step.py").write_text("step = 4\n")  # a new last step
    assert runner.run(None) == ["04_step"]
    assert runner.run(None) == []


def test_another_runs_outputs_are_inputs_only_of_the_notebook_that_compares_runs(runner):
    """A second model's run (`book/other/`) writes beside the first; neither run's records go stale because of
    the other, except the comparison step (a parameter `other_artifacts_dir`), which reads both."""
    other = runner.tmp / "book" / "other"
    (runner.tmp / "notebooks" / "04_compare.py").write_text('other_artifacts_dir = "artifacts"\nstep = 4\n')
    assert runner.run(None, only=["01", "02", "03"], book=other) == ["01_step", "02_step", "03_step"]
    assert (runner.tmp / "artifacts" / "other_out_3.txt").read_text() == "3:2:1:gold"
    assert runner.run(None) == ["01_step", "02_step", "03_step", "04_compare"]
    assert "artifacts/other_out_3.txt" not in runner.read_record(runner.tmp / "book" / "01_step.ipynb")["inputs"]
    assert "artifacts/other_out_3.txt" in runner.read_record(runner.tmp / "book" / "04_compare.ipynb")["inputs"]
    assert runner.run(None, only=["01", "02", "03"], book=other) == []
    (runner.tmp / "artifacts" / "other_out_3.txt").write_text("edited")  # the other run's result changes
    assert runner.run(None) == ["04_compare"]
    assert runner.run(None, only=["01", "02", "03"], book=other) == []  # an edited output reruns its readers only
    (runner.tmp / "artifacts" / "out_2.txt").unlink()  # this run's output: the other run does not care
    assert runner.run(None, only=["01", "02", "03"], book=other) == []
    assert runner.run(None) == ["02_step"]
