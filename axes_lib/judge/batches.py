"""Message Batches for the Claude judge: submit, poll, read results, and resume batches an earlier run left.

Each batch in flight is recorded in a small JSON file beside the judge's cache
(`{cache}.batches.json`), so an interrupted run's next start finishes that batch instead of paying
for the same items twice. A batch still running at the timeout stays recorded; one the API no longer
knows (a permanent error such as 404) is dropped and its items are submitted again.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from axes_lib.io import atomic_write_text
from axes_lib.judge.base import Item, Score, get_field
from axes_lib.judge.retry import CallFailed

if TYPE_CHECKING:
    from axes_lib.judge.claude import ClaudeJudge

__all__ = ["BATCH_MAX_REQUESTS", "Batches"]

log = logging.getLogger(__name__)

BATCH_MAX_REQUESTS = 10_000


class Batches:
    """The Message Batches path of one `ClaudeJudge`, with its record of pending batches."""

    def __init__(self, judge: ClaudeJudge) -> None:
        self.judge = judge
        cache_path = judge.cache.path
        self.pending_path: Path | None = cache_path.with_name(cache_path.stem + ".batches.json") if cache_path else None

    # ---- the record of pending batches --------------------------------------------------------------

    def _read_pending(self) -> list[dict]:
        path = self.pending_path
        if path is None or not path.is_file():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.warning("%s: ignoring an unreadable pending-batches file %s", self.judge.id, path)
            return []
        return [b for b in data.get("batches", []) if isinstance(b, dict) and "id" in b]

    def _write_pending(self, batches: list[dict]) -> None:
        path = self.pending_path
        if path is None:
            return
        if batches:
            atomic_write_text(path, json.dumps({"batches": batches}, indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)

    def _pending_add(self, batch_id: str, keys: list[str]) -> None:
        with self.judge.lock:
            batches = self._read_pending()
            created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            batches.append({"id": batch_id, "judge": self.judge.id, "created": created, "keys": keys})
            self._write_pending(batches)

    def _pending_remove(self, batch_id: str) -> None:
        with self.judge.lock:
            self._write_pending([b for b in self._read_pending() if b["id"] != batch_id])

    # ---- scoring ------------------------------------------------------------------------------------

    def resume(self, wanted: set[str]) -> dict[str, Score]:
        """Finish batches an earlier, interrupted run of this judge left behind, instead of paying twice."""
        out: dict[str, Score] = {}
        for batch in self._read_pending():
            if batch.get("judge") != self.judge.id:
                continue
            keys = [k for k in batch.get("keys", []) if isinstance(k, str)]
            if not wanted & set(keys):
                continue
            log.info("%s: resuming Message Batch %s left by an earlier run", self.judge.id, batch["id"])
            scores = self._finish(batch["id"], keys)
            still_pending = any(b["id"] == batch["id"] for b in self._read_pending())
            # Items of a batch that is done (or dropped) but have no valid score are judged afresh now;
            # those of a batch still running keep their error, so they are not paid for twice.
            out.update({k: s for k, s in scores.items() if k in wanted and (s.ok or still_pending)})
        return out

    def score(self, todo: list[tuple[str, Item]]) -> dict[str, Score]:
        """Submit `(cache key, item)` pairs as Message Batches (10,000 requests at most each) and wait for them."""
        judge = self.judge
        out: dict[str, Score] = {}
        for start in range(0, len(todo), BATCH_MAX_REQUESTS):
            chunk = todo[start : start + BATCH_MAX_REQUESTS]
            # The cache key (64 hex chars) is a valid custom_id: results map straight back to cache records.
            requests = [{"custom_id": key, "params": judge.request_params(item)} for key, item in chunk]
            keys = [key for key, _ in chunk]
            try:
                batch = judge.retry.call(lambda r=requests: judge.client.messages.batches.create(requests=r),
                                         "messages.batches.create")
            except CallFailed as exc:
                out.update({k: judge.fail(str(exc)) for k in keys})
                continue
            log.info("%s: created Message Batch %s with %d request(s)", judge.id, batch.id, len(requests))
            self._pending_add(batch.id, keys)
            out.update(self._finish(batch.id, keys))
        return out

    def _finish(self, batch_id: str, keys: list[str]) -> dict[str, Score]:
        """Poll a batch until it ends, then read and cache its results; unfinished → error Scores, batch kept pending."""
        judge, config = self.judge, self.judge.config
        deadline = time.monotonic() + config.batch_timeout
        try:
            while True:
                batch = judge.retry.call(lambda: judge.client.messages.batches.retrieve(batch_id), "messages.batches.retrieve")
                status = get_field(batch, "processing_status")
                if status == "ended":
                    break
                counts = get_field(batch, "request_counts")
                log.info("%s: batch %s is %s (processing=%s)", judge.id, batch_id, status, get_field(counts, "processing"))
                if time.monotonic() + config.poll_interval > deadline:
                    msg = f"Message Batch {batch_id} still {status} after {config.batch_timeout:g}s; run again to resume it"
                    return {k: judge.fail(msg) for k in keys}
                judge.retry.sleep(config.poll_interval)
        except CallFailed as exc:
            return {k: judge.fail(self._failed(batch_id, exc)) for k in keys}

        out: dict[str, Score] = {}

        def read_results() -> None:
            for entry in judge.client.messages.batches.results(batch_id):
                key = get_field(entry, "custom_id")
                result = get_field(entry, "result")
                kind = get_field(result, "type")
                if kind == "succeeded":
                    out[key] = judge.score_message(key, get_field(result, "message"))
                elif kind == "errored":
                    err = get_field(get_field(result, "error"), "error")
                    out[key] = judge.fail(f"batch request errored: {get_field(err, 'type')}: {get_field(err, 'message')}")
                else:
                    out[key] = judge.fail(f"batch request {kind}")

        try:
            judge.retry.call(read_results, "messages.batches.results")
        except CallFailed as exc:
            msg = self._failed(batch_id, exc)
            return {**{k: judge.fail(msg) for k in keys}, **{k: s for k, s in out.items() if s.ok}}
        self._pending_remove(batch_id)
        for key in keys:
            if key not in out:
                out[key] = judge.fail(f"no result for this item in Message Batch {batch_id}")
        return out

    def _failed(self, batch_id: str, exc: CallFailed) -> str:
        """Keep a batch for the next run after a passing failure; forget it after a permanent one (e.g. 404)."""
        if exc.retry_later:
            return f"{exc} (Message Batch {batch_id} kept for resuming on the next run)"
        self._pending_remove(batch_id)
        return f"{exc} (Message Batch {batch_id} dropped; the next run submits these items again)"
