"""Intervention sweeps: steered answers over a grid of settings, generated resumably, and re-read on the axis.

Used by the additive-steering and capping notebooks; the answers feed the judge. Every row carries the
fingerprint of what produced it (`resume`), so a rerun after the direction, a strength, the model or
the generation code changed regenerates exactly the rows it affects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # text bars: tqdm.auto widgets would land in executed notebooks

from axes_lib.activations import extract
from axes_lib.generation import GENERATION_VERSION, generate
from axes_lib.interventions import Intervention
from axes_lib.io import append_jsonl, read_json, read_jsonl, write_json, write_jsonl
from axes_lib.metrics import project
from axes_lib.resume import fingerprint, model_identity
from axes_lib.steering import SteeringStats

__all__ = ["Setting", "fraction_fired", "response_projection", "sweep"]


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: a label (unique in the sweep), its intervention (None: unsteered) and what to
    record beside each answer (e.g. the scale in SD units, the band, the percentile)."""

    label: str
    intervention: Intervention | None
    info: Mapping[str, Any] = field(default_factory=dict)


def _check(records: Sequence[Mapping[str, Any]], settings: Sequence[Setting]) -> None:
    """Unique labels and record ids, a prompt per record: checked before anything is generated."""
    if not settings or not records:
        raise ValueError(f"need at least one setting and one record, got {len(settings)} and {len(records)}")
    for s in settings:
        if not isinstance(s, Setting) or not isinstance(s.label, str) or not s.label:
            raise ValueError(f"settings must be Setting objects with a non-empty label, got {s!r}")
    labels = [s.label for s in settings]
    ids = [r.get("id") for r in records]
    for what, values in (("setting labels", labels), ("record ids", ids)):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"{what} must be unique: {repeated} repeat")
    for r in records:
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise ValueError(f"record {r.get('id')!r} has no prompt")


def sweep(
    model: Any,
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    settings: Sequence[Setting],
    out_path: str | Path,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    chunk: int | None = None,
) -> list[dict[str, Any]]:
    """An answer for every record (needs "id" and "prompt") under every setting, kept in `out_path`.

    Rows already there are reused when their fingerprint matches the current inputs, and regenerated
    otherwise (a setting's values are compared with those recorded beside the sweep up to float noise,
    `RTOL` and `UNIT_ATOL`, since upstream steps recompute them at every build); rows of settings or records no longer asked for are dropped. Each `generate` call takes
    `chunk` rows (default `batch_size`), several settings together (each prompt steered by its own; settings
    of one kind along different directions go to separate calls, as `steer` needs), and
    its answers are appended when it is done, so an interrupted sweep resumes. Returns the rows in settings x records order, which is
    also the order of the file when the sweep ends.
    """
    _check(records, settings)
    out_path = Path(out_path)
    producer = fingerprint({"max_new_tokens": max_new_tokens, "do_sample": False, "code": GENERATION_VERSION},
                           model_identity(model))
    meaning = _meanings(settings, out_path)
    want = {(s.label, r["id"]): fingerprint(r["prompt"], meaning[s.label], producer) for s in settings for r in records}
    stored = read_jsonl(out_path) if out_path.exists() else []
    have = {(row["setting"], row["id"]): row for row in stored  # rows of another format have no fingerprint
            if row.get("fingerprint") is not None and want.get((row.get("setting"), row.get("id"))) == row["fingerprint"]
            and _current_stats(row)}
    chunk = batch_size if chunk is None else chunk
    todo = [(k, [r for r in records if (s.label, r["id"]) not in have]) for k, s in enumerate(settings)]
    todo = [(k, rows[i:i + chunk]) for k, rows in todo for i in range(0, len(rows), chunk)]
    bar = tqdm(total=sum(len(rows) for _, rows in todo), desc="sweep", leave=False)
    for part in _fill(todo, chunk, [s.intervention for s in settings]):
        pairs = [(settings[k], r) for k, rows in part for r in rows]
        stats: dict[Intervention, SteeringStats] = {}
        answers = generate(model, tokenizer, [r["prompt"] for _, r in pairs], max_new_tokens=max_new_tokens,
                           batch_size=batch_size, interventions=[s.intervention for s, _ in pairs], stats=stats)
        new = [_row(s, r, a, stats, want[s.label, r["id"]]) for (s, r), a in zip(pairs, answers, strict=True)]
        append_jsonl(out_path, new)
        have.update({(row["setting"], row["id"]): row for row in new})
        bar.update(len(pairs))
    bar.close()
    rows = [have[key] for key in want]
    # What a row records beside its answer (record fields, setting info) may change without changing the
    # answer: refresh it on reused rows, so no row carries a stale description either.
    described = {(s.label, r["id"]): _description(s, r) for s in settings for r in records}
    for i, row in enumerate(rows):
        fresh = described[row["setting"], row["id"]]
        if any(row.get(k) != v for k, v in fresh.items()):
            rows[i] = {**row, **fresh}
    if len(stored) == len(rows) and all(a is b for a, b in zip(stored, rows)):
        return rows
    write_jsonl(out_path, rows)  # without stale or extra rows, in sweep order
    return read_jsonl(out_path)  # as JSON has them (layer keys as strings), like a resumed sweep's


#: Upstream steps recompute directions, scales and thresholds at every build; across machines they differ
#: at float-rounding level. A setting whose values are this close to the recorded ones is the same setting.
RTOL, UNIT_ATOL = 1e-4, 1e-5


def _current_stats(row: Mapping[str, Any]) -> bool:
    """Whether a stored row's statistics have every field `SteeringStats.summary` gives now (an unsteered row has none)."""
    stats = row.get("stats")
    return stats == {} or (isinstance(stats, Mapping) and set(SteeringStats.SUMMARY_KEYS) <= set(stats))


def _values(item: Intervention) -> dict[str, Any]:
    return {"strength": {str(k): v for k, v in item.strength.items()},
            "units": {str(k): v.tolist() for k, v in item.units.items()}}


def _same(old: Mapping[str, Any], item: Intervention) -> bool:
    """Whether `item` is the recorded intervention up to float noise: the same description (kind, layers,
    positions acted on) but for the values, which need only be close."""
    def fixed(description: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in description.items() if k not in (item.strength_name, "direction_sha256")}

    if fixed(old["describe"]) != fixed(item.describe()):
        return False
    values = _values(item)
    if set(old["values"]["strength"]) != set(values["strength"]):
        return False
    return all(np.allclose(old["values"]["strength"][k], values["strength"][k], rtol=RTOL, atol=1e-6)
               and np.allclose(old["values"]["units"][k], values["units"][k], rtol=0, atol=UNIT_ATOL)
               for k in values["strength"])


def _meanings(settings: Sequence[Setting], out_path: Path) -> dict[str, dict[str, Any] | None]:
    """What each setting does, as its rows' fingerprints record it: the description recorded beside the sweep
    (`<name>.settings.json`) when the setting still does that up to float noise, else its own (recorded now)."""
    side = out_path.with_name(out_path.stem + ".settings.json")
    recorded = read_json(side) if side.is_file() else {}
    record, out = {}, {}
    for s in settings:
        if s.intervention is None:
            out[s.label] = None
            continue
        old = recorded.get(s.label)
        if old is not None and _same(old, s.intervention):
            record[s.label] = old
        else:
            record[s.label] = {"describe": s.intervention.describe(), "values": _values(s.intervention)}
        out[s.label] = record[s.label]["describe"]
    if record != recorded and record:
        write_json(side, record)
    return out


def _description(setting: Setting, record: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a row records beside the answer, its statistics and its fingerprint (JSON-normalised)."""
    item = setting.intervention
    return json.loads(json.dumps({**{k: v for k, v in record.items() if k != "prompt"}, "setting": setting.label,
                                  "mode": "none" if item is None else item.kind,
                                  "layers": [] if item is None else item.layers, **setting.info}, default=str))


def _row(setting: Setting, record: Mapping[str, Any], answer: str, stats: Mapping[Intervention, SteeringStats],
         key: str) -> dict[str, Any]:
    item = setting.intervention
    return {**_description(setting, record), "response": answer,
            "stats": {} if item is None else stats[item].summary(), "fingerprint": key}


def fraction_fired(row: Mapping[str, Any], part: str = "all") -> float:
    """A sweep row's share of positions its intervention moved ("all", "prompt" or "response" positions), as the
    mean over its layers; counted over the `generate` call that wrote the row, which holds several answers of
    its setting. 0.0 for an unsteered row; NaN where the part had no positions."""
    stats = row.get("stats")
    if not stats:
        return 0.0
    values = stats["fraction_fired" if part == "all" else f"fraction_fired_{part}"]
    return float(np.nanmean([values.get(str(i), values.get(i, np.nan)) for i in row["layers"]]))


def _fill(todo: list[tuple[int, list[Any]]], rows: int,
          interventions: Sequence[Intervention | None]) -> list[list[tuple[int, list[Any]]]]:
    """Consecutive (setting, rows) pieces grouped into chunks of at most `rows` rows, a new chunk wherever a
    setting cannot share one `generate` call with those before it (same kind along another direction)."""
    chunks: list[list[tuple[int, list[Any]]]] = []
    size = 0
    for item in todo:
        fits = chunks and size + len(item[1]) <= rows and all(
            _compatible(interventions[k], interventions[item[0]]) for k, _ in chunks[-1])
        if fits:
            chunks[-1].append(item)
            size += len(item[1])
        else:
            chunks.append([item])
            size = len(item[1])
    return chunks


def _compatible(a: Intervention | None, b: Intervention | None) -> bool:
    """Whether two settings' interventions can steer prompts of one batch: `steer` takes one unit vector per
    kind and layer, so two of a kind must use the same direction on every layer they share."""
    if a is None or b is None or a.kind != b.kind:
        return True
    return all(torch.equal(a.units[layer], b.units[layer]) for layer in set(a.units) & set(b.units))


def response_projection(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
                        direction: Mapping[int, torch.Tensor], layers: Sequence[int], batch_size: int = 32) -> np.ndarray:
    """Mean over `layers` of the response-mean projection on the unit direction, read by the unsteered model.

    Teacher-forces each (prompt, response) with no intervention, so it measures the text that was
    generated, not the intervention itself; equal pairs (a setting that changed no word) are read once.
    Empty responses give NaN.
    """
    out = np.full(len(prompts), np.nan)
    unique: dict[tuple[str, str], int] = {}
    for pair in zip(prompts, responses, strict=True):
        if pair[1].strip():
            unique.setdefault(pair, len(unique))
    if not unique:
        return out
    acts = extract(model, tokenizer, [p for p, _ in unique], method="response_mean", responses=[r for _, r in unique],
                   layers=list(layers), batch_size=batch_size, progress=False)
    proj = project(acts, {layer: direction[layer] for layer in layers}, layers=list(layers)).double().numpy().mean(axis=1)
    keep = [i for i, r in enumerate(responses) if r.strip()]
    out[keep] = proj[[unique[prompts[i], responses[i]] for i in keep]]
    return out
