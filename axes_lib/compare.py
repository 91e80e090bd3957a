"""One model's findings as a flat summary, read from the files its steps 3-9 wrote, so that models can be compared.

`model_summary` reads nothing but committed artifacts (no model, no activations): the comparison of models
(notebook 12) costs seconds however expensive each model's own run was.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axes_lib.artifacts import Artifacts
from axes_lib.io import read_json, read_jsonl

__all__ = ["METHODS", "Interval", "model_summary"]

#: The two extraction methods, in the order the seed reports them.
METHODS = ("last_token", "response_mean")


@dataclass(frozen=True)
class Interval:
    """A mean and its 95 % interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, stats: dict[str, Any]) -> Interval:
        return cls(float(stats["mean"]), float(stats["low"]), float(stats["high"]))

    def minus(self, other: Interval) -> float:
        return self.mean - other.mean

    def text(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}–{self.high:.{digits}f}]"


def _extraction(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The query split's chosen layer: separation on held-out queries, its intervals and its controls."""
    split = evaluation["query_split"]
    best, n_layers = split["best"], len(split["layers"])
    column = int(best["column"])
    two_way = evaluation.get("two_way_interval", {})
    random_rank = evaluation.get("random_directions", {}).get("rank_cohens_d", {})
    partitions = evaluation.get("partition_null", {})
    loo = evaluation.get("leave_one_persona_out", {})
    return {
        "layer": int(best["layer"]),
        "depth": int(best["layer"]) / (n_layers - 1),
        "n_layers": n_layers,
        "cohens_d": Interval(best["cohens_d"], best["cohens_d_low"], best["cohens_d_high"]),
        "cohens_d_two_way": (Interval(best["cohens_d"], two_way["cohens_d_low"][column], two_way["cohens_d_high"][column])
                             if two_way else None),
        "balanced_accuracy": float(best["balanced_accuracy"]),
        "majority_baseline": float(split["majority_baseline"]),
        "auroc": float(best["auroc"]),
        "shuffled_q95": float(evaluation["shuffled_null"]["cohens_d_q95"][column]) if "shuffled_null" in evaluation else None,
        "random_rank": int(random_rank["rank"][column]) if random_rank else None,
        "n_random": int(evaluation["random_directions"]["n"]) if random_rank else None,
        "partition_rank": int(partitions["rank_cohens_d"]["rank"][column]) if partitions else None,
        "n_partitions": int(partitions["n_partitions"]) if partitions else None,
        "loo_balanced_accuracy": float(loo["balanced_accuracy"][column]) if loo else None,
        "by_layer": {"depth": [layer / (n_layers - 1) for layer in split["layers"]],
                     "cohens_d": split["test"]["cohens_d"],
                     "null_q95": evaluation.get("shuffled_null", {}).get("cohens_d_q95")},
    }


def _answers(filters: dict[str, Any], responses: list[dict[str, Any]]) -> dict[str, float]:
    """Step 4's answer checks per kind of persona: the mean loop rate of its personas (% of answers that loop) and
    the share of answers that play their persona's role."""
    kinds = {r["persona"]: r["kind"] for r in responses}
    in_role = filters["role_adherence"]["in_role"]
    if len(in_role) != len(responses):
        raise ValueError(f"step 4's role adherence covers {len(in_role)} answers, step 1 wrote {len(responses)}")
    out = {}
    for kind in ("assistant", "non_assistant"):
        mine = {persona for persona, k in kinds.items() if (k == "assistant") == (kind == "assistant")}
        rates = [rate for persona, rate in filters["loop_rate"].items() if persona in mine]
        flags = [flag for flag, r in zip(in_role, responses) if r["persona"] in mine]
        out[f"loop_rate_{kind}"] = sum(rates) / len(rates)
        out[f"in_role_{kind}"] = 100 * sum(flags) / len(flags)
    return out


#: What identifies a sweet spot's setting (the rest of step 7's row are means on the queries it was chosen on).
_SETTING = ("setting", "scale", "scale_sd", "band", "percentile", "positions")


def _sweet_spot(chosen: dict[str, Any] | None, report: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    """A sweet spot's setting with its means on the report half of the held-out queries (it was chosen on the
    other half), beside the unsteered answers to the same queries; None when step 7 chose none, or chose the
    unsteered setting itself (no strength within the coherence margin did better)."""
    if not chosen or chosen.get("scale") == 0 or chosen["setting"] == "uncapped":
        return None
    return {**{k: chosen[k] for k in _SETTING if k in chosen},
            "assistant_likeness": Interval.of(report["assistant_likeness"]), "coherence": Interval.of(report["coherence"]),
            "base_assistant_likeness": Interval.of(base["assistant_likeness"]), "base_coherence": Interval.of(base["coherence"])}


def model_summary(root: str | Path, model_key: str, method: str = "response_mean") -> dict[str, Any]:
    """What steps 3-9 found for one model: per extraction method, the chosen layer and its separation with
    controls; for the steered `method`, the judged sweet spots of both interventions and the capping bands."""
    paths = Artifacts(root, model_key)
    missing = [str(p) for p in (*(paths.evaluation(m) for m in METHODS), paths.judge_evaluation) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{model_key}: missing {missing}: run steps 01-07 for it first")
    judged = read_json(paths.judge_evaluation)
    additive, capping = judged["additive"], judged["capping"]
    extraction = {m: _extraction(read_json(paths.evaluation(m))) for m in METHODS}
    last = extraction[method]["n_layers"] - 1
    summary: dict[str, Any] = {
        "model_key": model_key,
        "judge": judged["judge"],
        "n_layers": last + 1,
        "extraction": extraction,
        "additive": _sweet_spot(additive.get("sweet_spot_raw"), additive.get("sweet_spot_raw_report"), additive["unsteered_report"]),
        "additive_curve": [{"scale_sd": r["scale_sd"], "assistant_likeness": r["assistant_likeness_mean"],
                            "coherence": r["coherence_mean"]} for r in additive["raw"]],
        "capping": _sweet_spot(capping.get("sweet_spot"), capping.get("sweet_spot_report"), capping["uncapped_report"]),
        "bands": [{"band": b["band"], "layers": b["layers"], "depth": (b["layers"][0] / last, b["layers"][-1] / last),
                   "positions": b["positions"], "setting": b["setting"], "gain": Interval.of(b["gain"]),
                   "coherence": Interval.of(b["coherence"]), "capped": float(b["capped"]["mean"])}
                  for b in capping["bands"]],
        "bands_answer": capping["answer"],
        "n_report_queries": len(additive["queries_report"]),
    }
    if paths.answer_filters.is_file():
        summary["answers"] = _answers(read_json(paths.answer_filters), read_jsonl(paths.responses))
    if paths.specificity(method).is_file():
        ranks = read_json(paths.specificity(method))["ranks"]
        summary["specificity"] = {mode: {"rank": int(r["assistant_likeness"]["rank"]),
                                         "n_controls": int(r["assistant_likeness"]["n_controls"]),
                                         "p": float(r["assistant_likeness"]["p"])} for mode, r in ranks.items()}
    return summary
