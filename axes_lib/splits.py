"""Train/holdout splits of contrastive records: by query (every persona of a query on one side) or by persona."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from axes_lib.metrics import ASSISTANT_KIND
from axes_lib.prompts import Query, load_queries

__all__ = ["check_indices", "indices_in", "queries_in", "split_by_persona", "split_by_query"]


def _record_field(records: Sequence[Mapping[str, Any]], i: int, field: str) -> Any:
    try:
        return records[i][field]
    except KeyError:
        raise ValueError(f"record {i} has no {field!r} field: records need 'query_id', 'persona' and 'kind'") from None


def check_indices(indices: Sequence[int] | None, n: int, name: str = "indices") -> list[int]:
    """Distinct in-range integer indices (default all of 0..n-1)."""
    if indices is None:
        return list(range(n))
    out = [int(i) for i in np.asarray(indices).reshape(-1)]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"{name} {bad[:5]} out of range: there are {n} records/prompts (valid 0..{n - 1})")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} contain duplicates; each record may appear once")
    return out


def split_by_query(
    records: Sequence[Mapping[str, Any]], holdout_frac: float = 0.2, seed: int = 0, indices: Sequence[int] | None = None
) -> tuple[list[int], list[int]]:
    """Split record indices by query so no query is on both sides, stratified by the query's "category".

    Each category holds out `round(holdout_frac * n_queries)` of its queries, at least one and at most
    all but one when it has two or more. `indices` restricts the split to a subset (e.g. the train side,
    for a validation split) and the returned indices refer to `records`. Deterministic for a seed,
    whatever the order of the records.
    """
    if not 0 < holdout_frac < 1:
        raise ValueError(f"holdout_frac must be between 0 and 1 (exclusive), got {holdout_frac}")
    pool = check_indices(indices, len(records))
    by_query: dict[Any, list[int]] = {}
    category: dict[Any, Any] = {}
    for i in pool:
        qid = _record_field(records, i, "query_id")
        cat = records[i].get("category")
        if qid in category and category[qid] != cat:
            raise ValueError(f"query {qid!r} has two categories ({category[qid]!r} and {cat!r}): a query belongs to one category")
        category[qid] = cat
        by_query.setdefault(qid, []).append(i)
    by_category: dict[Any, list[Any]] = {}
    for qid, cat in category.items():
        by_category.setdefault(cat, []).append(qid)
    rng = np.random.default_rng(seed)
    held: set[Any] = set()
    for cat in sorted(by_category, key=str):
        queries = sorted(by_category[cat], key=str)
        k = round(holdout_frac * len(queries))
        if len(queries) >= 2:
            k = min(max(k, 1), len(queries) - 1)
        held.update(queries[j] for j in rng.permutation(len(queries))[:k])
    if not held or len(held) == len(by_query):
        raise ValueError(f"cannot split {len(by_query)} queries into non-empty train and holdout sides: need at least 2 queries")
    train = sorted(i for q, idx in by_query.items() if q not in held for i in idx)
    test = sorted(i for q, idx in by_query.items() if q in held for i in idx)
    return train, test


def split_by_persona(
    records: Sequence[Mapping[str, Any]],
    holdout_personas: Sequence[str] | None = None,
    n_holdout: int = 2,
    seed: int = 0,
    holdout_frac: float = 0.2,
) -> tuple[list[int], list[int]]:
    """Hold out whole non-assistant personas, to test whether the axis generalises to personas it never saw.

    Non-assistant records go to train or holdout by persona (`holdout_personas`, or `n_holdout` drawn with
    `seed`). Assistant records cannot be held out by persona (the axis is defined by them), so they are
    split by query with `split_by_query(holdout_frac)`: both sides get assistant examples and no assistant
    query is on both sides. Which personas were held out: `{records[i]["persona"] for i in test}` minus the
    assistant ones.
    """
    pool = list(range(len(records)))
    kinds = [_record_field(records, i, "kind") for i in pool]
    personas = [_record_field(records, i, "persona") for i in pool]
    assistant = [i for i in pool if kinds[i] == ASSISTANT_KIND]
    others = sorted({personas[i] for i in pool if kinds[i] != ASSISTANT_KIND}, key=str)
    if not assistant or len(others) < 2:
        raise ValueError(
            f"a persona split needs assistant records and at least 2 non-assistant personas, got {len(assistant)} "
            f"assistant records (kind == {ASSISTANT_KIND!r}) and personas {others}"
        )
    if holdout_personas is None:
        if not 1 <= n_holdout < len(others):
            raise ValueError(f"n_holdout must be 1..{len(others) - 1} for {len(others)} non-assistant personas, got {n_holdout}")
        rng = np.random.default_rng(seed)
        held = {others[j] for j in rng.permutation(len(others))[:n_holdout]}
    else:
        held = set(holdout_personas)
        unknown = sorted(held - set(others), key=str)
        if unknown:
            raise ValueError(f"holdout personas {unknown} are not non-assistant personas of these records; choose from {others}")
        if not held or held == set(others):
            raise ValueError(f"hold out at least one and at most {len(others) - 1} of the personas {others}, got {sorted(held)}")
    a_train, a_test = split_by_query(records, holdout_frac=holdout_frac, seed=seed, indices=assistant)
    o_train = [i for i in pool if kinds[i] != ASSISTANT_KIND and personas[i] not in held]
    o_test = [i for i in pool if kinds[i] != ASSISTANT_KIND and personas[i] in held]
    return sorted(a_train + o_train), sorted(a_test + o_test)


# ------------------------------------------------------------------------------------- layer sweeps


def _side(split: Mapping[str, Any], side: str) -> set[str]:
    key = f"{side}_queries"
    if key not in split:
        raise ValueError(f"a query split has 'train_queries' and 'holdout_queries' (notebook 03); no {key!r}")
    return set(split[key])


def queries_in(split: Mapping[str, Any], side: str = "holdout", n: int | None = None) -> list[Query]:
    """The queries on one side of a query split, in `load_queries` order (categories interleaved), the first `n`."""
    chosen = _side(split, side)
    return [q for q in load_queries() if q.id in chosen][:n]


def indices_in(records: Sequence[Mapping[str, Any]], split: Mapping[str, Any], side: str = "train") -> list[int]:
    """Indices of the records whose query is on one side of a query split."""
    chosen = _side(split, side)
    return [i for i, r in enumerate(records) if r["query_id"] in chosen]
