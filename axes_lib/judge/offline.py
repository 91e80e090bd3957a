"""The offline judge: scores answers for assistant-likeness and coherence without any API.

It implements the same `Judge` interface as `ClaudeJudge` (`axes_lib.judge.claude`) and is the default
when no Anthropic key is configured, so the whole book builds offline. Each answer is described by a
few features, and each scale is a linear map of them fitted to hand labels of real answers (the gold
set, `axes_lib.judge.gold`) on half of its queries; the other half is left for `validation()`.

Features (`AnswerFeatures`):

* `voice` — the log-odds, calibrated, that an assistant persona wrote the text: a TF-IDF classifier over
  word and character n-grams trained on step 1's contrastive answers to the train queries
  (`axes_lib.judge.classifier`). It measures register, the voice of the text, and nothing else.
* `fluency`, `relevance` — how the unsteered model reads the answer under a neutral system prompt
  (`axes_lib.judge.reading`): its mean log-likelihood per token after its own query, and how much more
  likely it is after its own query than after unrelated ones. An answer that addresses its query gains
  from it; a loop, a drift or an answer about something else does not.
* `topicality` — the lesser cosine between the query and each half of the answer under a small
  sentence-embedding model (`axes_lib.judge.topic`): low for an answer about something else or one that
  drifts away.
* `loop` — the share of words inside repeated material at any span, stutters included
  (`axes_lib.judge.repetition`); `distinct` — the share of distinct words; `length` — log word count.

Assistant-likeness is a linear map of its features; coherence is capped by each failure on its own, a
smooth minimum of one linear term per failure (`axes_lib.judge.maps.CapMap`): loops, irrelevance to the
query, disfluency and leaving the topic.

What it does not measure: factual accuracy, and whether an on-topic answer actually answers (beyond
being specific to its query). Empty answers score 0 on both scales (the rubric's "0 = empty").
Nothing is pickled: the classifier and the two maps are refitted on the fly (seconds); the features of
the gold answers are cached as JSON, keyed by a fingerprint of their inputs.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from axes_lib.io import read_json, read_jsonl, write_json
from axes_lib.judge.base import Item, Judge, Score, coerce_item
from axes_lib.judge.breakers import BROKEN_KINDS, break_text
from axes_lib.judge.classifier import AssistantClassifier
from axes_lib.judge.gold import SCALES, GoldSet
from axes_lib.judge.maps import CapMap, LinearMap
from axes_lib.judge.reading import NEUTRAL_SYSTEM, Reading, read_answers
from axes_lib.judge.repetition import loop_coverage, words
from axes_lib.judge.secrets import available_claude_key
from axes_lib.judge.topic import MINILM_WEIGHTS_SHA256, load_embedder, topicality
from axes_lib.metrics import auroc, auroc_interval, grouped_interval, spearman
from axes_lib.resume import fingerprint, model_identity

__all__ = ["COHERENCE_CAPS", "FEATURES", "VERSION", "AnswerFeatures", "OfflineJudge", "default_judge", "gold_validation"]

#: Bumped whenever the features, the fit or the gold labels' use change (part of `OfflineJudge.id`).
VERSION = "v4"
#: Coherence's caps: the features of each failure's linear term (`CapMap`).
COHERENCE_CAPS = (("loop", "distinct", "length"), ("relevance",), ("fluency",), ("topicality",))
#: The features each scale's map uses.
FEATURES = {"assistant_likeness": ("voice", "relevance", "loop", "fluency"),
            "coherence": tuple(f for cap in COHERENCE_CAPS for f in cap)}
GOLD_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "gold"


def _load_contrastive(root: Path, model_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 1's contrastive answers and step 3's split, with errors that say which notebook makes them."""
    from axes_lib.artifacts import Artifacts

    paths = Artifacts(root, model_key)
    responses, split = paths.responses, paths.split
    if not responses.is_file():
        raise FileNotFoundError(
            f"no contrastive answers at {responses}: the offline judge learns from them; run notebook "
            f"01_contrastive_data with model_key={model_key!r} (and artifacts_dir={str(root)!r}) first")
    if not split.is_file():
        raise FileNotFoundError(
            f"no train/holdout split at {split}: run notebook 03_direction with model_key={model_key!r} first")
    rows = read_jsonl(responses)
    bad = [i for i, r in enumerate(rows) if not {"kind", "persona", "query_id", "response"} <= set(r)]
    if bad:
        raise ValueError(f"{responses}: row {bad[0]} lacks kind/persona/query_id/response; is this step 1's output?")
    return rows, read_json(split)


@dataclass(frozen=True)
class AnswerFeatures:
    """What the offline judge reads in one answer (see the module docstring)."""

    voice: float
    fluency: float
    relevance: float
    loop: float
    distinct: float
    length: float
    topicality: float


def _fit_map(scale: str, x: np.ndarray, y: np.ndarray) -> LinearMap | CapMap:
    if scale != "coherence":
        return LinearMap.fit(x, y)
    at = np.cumsum([0, *map(len, COHERENCE_CAPS)])
    return CapMap.fit(x, y, [range(a, b) for a, b in zip(at[:-1], at[1:])])


class OfflineJudge:
    """Assistant-likeness and coherence from answer features mapped to hand labels (see the module docstring).

    Built from step 1's contrastive answers and step 3's split under `artifacts_dir` (the classifier, a few
    seconds) and the gold set `gold` in `gold_dir` (its labels; how the unsteered model reads its answers and
    their topicality are computed on first need and cached as JSON beside it, unless `cache=False`).
    `embedder`: the sentence-embedding (model, tokenizer) of `topic` (loaded on first need without it).
    """

    def __init__(
        self,
        model_key: str = "smollm2",
        artifacts_dir: str | os.PathLike = "artifacts",
        *,
        model: Any = None,
        tokenizer: Any = None,
        embedder: tuple[Any, Any] | None = None,
        gold: str = "smollm2",
        gold_dir: str | os.PathLike = GOLD_DIR,
        c: float = 1.0,
        n_other: int = 3,
        batch_size: int = 16,
        cache: bool = True,
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        from axes_lib.models import model_name

        model_name(model_key)  # a clear error for a malformed or unknown key, before any file is read
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither (then the model is loaded by key)")
        if n_other < 1:
            raise ValueError(f"n_other must be >= 1 (relevance compares with unrelated queries), got {n_other}")
        self.model_key, self.root = model_key, Path(artifacts_dir)
        self.id = f"offline:{model_key}:{VERSION}"
        self.n_other, self.batch_size, self.progress, self.seed = n_other, batch_size, progress, seed
        self.gold_dir = gold_dir = Path(gold_dir)
        self.cache_path = gold_dir / f"{gold}_gold_readings_{model_key}.json" if cache else None
        self._model, self._tokenizer, self._embedder = model, tokenizer, embedder
        self._maps: dict[str, LinearMap | CapMap] | None = None
        self.gold = GoldSet.load(gold_dir, gold, seed=seed)

        rows, split = _load_contrastive(self.root, model_key)
        self.train_queries, self.holdout_queries = set(split["train_queries"]), set(split["holdout_queries"])
        self.train_rows = [r for r in rows if r["query_id"] in self.train_queries and r["response"].strip()]
        self.holdout_rows = [r for r in rows if r["query_id"] in self.holdout_queries and r["response"].strip()]
        if not self.train_rows or not self.holdout_rows:
            raise ValueError(f"the split leaves {len(self.train_rows)} train and {len(self.holdout_rows)} held-out "
                             "non-empty answers: the offline judge needs both")
        self.classifier = AssistantClassifier.fit(
            [r["response"] for r in self.train_rows], [r["kind"] == "assistant" for r in self.train_rows],
            [r["query_id"] for r in self.train_rows], [str(r["persona"]) for r in self.train_rows], c=c)

    def __repr__(self) -> str:
        return f"OfflineJudge(id={self.id!r}, artifacts_dir={str(self.root)!r}, gold={self.gold.name!r})"

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The unsteered model that reads the answers (loaded by key on first call)."""
        if self._model is None:
            from axes_lib.models import load_model

            self._model, self._tokenizer = load_model(self.model_key)
        return self._model, self._tokenizer

    def embedder(self) -> tuple[Any, Any]:
        """The sentence-embedding model and tokenizer behind `topicality` (loaded on first call)."""
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    # -- features and the fitted maps

    def features(self, queries: Sequence[str], responses: Sequence[str],
                 readings: Sequence[Reading | None] | None = None,
                 topics: Sequence[float | None] | None = None) -> list[AnswerFeatures | None]:
        """Features of each answer (None when it has no text or no token); `readings` and `topics` (its
        topicality) if already computed."""
        keep = [i for i, r in enumerate(responses) if r.strip()]
        out: list[AnswerFeatures | None] = [None] * len(responses)
        if not keep:
            return out
        texts = [responses[i] for i in keep]
        voice = self.classifier.slope * self.classifier.decision(texts) + self.classifier.intercept
        if readings is None:
            model, tokenizer = self.model_and_tokenizer()
            read = read_answers(model, tokenizer, self.model_key, [queries[i] for i in keep], texts,
                                n_other=self.n_other, batch_size=self.batch_size, progress=self.progress)
        else:
            read = [readings[i] for i in keep]
        topic = topicality(*self.embedder(), [queries[i] for i in keep], texts) if topics is None else [
            topics[i] for i in keep]
        for i, v, reading, top in zip(keep, voice, read, topic):
            if reading is None or top is None:
                continue
            tokens = words(responses[i])
            out[i] = AnswerFeatures(float(v), reading.fluency, reading.relevance, loop_coverage(responses[i]),
                                    len(set(tokens)) / max(1, len(tokens)), float(np.log1p(len(tokens))), top)
        return out

    def gold_features(self) -> list[AnswerFeatures | None]:
        """Features of every gold answer. How the model reads them and their topicality do not depend on this
        run's artifacts, so they are cached as JSON beside the gold set, per model, and reused while their
        inputs are unchanged."""
        rows = self.gold.rows
        queries, responses = [r["query"] for r in rows], [r["response"] for r in rows]
        model, tokenizer = self.model_and_tokenizer()
        key = fingerprint(VERSION, NEUTRAL_SYSTEM, self.n_other, [[q, r] for q, r in zip(queries, responses)],
                          model_identity(model), MINILM_WEIGHTS_SHA256)
        readings = topics = None
        if self.cache_path is not None and self.cache_path.is_file():
            cached = read_json(self.cache_path)
            if cached.get("fingerprint") == key:
                readings = [None if x is None else Reading(**x) for x in cached["readings"]]
                topics = cached["topicality"]
        if readings is None or topics is None:
            readings = read_answers(model, tokenizer, self.model_key, queries, responses, n_other=self.n_other,
                                    batch_size=self.batch_size, progress=self.progress)
            keep = [i for i, r in enumerate(responses) if r.strip()]
            topics = [None] * len(responses)
            for i, t in zip(keep, topicality(*self.embedder(), [queries[i] for i in keep], [responses[i] for i in keep])):
                topics[i] = t
            if self.cache_path is not None:
                try:
                    write_json(self.cache_path, {"fingerprint": key, "gold": self.gold.name, "model_key": self.model_key,
                                                 "readings": [None if x is None else asdict(x) for x in readings],
                                                 "topicality": topics})
                except OSError as exc:  # the readings are still used; only the next run's shortcut is lost
                    warnings.warn(f"could not cache the gold readings in {self.cache_path} ({type(exc).__name__}: {exc})",
                                  RuntimeWarning, stacklevel=2)
        return self.features(queries, responses, readings, topics)

    @property
    def maps(self) -> dict[str, LinearMap | CapMap]:
        """Per scale, the map from features to the label (`FEATURES`), fitted on the gold set's fit half."""
        if self._maps is None:
            feats = self.gold_features()
            fit = [i for i in self.gold.fit if feats[i] is not None]
            self._maps = {scale: _fit_map(scale, np.array([[getattr(feats[i], f) for f in FEATURES[scale]] for i in fit]),
                                             self.gold.labels(scale, fit)) for scale in SCALES}
        return self._maps

    def predict(self, feats: Sequence[AnswerFeatures | None]) -> dict[str, np.ndarray]:
        """Both scales (0–10) of each answer's features; 0 for None (an empty answer)."""
        out = {}
        for scale in SCALES:
            fitted = self.maps[scale]
            x = np.array([[getattr(f, name) for name in FEATURES[scale]] if f is not None else fitted.mean
                          for f in feats], dtype=float).reshape(len(feats), -1)
            y = fitted.predict(x)
            y[[f is None for f in feats]] = 0.0
            out[scale] = y
        return out

    # -- the Judge interface

    def score(self, items: Sequence[Item] | Iterable[Item]) -> list[Score]:
        """Score items in input order; equal (query, response) pairs are computed once."""
        items = [coerce_item(it, i) for i, it in enumerate(items)]
        unique: dict[tuple[str, str], int] = {}
        for it in items:
            unique.setdefault((it.query, it.response), len(unique))
        pairs = list(unique)
        feats = self.features([q for q, _ in pairs], [r for _, r in pairs]) if pairs else []
        pred = self.predict(feats) if pairs else {}
        out: list[Score] = []
        for it in items:
            j = unique[(it.query, it.response)]
            f = feats[j]
            if f is None:
                out.append(Score(0.0, 0.0, self.id, None, "empty response (the rubric's 0 on both scales)"))
                continue
            why = (f"voice log-odds {f.voice:.2f}; {f.fluency:.2f} nats/token, relevance {f.relevance:+.2f}, "
                   f"topicality {f.topicality:.2f}; {100 * f.loop:.0f}% repeated words, {100 * f.distinct:.0f}% distinct")
            out.append(Score(round(float(pred["assistant_likeness"][j]), 4), round(float(pred["coherence"][j]), 4),
                             self.id, None, why))
        return out

    def score_one(self, query: str, response: str) -> Score:
        """Score a single (query, response) pair."""
        return self.score([Item(query, response)])[0]

    # -- validation

    def validation(self, n_synthetic: int | None = 60, n_boot: int = 1000, seed: int = 0,
                   baselines: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> dict[str, Any]:
        """How well the judge does on data it was not fitted on.

        `gold`: the gold set's test half (`gold_validation`), for this judge and for each of `baselines`
        (judge name -> answer id -> scores). `assistant_likeness_holdout`: AUROC of assistant vs persona
        answers to the held-out queries of step 3. `synthetic`: `n_synthetic` held-out answers broken
        each way steering breaks text (`break_text`), mean coherence per kind and AUROC of normal over broken.
        """
        feats = self.gold_features()
        pred = self.predict([feats[i] for i in self.gold.test])
        mine = {self.gold.rows[i]["id"]: {s: float(pred[s][k]) for s in SCALES} for k, i in enumerate(self.gold.test)}
        result: dict[str, Any] = {"judge": self.id, "gold": {self.id: gold_validation(self.gold, mine, n_boot, seed)},
                                  "n_gold_fit": len(self.gold.fit), "n_gold_test": len(self.gold.test),
                                  "self_agreement": self.gold.self_agreement()}
        for name, scores in (baselines or {}).items():
            result["gold"][name] = gold_validation(self.gold, scores, n_boot, seed)
        rows = self.holdout_rows
        al = self.score([Item(r["query"], r["response"]) for r in rows])
        x = np.array([s.assistant_likeness for s in al])
        is_a = np.array([r["kind"] == "assistant" for r in rows])
        result["assistant_likeness_holdout"] = {
            "n": len(rows), "auroc": auroc(x[is_a], x[~is_a]),
            "auroc_ci95": auroc_interval(is_a, x, [str(r["query_id"]) for r in rows], n_boot=n_boot, seed=seed)}
        result["synthetic"] = self._synthetic(n_synthetic, seed)
        return result

    def _synthetic(self, n: int | None, seed: int) -> dict[str, Any]:
        rng = random.Random(seed)
        rows = [r for r in self.holdout_rows if r["kind"] == "assistant" and len(r["response"].split()) >= 4]
        rng.shuffle(rows)
        picked = rows[:n]
        if len(picked) < 2:
            return {"n": len(picked), "mean": {}, "auroc_normal_vs": {}, "examples": {}}
        _, tokenizer = self.model_and_tokenizer()
        others = [picked[(k + 1) % len(picked)]["response"] for k in range(len(picked))]  # an answer to another query
        texts = {"normal": [r["response"] for r in picked]}
        for kind in BROKEN_KINDS:
            texts[kind] = [break_text(r["response"], kind, rng, tokenizer, other) for r, other in zip(picked, others)]
        items = [Item(r["query"], texts[kind][k]) for kind in texts for k, r in enumerate(picked)]
        co = np.array([s.coherence for s in self.score(items)]).reshape(len(texts), len(picked))
        by_kind = dict(zip(texts, co))
        return {"n": len(picked), "mean": {k: float(v.mean()) for k, v in by_kind.items()},
                "auroc_normal_vs": {k: auroc(by_kind["normal"], v) for k, v in by_kind.items() if k != "normal"},
                "examples": {k: v[0] for k, v in texts.items()}}


def gold_validation(gold: GoldSet, scores: Mapping[str, Mapping[str, float]], n_boot: int = 1000,
                    seed: int = 0) -> dict[str, dict[str, Any]]:
    """A judge's scores against the gold labels of the test half, per scale: Spearman, and AUROC of the
    clearly good (label >= 7) over the clearly bad (<= 3), each with an interval resampled by query."""
    out: dict[str, dict[str, Any]] = {}
    rows = [gold.rows[i] for i in gold.test if gold.rows[i]["id"] in scores]
    groups = [r["query_id"] for r in rows]
    for scale in SCALES:
        y = np.array([r[scale] for r in rows], dtype=float)
        x = np.array([scores[r["id"]][scale] for r in rows], dtype=float)
        clear = (y >= 7) | (y <= 3)
        good = y >= 7
        rho = spearman(x, y)
        out[scale] = {
            "n": len(rows), "n_good": int(good.sum()), "n_bad": int((y <= 3).sum()),
            "spearman": rho,
            "spearman_ci95": grouped_interval(lambda k, x=x, y=y: spearman(x[k], y[k]), groups, n_boot, seed=seed),
            "auroc": auroc(x[clear & good], x[clear & ~good]),
            "auroc_ci95": auroc_interval(good[clear], x[clear], [g for g, c in zip(groups, clear) if c],
                                         n_boot=n_boot, seed=seed),
        }
    return out


def default_judge(
    model_key: str = "smollm2", artifacts_dir: str | os.PathLike = "artifacts", offline: bool | None = None, **kwargs: Any,
) -> Judge:
    """The book's judge: Claude when an Anthropic key is configured, else the offline judge.

    `offline=True` forces the offline judge, `offline=False` forces Claude (raising without a key);
    None decides by `available_claude_key()`. Extra keyword arguments go to the chosen judge: for Claude,
    `api_key`, `client` and `http_client` to `ClaudeJudge`, a `config`, and any `ClaudeConfig` field
    (which overrides that config's). Claude's judgements are cached in
    `{artifacts_dir}/judgements/claude_cache.jsonl` unless the config names another file.
    """
    if offline is None:
        offline = not available_claude_key()
    if offline:
        return OfflineJudge(model_key, artifacts_dir, **kwargs)
    from axes_lib.judge.claude import ClaudeConfig, ClaudeJudge

    connection = {k: kwargs.pop(k) for k in ("api_key", "client", "http_client") if k in kwargs}
    config = kwargs.pop("config", None) or ClaudeConfig()
    if config.cache_path is None:
        kwargs.setdefault("cache_path", Path(artifacts_dir) / "judgements" / "claude_cache.jsonl")
    return ClaudeJudge(replace(config, **kwargs), **connection)
