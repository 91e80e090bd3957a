"""The one score cache: a judge's valid scores by key, in memory and appended to a JSONL file.

Both the Claude judge (its own request cache) and `judge_rows` (the per-sweep store of notebook 07)
use it. The file is checked when the cache is built — before any paid request — so an unwritable
location fails at once with its path named. After that a failed write never loses a score: the score
stays in memory and is returned, the write is retried with the next batch, and a warning says how
many scores are not persisted. Only valid scores (both scales numbers in [0, 10]) are stored or read
back, so a failed judgement is tried again on the next run. Damaged lines (an interrupted append)
are skipped.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from axes_lib.io import append_jsonl, read_jsonl
from axes_lib.judge.base import InvalidReply, Score, parse_tool_input

__all__ = ["ScoreCache", "UnwritableCacheError", "check_writable"]


class UnwritableCacheError(OSError):
    """The cache file cannot be created or appended to (a missing permission, a file where a folder should be)."""


def check_writable(path: str | os.PathLike) -> Path:
    """Make sure `path` can be appended to: its folder exists (or is created) and takes a new file; else raise."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
        if path.exists():
            with open(path, "a", encoding="utf-8"):
                pass
    except OSError as exc:
        raise UnwritableCacheError(
            f"cannot write the judge cache {path} ({type(exc).__name__}: {exc}): pass a path in a writable folder, "
            "or turn the cache off"
        ) from exc
    return path


def _read_records(path: Path) -> list[Any]:
    """Records of a JSONL file; unreadable lines anywhere (not only a truncated last one) are skipped with a warning."""
    try:
        return read_jsonl(path)
    except ValueError:  # a damaged line in the middle (or bad UTF-8): keep every line that still parses
        pass
    records, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    bad += 1
    warnings.warn(f"{path}: skipped {bad} unreadable line(s) (e.g. an interrupted append)", RuntimeWarning, stacklevel=3)
    return records


class ScoreCache:
    """Valid scores of one judge (`judge_id`) by key; `path=None` keeps them in memory only."""

    def __init__(self, path: str | os.PathLike | None, judge_id: str) -> None:
        self.path = check_writable(path) if path is not None else None
        self.judge_id = judge_id
        self._records: dict[str, dict[str, Any]] = {}
        self._unsaved: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            for rec in _read_records(self.path):
                if self._valid(rec):
                    self._records[rec["key"]] = rec  # a later line for the same key wins

    def _valid(self, rec: Any) -> bool:
        if not isinstance(rec, dict) or rec.get("judge") != self.judge_id or not isinstance(rec.get("key"), str):
            return False
        if rec.get("error") is not None:
            return False
        try:
            parse_tool_input(rec)
        except InvalidReply:
            return False
        return True

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    @property
    def unsaved(self) -> int:
        """How many scores are held in memory only, because writing them to the file failed."""
        return len(self._unsaved)

    def get(self, key: str) -> Score | None:
        """The stored score under `key`, or None."""
        rec = self._records.get(key)
        if rec is None:
            return None
        return Score(float(rec["assistant_likeness"]), float(rec["coherence"]), self.judge_id, None, rec.get("rationale"))

    def put(self, scores: Mapping[str, Score], **extra: Any) -> None:
        """Keep the valid scores among `scores` (key -> Score) and append them, with `extra` fields, to the file.

        Failed scores are left out (the next run asks again), and a key already stored is not written twice.
        A write that fails keeps the scores in memory, warns, and is retried with the next `put`.
        """
        with self._lock:
            new = []
            for key, score in scores.items():
                if not score.ok or key in self._records:
                    continue
                rec = {"judge": self.judge_id, "key": key, "assistant_likeness": score.assistant_likeness,
                       "coherence": score.coherence, "error": None, "rationale": score.rationale, **extra}
                self._records[key] = rec
                new.append(rec)
            pending = self._unsaved + new
            if self.path is None or not pending:
                return
            try:
                append_jsonl(self.path, pending)
            except OSError as exc:
                self._unsaved = pending
                warnings.warn(
                    f"could not write to the judge cache {self.path} ({type(exc).__name__}: {exc}): {len(pending)} score(s) "
                    "are not persisted; they are kept in memory and returned, and a rerun would judge them again",
                    RuntimeWarning, stacklevel=2)
                return
            self._unsaved = []
