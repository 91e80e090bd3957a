"""The judge's gold set: real answers labelled by hand on the rubric, blind to the setting that wrote them.

Files under `artifacts/gold/` (see its README, the data sheet): `<name>_gold_items.jsonl` (what the
labeller saw), `<name>_gold_labels_a.jsonl` (the labels), `<name>_gold_labels_b.jsonl` (a second, blind
pass over 50 of them), `<name>_gold_key.jsonl` (which setting wrote each answer, joined after labelling).
The set is split by query into a half the offline judge is fitted on and a half it is tested on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axes_lib.io import read_jsonl

__all__ = ["GoldSet", "SCALES"]

SCALES = ("assistant_likeness", "coherence")


@dataclass(frozen=True)
class GoldSet:
    """Labelled answers: `rows[i]` joins item, label and key of one answer; `fit` and `test` index the halves."""

    name: str
    rows: list[dict[str, Any]]
    fit: list[int]
    test: list[int]
    recheck: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, folder: str | Path, name: str = "smollm2", seed: int = 0) -> GoldSet:
        """Read the gold files of `name` and split them by query (half the queries each side, seeded)."""
        folder = Path(folder)
        paths = {part: folder / f"{name}_gold_{part}.jsonl" for part in ("items", "labels_a", "key")}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"gold set {name!r} is incomplete: missing {missing} (see artifacts/gold/README.md)")
        items, labels, key = (read_jsonl(paths[p]) for p in ("items", "labels_a", "key"))
        by_id = {p: {r["id"]: r for r in rows} for p, rows in (("labels", labels), ("key", key))}
        absent = [it["id"] for it in items if it["id"] not in by_id["labels"] or it["id"] not in by_id["key"]]
        if absent:
            raise ValueError(f"gold set {name!r}: items {absent[:5]} have no label or no key")
        rows = [{**it, **by_id["key"][it["id"]], **{k: by_id["labels"][it["id"]][k] for k in (*SCALES, "failure", "reason")}}
                for it in items]
        queries = sorted({r["query_id"] for r in rows})
        random.Random(seed).shuffle(queries)
        fit_queries = set(queries[: len(queries) // 2])
        fit = [i for i, r in enumerate(rows) if r["query_id"] in fit_queries]
        test = [i for i, r in enumerate(rows) if r["query_id"] not in fit_queries]
        second = folder / f"{name}_gold_labels_b.jsonl"
        recheck = {r["id"]: r for r in read_jsonl(second)} if second.is_file() else {}
        return cls(name, rows, fit, test, recheck)

    def labels(self, scale: str, which: list[int] | None = None) -> np.ndarray:
        """The labels of one scale for the rows `which` (default all)."""
        return np.array([self.rows[i][scale] for i in (range(len(self.rows)) if which is None else which)], dtype=float)

    def self_agreement(self) -> dict[str, dict[str, float]]:
        """The second blind pass against the first, per scale: Spearman, share within one point, mean |difference|."""
        from axes_lib.metrics import spearman

        first = {r["id"]: r for r in self.rows}
        ids = [i for i in self.recheck if i in first]
        out: dict[str, dict[str, float]] = {}
        for scale in SCALES:
            a = np.array([first[i][scale] for i in ids], dtype=float)
            b = np.array([self.recheck[i][scale] for i in ids], dtype=float)
            out[scale] = {"n": len(ids), "spearman": spearman(a, b), "within_one": float(np.mean(np.abs(a - b) <= 1)),
                          "mean_abs_difference": float(np.mean(np.abs(a - b)))}
        out["failure_kind_agreement"] = {"n": len(ids), "share": float(np.mean(
            [first[i]["failure"] == self.recheck[i]["failure"] for i in ids]))}
        return out
