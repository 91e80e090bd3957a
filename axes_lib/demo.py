"""The steering demo: a precomputed answer grid, a self-contained HTML slider over it, and a live widget.

A static book has no kernel, so its slider shows answers generated in advance for every persona ×
query × mode × strength (`build_grid`, `slider_html`: plain HTML/JS, nothing fetched from anywhere).
In Jupyter, `live_demo` runs a real steered generation whenever a control changes.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from axes_lib.generation import generate
from axes_lib.interventions import Add, Cap, Intervention
from axes_lib.steering import SteeringStats

__all__ = ["GRID_FORMAT", "build_grid", "check_grid", "live_demo", "slider_html", "slider_page"]

GRID_FORMAT = "axes_lib.demo_grid/1"
PromptFn = Callable[[Any, Any], str]


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """`obj.name` or `obj[name]`: personas and queries may be dataclasses or plain dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _default_prompt_fn(tokenizer: Any, model_type: str) -> PromptFn:
    from axes_lib.prompts import format_prompt

    return lambda persona, query: format_prompt(_field(persona, "system"), _field(query, "text"),
                                                model_type=model_type, tokenizer=tokenizer)


def _mean_fired(summary: Mapping[str, Mapping[int, float]]) -> float:
    values = list(summary["fraction_fired"].values())
    return float(sum(values) / len(values)) if values else 0.0


def build_grid(
    model: Any,
    tokenizer: Any,
    personas: Sequence[Any],
    queries: Sequence[Any],
    modes: Mapping[str, Sequence[tuple[str, Intervention | None]]],
    max_new_tokens: int = 40,
    batch_size: int = 32,
    prompt_fn: PromptFn | None = None,
    model_type: str = "smollm2",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Greedy answers for every persona × query, unsteered and under each setting of each mode.

    `modes` maps a mode name (e.g. "add", "cap") to its settings, `(label, intervention)` pairs in slider
    order; an intervention of None means "off" and reuses the unsteered answers. Every other setting runs
    under the hooks, all of them in one `generate` call (each prompt copy steered by its own). A mode's
    title and layers, and each setting's value, come from the interventions themselves, so any kind of
    intervention can be shown. Each setting records `fired`: the mean share of positions it changed
    (None for "off"). `prompt_fn(persona, query)` formats a prompt (default: `prompts.format_prompt` with
    the persona's system prompt). Personas need `name` and `system` (`label` optional), queries `id` and
    `text`; attributes or dict keys both work. `metadata` is copied into the grid's top level.
    Returns a JSON-ready dict (see `slider_html`); answers are indexed `[persona][query][setting]`.
    """
    if not personas or not queries:
        raise ValueError(f"need at least one persona and one query, got {len(personas)} and {len(queries)}")
    if not modes or any(not settings for settings in modes.values()):
        raise ValueError("every mode needs at least one (label, intervention) setting (None for 'off')")
    for mode, settings in modes.items():
        acting = [item for _, item in settings if item is not None]
        if any(not isinstance(item, Intervention) for item in acting):
            raise ValueError(f"mode {mode!r}: settings must be (label, Intervention or None) pairs")
        if len({type(item) for item in acting}) > 1 or len({tuple(item.layers) for item in acting}) > 1:
            raise ValueError(f"mode {mode!r} mixes kinds or layers of intervention: give each its own mode")
    prompt_fn = prompt_fn or _default_prompt_fn(tokenizer, model_type)
    cells = list(itertools.product(range(len(personas)), range(len(queries))))
    prompts = [prompt_fn(personas[p], queries[q]) for p, q in cells]

    # One generate call for every setting: the unsteered copy first, then each intervention's copy.
    steered = [item for settings in modes.values() for _, item in settings if item is not None]
    stats: dict[Intervention, SteeringStats] = {}
    flat = generate(model, tokenizer, prompts * (1 + len(steered)), max_new_tokens=max_new_tokens,
                    batch_size=batch_size, progress=True, stats=stats,
                    interventions=[item for item in [None, *steered] for _ in prompts])

    def shape(k: int) -> list[list[str]]:
        answers = flat[k * len(prompts):(k + 1) * len(prompts)]
        return [[answers[p * len(queries) + q] for q in range(len(queries))] for p in range(len(personas))]

    base = shape(0)
    copy = {id(item): shape(1 + k) for k, item in enumerate(steered)}
    out: dict[str, Any] = {}
    for mode, settings in modes.items():
        acting = next(item for _, item in settings if item is not None) if any(i for _, i in settings) else None
        per_setting = [base if item is None else copy[id(item)] for _, item in settings]
        out[mode] = {
            "title": acting.title if acting else mode, "layers": acting.layers if acting else [],
            "strengths": [{"label": label, "value": None if item is None else item.describe()[item.strength_name],
                           "fired": None if item is None else _mean_fired(stats[item].summary())}
                          for label, item in settings],
            # [persona][query][setting]
            "answers": [[[per_setting[s][p][q] for s in range(len(settings))] for q in range(len(queries))]
                        for p in range(len(personas))],
        }
    return {
        "format": GRID_FORMAT,
        **dict(metadata or {}),
        "max_new_tokens": max_new_tokens,
        "personas": [{"name": str(_field(p, "name")), "label": str(_field(p, "label") or _field(p, "name")),
                      "system": str(_field(p, "system", ""))} for p in personas],
        "queries": [{"id": str(_field(q, "id")), "category": str(_field(q, "category", "") or ""),
                     "text": str(_field(q, "text"))} for q in queries],
        "unsteered": base,
        "modes": out,
    }


def check_grid(grid: Mapping[str, Any]) -> None:
    """Raise ValueError unless `grid` has the shape `build_grid` makes (so the widget cannot index out of range)."""
    try:
        n_p, n_q = len(grid["personas"]), len(grid["queries"])
        if not n_p or not n_q:
            raise ValueError("grid has no personas or no queries")
        if len(grid["unsteered"]) != n_p or any(len(row) != n_q for row in grid["unsteered"]):
            raise ValueError(f"grid 'unsteered' is not [{n_p} personas][{n_q} queries]")
        if not grid["modes"]:
            raise ValueError("grid has no modes")
        for mode, spec in grid["modes"].items():
            n_s = len(spec["strengths"])
            if not n_s:
                raise ValueError(f"grid mode {mode!r} has no strengths")
            answers = spec["answers"]
            if len(answers) != n_p or any(len(r) != n_q or any(len(c) != n_s for c in r) for r in answers):
                raise ValueError(f"grid mode {mode!r}: answers are not [{n_p} personas][{n_q} queries][{n_s} strengths]")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a demo grid (missing or malformed {exc}); build one with axes_lib.demo.build_grid") from exc


def _script_json(obj: Any) -> str:
    """JSON safe inside a `<script>` element: `<`, `>`, `&` and line separators escaped (no `</script>`, no `<!--`)."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_ids = itertools.count()

_CSS = """
#{id}{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:14px;line-height:1.45;color:#1f2328;
  background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px;margin:8px 0;max-width:1000px}}
#{id} .ax-controls{{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center;margin-bottom:8px}}
#{id} select{{max-width:340px;font-size:13px;padding:2px}}
#{id} fieldset{{border:0;margin:0;padding:0;display:inline-flex;gap:10px}}
#{id} .ax-slider{{display:flex;align-items:center;gap:10px;margin:6px 0 10px}}
#{id} .ax-slider input{{flex:1;max-width:420px}}
#{id} .ax-value{{font-weight:600;min-width:7em}}
#{id} .ax-ticks{{color:#57606a;font-size:12px}}
#{id} .ax-context{{color:#57606a;font-size:13px;margin-bottom:8px}}
#{id} .ax-answers{{display:flex;flex-wrap:wrap;gap:12px}}
#{id} .ax-answers>div{{flex:1 1 300px;background:#f6f8fa;border-radius:6px;padding:8px 10px}}
#{id} .ax-answers h4{{margin:0 0 4px;font-size:13px;color:#57606a;font-weight:600}}
#{id} .ax-text{{white-space:pre-wrap;margin:0}}
#{id} .ax-empty{{font-style:italic;color:#8c959f}}
#{id} .ax-note{{color:#57606a;font-size:12px;margin-top:4px}}
"""

# Plain ES5, no libraries. State lives in data-* attributes of the root (inspectable, and readable in a
# DOM dump); a URL hash such as #persona=1&query=0&mode=cap&strength=3 sets the initial state.
_JS = """
(function(){
var root=document.getElementById(__ID__);if(!root)return;
var G=JSON.parse(document.getElementById(__ID__+"-data").textContent);
function el(s){return document.getElementById(__ID__+"-"+s);}
var P=el("persona"),Q=el("query"),S=el("strength"),radios=root.querySelectorAll("input[type=radio]");
function mode(){for(var i=0;i<radios.length;i++){if(radios[i].checked)return radios[i].value;}return radios[0].value;}
function put(node,text){node.textContent=text===""?"(empty answer)":text;node.className="ax-text"+(text===""?" ax-empty":"");}
function ticks(m){var st=G.modes[m].strengths,out=[];for(var i=0;i<st.length;i++)out.push(st[i].label);return out.join(" · ");}
function render(){
  var p=+P.value,q=+Q.value,m=mode(),spec=G.modes[m],n=spec.strengths.length;
  S.max=String(n-1);var s=Math.min(+S.value,n-1);S.value=String(s);
  var st=spec.strengths[s];
  el("label").textContent=st.label;el("ticks").textContent=ticks(m);
  el("system").textContent=G.personas[p].system;el("question").textContent=G.queries[q].text;
  put(el("base"),G.unsteered[p][q]);put(el("answer"),spec.answers[p][q][s]);
  el("title").textContent=spec.title+" \\u2014 "+st.label;
  el("note").textContent=st.fired===null?"no intervention":"layers "+spec.layers.join(", ")+" \\u00b7 changes "+
    Math.round(100*st.fired)+"% of the positions there (over all prompts of this setting)";
  root.setAttribute("data-persona",p);root.setAttribute("data-query",q);root.setAttribute("data-mode",m);
  root.setAttribute("data-strength",s);
}
var h={};(location.hash||"").replace(/^#/,"").split("&").forEach(function(kv){var i=kv.indexOf("=");if(i>0)h[kv.slice(0,i)]=kv.slice(i+1);});
function idx(v,n){var k=parseInt(v,10);return isNaN(k)||k<0||k>=n?null:k;}
var hp=idx(h.persona,G.personas.length),hq=idx(h.query,G.queries.length);
if(hp!==null)P.value=String(hp);if(hq!==null)Q.value=String(hq);
if(Object.prototype.hasOwnProperty.call(G.modes,h.mode)){for(var i=0;i<radios.length;i++)radios[i].checked=radios[i].value===h.mode;
  var hs=idx(h.strength,G.modes[h.mode].strengths.length);if(hs!==null){S.max=String(G.modes[h.mode].strengths.length-1);S.value=String(hs);}}
P.addEventListener("change",render);Q.addEventListener("change",render);S.addEventListener("input",render);
for(var j=0;j<radios.length;j++)radios[j].addEventListener("change",render);
render();
})();
"""


def slider_html(grid: Mapping[str, Any], element_id: str | None = None) -> str:
    """A self-contained HTML fragment (inline CSS and JS, nothing external) sliding over a precomputed grid.

    Controls: persona and query selects, a radio per mode and a range slider over that mode's strengths;
    the steered answer is shown beside the unsteered one. All ids start with `element_id` (default: unique
    per call), so several widgets can share a page. Texts are HTML-escaped in the markup and script-safe in
    the embedded JSON. The initial view (first persona, query, additive, first strength) is rendered in
    the markup too, so it reads without JavaScript.
    """
    check_grid(grid)
    if element_id is None:
        digest = hashlib.sha256(json.dumps(grid, sort_keys=True, default=str).encode()).hexdigest()[:8]
        element_id = f"axes-slider-{digest}-{next(_ids)}"
    if not element_id.replace("-", "").replace("_", "").isalnum() or not element_id[0].isalpha():
        raise ValueError(f"element_id {element_id!r} must start with a letter and hold only letters, digits, '-' and '_'")
    e = html.escape
    eid = element_id
    first_mode = next(iter(grid["modes"]))
    add = grid["modes"][first_mode]
    first = add["strengths"][0]

    def options(items: Sequence[str]) -> str:
        return "".join(f'<option value="{i}"{" selected" if i == 0 else ""}>{e(t)}</option>' for i, t in enumerate(items))

    def text(value: str) -> str:
        return 'class="ax-text ax-empty">(empty answer)' if value == "" else f'class="ax-text">{e(value)}'

    personas = [p["label"] for p in grid["personas"]]
    queries = [q["text"] if len(q["text"]) <= 70 else q["text"][:67] + "…" for q in grid["queries"]]
    radio = "".join(
        f'<label><input type="radio" name="{eid}-mode" value="{e(m)}"{" checked" if m == first_mode else ""}> '
        f'{e(grid["modes"][m]["title"])}</label>' for m in grid["modes"])
    ticks = " · ".join(s["label"] for s in add["strengths"])
    note = "no intervention" if first["fired"] is None else (
        f'layers {", ".join(map(str, add["layers"]))} · changes {round(100 * first["fired"])}% of the positions there '
        "(over all prompts of this setting)")
    return (
        f'<div id="{eid}" class="axes-slider" data-persona="0" data-query="0" data-mode="{e(first_mode)}" data-strength="0">'
        f'<style>{_CSS.format(id=eid)}</style>'
        f'<div class="ax-controls">'
        f'<label>Persona <select id="{eid}-persona">{options(personas)}</select></label>'
        f'<label>Query <select id="{eid}-query">{options(queries)}</select></label>'
        f'<fieldset>{radio}</fieldset></div>'
        f'<div class="ax-slider"><label for="{eid}-strength">Strength</label>'
        f'<input type="range" id="{eid}-strength" min="0" max="{len(add["strengths"]) - 1}" step="1" value="0">'
        f'<span class="ax-value" id="{eid}-label">{e(first["label"])}</span></div>'
        f'<div class="ax-ticks" id="{eid}-ticks">{e(ticks)}</div>'
        f'<div class="ax-context"><strong>System:</strong> <span id="{eid}-system">{e(grid["personas"][0]["system"])}</span><br>'
        f'<strong>User:</strong> <span id="{eid}-question">{e(grid["queries"][0]["text"])}</span></div>'
        f'<div class="ax-answers">'
        f'<div><h4>Unsteered</h4><p id="{eid}-base" {text(grid["unsteered"][0][0])}</p></div>'
        f'<div><h4 id="{eid}-title">{e(add["title"])} — {e(first["label"])}</h4>'
        f'<p id="{eid}-answer" {text(add["answers"][0][0][0])}</p>'
        f'<div class="ax-note" id="{eid}-note">{e(note)}</div></div></div>'
        f'<script type="application/json" id="{eid}-data">{_script_json(grid)}</script>'
        f'<script>{_JS.replace("__ID__", json.dumps(eid))}</script>'
        f'</div>'
    )


def slider_page(grid: Mapping[str, Any], title: str = "Steering demo") -> str:
    """`slider_html` as a standalone HTML document (opens from disk in any browser, offline)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f'<body style="margin:16px">\n<h1 style="font-family:system-ui,sans-serif;font-size:20px">{html.escape(title)}</h1>\n'
            f'{slider_html(grid)}\n</body></html>\n')


def live_demo(
    model: Any,
    tokenizer: Any,
    direction: Mapping[int, torch.Tensor],
    personas: Sequence[Any],
    queries: Sequence[Any],
    add_layers: Sequence[int],
    cap_layers: Sequence[int],
    cap_thresholds: Callable[[float], Mapping[int, float]],
    add_unit: float = 1.0,
    add_unit_name: str = "SD",
    add_max: float = 10.0,
    max_new_tokens: int = 40,
    prompt_fn: PromptFn | None = None,
    model_type: str = "smollm2",
) -> Any:
    """An ipywidgets panel that generates a steered answer (and the unsteered one beside it) on every change.

    Additive mode: the slider is the scale in units of `add_unit` (named `add_unit_name`; e.g. the projection
    SD), 0..`add_max`.
    Capping mode: the slider is a percentile 0..100 and `cap_thresholds(percentile)` gives the per-layer
    thresholds. Needs a kernel: in a static page the controls are inert. Returns an `ipywidgets.VBox`
    whose `.refresh()` regenerates the current answer.
    """
    import ipywidgets as w

    if not personas or not queries:
        raise ValueError(f"need at least one persona and one query, got {len(personas)} and {len(queries)}")
    prompt_fn = prompt_fn or _default_prompt_fn(tokenizer, model_type)
    persona = w.Dropdown(options=[(str(_field(p, "label") or _field(p, "name")), i) for i, p in enumerate(personas)],
                         value=0, description="Persona")
    query = w.Dropdown(options=[(str(_field(q, "text")), i) for i, q in enumerate(queries)], value=0, description="Query")
    mode = w.ToggleButtons(options=[("add", "add"), ("cap", "cap")], value="add", description="Mode")
    strength = w.FloatSlider(value=0.0, min=0.0, max=float(add_max), step=0.5, description=f"Scale ({add_unit_name})",
                             continuous_update=False, readout_format=".1f")
    out = w.HTML()
    unsteered: dict[tuple[int, int], str] = {}
    shown: dict[str, Any] = {"state": None}

    def answer(prompt: str) -> str:
        return generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]

    def refresh(*_: Any, force: bool = False) -> None:
        p, q = persona.value, query.value
        state = (p, q, mode.value, strength.value)
        if state == shown["state"] and not force:
            return  # a mode switch also moves the slider: generate once, not twice
        shown["state"] = state
        prompt = prompt_fn(personas[p], queries[q])
        if (p, q) not in unsteered:
            unsteered[(p, q)] = answer(prompt)
        value = strength.value
        if mode.value == "add":
            item: Intervention = Add(direction, add_layers, scale=value * add_unit)
            what = f"add {value:g} {add_unit_name} (scale {value * add_unit:.3g})"
        else:
            item = Cap(direction, cap_layers, threshold=dict(cap_thresholds(value)))
            what = f"cap at percentile {value:g}"
        stats: dict[Intervention, SteeringStats] = {}
        steered = generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens, interventions=item, stats=stats)[0]
        fired, layers = _mean_fired(stats[item].summary()), item.layers
        box, para = "<div style='flex:1 1 300px'>", "<p style='white-space:pre-wrap'>"
        out.value = (
            f"<div style='display:flex;gap:12px;flex-wrap:wrap'>{box}<b>Unsteered</b>{para}"
            f"{html.escape(unsteered[(p, q)])}</p></div>{box}<b>{html.escape(what)}</b> "
            f"(layers {', '.join(map(str, layers))}; changes {100 * fired:.0f}% of the positions there)"
            f"{para}{html.escape(steered)}</p></div></div>"
        )

    def on_mode(change: Mapping[str, Any]) -> None:
        with strength.hold_trait_notifications():
            if change["new"] == "add":
                strength.max, strength.step, strength.description = float(add_max), 0.5, f"Scale ({add_unit_name})"
                strength.value = 0.0
            else:
                strength.max, strength.step, strength.description = 100.0, 5.0, "Percentile"
                strength.value = 25.0

    mode.observe(on_mode, names="value")
    for control in (persona, query, mode, strength):
        control.observe(refresh, names="value")
    panel = w.VBox([w.HBox([persona, query]), w.HBox([mode, strength]), out])
    panel.refresh = lambda: refresh(force=True)  # type: ignore[attr-defined]
    return panel
