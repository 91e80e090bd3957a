"""The offline judge: its parts against independent computations, and its behaviour on real answers.

Uses the committed contrastive answers (`artifacts/responses/smollm2_responses.jsonl` and the split of
step 4), a subset of them for the model-based checks, and the embedded SmolLM2. No network: every
non-loopback connection fails in this module.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import axes_lib.judge.secrets as secrets_mod
from axes_lib.judge import (
    BROKEN_KINDS,
    VERSION,
    AssistantClassifier,
    ClaudeJudge,
    CoherenceFeatures,
    CoherenceScale,
    Item,
    Judge,
    MissingAPIKeyError,
    OfflineJudge,
    break_text,
    default_judge,
)
from axes_lib.judge.coherence import repetition_stats, response_logprobs, unigram_logprob
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
def judge(smollm2):
    """An offline judge on the committed answers: small coherence reference, no cache file."""
    _need_artifacts()
    model, tokenizer = smollm2
    return OfflineJudge(KEY, ARTIFACTS, model=model, tokenizer=tokenizer, n_reference=30, cache=False)


# --------------------------------------------------------------------------------------------------
# Parts against independent computations


def test_repetition_stats_by_hand():
    assert repetition_stats("a b c a b c".split()) == (pytest.approx(1 / 4), pytest.approx(3 / 6))
    assert repetition_stats(list("abcdef")) == (0.0, 1.0)
    assert repetition_stats(["x"] * 10) == (pytest.approx(7 / 8), pytest.approx(1 / 10))
    assert repetition_stats([]) == (0.0, 1.0)
    assert repetition_stats(["a", "b"]) == (0.0, 1.0)  # shorter than one 3-gram


def test_unigram_logprob_is_minus_entropy():
    # tokens a, a, b, c: p = 1/2, 1/4, 1/4; entropy = 1.5 bits
    assert unigram_logprob([["a", "a"], ["b", "c"]]) == pytest.approx(-1.5 * np.log(2))
    with pytest.raises(ValueError, match="no tokens"):
        unigram_logprob([[]])


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


def test_coherence_scale_anchors_and_order():
    feats = [CoherenceFeatures(lp, rep, dist, 40) for lp, rep, dist in
             [(-1.0, 0.0, 0.8), (-1.2, 0.1, 0.7), (-0.8, 0.05, 0.75), (-1.5, 0.2, 0.6), (-0.9, 0.0, 0.9), (-1.1, 0.1, 0.7)]]
    scale = CoherenceScale.fit(feats, logprob_floor=-6.0, reference_percentile=25)
    assert scale.logprob_ref == pytest.approx(np.percentile([f.mean_logprob for f in feats], 25))
    assert scale.repeat_ref == pytest.approx(np.percentile([f.repeated_ngram_fraction for f in feats], 75))
    assert scale(CoherenceFeatures(-0.5, 0.0, 0.9, 40)) == 10.0  # better than the reference on every feature
    assert scale(CoherenceFeatures(-6.5, 0.0, 0.9, 40)) == 0.0  # below the unigram floor
    assert scale(CoherenceFeatures(-1.0, 1.0, 0.9, 40)) == 0.0  # nothing but repeats
    assert scale(None) == 0.0  # empty response
    worse = [scale(CoherenceFeatures(lp, 0.0, 0.9, 40)) for lp in (-1, -2, -3, -4, -5)]
    assert worse == sorted(worse, reverse=True) and worse[0] > worse[-1]
    assert CoherenceScale.from_dict(scale.to_dict()) == scale
    with pytest.raises(ValueError, match="not above the floor"):
        CoherenceScale.fit(feats, logprob_floor=0.0)
    with pytest.raises(ValueError, match="at least 5"):
        CoherenceScale.fit(feats[:2], logprob_floor=-6.0)


def test_broken_texts(smollm2):
    _, tok = smollm2
    text = "The capital of France is Paris, a city on the river Seine with many museums."
    rng = random.Random(0)
    shuffled = break_text(text, "shuffled_words", rng)
    assert sorted(shuffled.split()) == sorted(text.split()) and shuffled != text
    looped = break_text(text, "repeated_phrase", rng)
    assert looped.startswith("The capital of") and repetition_stats(looped.split())[0] > 0.5
    noise = break_text(text, "random_tokens", rng, tok)
    assert noise.strip() and noise != text
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        break_text(text, "random_tokens", rng)
    with pytest.raises(ValueError, match="unknown kind"):
        break_text(text, "reversed", rng)


# --------------------------------------------------------------------------------------------------
# The judge on real answers


def test_assistant_answers_score_higher_on_held_out_queries(judge):
    from sklearn.metrics import roc_auc_score

    rows = judge.holdout_rows
    assert rows and not {r["query_id"] for r in rows} & judge.train_queries
    al = judge.assistant_likeness([r["response"] for r in rows])
    y = np.array([r["kind"] == "assistant" for r in rows])
    assert ((al >= 0) & (al <= 10)).all()
    assert al[y].mean() > al[~y].mean() + 2
    # independent AUROC (sklearn) and the judge's own report agree, and both are well above chance
    report = judge.validation(n_coherence=0)["assistant_likeness"]
    assert report["auroc"] == pytest.approx(roc_auc_score(y, al))
    assert report["auroc"] > 0.8
    lo, hi = report["auroc_ci95"]
    assert 0.5 < lo <= report["auroc"] <= hi <= 1.0


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


def test_broken_texts_score_lower_coherence(judge):
    report = judge.validation(n_coherence=10, seed=1)["coherence"]
    assert report["n"] >= 8
    normal = np.array(report["scores"]["normal"])
    assert ((normal >= 0) & (normal <= 10)).all()
    for kind in BROKEN_KINDS:
        broken = np.array(report["scores"][kind])
        assert normal.mean() - broken.mean() > 3, (kind, normal.mean(), broken.mean())
        assert auroc(normal, broken) > 0.75, kind


def test_score_interface(judge):
    assert isinstance(judge, Judge) and judge.id == f"offline:{KEY}:{VERSION}"
    good = judge.score_one("What is the capital of France?", "The capital of France is Paris.")
    assert good.ok and 0 <= good.assistant_likeness <= 10 and 0 <= good.coherence <= 10 and good.judge == judge.id
    # order kept, duplicates computed once but returned for each, a formatted prompt in meta is used
    items = [Item("Why?", "Because."), ("Why?", "Because."), {"query": "Why?", "response": "Because!"}]
    scores = judge.score(items)
    assert len(scores) == 3 and scores[0] == scores[1]
    prompt = "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    assert judge.prompt_for(Item("Why?", "Because.", {"prompt": prompt})) == prompt
    fallback = judge.prompt_for(Item("Why?", "Because."))
    assert fallback.endswith("<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n") and "pirate" not in fallback
    with_prompt = judge.score([Item("Why?", "Because.", {"prompt": prompt})])[0]
    assert with_prompt.assistant_likeness == scores[0].assistant_likeness  # the text alone decides this scale
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
        OfflineJudge("no such model", ARTIFACTS)
    with pytest.raises(FileNotFoundError, match="01_contrastive_data"):
        OfflineJudge(KEY, tmp_path / "empty")
    with pytest.raises(ValueError, match="both model and tokenizer"):
        OfflineJudge(KEY, ARTIFACTS, model=object())


def test_default_judge_chooses_by_key(monkeypatch, tmp_path, judge):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setattr(secrets_mod, "_PACKAGE_ROOT", tmp_path / "no-repo")
    monkeypatch.chdir(tmp_path)
    _need_artifacts()
    # The choice is under test, not the classifier: reuse the fixture's instead of fitting it twice more.
    monkeypatch.setattr(AssistantClassifier, "fit", classmethod(lambda cls, *a, **k: judge.classifier))
    kwargs = {"model": judge._model, "tokenizer": judge._tokenizer, "cache": False}
    assert isinstance(default_judge(KEY, ARTIFACTS, **kwargs), OfflineJudge)
    with pytest.raises(MissingAPIKeyError):
        default_judge(KEY, ARTIFACTS, offline=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-for-a-test")
    claude = default_judge(KEY, tmp_path / "art")
    assert isinstance(claude, ClaudeJudge) and claude.cache_path == tmp_path / "art" / "judgements" / "claude_cache.jsonl"
    assert isinstance(default_judge(KEY, ARTIFACTS, offline=True, **kwargs), OfflineJudge)


def test_coherence_scale_cache_is_json(judge, tmp_path, smollm2):
    """The fitted scale is cached as JSON beside the artifacts and reused while its inputs are unchanged."""
    import json
    import shutil

    art = tmp_path / "artifacts"
    (art / "responses").mkdir(parents=True)
    (art / "evaluations").mkdir()
    rows = judge.train_rows[::18] + judge.holdout_rows[::18]  # both kinds, every persona
    (art / "responses" / f"{KEY}_responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(ARTIFACTS / "evaluations" / f"{KEY}_split.json", art / "evaluations")
    model, tok = smollm2
    first = OfflineJudge(KEY, art, model=model, tokenizer=tok, n_reference=8)
    scale = first.coherence_scale
    cached = json.loads(first.cache_path.read_text())
    assert cached["scale"] == scale.to_dict() and len(cached["reference"]) == 8
    again = OfflineJudge(KEY, art, model=model, tokenizer=tok, n_reference=8)
    again.features = None  # the cached scale must not need any model pass
    assert again.coherence_scale == scale
    other = OfflineJudge(KEY, art, model=model, tokenizer=tok, n_reference=9)
    assert other.coherence_scale.n_reference == 9
