"""Judged sweeps (axes_lib.judge.evaluation): resumable judging, summaries, the sweet spot, judge agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from axes_lib.judge import (
    Item,
    Score,
    agreement,
    judge_rows,
    means,
    scores_of,
    summarise,
    sweet_spot,
    text_key,
    unique_texts,
)


class CountingJudge:
    """Scores from the response length; counts what it was asked; can fail on chosen texts."""

    def __init__(self, fail: set[str] | None = None, id: str = "fake:v1"):
        self.id = id
        self.seen: list[str] = []
        self.fail = fail or set()

    def score(self, items):
        out = []
        for it in items:
            self.seen.append(it.response)
            if it.response in self.fail:
                out.append(Score(None, None, self.id, "HTTP 500"))
            else:
                out.append(Score(min(10.0, len(it.response) / 2), 5.0, self.id))
        return out

    def score_one(self, query, response):
        return self.score([Item(query, response)])[0]


def _rows():
    return [{"query": "Why?", "response": r, "setting": s, "id": f"p/{i}"}
            for i, (r, s) in enumerate([("a", "s0"), ("abcd", "s1"), ("a", "s2"), ("abcdefgh", "s1")])]


def test_judge_rows_judges_each_text_once_and_resumes(tmp_path):
    store = tmp_path / "judge.jsonl"
    judge = CountingJudge(fail={"abcd"})
    out = judge_rows(judge, _rows(), store, chunk_size=1, progress=False)
    assert sorted(judge.seen) == ["a", "abcd", "abcdefgh"]  # the two equal texts were judged once
    assert [r["assistant_likeness"] for r in out] == [0.5, None, 0.5, 4.0]
    assert out[1]["judge_error"] == "HTTP 500" and out[0]["judge_error"] is None
    assert [r["setting"] for r in out] == ["s0", "s1", "s2", "s1"]  # rows keep their fields and order
    stored = [json.loads(x) for x in store.read_text().splitlines()]
    assert {r["key"] for r in stored} == {text_key("Why?", "a"), text_key("Why?", "abcdefgh")}  # failures not stored

    again = CountingJudge()
    out2 = judge_rows(again, _rows(), store, progress=False)
    assert again.seen == ["abcd"]  # only the failed one is retried
    assert out2[1]["assistant_likeness"] == 2.0
    other = CountingJudge(id="fake:v2")  # another judge (or version) does not reuse these judgements
    judge_rows(other, _rows(), store, progress=False)
    assert sorted(other.seen) == ["a", "abcd", "abcdefgh"]
    assert unique_texts(_rows()) == [0, 1, 3]
    with pytest.raises(ValueError, match="needs str 'query' and 'response'"):
        judge_rows(again, [{"query": "q"}], store)


def test_judge_rows_checks_its_store_before_judging(tmp_path):
    """An unwritable store is an error naming it before any (possibly paid) judgement; it used to fail after."""
    blocker = tmp_path / "evaluations"
    blocker.write_text("a file where the folder should be\n")
    judge = CountingJudge()
    with pytest.raises(OSError, match="evaluations"):
        judge_rows(judge, _rows(), blocker / "judge.jsonl", chunk_size=1, progress=False)
    assert judge.seen == []


def test_judge_rows_returns_scores_a_failed_write_lost(tmp_path, monkeypatch):
    """A write that fails mid-run warns and the scores still come back; the next write catches up."""
    import axes_lib.judge.cache as cache_mod

    real = cache_mod.append_jsonl
    calls = []

    def flaky(path, records):
        calls.append(len(records))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, records)

    monkeypatch.setattr(cache_mod, "append_jsonl", flaky)
    store = tmp_path / "judge.jsonl"
    judge = CountingJudge()
    with pytest.warns(RuntimeWarning, match=r"1 score\(s\) are not persisted"):
        out = judge_rows(judge, _rows(), store, chunk_size=1, progress=False)
    assert [r["assistant_likeness"] for r in out] == [0.5, 2.0, 0.5, 4.0] and all(r["judge_error"] is None for r in out)
    assert calls == [1, 1, 2]
    stored = {json.loads(x)["key"] for x in store.read_text().splitlines()}
    assert stored == {text_key("Why?", r) for r in ("a", "abcd", "abcdefgh")}

    monkeypatch.setattr(cache_mod, "append_jsonl", lambda path, records: (_ for _ in ()).throw(OSError("read-only")))
    with pytest.warns(RuntimeWarning, match=r"1 score\(s\) are not persisted"):
        more = judge_rows(judge, [{"query": "Why?", "response": "xyz"}], store, progress=False)
    assert more[0]["assistant_likeness"] == 1.5  # returned although it could not be stored


def test_summarise_and_sweet_spot():
    rows = []
    for scale, al, co in [(0, [2, 3, 4], [9, 9, 9]), (10, [5, 6, 7], [8.5, 8.5, 8.5]), (50, [9, 9, 9], [3, 4, 5]),
                          (20, [7, 7, 7], [8.2, 8.2, None])]:
        rows += [{"scale": scale, "assistant_likeness": a, "coherence": c} for a, c in zip(al, co)]
    summary = summarise(rows, ["scale"], n_boot=200)
    assert [s["scale"] for s in summary] == [0, 10, 50, 20] and [s["n"] for s in summary] == [3, 3, 3, 3]
    assert summary[1]["assistant_likeness_mean"] == pytest.approx(6.0)
    assert summary[3]["coherence_mean"] == pytest.approx(8.2)  # a missing score is left out
    assert means(rows[9:]) == {"assistant_likeness": pytest.approx(7.0), "coherence": pytest.approx(8.2)}
    assert means([]) is None
    assert all(s["assistant_likeness_low"] <= s["assistant_likeness_mean"] <= s["assistant_likeness_high"] for s in summary)
    assert sweet_spot(summary, 9.0, margin=1.0, x="scale")["scale"] == 20  # 50 breaks coherence
    assert sweet_spot(summary, 9.0, margin=0.6, x="scale")["scale"] == 10
    assert sweet_spot(summary, 9.0, margin=0.0, x="scale")["scale"] == 0
    assert sweet_spot(summary, 9.0, margin=10.0, x="scale")["scale"] == 50
    assert sweet_spot(summary, 20.0, margin=0.0) is None
    tied = [dict(summary[1], scale=30), summary[1]]  # equal scores: the weaker intervention wins
    assert sweet_spot(tied, 9.0, margin=1.0, x="scale")["scale"] == 10
    with pytest.raises(ValueError, match="margin"):
        sweet_spot(summary, 9.0, margin=-1)


def test_agreement_is_spearman():
    rng = np.random.default_rng(1)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.8, size=40)

    def ranks(x):
        return np.argsort(np.argsort(x)).astype(float)

    expect = np.corrcoef(ranks(a), ranks(b))[0, 1]  # no ties: Spearman = Pearson of the ranks
    s1 = [Score(float(x), float(-x), "j1") for x in a] + [Score(None, None, "j1", "failed")]
    s2 = [Score(float(y), float(-y), "j2") for y in b] + [Score(1.0, 1.0, "j2")]
    got = agreement(s1, s2)
    assert got["assistant_likeness"]["spearman"] == pytest.approx(expect)
    assert got["coherence"]["spearman"] == pytest.approx(expect) and got["coherence"]["n"] == 40
    with pytest.raises(ValueError, match="same items"):
        agreement(s1, s2[:-1])
    rows = [{"assistant_likeness": 1.0, "coherence": None, "judge": "j", "judge_error": "x"}]
    assert scores_of(rows) == [Score(1.0, None, "j", "x")]
