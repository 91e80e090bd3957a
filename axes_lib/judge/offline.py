"""The offline judge: scores answers for assistant-likeness and coherence without any API.

It implements the same `Judge` interface as `ClaudeJudge` (`axes_lib.judge.claude`), and is the default when
no Anthropic key is configured, so the whole book builds offline. Both scales are learnt from the
contrastive answers of step 1 (`artifacts/responses/{key}_responses.jsonl`), on the **train** queries
of step 4's split only; the held-out queries are left for `validation()`.

* **Assistant-likeness** (`axes_lib.judge.classifier`) — TF-IDF over word 1–2-grams and character 2–5-grams, and a multinomial
  logistic regression over the personas (the two kinds weighted equally); its decision value is the
  log-odds of "one of the assistant personas", `logit Σ P(persona | text)` over those personas. Learning
  each persona's voice separately beat a binary assistant/non-assistant fit in cross-validation over
  the train queries. The features are the text's own, independent of the steered model's activations.
  The decision value is calibrated by Platt scaling on out-of-fold predictions (folds grouped by query,
  classes weighted equally), and the score is `10 · P(assistant | text)`: 5 means the text could come
  from either side.
* **Coherence** (`axes_lib.judge.coherence`) — the **unsteered** model reads the response after its prompt and gives three
  features: the mean per-token log-likelihood `ℓ`, the fraction of repeated token 3-grams `ρ`, and the
  distinct-token ratio `δ`. Each is mapped to [0, 1] by a straight line between a *degenerate anchor*
  (what a broken text would show) and a *typical anchor* taken from the normal answers of the train
  queries (both assistant and persona answers):

  - `s_ℓ = clip((ℓ − ℓ₀) / (ℓ_ref − ℓ₀))` with `ℓ_ref` the `reference_percentile`-th percentile of
    the normal answers' `ℓ`, and `ℓ₀` the log-likelihood per token that a unigram model of the train
    answers' own tokens gives them (minus its entropy): a text that the model, reading it in context,
    finds no more predictable than word frequencies alone would make it scores 0;
  - `s_ρ = clip((1 − ρ) / (1 − ρ_ref))` with `ρ_ref` the (100 − `reference_percentile`)-th percentile
    of their `ρ` (ρ = 1: every 3-gram a repeat);
  - `s_δ = clip(δ / δ_ref)` with `δ_ref` the `reference_percentile`-th percentile of their `δ`
    (δ → 0: one token over and over);

  and `coherence = 10 · s_ℓ · s_ρ · s_δ`. A text as likely, as varied and as little repetitive as the
  lower quarter of normal answers (default percentile 25) scores 10; each way of breaking pulls one
  factor towards 0 (shuffled words and random tokens lower `ℓ` to the unigram level or below, loops
  raise `ρ` and lower `δ`). Every anchor comes from data or from the definition of the feature.

The rubric's "0 = gibberish or empty" is followed literally: an empty answer scores 0 on both scales.
Nothing here is pickled: the classifier is retrained on the fly (a few seconds) and the reference
features of the coherence scale are cached as JSON, keyed by a fingerprint of their inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from axes_lib.io import read_json, read_jsonl, write_json
from axes_lib.judge.base import Item, Judge, Score, coerce_item
from axes_lib.judge.breakers import BROKEN_KINDS, break_text
from axes_lib.judge.classifier import AssistantClassifier
from axes_lib.judge.coherence import CoherenceFeatures, CoherenceScale, coherence_features, encode, unigram_logprob
from axes_lib.judge.secrets import available_claude_key
from axes_lib.metrics import auroc, auroc_interval

__all__ = ["VERSION", "OfflineJudge", "default_judge"]

#: Bumped whenever the features, the calibration or the coherence formula change (part of `OfflineJudge.id`).
VERSION = "v2"


def _load_contrastive(root: Path, model_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 1's contrastive answers and step 4's split, with errors that say which notebook makes them."""
    responses = root / "responses" / f"{model_key}_responses.jsonl"
    split = root / "evaluations" / f"{model_key}_split.json"
    if not responses.is_file():
        raise FileNotFoundError(
            f"no contrastive answers at {responses}: the offline judge learns from them; run notebook "
            f"01_contrastive_data with model_key={model_key!r} (and artifacts_dir={str(root)!r}) first")
    if not split.is_file():
        raise FileNotFoundError(
            f"no train/holdout split at {split}: run notebook 04_validation with model_key={model_key!r} first")
    rows = read_jsonl(responses)
    bad = [i for i, r in enumerate(rows) if not {"kind", "persona", "query_id", "response"} <= set(r)]
    if bad:
        raise ValueError(f"{responses}: row {bad[0]} lacks kind/persona/query_id/response; is this step 1's output?")
    return rows, read_json(split)


def _fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts: what the cached coherence scale was made from."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _stratified(rows: Sequence[Mapping[str, Any]], n: int | None, seed: int) -> list[Mapping[str, Any]]:
    """Up to `n` rows, spread evenly over personas (round robin over shuffled per-persona lists)."""
    if n is None or n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    by_persona: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_persona.setdefault(str(r.get("persona", r.get("kind"))), []).append(r)
    for members in by_persona.values():
        rng.shuffle(members)
    picked: list[Mapping[str, Any]] = []
    depth = 0
    while len(picked) < n:
        for name in sorted(by_persona):
            if depth < len(by_persona[name]) and len(picked) < n:
                picked.append(by_persona[name][depth])
        depth += 1
    return picked


class OfflineJudge:
    """Assistant-likeness from a TF-IDF classifier, coherence from the unsteered model (see module docstring).

    Built from step 1's contrastive answers and step 4's split under `artifacts_dir`; the classifier is
    trained here (a few seconds), the model is loaded and the coherence scale fitted on first need.
    The coherence scale is fitted on `n_reference` train answers (spread over personas) and cached as
    JSON in `{artifacts_dir}/judgements/offline_{model_key}_coherence.json` unless `cache=False`.
    Items may carry the fully formatted prompt in `meta["prompt"]`; otherwise the query is formatted
    with the model's chat template and no system prompt (what a judge that sees only query and response
    knows).
    """

    def __init__(
        self,
        model_key: str = "smollm2",
        artifacts_dir: str | os.PathLike = "artifacts",
        *,
        model: Any = None,
        tokenizer: Any = None,
        reference_percentile: float = 25.0,
        n_reference: int | None = 270,
        c: float = 1.0,
        batch_size: int = 16,
        cache: bool = True,
        progress: bool = False,
        seed: int = 0,
    ) -> None:
        from axes_lib.models import model_name

        model_name(model_key)  # a clear error for a malformed or unknown key, before any file is read
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither (then the model is loaded by key)")
        if not 0 < reference_percentile < 100:
            raise ValueError(f"reference_percentile must lie in (0, 100), got {reference_percentile}")
        if n_reference is not None and n_reference < 5:
            raise ValueError(f"n_reference must be >= 5 (or None for all train answers), got {n_reference}")
        self.model_key = model_key
        self.root = Path(artifacts_dir)
        self.id = f"offline:{model_key}:{VERSION}"
        self.reference_percentile = float(reference_percentile)
        self.n_reference = n_reference
        self.batch_size = batch_size
        self.progress = progress
        self.seed = seed
        self.cache_path = self.root / "judgements" / f"offline_{model_key}_coherence.json" if cache else None
        self._model, self._tokenizer = model, tokenizer
        self._scale: CoherenceScale | None = None

        rows, split = _load_contrastive(self.root, model_key)
        self.train_queries = set(split["train_queries"])
        self.holdout_queries = set(split["holdout_queries"])
        self.train_rows = [r for r in rows if r["query_id"] in self.train_queries and r["response"].strip()]
        self.holdout_rows = [r for r in rows if r["query_id"] in self.holdout_queries and r["response"].strip()]
        if not self.train_rows or not self.holdout_rows:
            raise ValueError(f"the split leaves {len(self.train_rows)} train and {len(self.holdout_rows)} held-out "
                             "non-empty answers: the offline judge needs both")
        self.classifier = AssistantClassifier.fit(
            [r["response"] for r in self.train_rows], [r["kind"] == "assistant" for r in self.train_rows],
            [r["query_id"] for r in self.train_rows], [str(r["persona"]) for r in self.train_rows], c=c)
        self._data_sha = _fingerprint([[r["kind"], r["query_id"], r["response"]] for r in rows], sorted(self.train_queries))

    def __repr__(self) -> str:
        return f"OfflineJudge(id={self.id!r}, artifacts_dir={str(self.root)!r}, n_train={self.classifier.n_train})"

    # -- the model and the coherence scale, on first need

    def model_and_tokenizer(self) -> tuple[Any, Any]:
        """The unsteered model that reads the answers (loaded by key on first call)."""
        if self._model is None:
            from axes_lib.models import load_model

            self._model, self._tokenizer = load_model(self.model_key)
        return self._model, self._tokenizer

    def prompt_for(self, item: Item) -> str:
        """`item.meta["prompt"]` when given, else the query in the model's chat template without a system prompt."""
        prompt = item.meta.get("prompt") if isinstance(item.meta, Mapping) else None
        if prompt:
            return str(prompt)
        from axes_lib.prompts import format_prompt

        _, tokenizer = self.model_and_tokenizer()
        return format_prompt(None, item.query, model_type=self.model_key, tokenizer=tokenizer)

    def features(self, items: Sequence[Item]) -> list[CoherenceFeatures | None]:
        """Coherence features of each item's response (None when it is empty)."""
        model, tokenizer = self.model_and_tokenizer()
        prompts = [self.prompt_for(it) for it in items]
        return coherence_features(model, tokenizer, prompts, [it.response for it in items],
                                  batch_size=self.batch_size, progress=self.progress)

    @property
    def coherence_scale(self) -> CoherenceScale:
        """The fitted coherence mapping (from the JSON cache when its inputs are unchanged)."""
        if self._scale is None:
            self._scale = self._fit_scale()
        return self._scale

    def _fit_scale(self) -> CoherenceScale:
        reference = _stratified(self.train_rows, self.n_reference, self.seed)
        _, tokenizer = self.model_and_tokenizer()
        key = _fingerprint(VERSION, self._data_sha, [[r["query_id"], r.get("persona"), r["response"]] for r in reference],
                           self.reference_percentile, getattr(tokenizer, "name_or_path", ""), len(tokenizer))
        if self.cache_path is not None and self.cache_path.is_file():
            cached = read_json(self.cache_path)
            if cached.get("fingerprint") == key:
                return CoherenceScale.from_dict(cached["scale"])
        started = time.perf_counter()
        feats = self.features([Item(r["query"], r["response"]) for r in reference])
        floor = unigram_logprob(encode(tokenizer, [r["response"] for r in self.train_rows]))
        scale = CoherenceScale.fit([f for f in feats if f is not None], floor, self.reference_percentile)
        if self.cache_path is not None:
            record = {"fingerprint": key, "judge": self.id, "model_key": self.model_key, "scale": scale.to_dict(),
                      "reference": [{"query_id": r["query_id"], "persona": r.get("persona"), **asdict(f)}
                                    for r, f in zip(reference, feats) if f is not None],
                      "seconds": round(time.perf_counter() - started, 2)}
            try:
                write_json(self.cache_path, record)
            except OSError as exc:  # the fitted scale is still used; only the next run's shortcut is lost
                warnings.warn(f"could not cache the coherence scale in {self.cache_path} ({type(exc).__name__}: {exc}); "
                              "it is used for this run and fitted again next time", RuntimeWarning, stacklevel=2)
        return scale

    # -- the Judge interface

    def assistant_likeness(self, responses: Sequence[str]) -> np.ndarray:
        """Assistant-likeness (0–10) of each response text; empty texts score 0."""
        texts = list(responses)
        out = np.zeros(len(texts))
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            out[keep] = self.classifier.score([texts[i] for i in keep])
        return out

    def score(self, items: Sequence[Item] | Iterable[Item]) -> list[Score]:
        """Score items in input order; equal (prompt, response) pairs are computed once."""
        items = [coerce_item(it, i) for i, it in enumerate(items)]
        if not items:
            return []
        prompts = [self.prompt_for(it) if it.response.strip() else "" for it in items]
        unique: dict[tuple[str, str], int] = {}
        for p, it in zip(prompts, items):
            if it.response.strip():
                unique.setdefault((p, it.response), len(unique))
        pairs = list(unique)
        al = self.assistant_likeness([r for _, r in pairs]) if pairs else np.zeros(0)
        scale = self.coherence_scale if pairs else None
        model, tokenizer = self.model_and_tokenizer() if pairs else (None, None)
        feats = coherence_features(model, tokenizer, [p for p, _ in pairs], [r for _, r in pairs],
                                   batch_size=self.batch_size, progress=self.progress) if pairs else []
        out: list[Score] = []
        for p, it in zip(prompts, items):
            if not it.response.strip():
                out.append(Score(0.0, 0.0, self.id, None, "empty response (the rubric's 0 on both scales)"))
                continue
            j = unique[(p, it.response)]
            f = feats[j]
            if f is None:  # whitespace the tokenizer keeps but no real token: treat as empty
                out.append(Score(0.0, 0.0, self.id, None, "no response tokens"))
                continue
            co = scale(f)
            why = (f"P(assistant)={al[j] / 10:.2f}; {f.mean_logprob:.2f} nats/token, "
                   f"{100 * f.repeated_ngram_fraction:.0f}% repeated 3-grams, {100 * f.distinct_token_ratio:.0f}% distinct tokens")
            out.append(Score(round(float(al[j]), 4), round(float(co), 4), self.id, None, why))
        return out

    def score_one(self, query: str, response: str) -> Score:
        """Score a single (query, response) pair."""
        return self.score([Item(query, response)])[0]

    # -- validation on the held-out queries

    def validation(self, n_coherence: int | None = 90, seed: int = 0, kinds: Sequence[str] = BROKEN_KINDS) -> dict[str, Any]:
        """How well the judge does on the held-out queries, which it never trained on.

        `assistant_likeness`: AUROC of assistant vs non-assistant answers and mean score per kind.
        `coherence`: `n_coherence` held-out answers (spread over personas) and broken versions of each
        (`break_text`), with the mean coherence and the AUROC of normal over broken per kind.
        """
        rows = self.holdout_rows
        al = self.assistant_likeness([r["response"] for r in rows])
        is_a = np.array([r["kind"] == "assistant" for r in rows])
        per_persona = {}
        for r, s in zip(rows, al):
            per_persona.setdefault(str(r.get("persona", r["kind"])), []).append(float(s))
        result: dict[str, Any] = {
            "judge": self.id,
            "n_train": len(self.train_rows),
            "assistant_likeness": {
                "n_holdout": len(rows),
                "auroc": auroc(al[is_a], al[~is_a]),
                "auroc_ci95": auroc_interval(is_a, al, [str(r["query_id"]) for r in rows], seed=seed),
                "mean_assistant": float(al[is_a].mean()) if is_a.any() else float("nan"),
                "mean_non_assistant": float(al[~is_a].mean()) if (~is_a).any() else float("nan"),
                "mean_by_persona": {k: float(np.mean(v)) for k, v in per_persona.items()},
            },
        }
        picked = [r for r in _stratified(rows, n_coherence, seed) if len(r["response"].split()) >= 4]
        if not picked:
            result["coherence"] = {"n": 0}
            return result
        _, tokenizer = self.model_and_tokenizer()
        rng = random.Random(seed)
        texts = {"normal": [r["response"] for r in picked]}
        for kind in kinds:
            texts[kind] = [break_text(t, kind, rng, tokenizer) for t in texts["normal"]]
        names = list(texts)
        flat = [Item(r["query"], texts[name][i]) for name in names for i, r in enumerate(picked)]
        scores = [s.coherence for s in self.score(flat)]
        by_kind = {name: np.array(scores[k * len(picked):(k + 1) * len(picked)], dtype=float) for k, name in enumerate(names)}
        normal = by_kind["normal"]
        result["coherence"] = {
            "n": len(picked),
            "scale": self.coherence_scale.to_dict(),
            "mean": {name: float(v.mean()) for name, v in by_kind.items()},
            "median": {name: float(np.median(v)) for name, v in by_kind.items()},
            "auroc_normal_vs": {name: auroc(normal, v) for name, v in by_kind.items() if name != "normal"},
            "scores": {name: v.tolist() for name, v in by_kind.items()},
            "examples": {name: texts[name][0] for name in names},
        }
        return result


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
