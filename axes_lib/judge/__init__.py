"""LLM judges: score answers for assistant-likeness and coherence (0-10 each), and judge whole sweeps.

Where things live (open the module named to change or add something):

- `base`: `Item`, `Score`, the `Judge` protocol every judge implements, the rubric and the score tool.
  A new judge is a class with an `id` and `score(items) -> list[Score]` (plus `score_one`); put it in a
  module of its own beside `claude` and `offline`, and list its name here.
- `claude`: `ClaudeJudge` and its `ClaudeConfig` (with `retry`, `batches` and `secrets` for the API key).
- `offline`: `OfflineJudge` (features from `classifier`, `reading`, `repetition`, `topic`; `maps` fitted on
  the `gold` set; `breakers` for synthetic failures) and `default_judge`.
- `cache`: the one `ScoreCache` both the Claude judge and `judge_rows` store scores in.
- `evaluation`: `judge_rows`, summaries, the sweet spot and judge agreement, for notebook 07.

Names are imported on first use, so `from axes_lib.judge import ClaudeJudge` does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "Item": "base", "Score": "base", "Judge": "base", "coerce_item": "base", "load_rubric": "base", "score_tool": "base",
    "parse_message": "base", "parse_tool_input": "base",
    "MissingAPIKeyError": "secrets", "available_claude_key": "secrets",
    "DEFAULT_MODEL": "claude", "ClaudeConfig": "claude", "ClaudeJudge": "claude",
    "ScoreCache": "cache", "UnwritableCacheError": "cache",
    "VERSION": "offline", "OfflineJudge": "offline", "default_judge": "offline",
    "AssistantClassifier": "classifier", "AnswerFeatures": "offline", "FEATURES": "offline",
    "COHERENCE_CAPS": "offline", "CapMap": "maps", "LinearMap": "maps", "topicality": "topic",
    "gold_validation": "offline", "GoldSet": "gold", "Reading": "reading", "read_answers": "reading",
    "loop_coverage": "repetition",
    "BROKEN_KINDS": "breakers", "break_text": "breakers",
    "agreement": "evaluation", "judge_rows": "evaluation", "means": "evaluation", "scores_of": "evaluation",
    "summarise": "evaluation", "query_halves": "evaluation", "query_mean": "evaluation", "sweet_spot": "evaluation", "text_key": "evaluation", "unique_texts": "evaluation",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'axes_lib.judge' has no attribute {name!r}")
    value = getattr(import_module(f"axes_lib.judge.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
