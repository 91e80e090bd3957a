"""Assistant-likeness for the offline judge: P(assistant | text) from the text's own words and characters.

TF-IDF over word 1–2-grams and character 2–5-grams, and a multinomial logistic regression over the
personas (the two kinds weighted equally); its decision value is the log-odds of "one of the
assistant personas", `logit Σ P(persona | text)` over those personas. Learning each persona's voice
separately beat a binary assistant/non-assistant fit in cross-validation over the train queries. The
decision value is calibrated by Platt scaling on out-of-fold predictions (folds grouped by query,
classes weighted equally), and the score is `10 · P(assistant | text)`: 5 means either side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AssistantClassifier"]


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
