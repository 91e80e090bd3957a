"""Intervention sweeps: settings generated together equal each setting alone, and an interrupted sweep resumes."""

from __future__ import annotations

import json

import pytest
import torch

from axes_lib.generation import generate
from axes_lib.steering import steering
from axes_lib.sweeps import sweep


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from axes_lib.models import load_model

    return load_model(str(tiny_model_dir("llama")))


SYSTEMS = ["a b c d e f g h i j k l m n", "z y x w v u t s r"]
RECORDS = [{"id": f"{s}/{q}", "prompt": f"{system} {text}"} for s, system in enumerate(SYSTEMS)
           for q, text in enumerate(["u v", "w", "x y z a"])]
SETTINGS = [{"label": "off", "layers": [], "strength": 0.0},
            {"label": "one", "layers": [1], "strength": 0.5},
            {"label": "two", "layers": [0, 1], "strength": {0: 0.2, 1: 1.0}}]


@pytest.mark.parametrize("mode", ["add", "cap"])
def test_sweep_equals_each_setting_alone_and_resumes(tiny, tmp_path, monkeypatch, mode):
    import axes_lib.sweeps

    model, tokenizer = tiny
    torch.manual_seed(3)
    direction = {i: torch.randn(model.config.hidden_size) for i in range(2)}
    out = tmp_path / "sweep.jsonl"
    kw = dict(max_new_tokens=5, batch_size=2 * len(RECORDS))  # two chunks: settings off + one, then two
    rows = sweep(model, tokenizer, RECORDS, direction, mode, SETTINGS, out, **kw)
    assert len(rows) == 3 * len(RECORDS) and len({(r["setting"], r["id"]) for r in rows}) == len(rows)
    prompts = [r["prompt"] for r in RECORDS]
    key = "scale" if mode == "add" else "threshold"
    for setting in SETTINGS:  # independent computation: each setting alone, under `steering`
        got = [r for r in rows if r["setting"] == setting["label"]]
        if setting["layers"]:
            with steering(model, direction, layers=setting["layers"], mode=mode, **{key: setting["strength"]}) as stats:
                want = generate(model, tokenizer, prompts, max_new_tokens=5)
            fired = {str(k): v for k, v in stats.fraction_fired().items()}
            assert got[0]["stats"]["fraction_fired"] == pytest.approx(fired)
        else:
            want = generate(model, tokenizer, prompts, max_new_tokens=5)
            assert got[0]["stats"] == {}
        answer = {r["id"]: r["response"] for r in got}
        assert [answer[r["id"]] for r in RECORDS] == want
    assert len({tuple(r["response"] for r in rows if r["setting"] == s["label"]) for s in SETTINGS}) == 3  # steering acts

    # Interrupted after the first chunk: the rerun generates only the missing setting.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[: 2 * len(RECORDS)]) + "\n")
    asked = []
    real = axes_lib.sweeps.generate
    monkeypatch.setattr(axes_lib.sweeps, "generate", lambda m, t, p, **k: asked.append(len(p)) or real(m, t, p, **k))
    again = sweep(model, tokenizer, RECORDS, direction, mode, SETTINGS, out, **kw)
    assert asked == [len(RECORDS)]
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, rows))
    assert sweep(model, tokenizer, RECORDS, direction, mode, SETTINGS, out, **kw) == again and asked == [len(RECORDS)]
    alone = sweep(model, tokenizer, RECORDS, direction, mode, SETTINGS[:1], tmp_path / "off.jsonl", **kw)  # no steered setting
    assert [r["response"] for r in alone] == [r["response"] for r in rows if r["setting"] == "off"]


def test_sweep_checks_settings_before_generating(tiny, tmp_path):
    model, tokenizer = tiny
    direction = {1: torch.randn(model.config.hidden_size)}
    bad = [{"label": "ok", "layers": [1], "strength": 1.0}, {"label": "neg", "layers": [1], "strength": -1.0}]
    with pytest.raises(ValueError, match="scale must be >= 0"):
        sweep(model, tokenizer, RECORDS, direction, "add", bad, tmp_path / "s.jsonl")
    assert not (tmp_path / "s.jsonl").exists()
