"""The Claude judge's retry policy: bounded retries with backoff, `retry-after`, a shared 429 pause, redacted errors.

The SDK's own retries are switched off so that this loop is the only one: retryable failures (408,
409, 429, 5xx, connection errors and timeouts, or whatever the server marks with `x-should-retry`)
are retried up to `retries` times; a 401/403 stops every further request of the judge; any text that
leaves here has the API key removed.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from axes_lib.judge.secrets import Secret

__all__ = ["CallFailed", "RetryPolicy", "parse_retry_after"]

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER = 600.0
_MAX_ERROR_CHARS = 400

T = TypeVar("T")


class CallFailed(Exception):
    """An API call that failed for good in this run; the text is redacted.

    `retry_later`: the cause may go away (retries ran out on a retryable error, or the key was refused),
    as opposed to a permanent answer such as a 404 for an expired batch.
    """

    def __init__(self, message: str, retry_later: bool = False) -> None:
        super().__init__(message)
        self.retry_later = retry_later


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


class RetryPolicy:
    """Runs API calls for one judge (`name`), sharing its back-off and its stop after a refused key across threads."""

    def __init__(self, name: str, secret: Secret, retries: int, backoff_base: float, backoff_max: float) -> None:
        self.name = name
        self.secret = secret
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sleep: Callable[[float], None] = time.sleep  # tests may swap in a recorder
        self._lock = threading.Lock()
        self._pause_until = 0.0  # shared back-off after a 429 with retry-after
        self._fatal: str | None = None  # set on 401/403: stop sending requests

    def error_text(self, exc: BaseException) -> str:
        """A short, redacted description of an exception (HTTP status and the API's message when there is one)."""
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            detail = getattr(exc, "api_message", None) or str(exc)
            text = f"{type(exc).__name__} (HTTP {exc.status_code}): {detail}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = self.secret.redact(text)
        return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Server's retry-after when given, else exponential backoff with jitter."""
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            retry_after = parse_retry_after(headers)
            if retry_after is not None and 0 <= retry_after <= _MAX_RETRY_AFTER:
                return retry_after
        backoff = min(self.backoff_max, self.backoff_base * (2**attempt))
        return backoff * random.uniform(0.5, 1.0)

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run one API call with the retry policy; raise `CallFailed` (redacted text) when it fails for good."""
        import anthropic

        attempts = self.retries + 1
        for attempt in range(attempts):
            if self._fatal is not None:
                raise CallFailed(self._fatal, retry_later=True)
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            try:
                return fn()
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                should = exc.response.headers.get("x-should-retry") if exc.response is not None else None
                retryable = should == "true" or (should != "false" and (status in _RETRYABLE_STATUS or status >= 500))
                if status in (401, 403):
                    with self._lock:
                        self._fatal = f"{self.error_text(exc)} (stopped sending requests: check the API key and its permissions)"
                    raise CallFailed(self._fatal, retry_later=True) from None
                error = exc
            except anthropic.APIConnectionError as exc:  # includes APITimeoutError
                retryable, error = True, exc
            except anthropic.AnthropicError as exc:  # e.g. an ended batch without results_url
                retryable, error = False, exc
            if not retryable:
                raise CallFailed(f"{what}: {self.error_text(error)}") from None
            if attempt == attempts - 1:
                raise CallFailed(f"{what}: gave up after {attempts} attempt(s): {self.error_text(error)}", retry_later=True) from None
            delay = self.delay(attempt, error)
            if getattr(error, "status_code", None) == 429:
                with self._lock:  # let every worker back off, not just this one
                    self._pause_until = max(self._pause_until, time.monotonic() + delay)
            log.info("%s: %s failed (%s); retry %d/%d in %.2fs", self.name, what, self.error_text(error), attempt + 1, self.retries, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")
