"""LLM judges: score steered answers for assistant-likeness and coherence (0-10 each).

`Judge` is the interface the notebooks use; `ClaudeJudge` implements it with the Anthropic Messages
API. The rubric is versioned data (`axes_lib/data/rubrics.json`); Claude answers through a forced
`record_scores` tool call, and each answer is validated (two finite numbers in [0, 10]) before it
counts. Successful judgements are appended to a JSONL cache as they arrive, so an interrupted sweep
loses nothing and a rerun sends no request for an item already judged. Failures (after bounded
retries with backoff) come back as a `Score` with `None` values and an `error` text, and are never
cached, so the next run tries them again. Large sweeps go through the Message Batches API.

The API key is read from the argument, `ANTHROPIC_API_KEY`, or a `.env` file, and is never written
to the cache, logs, `repr` or error texts.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from axes_lib.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "TOOL_NAME",
    "ClaudeJudge",
    "Item",
    "Judge",
    "MissingAPIKeyError",
    "Score",
    "available_claude_key",
    "load_rubric",
    "parse_message",
    "parse_tool_input",
    "score_tool",
]

#: Default judge model. Claude Sonnet 5 is the current Sonnet that still accepts forced tool use
#: (with `thinking` disabled); Sonnet 5.5 rejects forced tool use, and Sonnet 4.5 is being retired.
DEFAULT_MODEL = "claude-sonnet-5"
TOOL_NAME = "record_scores"
SCALES = ("assistant_likeness", "coherence")
ENV_VAR = "ANTHROPIC_API_KEY"

#: Model-id prefixes that reject forced tool use and `thinking: disabled` (Anthropic docs: "What's
#: new in Claude Sonnet 5.5", "Troubleshooting thinking"); for them the judge asks for the tool with
#: `tool_choice: auto` and leaves thinking at the model's default.
NO_FORCED_TOOL_PREFIXES = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable", "claude-mythos")

_RUBRIC_KEYS = ("version", "system", "assistant_likeness", "coherence", "template")
_RETRYABLE_STATUS = {408, 409, 429}
_MAX_RETRY_AFTER = 600.0
_MAX_ERROR_CHARS = 400
_BATCH_MAX_REQUESTS = 10_000

# Where `.env` files and the default cache are looked for: the repository that holds axes_lib.
# A module attribute (not a constant folded into functions) so tests can point it elsewhere.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Data types and the interface


@dataclass(frozen=True)
class Item:
    """One answer to judge: the user's query and the model's response; `meta` travels with it but is never sent."""

    query: str
    response: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    """A judgement: both scales in [0, 10], or `None` with `error` saying why no valid score was obtained."""

    assistant_likeness: float | None
    coherence: float | None
    judge: str
    error: str | None = None
    rationale: str | None = None

    @property
    def ok(self) -> bool:
        """True when both scales hold a valid number."""
        return self.error is None and self.assistant_likeness is not None and self.coherence is not None


@runtime_checkable
class Judge(Protocol):
    """Anything that scores items: `score` keeps input order; `id` names the judge, model and rubric."""

    id: str

    def score(self, items: Sequence[Item]) -> list[Score]:
        """Score each item; the i-th Score belongs to the i-th item."""
        ...

    def score_one(self, query: str, response: str) -> Score:
        """Score a single (query, response) pair."""
        ...


class MissingAPIKeyError(RuntimeError):
    """No Anthropic API key is configured (argument, environment or `.env`)."""


# --------------------------------------------------------------------------------------------------
# Rubric


def load_rubric(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Load the judge rubric (`axes_lib/data/rubrics.json` by default) and check it has every part."""
    if path is None:
        text = resources.files("axes_lib").joinpath("data", "rubrics.json").read_text(encoding="utf-8")
        where = "axes_lib/data/rubrics.json"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    rubric = json.loads(text)
    return _check_rubric(rubric, where)


def _check_rubric(rubric: Any, where: str = "rubric") -> dict[str, str]:
    if not isinstance(rubric, Mapping):
        raise ValueError(f"{where}: a rubric is a JSON object with keys {list(_RUBRIC_KEYS)}, got {type(rubric).__name__}")
    missing = [k for k in _RUBRIC_KEYS if not isinstance(rubric.get(k), str) or not rubric.get(k).strip()]
    if missing:
        raise ValueError(f"{where}: missing or empty rubric field(s) {missing}; a rubric needs {list(_RUBRIC_KEYS)}")
    placeholders = {"query", "response", "assistant_likeness", "coherence"}
    found = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(rubric["template"])}
    if not placeholders <= found:
        raise ValueError(
            f"{where}: template lacks placeholder(s) {sorted(placeholders - found)}; it must use $query, $response, "
            "$assistant_likeness and $coherence"
        )
    return {k: str(v) for k, v in rubric.items()}


def score_tool() -> dict[str, Any]:
    """The `record_scores` tool definition: two numbers in [0, 10] and a short rationale."""
    number = {"type": "number", "minimum": 0, "maximum": 10}
    return {
        "name": TOOL_NAME,
        "description": "Record the scores of the response being judged. Call exactly once.",
        "input_schema": {
            "type": "object",
            "properties": {
                "assistant_likeness": {**number, "description": "0-10: how much the response sounds like a helpful AI assistant."},
                "coherence": {**number, "description": "0-10: how well-formed and logical the response is."},
                "rationale": {"type": "string", "description": "One short sentence explaining the scores."},
            },
            "required": ["assistant_likeness", "coherence", "rationale"],
        },
    }


# --------------------------------------------------------------------------------------------------
# API key: argument, environment, .env (never logged)


class _Secret:
    """Holds the key so that repr/str/vars() of the judge never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


def _parse_dotenv_key(path: Path) -> str | None:
    """The `ANTHROPIC_API_KEY=...` value of a .env file (optional `export`, quotes, comments), or None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    value = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, rest = line.partition("=")
        if not sep or name.strip() != ENV_VAR:
            continue
        rest = rest.strip()
        if rest[:1] in {'"', "'"}:
            quote = rest[0]
            end = rest.find(quote, 1)
            rest = rest[1:end] if end > 0 else rest[1:]
        else:
            rest = rest.split(" #", 1)[0].strip()
        value = rest or None  # a later line wins, as in a shell
    return value


def _dotenv_candidates() -> list[Path]:
    """`.env` in the current folder, in the git root above it, and in the repository holding axes_lib."""
    cwd = Path.cwd()
    paths = [cwd / ".env"]
    for parent in cwd.parents:
        if (parent / ".git").exists():
            paths.append(parent / ".env")
            break
    paths.append(_PACKAGE_ROOT / ".env")
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def _resolve_api_key(api_key: str | None = None) -> str | None:
    """The key from the argument, else `ANTHROPIC_API_KEY`, else a `.env` file; None when none is set."""
    if api_key is not None:
        return api_key.strip() or None
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    for path in _dotenv_candidates():
        if path.is_file():
            value = _parse_dotenv_key(path)
            if value:
                return value
    return None


def available_claude_key() -> bool:
    """True when an Anthropic API key is configured (environment or `.env`); never reveals the key."""
    return _resolve_api_key(None) is not None


# --------------------------------------------------------------------------------------------------
# Small private file helpers for the judgement cache (which tolerates damaged lines anywhere)


def _read_jsonl_tolerant(path: Path) -> tuple[list[dict], int]:
    """Records of a JSONL file and the number of unreadable lines skipped (e.g. a truncated last line)."""
    records: list[dict] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad


def _ends_without_newline(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


# --------------------------------------------------------------------------------------------------
# Parsing Claude's answer


class _InvalidReply(ValueError):
    """The reply had no usable record_scores call."""


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key access, for SDK models and plain dicts alike."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise _InvalidReply(f"{name} is {type(value).__name__} {shown}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise _InvalidReply(f"{name} is {number}, not a finite number")
    if not 0.0 <= number <= 10.0:
        raise _InvalidReply(f"{name}={number:g} is outside 0-10")
    return number


def parse_tool_input(data: Any) -> tuple[float, float, str | None]:
    """Validate a record_scores input: both scales numeric, finite and in [0, 10]; rationale optional."""
    if not isinstance(data, Mapping):
        raise _InvalidReply(f"tool input is {type(data).__name__}, not an object")
    missing = [k for k in SCALES if k not in data]
    if missing:
        raise _InvalidReply(f"tool input lacks {missing}")
    al = _check_number("assistant_likeness", data["assistant_likeness"])
    co = _check_number("coherence", data["coherence"])
    rationale = data.get("rationale")
    rationale = rationale.strip()[:500] if isinstance(rationale, str) else None
    return al, co, rationale


def parse_message(message: Any) -> tuple[float, float, str | None]:
    """Scores from a Messages API reply (SDK object or dict): the first record_scores tool call, validated."""
    content = _get(message, "content") or []
    for block in content:
        if _get(block, "type") == "tool_use" and _get(block, "name") == TOOL_NAME:
            return parse_tool_input(_get(block, "input"))
    kinds = [str(_get(b, "type")) for b in content]
    raise _InvalidReply(f"no {TOOL_NAME} tool call in the reply (content blocks {kinds}, stop_reason={_get(message, 'stop_reason')!r})")


# --------------------------------------------------------------------------------------------------
# The Claude judge


class _CallFailed(Exception):
    """An API call that failed for good in this run; the text is redacted.

    `retry_later`: the cause may go away (retries ran out on a retryable error, or the key was refused),
    as opposed to a permanent answer such as a 404 for an expired batch.
    """

    def __init__(self, message: str, retry_later: bool = False) -> None:
        super().__init__(message)
        self.retry_later = retry_later


class ClaudeJudge:
    """Claude as judge: forced tool-use scoring, bounded retries and concurrency, JSONL cache, Batches API.

    `score(items)` returns one `Score` per item in input order. Items already in the cache send no
    request; the rest go out through a thread pool of `max_concurrency` workers, or, when there are at
    least `batch_threshold` of them (or `use_batches=True`), as Message Batches polled until they end.

    Keyword-only extras: `base_url` / `http_client` (passed to `anthropic.Anthropic`), `rubric` (a dict
    like `load_rubric()`), `max_tokens`, `force_tool` (None: forced `tool_choice` unless the model is
    known to reject it), `cache=False` (no cache file), `backoff_base` / `backoff_max` (seconds of the
    exponential backoff; a `retry-after` header wins), `poll_interval` / `batch_timeout` (batch polling;
    a batch still running at the timeout is kept and resumed by the next run), `progress` (tqdm bar).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_path: str | os.PathLike | None = None,
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        client: Any = None,
        api_key: str | None = None,
        use_batches: bool | None = None,
        batch_threshold: int = 200,
        *,
        base_url: str | None = None,
        http_client: Any = None,
        rubric: Mapping[str, str] | None = None,
        max_tokens: int | None = None,
        force_tool: bool | None = None,
        cache: bool = True,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        poll_interval: float = 30.0,
        batch_timeout: float = 26 * 3600.0,
        progress: bool = True,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty Claude model id such as {DEFAULT_MODEL!r}, got {model!r}")
        _require(isinstance(max_concurrency, int) and max_concurrency >= 1, f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        _require(isinstance(max_retries, int) and max_retries >= 0, f"max_retries must be an int >= 0, got {max_retries!r}")
        _require(isinstance(batch_threshold, int) and batch_threshold >= 1, f"batch_threshold must be an int >= 1, got {batch_threshold!r}")
        for name, value in (("timeout", timeout), ("backoff_max", backoff_max), ("poll_interval", poll_interval), ("batch_timeout", batch_timeout)):
            _require(isinstance(value, (int, float)) and value > 0, f"{name} must be a positive number of seconds, got {value!r}")
        _require(isinstance(backoff_base, (int, float)) and backoff_base >= 0, f"backoff_base must be >= 0 seconds, got {backoff_base!r}")
        _require(max_tokens is None or (isinstance(max_tokens, int) and max_tokens >= 64), f"max_tokens must be an int >= 64, got {max_tokens!r}")

        self.model = model
        self.rubric = load_rubric() if rubric is None else _check_rubric(rubric)
        self.rubric_version = self.rubric["version"]
        self._rubric_sha = hashlib.sha256(json.dumps(self.rubric, sort_keys=True).encode()).hexdigest()[:12]
        self.id = f"claude:{model}:rubric-{self.rubric_version}"
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.use_batches = use_batches
        self.batch_threshold = batch_threshold
        self.force_tool = (not model.startswith(NO_FORCED_TOOL_PREFIXES)) if force_tool is None else bool(force_tool)
        self.max_tokens = max_tokens or (512 if self.force_tool else 4096)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.poll_interval = float(poll_interval)
        self.batch_timeout = float(batch_timeout)
        self.progress = progress
        self.cache_path: Path | None = None
        if cache:
            self.cache_path = Path(cache_path) if cache_path is not None else _default_cache_path()

        self._sleep: Callable[[float], None] = time.sleep  # tests may swap in a recorder
        self._lock = threading.Lock()
        self._pause_until = 0.0  # shared back-off after a 429 with retry-after
        self._fatal: str | None = None  # set on 401/403: stop sending requests
        self._cache: dict[str, dict] = {}
        self._cache_needs_newline = False

        # The key is resolved (and a missing one reported) before any other work.
        if client is None:
            key = _resolve_api_key(api_key)
            if key is None:
                where = ", ".join(str(p) for p in _dotenv_candidates())
                raise MissingAPIKeyError(
                    f"no Anthropic API key for ClaudeJudge: pass api_key=..., set the {ENV_VAR} environment variable, "
                    f"or put a line {ENV_VAR}=... in a .env file (looked in: {where})"
                )
            self._secret: _Secret | None = _Secret(key)
            import anthropic

            client = anthropic.Anthropic(
                api_key=key, base_url=base_url, http_client=http_client, max_retries=0, timeout=self.timeout
            )
        else:
            known = api_key or getattr(client, "api_key", None)  # still redact it from error texts
            self._secret = _Secret(known) if isinstance(known, str) and known else None
            with_options = getattr(client, "with_options", None)
            if callable(with_options):  # our own retry loop is the only one
                client = with_options(max_retries=0, timeout=self.timeout)
        self._client = client
        self._load_cache()

    # ---- public API ------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"ClaudeJudge(id={self.id!r}, model={self.model!r}, cache_path={str(self.cache_path) if self.cache_path else None!r}, "
            f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries}, use_batches={self.use_batches!r}, "
            f"batch_threshold={self.batch_threshold})"
        )

    def score_one(self, query: str, response: str) -> Score:
        """Score a single (query, response) pair."""
        return self.score([Item(query, response)])[0]

    def score(self, items: Sequence[Item] | Iterable[Item]) -> list[Score]:
        """Score items (cached ones without a request); the i-th Score belongs to the i-th item."""
        items = [coerce_item(it, i) for i, it in enumerate(items)]
        keys = [self.cache_key(it) for it in items]
        results: dict[str, Score] = {}
        todo: dict[str, Item] = {}
        for key, item in zip(keys, items):
            if key in results or key in todo:
                continue
            cached = self._cache.get(key)
            if cached is not None:
                results[key] = self._score_from_record(cached)
            else:
                todo[key] = item
        if todo:
            log.info("%s: %d item(s), %d cached, %d to judge", self.id, len(items), len(items) - len(todo), len(todo))
            results.update(self._resume_pending(set(todo)))
            todo = {k: v for k, v in todo.items() if k not in results}
        if todo:
            batched = self.use_batches if self.use_batches is not None else len(todo) >= self.batch_threshold
            pending = list(todo.items())
            results.update(self._score_batches(pending) if batched else self._score_threads(pending))
        return [results[k] for k in keys]

    def cache_key(self, item: Item) -> str:
        """sha256 over rubric version and content, judge id, model, query and response."""
        payload = json.dumps(
            [self.rubric_version, self._rubric_sha, self.id, self.model, item.query, item.response], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def request_params(self, item: Item) -> dict[str, Any]:
        """The Messages API parameters for one item (what is sent, minus the key): rubric, query, response."""
        prompt = string.Template(self.rubric["template"]).substitute(
            query=item.query,
            response=item.response,
            assistant_likeness=self.rubric["assistant_likeness"],
            coherence=self.rubric["coherence"],
        )
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": self.rubric["system"],
            "messages": [{"role": "user", "content": prompt}],
            "tools": [score_tool()],
        }
        if self.force_tool:
            params["tool_choice"] = {"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True}
            params["thinking"] = {"type": "disabled"}  # forced tool use is incompatible with thinking
        else:
            params["tool_choice"] = {"type": "auto"}
        return params

    def close(self) -> None:
        """Close the HTTP client."""
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> ClaudeJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- redaction and errors --------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        secret = self._secret.get() if self._secret is not None else None
        if secret:
            text = text.replace(secret, "<redacted>")
        return text

    def _error_text(self, exc: BaseException) -> str:
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            detail = getattr(exc, "api_message", None) or str(exc)
            text = f"{type(exc).__name__} (HTTP {exc.status_code}): {detail}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = self._redact(text)
        return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."

    def _fail(self, error: str) -> Score:
        return Score(None, None, self.id, error=self._redact(error))

    # ---- retries ---------------------------------------------------------------------------------

    def _retry_delay(self, attempt: int, exc: BaseException) -> float:
        """Server's retry-after when given, else exponential backoff with jitter."""
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            retry_after = _parse_retry_after(headers)
            if retry_after is not None and 0 <= retry_after <= _MAX_RETRY_AFTER:
                return retry_after
        backoff = min(self.backoff_max, self.backoff_base * (2**attempt))
        return backoff * random.uniform(0.5, 1.0)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """Run one API call with our retry policy; raise `_CallFailed` (redacted text) when it fails for good."""
        import anthropic

        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if self._fatal is not None:
                raise _CallFailed(self._fatal, retry_later=True)
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            try:
                return fn()
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                should = exc.response.headers.get("x-should-retry") if exc.response is not None else None
                retryable = should == "true" or (should != "false" and (status in _RETRYABLE_STATUS or status >= 500))
                if status in (401, 403):
                    with self._lock:
                        self._fatal = f"{self._error_text(exc)} (stopped sending requests: check the API key and its permissions)"
                    raise _CallFailed(self._fatal, retry_later=True) from None
                error = exc
            except anthropic.APIConnectionError as exc:  # includes APITimeoutError
                retryable, error = True, exc
            except anthropic.AnthropicError as exc:  # e.g. an ended batch without results_url
                retryable, error = False, exc
            if not retryable:
                raise _CallFailed(f"{what}: {self._error_text(error)}") from None
            if attempt == attempts - 1:
                msg = f"{what}: gave up after {attempts} attempt(s): {self._error_text(error)}"
                raise _CallFailed(msg, retry_later=True) from None
            delay = self._retry_delay(attempt, error)
            if getattr(error, "status_code", None) == 429:
                with self._lock:  # let every worker back off, not just this one
                    self._pause_until = max(self._pause_until, time.monotonic() + delay)
            log.info("%s: %s failed (%s); retry %d/%d in %.2fs", self.id, what, self._error_text(error), attempt + 1, self.max_retries, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    # ---- one request per item, bounded concurrency -------------------------------------------------

    def _score_single(self, key: str, item: Item) -> Score:
        try:
            message = self._call(lambda: self._client.messages.create(**self.request_params(item)), "messages.create")
        except _CallFailed as exc:
            return self._fail(str(exc))
        except Exception as exc:  # never let one item crash a sweep
            log.warning("%s: unexpected error while judging: %s", self.id, self._error_text(exc))
            return self._fail(self._error_text(exc))
        return self._score_from_message(key, message)

    def _score_threads(self, todo: list[tuple[str, Item]]) -> dict[str, Score]:
        out: dict[str, Score] = {}
        bar = _progress(len(todo), f"judging ({self.model})", self.progress)
        executor = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo)), thread_name_prefix="claude-judge")
        try:
            futures = {executor.submit(self._score_single, key, item): key for key, item in todo}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        executor.shutdown(wait=True)
        return out

    def _score_from_message(self, key: str, message: Any) -> Score:
        try:
            al, co, rationale = parse_message(message)
        except _InvalidReply as exc:
            log.info("%s: invalid reply: %s", self.id, exc)
            return self._fail(f"invalid judge reply: {exc}")
        self._store(key, al, co, rationale)
        return Score(al, co, self.id, None, rationale)

    # ---- Message Batches ---------------------------------------------------------------------------

    def _pending_path(self) -> Path | None:
        return self.cache_path.with_name(self.cache_path.stem + ".batches.json") if self.cache_path else None

    def _read_pending(self) -> list[dict]:
        path = self._pending_path()
        if path is None or not path.is_file():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.warning("%s: ignoring an unreadable pending-batches file %s", self.id, path)
            return []
        return [b for b in data.get("batches", []) if isinstance(b, dict) and "id" in b]

    def _write_pending(self, batches: list[dict]) -> None:
        path = self._pending_path()
        if path is None:
            return
        if batches:
            atomic_write_text(path, json.dumps({"batches": batches}, indent=1) + "\n")
        else:
            path.unlink(missing_ok=True)

    def _pending_add(self, batch_id: str, keys: list[str]) -> None:
        with self._lock:
            batches = self._read_pending()
            created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            batches.append({"id": batch_id, "judge": self.id, "created": created, "keys": keys})
            self._write_pending(batches)

    def _pending_remove(self, batch_id: str) -> None:
        with self._lock:
            self._write_pending([b for b in self._read_pending() if b["id"] != batch_id])

    def _resume_pending(self, wanted: set[str]) -> dict[str, Score]:
        """Finish batches an earlier, interrupted run of this judge left behind, instead of paying twice."""
        out: dict[str, Score] = {}
        for batch in self._read_pending():
            if batch.get("judge") != self.id:
                continue
            keys = [k for k in batch.get("keys", []) if isinstance(k, str)]
            if not wanted & set(keys):
                continue
            log.info("%s: resuming Message Batch %s left by an earlier run", self.id, batch["id"])
            scores = self._finish_batch(batch["id"], keys)
            still_pending = any(b["id"] == batch["id"] for b in self._read_pending())
            # Items of a batch that is done (or dropped) but have no valid score are judged afresh now;
            # those of a batch still running keep their error, so they are not paid for twice.
            out.update({k: s for k, s in scores.items() if k in wanted and (s.ok or still_pending)})
        return out

    def _score_batches(self, todo: list[tuple[str, Item]]) -> dict[str, Score]:
        out: dict[str, Score] = {}
        for start in range(0, len(todo), _BATCH_MAX_REQUESTS):
            chunk = todo[start : start + _BATCH_MAX_REQUESTS]
            # The cache key (64 hex chars) is a valid custom_id: results map straight back to cache records.
            requests = [{"custom_id": key, "params": self.request_params(item)} for key, item in chunk]
            keys = [key for key, _ in chunk]
            try:
                batch = self._call(lambda: self._client.messages.batches.create(requests=requests), "messages.batches.create")
            except _CallFailed as exc:
                out.update({k: self._fail(str(exc)) for k in keys})
                continue
            log.info("%s: created Message Batch %s with %d request(s)", self.id, batch.id, len(requests))
            self._pending_add(batch.id, keys)
            out.update(self._finish_batch(batch.id, keys))
        return out

    def _finish_batch(self, batch_id: str, keys: list[str]) -> dict[str, Score]:
        """Poll a batch until it ends, then read and cache its results; unfinished → error Scores, batch kept pending."""
        deadline = time.monotonic() + self.batch_timeout
        try:
            while True:
                batch = self._call(lambda: self._client.messages.batches.retrieve(batch_id), "messages.batches.retrieve")
                status = _get(batch, "processing_status")
                if status == "ended":
                    break
                counts = _get(batch, "request_counts")
                log.info("%s: batch %s is %s (processing=%s)", self.id, batch_id, status, _get(counts, "processing"))
                if time.monotonic() + self.poll_interval > deadline:
                    msg = f"Message Batch {batch_id} still {status} after {self.batch_timeout:g}s; run again to resume it"
                    return {k: self._fail(msg) for k in keys}
                self._sleep(self.poll_interval)
        except _CallFailed as exc:
            return {k: self._fail(self._batch_failed(batch_id, exc)) for k in keys}

        out: dict[str, Score] = {}

        def read_results() -> None:
            for entry in self._client.messages.batches.results(batch_id):
                key = _get(entry, "custom_id")
                result = _get(entry, "result")
                kind = _get(result, "type")
                if kind == "succeeded":
                    out[key] = self._score_from_message(key, _get(result, "message"))
                elif kind == "errored":
                    err = _get(_get(result, "error"), "error")
                    out[key] = self._fail(f"batch request errored: {_get(err, 'type')}: {_get(err, 'message')}")
                else:
                    out[key] = self._fail(f"batch request {kind}")

        try:
            self._call(read_results, "messages.batches.results")
        except _CallFailed as exc:
            msg = self._batch_failed(batch_id, exc)
            return {**{k: self._fail(msg) for k in keys}, **{k: s for k, s in out.items() if s.ok}}
        self._pending_remove(batch_id)
        for key in keys:
            if key not in out:
                out[key] = self._fail(f"no result for this item in Message Batch {batch_id}")
        return out

    def _batch_failed(self, batch_id: str, exc: _CallFailed) -> str:
        """Keep a batch for the next run after a passing failure; forget it after a permanent one (e.g. 404)."""
        if exc.retry_later:
            return f"{exc} (Message Batch {batch_id} kept for resuming on the next run)"
        self._pending_remove(batch_id)
        return f"{exc} (Message Batch {batch_id} dropped; the next run submits these items again)"

    # ---- cache -----------------------------------------------------------------------------------

    def _load_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.is_file():
            return
        records, bad = _read_jsonl_tolerant(self.cache_path)
        for rec in records:
            if rec.get("judge") != self.id or not isinstance(rec.get("key"), str):
                continue
            try:
                parse_tool_input(rec)
            except _InvalidReply:
                continue
            self._cache[rec["key"]] = rec
        if bad:
            log.warning("%s: skipped %d unreadable line(s) in %s (e.g. a truncated last line)", self.id, bad, self.cache_path)
        self._cache_needs_newline = _ends_without_newline(self.cache_path)
        log.debug("%s: %d cached judgement(s) loaded from %s", self.id, len(self._cache), self.cache_path)

    def _store(self, key: str, al: float, co: float, rationale: str | None) -> None:
        record = {
            "key": key,
            "judge": self.id,
            "model": self.model,
            "rubric_version": self.rubric_version,
            "rubric_sha": self._rubric_sha,
            "assistant_likeness": al,
            "coherence": co,
            "rationale": rationale,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with self._lock:
            known = key in self._cache  # e.g. a resumed batch read twice: one line per key is enough
            self._cache[key] = record
            if self.cache_path is None or known:
                return
            line = json.dumps(record, ensure_ascii=False) + "\n"
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as fh:
                if self._cache_needs_newline:  # a truncated last line must not swallow this record
                    fh.write("\n")
                    self._cache_needs_newline = False
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def _score_from_record(self, rec: Mapping[str, Any]) -> Score:
        return Score(float(rec["assistant_likeness"]), float(rec["coherence"]), self.id, None, rec.get("rationale"))


# --------------------------------------------------------------------------------------------------
# helpers


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def coerce_item(obj: Any, index: int) -> Item:
    """Accept Item, a (query, response) pair or a mapping with query/response (and optional meta)."""
    if isinstance(obj, Item):
        item = obj
    elif isinstance(obj, Mapping) and "query" in obj and "response" in obj:
        item = Item(obj["query"], obj["response"], dict(obj.get("meta") or {}))
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        item = Item(obj[0], obj[1])
    else:
        raise TypeError(f"item {index} is a {type(obj).__name__}: pass Item(query, response), a (query, response) pair or a dict with those keys")
    if not isinstance(item.query, str) or not isinstance(item.response, str):
        raise TypeError(
            f"item {index}: query and response must be str, got {type(item.query).__name__} and {type(item.response).__name__}"
        )
    return item


def _parse_retry_after(headers: Any) -> float | None:
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


def _default_cache_path() -> Path:
    """`artifacts/judgements/claude_cache.jsonl` in the repository holding axes_lib (else the current folder)."""
    root = _PACKAGE_ROOT if any((_PACKAGE_ROOT / m).exists() for m in (".git", "_toc.yml", "requirements.txt")) else Path.cwd()
    return root / "artifacts" / "judgements" / "claude_cache.jsonl"


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total < 2:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a requirement, but the judge works without it
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="item")
