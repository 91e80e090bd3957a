"""The steering demo: the static HTML slider (markup, escaping, no external resources, behaviour in a
headless browser), the answer grid on a tiny_llama model, and the live ipywidgets panel."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from axes_lib.demo import build_grid, check_grid, live_demo, slider_html
from axes_lib.generation import generate
from axes_lib.interventions import Ablate, Add, Cap

NASTY = '</script><b>&amp; "quotes" <!-- x'


def hand_grid() -> dict:
    """2 personas × 2 queries; answers name their cell, so a test can tell which one is shown."""
    personas = [{"name": "p0", "label": "Poet <0>", "system": "You are a poet & more."},
                {"name": "p1", "label": "Teen", "system": "Whatever."}]
    queries = [{"id": "q0", "category": "f", "text": "Why is the sky blue?"},
               {"id": "q1", "category": "f", "text": NASTY}]
    strengths = {"add": ["0 SD", "2 SD", "4 SD"], "cap": ["none", "p25"]}

    def answers(mode):
        return [[[f"{mode}|p{p}|q{q}|s{s}" + (" " + NASTY if (p, q, s) == (1, 1, 1) else "")
                  for s in range(len(strengths[mode]))] for q in range(2)] for p in range(2)]

    return {
        "format": "axes_lib.demo_grid/1",
        "personas": personas,
        "queries": queries,
        "unsteered": [[f"base|p{p}|q{q}" for q in range(2)] for p in range(2)],
        "modes": {m: {"title": m.upper(), "layers": [3], "answers": answers(m),
                      "strengths": [{"label": lab, "value": float(i), "fired": None if lab == "none" else 0.5}
                                    for i, lab in enumerate(labs)]}
                  for m, labs in strengths.items()},
    }


class Collector(HTMLParser):
    """Records tags, attributes, script bodies and text; checks that every non-void tag is closed."""

    VOID = {"input", "br", "meta", "link", "img", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.attrs, self.scripts, self.text, self.errors = [], [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.attrs.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parse(markup: str) -> Collector:
    c = Collector()
    c.feed(markup)
    c.close()
    return c


def test_slider_html_is_well_formed_and_self_contained():
    markup = slider_html(hand_grid(), element_id="w1")
    c = parse(markup)
    assert not c.errors and not c.stack, (c.errors, c.stack)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", markup, re.I)
    assert "http://" not in markup and "https://" not in markup
    assert not [a for _, a in c.attrs if "src" in a or "href" in a]
    assert {t for t, _ in c.attrs} >= {"select", "input", "script", "style"}
    ranges = [a for t, a in c.attrs if t == "input" and a.get("type") == "range"]
    assert len(ranges) == 1 and ranges[0]["max"] == "2"  # three add strengths
    radios = [a["value"] for t, a in c.attrs if t == "input" and a.get("type") == "radio"]
    assert radios == ["add", "cap"]
    # the initial view is in the markup (readable without JavaScript)
    text = "".join(c.text)
    assert "base|p0|q0" in text and "add|p0|q0|s0" in text


def test_slider_html_escapes_texts():
    grid = hand_grid()
    markup = slider_html(grid, element_id="w1")
    c = parse(markup)
    # exactly our two scripts: the nasty text cannot close a script element or open a tag
    assert len([t for t, _ in c.attrs if t == "script"]) == 2
    assert "<b>" not in markup and "</script><b>" not in markup and "<!-- x" not in markup
    assert markup.count("</script>") == 2
    # the escaped text still reads as the original: in the select (markup) and in the embedded JSON
    data = json.loads(c.scripts[0])
    assert data == grid
    assert data["modes"]["add"]["answers"][1][1][1].endswith(NASTY)
    assert html.escape(NASTY[:30]) in markup or html.escape(NASTY)[:30] in markup
    assert "Poet &lt;0&gt;" in markup and "poet &amp; more" in markup


def test_two_widgets_have_distinct_ids():
    grid = hand_grid()
    a, b = slider_html(grid), slider_html(grid)
    ids_a = {x["id"] for _, x in parse(a).attrs if "id" in x}
    ids_b = {x["id"] for _, x in parse(b).attrs if "id" in x}
    assert len(ids_a) >= 8 and not ids_a & ids_b
    names = {x["name"] for _, x in parse(a + b).attrs if "name" in x}
    assert len(names) == 2  # one radio group per widget
    with pytest.raises(ValueError, match="element_id"):
        slider_html(grid, element_id='x" onload="alert(1)')


def test_check_grid_rejects_ragged():
    grid = hand_grid()
    grid["modes"]["cap"]["answers"][0][1] = [["only one"]]
    with pytest.raises(ValueError, match="cap"):
        check_grid(grid)
    with pytest.raises(ValueError, match="not a demo grid"):
        slider_html({"personas": []})


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def dump_dom(page: Path, fragment: str, tmp_path: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000", "--dump-dom",
           page.as_uri() + fragment]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def shown(dom: str, eid: str) -> tuple[dict, str, str]:
    c = parse(dom)
    root = next(a for t, a in c.attrs if a.get("id") == eid)
    m = re.search(rf'id="{eid}-answer"[^>]*>(.*?)</p>', dom, re.S)
    b = re.search(rf'id="{eid}-base"[^>]*>(.*?)</p>', dom, re.S)
    return root, html.unescape(m.group(1)), html.unescape(b.group(1))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")
def test_slider_runs_in_headless_chromium(tmp_path):
    grid = hand_grid()
    page = tmp_path / "slider.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    + slider_html(grid, element_id="one") + slider_html(grid, element_id="two") + "</body></html>",
                    encoding="utf-8")
    root, answer, base = shown(dump_dom(page, "", tmp_path), "one")
    assert (root["data-mode"], root["data-strength"]) == ("add", "0") and answer == "add|p0|q0|s0"
    for fragment, (mode, p, q, s) in {"#persona=1&query=0&mode=cap&strength=1": ("cap", 1, 0, 1),
                                      "#persona=0&query=1&mode=add&strength=2": ("add", 0, 1, 2),
                                      "#persona=1&query=1&mode=add&strength=1": ("add", 1, 1, 1),
                                      "#mode=cap&strength=9": ("cap", 0, 0, 0)}.items():  # out of range: ignored
        dom = dump_dom(page, fragment, tmp_path)
        for eid in ("one", "two"):
            root, answer, base = shown(dom, eid)
            assert (root["data-mode"], root["data-persona"], root["data-query"], root["data-strength"]) == (
                mode, str(p), str(q), str(s)), fragment
            assert answer == grid["modes"][mode]["answers"][p][q][s], fragment
            assert base == grid["unsteered"][p][q]
        assert "<b>" not in dom.split('id="one-answer"')[1].split("</p>")[0]  # shown as text, not markup


# --- the grid on a tiny_llama random-weight model ---------------------------------------------------------



PERSONAS = [{"name": "a", "label": "A", "system": "a b c"}, {"name": "b", "label": "B", "system": "x y"}]
QUERIES = [{"id": "q1", "text": "d e f g"}, {"id": "q2", "text": "h"}, {"id": "q3", "text": "i j k l m n"}]


def prompt_fn(persona, query):
    return f"{persona['system']} {query['text']}"


def test_build_grid_shape_and_zero_strength(tiny_llama):
    model, tokenizer = tiny_llama
    torch.manual_seed(1)
    direction = {i: torch.randn(model.config.hidden_size) for i in range(3)}
    modes = {
        "add": [("0", Add(direction, [1], scale=0.0)), ("50", Add(direction, [1], scale=50.0))],
        "cap": [("none", None), ("p0", Cap(direction, [1, 2], threshold=0.0)),
                ("huge", Cap(direction, [1, 2], threshold=1e6))],
        "ablate": [("off", None), ("to 0", Ablate(direction, [1]))],  # any kind: one more entry, no other edit
    }
    grid = build_grid(model, tokenizer, PERSONAS, QUERIES, modes, max_new_tokens=5, batch_size=4, prompt_fn=prompt_fn,
                      metadata={"model": "tiny"})
    check_grid(grid)
    assert grid["model"] == "tiny" and len(grid["personas"]) == 2 and len(grid["queries"]) == 3
    add, cap, ablate = grid["modes"]["add"], grid["modes"]["cap"], grid["modes"]["ablate"]
    assert [s["label"] for s in add["strengths"]] == ["0", "50"] and add["layers"] == [1]
    assert add["title"] == "Additive steering" and ablate["title"] == "Directional ablation"
    assert cap["strengths"][1]["value"] == {"1": 0.0, "2": 0.0} and cap["layers"] == [1, 2]
    # independent computation: plain generate without any hooks, one prompt at a time
    plain = [[generate(model, tokenizer, [prompt_fn(p, q)], max_new_tokens=5)[0] for q in QUERIES] for p in PERSONAS]
    assert grid["unsteered"] == plain
    for p in range(2):
        for q in range(3):
            assert add["answers"][p][q][0] == plain[p][q]  # scale 0 under hooks == unsteered
            assert cap["answers"][p][q][0] == plain[p][q]  # "none"
    assert add["strengths"][0]["fired"] == 0.0 and add["strengths"][1]["fired"] == 1.0
    assert cap["strengths"][0]["fired"] is None
    assert cap["strengths"][2]["fired"] == 1.0
    for mode, item, s in (("add", modes["add"][1][1], 1), ("ablate", modes["ablate"][1][1], 1)):
        pushed = generate(model, tokenizer, [prompt_fn(PERSONAS[1], QUERIES[2])], max_new_tokens=5, interventions=item)[0]
        assert grid["modes"][mode]["answers"][1][2][s] == pushed
    assert any(add["answers"][p][q][1] != plain[p][q] for p in range(2) for q in range(3))
    json.dumps(grid)  # JSON-ready
    page = parse(slider_html(grid))
    assert page.errors == []
    assert 'value="ablate"' in slider_html(grid)  # a radio per mode


def test_build_grid_rejects_bad_input(tiny_llama):
    model, tokenizer = tiny_llama
    direction = {1: torch.ones(model.config.hidden_size), 2: torch.ones(model.config.hidden_size)}
    kw = dict(prompt_fn=prompt_fn, max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one"):
        build_grid(model, tokenizer, PERSONAS, QUERIES, {"add": []}, **kw)
    with pytest.raises(ValueError, match="mixes kinds or layers"):
        build_grid(model, tokenizer, PERSONAS, QUERIES, {"x": [("a", Add(direction, [1], scale=1.0)),
                                                               ("b", Cap(direction, [1], threshold=1.0))]}, **kw)
    with pytest.raises(ValueError, match="pairs"):
        build_grid(model, tokenizer, PERSONAS, QUERIES, {"x": [("a", 1.0)]}, **kw)
    with pytest.raises(ValueError, match="at least one persona"):
        build_grid(model, tokenizer, [], QUERIES, {"add": [("0", None)]}, **kw)


def test_live_demo_generates_on_change(tiny_llama):
    pytest.importorskip("ipywidgets")
    model, tokenizer = tiny_llama
    torch.manual_seed(2)
    direction = {i: torch.randn(model.config.hidden_size) for i in range(3)}
    asked = []

    def thresholds(q):
        asked.append(q)
        return {1: 1e6}

    panel = live_demo(model, tokenizer, direction, PERSONAS, QUERIES, add_layers=[1], cap_layers=[1],
                      cap_thresholds=thresholds, add_unit=10.0, max_new_tokens=4, prompt_fn=prompt_fn)
    persona, query = panel.children[0].children
    mode, strength = panel.children[1].children
    out = panel.children[2]
    assert out.value == ""  # nothing runs at construction (safe under papermill)
    panel.refresh()
    plain = generate(model, tokenizer, [prompt_fn(PERSONAS[0], QUERIES[0])], max_new_tokens=4)[0]
    assert paras(out.value) == [plain, plain]  # scale 0: steered == unsteered
    assert "changes 0% of the positions" in out.value
    strength.value = 5.0
    pushed = generate(model, tokenizer, [prompt_fn(PERSONAS[0], QUERIES[0])], max_new_tokens=4,
                      interventions=Add(direction, [1], scale=50.0))[0]  # 5 × add_unit 10
    assert paras(out.value) == [plain, pushed] and "add 5 SD (scale 50)" in out.value
    mode.value = "cap"
    assert strength.value == 25.0 and strength.max == 100.0 and asked == [25.0]  # one generation per switch
    assert "percentile 25" in out.value and "100% of the positions" in out.value
    query.value = 2
    assert asked == [25.0, 25.0]
    plain2 = generate(model, tokenizer, [prompt_fn(PERSONAS[0], QUERIES[2])], max_new_tokens=4)[0]
    assert paras(out.value)[0] == plain2


def paras(markup: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<p[^>]*>(.*?)</p>", markup, re.S)]
