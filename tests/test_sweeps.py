"""Intervention sweeps: settings generated together equal each setting alone, an interrupted sweep resumes,
and a rerun regenerates exactly the rows whose inputs changed (never a stale answer)."""

from __future__ import annotations

import json

import pytest
import torch

from axes_lib.generation import generate
from axes_lib.interventions import Ablate, Add, Cap, Intervention
from axes_lib.sweeps import Setting, sweep

SYSTEMS = ["a b c d e f g h i j k l m n", "z y x w v u t s r"]
RECORDS = [{"id": f"{s}/{q}", "prompt": f"{system} {text}"} for s, system in enumerate(SYSTEMS)
           for q, text in enumerate(["u v", "w", "x y z a"])]
STRENGTHS = [("one", [1], 0.5), ("two", [0, 1], {0: 0.2, 1: 1.0})]


def _settings(kind: type[Intervention], direction, scale: float = 1.0) -> list[Setting]:
    steered = [Setting(label, kind(direction, layers, _times(strength, scale)), {"note": label})
               for label, layers, strength in STRENGTHS]
    return [Setting("off", None), *steered]


def _times(strength, k):
    return {i: v * k for i, v in strength.items()} if isinstance(strength, dict) else strength * k


@pytest.fixture
def counting(monkeypatch):
    """How many prompts each `generate` call of the sweep asked for."""
    import axes_lib.sweeps

    asked: list[int] = []
    real = axes_lib.sweeps.generate
    monkeypatch.setattr(axes_lib.sweeps, "generate", lambda m, t, p, **k: asked.append(len(p)) or real(m, t, p, **k))
    return asked


@pytest.mark.parametrize("kind", [Add, Cap, Ablate])
def test_sweep_equals_each_setting_alone_and_resumes(tiny_llama, tmp_path, kind, counting):
    model, tokenizer = tiny_llama
    torch.manual_seed(3)
    direction = {i: torch.randn(model.config.hidden_size) for i in range(2)}
    settings = _settings(kind, direction)
    out = tmp_path / "sweep.jsonl"
    kw = dict(max_new_tokens=5, batch_size=2 * len(RECORDS))  # two chunks: settings off + one, then two
    rows = sweep(model, tokenizer, RECORDS, settings, out, **kw)
    assert [(r["setting"], r["id"]) for r in rows] == [(s.label, r["id"]) for s in settings for r in RECORDS]
    prompts = [r["prompt"] for r in RECORDS]
    for setting in settings:  # independent computation: each setting alone
        got = [r for r in rows if r["setting"] == setting.label]
        stats = {}
        want = generate(model, tokenizer, prompts, max_new_tokens=5, interventions=setting.intervention, stats=stats)
        assert [r["response"] for r in got] == want
        if setting.intervention is None:
            assert got[0]["stats"] == {} and got[0]["layers"] == []
        else:
            fired = {str(k): v for k, v in stats[setting.intervention].fraction_fired().items()}
            assert got[0]["stats"]["fraction_fired"] == pytest.approx(fired)
            assert got[0]["note"] == setting.label and got[0]["layers"] == setting.intervention.layers
    assert len({tuple(r["response"] for r in rows if r["setting"] == s.label) for s in settings}) == 3  # steering acts

    # Interrupted after the first chunk: the rerun generates only the missing setting.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[: 2 * len(RECORDS)]) + "\n")
    counting.clear()
    again = sweep(model, tokenizer, RECORDS, settings, out, **kw)
    assert counting == [len(RECORDS)]
    assert again == rows
    assert sweep(model, tokenizer, RECORDS, settings, out, **kw) == again and counting == [len(RECORDS)]
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows  # the file is in sweep order


def test_changed_inputs_regenerate_exactly_their_rows(tiny_llama, tmp_path, counting):
    model, tokenizer = tiny_llama
    torch.manual_seed(4)
    direction = {i: torch.randn(model.config.hidden_size) for i in range(2)}
    out = tmp_path / "sweep.jsonl"
    kw = dict(max_new_tokens=5, batch_size=64)
    first = sweep(model, tokenizer, RECORDS, _settings(Add, direction), out, **kw)
    n = len(RECORDS)
    # Nothing changed: nothing generated, the same rows.
    counting.clear()
    assert sweep(model, tokenizer, RECORDS, _settings(Add, direction), out, **kw) == first and counting == []
    # Float noise in the direction (as a rebuild on another machine gives): nothing regenerates.
    noisy = {i: v * (1 + 1e-7 * torch.randn_like(v)) for i, v in direction.items()}
    assert any(not torch.equal(noisy[i], direction[i]) for i in noisy)
    assert sweep(model, tokenizer, RECORDS, _settings(Add, noisy), out, **kw) == first and counting == []
    # The direction negated, same labels: both steered settings regenerate, the unsteered one does not.
    negated = {i: -v for i, v in direction.items()}
    rows = sweep(model, tokenizer, RECORDS, _settings(Add, negated), out, **kw)
    assert counting == [2 * n]
    assert [r["response"] for r in rows[:n]] == [r["response"] for r in first[:n]]
    assert [r["response"] for r in rows[n:]] != [r["response"] for r in first[n:]]
    stats = {}
    want = generate(model, tokenizer, [r["prompt"] for r in RECORDS], max_new_tokens=5,
                    interventions=Add(negated, [1], scale=0.5), stats=stats)
    assert [r["response"] for r in rows if r["setting"] == "one"] == want
    # Only what a row records beside its answer changed: nothing regenerates, the description is refreshed.
    counting.clear()
    relabelled = [Setting(x.label, x.intervention, {"note": "renamed"}) for x in _settings(Add, negated)]
    again = sweep(model, tokenizer, RECORDS, relabelled, out, **kw)
    assert counting == [] and [r["response"] for r in again] == [r["response"] for r in rows]
    assert all(r["note"] == "renamed" for r in again) and all(r["note"] == "renamed" for r in map(json.loads, out.open()))
    # Changed thresholds of one setting only: only its rows regenerate.
    counting.clear()
    caps = _settings(Cap, direction)
    sweep(model, tokenizer, RECORDS, caps, tmp_path / "cap.jsonl", **kw)
    counting.clear()
    changed = [caps[0], caps[1], Setting("two", Cap(direction, [0, 1], threshold={0: 9.0, 1: 9.0}))]
    sweep(model, tokenizer, RECORDS, changed, tmp_path / "cap.jsonl", **kw)
    assert counting == [n]
    counting.clear()  # thresholds that differ by float noise only: nothing regenerates
    sweep(model, tokenizer, RECORDS, changed[:2] + [Setting("two", Cap(direction, [0, 1], threshold={0: 9.0, 1: 9.0000001}))],
          tmp_path / "cap.jsonl", **kw)
    assert counting == []
    # The same cap on response positions only is another setting: its rows regenerate (and say so).
    counting.clear()
    response_only = changed[:2] + [Setting("two", Cap(direction, [0, 1], threshold={0: 9.0, 1: 9.0}, response_only=True))]
    rows = sweep(model, tokenizer, RECORDS, response_only, tmp_path / "cap.jsonl", **kw)
    assert counting == [n] and all(0.0 <= r["stats"]["fraction_fired_response"]["0"] <= 1.0 for r in rows[2 * n:])
    # Rows whose statistics lack a field `SteeringStats.summary` gives now are regenerated.
    counting.clear()
    lines = [json.loads(line) for line in (tmp_path / "cap.jsonl").open()]
    lines[n]["stats"].pop("fraction_fired_response")
    (tmp_path / "cap.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    sweep(model, tokenizer, RECORDS, response_only, tmp_path / "cap.jsonl", **kw)
    assert counting == [1]
    # A changed prompt regenerates that record under every setting; other generation settings, everything.
    counting.clear()
    edited = [dict(RECORDS[0], prompt=RECORDS[0]["prompt"] + " b"), *RECORDS[1:]]
    sweep(model, tokenizer, edited, _settings(Add, negated), out, **kw)
    assert counting == [3]
    counting.clear()
    sweep(model, tokenizer, edited, _settings(Add, negated), out, **{**kw, "max_new_tokens": 4})
    assert counting == [3 * n]


def test_rows_without_fingerprints_are_regenerated(tiny_llama, tmp_path):
    """A file of another format (rows without setting, id or fingerprint) is stale, not a crash."""
    model, tokenizer = tiny_llama
    out = tmp_path / "old.jsonl"
    out.write_text("".join(json.dumps({"persona": "p", "query_id": r["id"], "response": "old"}) + "\n" for r in RECORDS))
    rows = sweep(model, tokenizer, RECORDS, [Setting("off", None)], out, max_new_tokens=3)
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS] and all(r["fingerprint"] for r in rows)
    assert all("old" != r["response"] for r in rows)


def test_sweep_checks_settings_before_generating(tiny_llama, tmp_path, counting):
    model, tokenizer = tiny_llama
    direction = {1: torch.randn(model.config.hidden_size)}
    path = tmp_path / "s.jsonl"
    with pytest.raises(ValueError, match="setting labels must be unique"):
        sweep(model, tokenizer, RECORDS, [Setting("a", None), Setting("a", Add(direction, scale=1.0))], path)
    with pytest.raises(ValueError, match="record ids must be unique"):
        sweep(model, tokenizer, [RECORDS[0], RECORDS[0]], [Setting("a", None)], path)
    with pytest.raises(ValueError, match="Setting objects"):
        sweep(model, tokenizer, RECORDS, [{"label": "x", "layers": [1], "strength": 1.0}], path)
    with pytest.raises(ValueError, match="has no prompt"):
        sweep(model, tokenizer, [{"id": "x"}], [Setting("a", None)], path)
    assert counting == [] and not path.exists()


def test_settings_along_different_directions_are_generated_apart(tiny_llama, tmp_path, counting):
    """`steer` takes one direction per kind and layer in a batch: a sweep over several directions (random
    controls) puts each direction's settings in their own `generate` calls, mixing kinds where it can,
    and each answer equals that setting generated alone."""
    model, tokenizer = tiny_llama
    torch.manual_seed(5)
    first, second = ({i: torch.randn(model.config.hidden_size) for i in range(2)} for _ in range(2))
    settings = [Setting("off", None), Setting("a:add", Add(first, [1], 2.0)), Setting("a:cap", Cap(first, [0, 1], 0.5)),
                Setting("b:add", Add(second, [1], 2.0)), Setting("b:cap", Cap(second, [0, 1], 0.5))]
    rows = sweep(model, tokenizer, RECORDS, settings, tmp_path / "sweep.jsonl", max_new_tokens=5, batch_size=100)
    n = len(RECORDS)
    assert counting == [3 * n, 2 * n]  # off + a's two kinds together, then b's
    prompts = [r["prompt"] for r in RECORDS]
    for setting in settings:
        want = generate(model, tokenizer, prompts, max_new_tokens=5, interventions=setting.intervention)
        assert [r["response"] for r in rows if r["setting"] == setting.label] == want
