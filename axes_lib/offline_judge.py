"""The offline judge: scores answers for assistant-likeness and coherence without any API.

It implements the same `Judge` interface as `ClaudeJudge` (`axes_lib.judge`), and is the default when
no Anthropic key is configured, so the whole book builds offline. Both scales are learnt from the
contrastive answers of step 1 (`artifacts/responses/{key}_responses.jsonl`), on the **train** queries
of step 4's split only; the held-out queries are left for `validation()`.

* **Assistant-likeness** — TF-IDF over word 1–2-grams and character 2–5-grams, and a multinomial
  logistic regression over the personas (the two kinds weighted equally); its decision value is the
  log-odds of "one of the assistant personas", `logit Σ P(persona | text)` over those personas. Learning
  each persona's voice separately beat a binary assistant/non-assistant fit in cross-validation over
  the train queries. The features are the text's own, independent of the steered model's activations.
  The decision value is calibrated by Platt scaling on out-of-fold predictions (folds grouped by query,
  classes weighted equally), and the score is `10 · P(assistant | text)`: 5 means the text could come
  from either side.
* **Coherence** — the **unsteered** model reads the response after its prompt and gives three
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axes_lib.judge import Item, Judge, Score, coerce_item, available_claude_key

__all__ = [
    "AssistantClassifier",
    "auroc_interval",
    "CoherenceFeatures",
    "CoherenceScale",
    "OfflineJudge",
    "auroc",
    "break_text",
    "coherence_features",
    "default_judge",
    "repetition_stats",
    "response_logprobs",
    "unigram_logprob",
]

#: Bumped whenever the features, the calibration or the coherence formula change (part of `OfflineJudge.id`).
VERSION = "v2"
BROKEN_KINDS = ("shuffled_words", "repeated_phrase", "random_tokens")
_NGRAM = 3


# --------------------------------------------------------------------------------------------------
# Assistant-likeness: TF-IDF + logistic regression, Platt-calibrated on out-of-fold predictions


def _vectorizer() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    # Case and punctuation carry style (the teenager's lowercase, the salesman's "!"): no lowercasing.
    return make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=False),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, lowercase=False),
    )


@dataclass
class _PersonaModel:
    """A multinomial logistic regression over personas, read out as the log-odds of the assistant ones."""

    model: Any
    assistant: np.ndarray  # [n_classes] bool: which of `model.classes_` are assistant personas

    def decision(self, x: Any) -> np.ndarray:
        p = self.model.predict_proba(x)[:, self.assistant].sum(axis=1).clip(1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)


def _fit_logreg(x: Any, y: np.ndarray, personas: np.ndarray, c: float) -> _PersonaModel:
    from sklearn.linear_model import LogisticRegression

    weight = np.where(y, 0.5 / y.mean(), 0.5 / (~y).mean())  # both kinds weigh equally, whatever the persona counts
    model = LogisticRegression(C=c, max_iter=5000).fit(x, personas, sample_weight=weight)
    return _PersonaModel(model, np.isin(model.classes_, np.unique(personas[y])))


def _platt(decision: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a 1-D logistic fit of labels on decision values, both classes weighted equally."""
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e6, max_iter=5000, class_weight="balanced").fit(decision.reshape(-1, 1), y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


@dataclass
class AssistantClassifier:
    """P(assistant | text) from TF-IDF features: `fit` on labelled answers, then `probability` / `score`."""

    vectorizer: Any
    model: _PersonaModel
    slope: float
    intercept: float
    n_train: int

    @classmethod
    def fit(
        cls, texts: Sequence[str], is_assistant: Sequence[bool], groups: Sequence[str], personas: Sequence[str] | None = None,
        c: float = 1.0, n_folds: int = 5,
    ) -> AssistantClassifier:
        """Fit on `texts`; calibrate on out-of-fold decision values with folds grouped by `groups` (query ids).

        `personas` names who wrote each text (without it, each kind is one class: a binary fit); every
        persona must be of one kind. `c` is the inverse regularisation strength: 1 did best of 1, 3 and 10
        in cross-validation over the train queries of the committed SmolLM2 answers.
        """
        from sklearn.model_selection import GroupKFold

        y = np.asarray(is_assistant, dtype=bool)
        texts = list(texts)
        who = np.asarray(list(personas) if personas is not None else np.where(y, "assistant", "other"), dtype=str)
        if not len(texts) == len(y) == len(groups) == len(who):
            raise ValueError(f"got {len(texts)} texts, {len(y)} labels, {len(groups)} groups and {len(who)} personas: "
                             "need one of each per answer")
        if y.all() or not y.any():
            raise ValueError("training answers need both assistant and non-assistant examples")
        mixed = sorted(set(who[y]) & set(who[~y]))
        if mixed:
            raise ValueError(f"personas {mixed} have both assistant and non-assistant answers: each persona is one kind")
        n_groups = len(set(groups))
        if n_groups < 2:
            raise ValueError(f"calibration needs answers to at least 2 different queries, got {n_groups}")
        oof = np.empty(len(texts))
        for train, test in GroupKFold(n_splits=min(n_folds, n_groups)).split(texts, y, groups):
            if y[train].all() or not y[train].any():
                raise ValueError("a calibration fold has answers of one kind only: give both kinds for every query")
            vec = _vectorizer()
            fold = _fit_logreg(vec.fit_transform([texts[i] for i in train]), y[train], who[train], c)
            oof[test] = fold.decision(vec.transform([texts[i] for i in test]))
        slope, intercept = _platt(oof, y)
        vectorizer = _vectorizer()
        model = _fit_logreg(vectorizer.fit_transform(texts), y, who, c)
        return cls(vectorizer, model, slope, intercept, len(texts))

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """The model's log-odds of an assistant persona, before calibration."""
        return self.model.decision(self.vectorizer.transform(list(texts)))

    def probability(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(assistant | text), with the two classes equally likely a priori."""
        z = self.slope * self.decision(texts) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Assistant-likeness on 0–10: `10 · probability`."""
        return 10.0 * self.probability(texts)


# --------------------------------------------------------------------------------------------------
# Coherence: per-token log-likelihood under the unsteered model, and repetition statistics


def _encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 16,
    max_tokens: int = 8192,
    max_response_tokens: int = 256,
    progress: bool = False,
) -> list[np.ndarray]:
    """Log-probability of each response token given the prompt and the response so far (teacher forcing).

    Prompts are fully formatted (chat template applied) and responses are appended as tokens, as in
    `axes_lib.activations`. Sequences are sorted by length and batched with left padding (positions
    counted from the mask), so the LM head only runs on each batch's last `max response length`
    positions. Responses longer than `max_response_tokens` are cut there. An empty response gives an
    empty array. Returns one float64 array per response, in input order.
    """
    import torch
    from tqdm import tqdm

    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses: need one response per prompt")
    if batch_size < 1 or max_tokens < 1 or max_response_tokens < 1:
        raise ValueError(f"batch_size, max_tokens and max_response_tokens must be >= 1, got {batch_size}, {max_tokens}, {max_response_tokens}")
    prompt_ids = _encode(tokenizer, prompts)
    response_ids = [ids[:max_response_tokens] for ids in _encode(tokenizer, responses)]
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {i} is empty: the log-likelihood of a response needs its prompt")
    out: list[np.ndarray] = [np.zeros(0) for _ in prompts]
    todo = sorted((i for i, r in enumerate(response_ids) if r), key=lambda i: (len(prompt_ids[i]) + len(response_ids[i]), i))
    batches: list[list[int]] = []
    for i in todo:
        width = len(prompt_ids[i]) + len(response_ids[i])
        if batches and len(batches[-1]) < batch_size and width * (len(batches[-1]) + 1) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="log-likelihood", disable=not progress, leave=False):
            seqs = [prompt_ids[i] + response_ids[i] for i in batch]
            width = max(len(s) for s in seqs)
            keep = max(len(response_ids[i]) for i in batch) + 1  # positions whose logits predict response tokens
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(seqs):
                ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           logits_to_keep=keep, use_cache=False).logits
            for row, i in enumerate(batch):  # logits: [b, keep, vocab]; position j predicts token j + 1
                n = len(response_ids[i])
                target = torch.tensor(response_ids[i], device=logits.device)
                # The last `n + 1` kept positions end the sequence; the first `n` of them predict the response.
                pred = logits[row, keep - n - 1: keep - 1].float()
                logp = pred.gather(-1, target[:, None])[:, 0] - torch.logsumexp(pred, dim=-1)
                out[i] = logp.double().cpu().numpy()
    return out


def repetition_stats(tokens: Sequence[Any], n: int = _NGRAM) -> tuple[float, float]:
    """`(repeated n-gram fraction, distinct-token ratio)` of a token sequence.

    The first is the share of the text's n-grams that already occurred earlier in it (0 for a text of
    fewer than n tokens); the second the number of distinct tokens over the number of tokens (1 for
    an empty text).
    """
    tokens = list(tokens)
    if not tokens:
        return 0.0, 1.0
    distinct = len(set(tokens)) / len(tokens)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0, distinct
    seen: set[tuple[Any, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams), distinct


def unigram_logprob(token_lists: Iterable[Sequence[Any]]) -> float:
    """Mean log-probability per token of texts under a unigram model of their own tokens (minus its entropy)."""
    counts: dict[Any, int] = {}
    for tokens in token_lists:
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no tokens to fit a unigram model on")
    p = np.array(list(counts.values()), dtype=float) / total
    return float((p * np.log(p)).sum())


@dataclass(frozen=True)
class CoherenceFeatures:
    """What coherence is computed from: mean token log-likelihood, repeated 3-gram fraction, distinct-token ratio."""

    mean_logprob: float
    repeated_ngram_fraction: float
    distinct_token_ratio: float
    n_tokens: int


def coherence_features(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 16,
    progress: bool = False,
) -> list[CoherenceFeatures | None]:
    """Coherence features of each response given its prompt (None for an empty response)."""
    logps = response_logprobs(model, tokenizer, prompts, responses, batch_size=batch_size, progress=progress)
    out: list[CoherenceFeatures | None] = []
    for ids, lp in zip(_encode(tokenizer, responses), logps):
        if lp.size == 0:
            out.append(None)
            continue
        rep, distinct = repetition_stats(ids[: lp.size])
        out.append(CoherenceFeatures(float(lp.mean()), rep, distinct, int(lp.size)))
    return out


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


@dataclass(frozen=True)
class CoherenceScale:
    """Maps `CoherenceFeatures` to 0–10 (formula in the module docstring); fit on normal answers with `fit`."""

    logprob_floor: float
    logprob_ref: float
    repeat_ref: float
    distinct_ref: float
    reference_percentile: float
    n_reference: int

    @classmethod
    def fit(cls, features: Sequence[CoherenceFeatures], logprob_floor: float, reference_percentile: float = 25.0) -> CoherenceScale:
        """Anchors from normal answers' features (the percentile for `ℓ` and `δ`, its mirror for `ρ`) and the floor `ℓ₀`."""
        feats = [f for f in features if f is not None]
        if len(feats) < 5:
            raise ValueError(f"a coherence scale needs the features of at least 5 normal answers, got {len(feats)}")
        if not 0 < reference_percentile < 100:
            raise ValueError(f"reference_percentile must lie in (0, 100), got {reference_percentile}")
        ref = float(np.percentile([f.mean_logprob for f in feats], reference_percentile))
        if not ref > logprob_floor:
            raise ValueError(f"normal answers' log-likelihood ({ref:.2f} nats/token) is not above the floor "
                             f"({logprob_floor:.2f}): is this the model that wrote them?")
        rep = float(np.percentile([f.repeated_ngram_fraction for f in feats], 100 - reference_percentile))
        distinct = float(np.percentile([f.distinct_token_ratio for f in feats], reference_percentile))
        return cls(float(logprob_floor), ref, min(rep, 0.99), max(distinct, 1e-3), float(reference_percentile), len(feats))

    def parts(self, f: CoherenceFeatures) -> tuple[float, float, float]:
        """The three factors `(s_ℓ, s_ρ, s_δ)`, each in [0, 1]."""
        s_ll = _clip01((f.mean_logprob - self.logprob_floor) / (self.logprob_ref - self.logprob_floor))
        s_rep = _clip01((1.0 - f.repeated_ngram_fraction) / (1.0 - self.repeat_ref))
        s_dist = _clip01(f.distinct_token_ratio / self.distinct_ref)
        return s_ll, s_rep, s_dist

    def __call__(self, f: CoherenceFeatures | None) -> float:
        """Coherence on 0–10; 0 for an empty response (None features)."""
        if f is None:
            return 0.0
        s_ll, s_rep, s_dist = self.parts(f)
        return 10.0 * s_ll * s_rep * s_dist

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoherenceScale:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------------------
# Broken texts for validation


def break_text(text: str, kind: str, rng: random.Random, tokenizer: Any = None) -> str:
    """A deliberately broken version of a real answer, about as long as it.

    `shuffled_words`: the same words in random order; `repeated_phrase`: the answer's first few words
    looped to its length; `random_tokens`: as many tokens as the answer, drawn uniformly from the
    tokenizer's vocabulary (special tokens excluded; needs `tokenizer`).
    """
    words = text.split()
    if kind == "shuffled_words":
        shuffled = words[:]
        rng.shuffle(shuffled)
        return " ".join(shuffled)
    if kind == "repeated_phrase":
        phrase = words[: max(2, min(5, len(words) // 4))]
        return " ".join((phrase * (len(words) // max(len(phrase), 1) + 1))[: max(len(words), 2 * len(phrase))])
    if kind == "random_tokens":
        if tokenizer is None:
            raise ValueError("break_text(kind='random_tokens') needs the model's tokenizer")
        special = set(tokenizer.all_special_ids)
        n = max(1, len(_encode(tokenizer, [text])[0]))
        vocab = [i for i in range(len(tokenizer)) if i not in special]
        return tokenizer.decode([rng.choice(vocab) for _ in range(n)], skip_special_tokens=True)
    raise ValueError(f"unknown kind of broken text {kind!r}: use one of {BROKEN_KINDS}")


# --------------------------------------------------------------------------------------------------
# Rank statistics


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties counting half.

    The Mann–Whitney U statistic over average ranks; NaN when either side is empty.
    """
    pos = np.asarray(list(positive), dtype=float)
    neg = np.asarray(list(negative), dtype=float)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    start = 0
    while start < values.size:  # average ranks over ties
        stop = start
        while stop + 1 < values.size and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def auroc_interval(
    positive: Sequence[bool], scores: Sequence[float], groups: Sequence[str], n_boot: int = 1000, alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC of `scores` for `positive`, resampling whole groups (queries):
    the answers to one query share its topic, so they are not independent draws."""
    pos, x = np.asarray(positive, dtype=bool), np.asarray(scores, dtype=float)
    group = np.asarray(groups)
    names = sorted(set(group.tolist()))
    members = [np.flatnonzero(group == g) for g in names]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(names), len(names))])
        stats.append(auroc(x[rows][pos[rows]], x[rows][~pos[rows]]))
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------
# The judge


def _load_contrastive(root: Path, model_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from axes_lib.io import read_json, read_jsonl

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
        from axes_lib.io import read_json, write_json

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
        floor = unigram_logprob(_encode(tokenizer, [r["response"] for r in self.train_rows]))
        scale = CoherenceScale.fit([f for f in feats if f is not None], floor, self.reference_percentile)
        if self.cache_path is not None:
            write_json(self.cache_path, {
                "fingerprint": key, "judge": self.id, "model_key": self.model_key, "scale": scale.to_dict(),
                "reference": [{"query_id": r["query_id"], "persona": r.get("persona"), **asdict(f)}
                              for r, f in zip(reference, feats) if f is not None],
                "seconds": round(time.perf_counter() - started, 2)})
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
    None decides by `available_claude_key()`. Extra keyword arguments go to the chosen judge. Claude's
    judgements are cached in `{artifacts_dir}/judgements/claude_cache.jsonl`.
    """
    if offline is None:
        offline = not available_claude_key()
    if offline:
        return OfflineJudge(model_key, artifacts_dir, **kwargs)
    from axes_lib.judge import ClaudeJudge

    kwargs.setdefault("cache_path", Path(artifacts_dir) / "judgements" / "claude_cache.jsonl")
    return ClaudeJudge(**kwargs)
