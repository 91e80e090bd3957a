"""Claude as judge: the Anthropic Messages API with a forced `record_scores` tool call.

Settings live in one `ClaudeConfig`; the key comes from the argument, `ANTHROPIC_API_KEY` or a `.env`
file (`axes_lib.judge.secrets`) and is never written to the cache, logs, `repr` or error texts. Valid
judgements go to a `ScoreCache` as they arrive, so an interrupted sweep loses nothing and a rerun sends
no request for an item already judged; failures (after the bounded retries of
`axes_lib.judge.retry`) come back as a `Score` with `None` values and an `error` text and are never
cached. Large sweeps go through the Message Batches API (`axes_lib.judge.batches`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import string
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axes_lib.judge import secrets
from axes_lib.judge.base import (
    TOOL_NAME,
    InvalidReply,
    Item,
    Score,
    check_rubric,
    coerce_item,
    load_rubric,
    parse_message,
    score_tool,
)
from axes_lib.judge.batches import Batches
from axes_lib.judge.cache import ScoreCache
from axes_lib.judge.retry import CallFailed, RetryPolicy

__all__ = ["DEFAULT_MODEL", "NO_FORCED_TOOL_PREFIXES", "ClaudeConfig", "ClaudeJudge"]

log = logging.getLogger(__name__)

#: Default judge model. Claude Sonnet 5 is the current Sonnet that still accepts forced tool use
#: (with `thinking` disabled); Sonnet 5.5 rejects forced tool use, and Sonnet 4.5 is being retired.
DEFAULT_MODEL = "claude-sonnet-5"

#: Model-id prefixes that reject forced tool use and `thinking: disabled` (Anthropic docs: "What's
#: new in Claude Sonnet 5.5", "Troubleshooting thinking"); for them the judge asks for the tool with
#: `tool_choice: auto` and leaves thinking at the model's default.
NO_FORCED_TOOL_PREFIXES = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable", "claude-mythos")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ClaudeConfig:
    """Every setting of a `ClaudeJudge`, checked when it is made.

    `concurrency` requests at a time, each retried up to `retries` times (`backoff_base` / `backoff_max`
    seconds of exponential backoff; a `retry-after` header wins) with a `timeout` in seconds. Batches:
    `use_batches=None` sends `batch_threshold` or more items as Message Batches, polled every
    `poll_interval` seconds for at most `batch_timeout` (a batch still running then is resumed by the
    next run). `cache_path=None` means `artifacts/judgements/claude_cache.jsonl` in the repository;
    `cache=False` keeps judgements in memory only. `rubric` is a dict like `load_rubric()` (default
    that); `max_tokens=None` is 512 with a forced tool call, else 4096; `force_tool=None` forces the
    tool call unless the model is known to reject it. `base_url` goes to `anthropic.Anthropic`.
    """

    model: str = DEFAULT_MODEL
    concurrency: int = 4
    retries: int = 5
    timeout: float = 60.0
    use_batches: bool | None = None
    batch_threshold: int = 200
    cache_path: str | os.PathLike | None = None
    cache: bool = True
    rubric: Mapping[str, str] | None = None
    max_tokens: int | None = None
    force_tool: bool | None = None
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    poll_interval: float = 30.0
    batch_timeout: float = 26 * 3600.0
    base_url: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a non-empty Claude model id such as {DEFAULT_MODEL!r}, got {self.model!r}")
        _require(isinstance(self.concurrency, int) and self.concurrency >= 1, f"concurrency must be an int >= 1, got {self.concurrency!r}")
        _require(isinstance(self.retries, int) and self.retries >= 0, f"retries must be an int >= 0, got {self.retries!r}")
        _require(isinstance(self.batch_threshold, int) and self.batch_threshold >= 1,
                 f"batch_threshold must be an int >= 1, got {self.batch_threshold!r}")
        for name in ("timeout", "backoff_max", "poll_interval", "batch_timeout"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and value > 0, f"{name} must be a positive number of seconds, got {value!r}")
        _require(isinstance(self.backoff_base, (int, float)) and self.backoff_base >= 0,
                 f"backoff_base must be >= 0 seconds, got {self.backoff_base!r}")
        _require(self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 64),
                 f"max_tokens must be an int >= 64, got {self.max_tokens!r}")


def _default_cache_path() -> Path:
    """`artifacts/judgements/claude_cache.jsonl` in the repository holding axes_lib (else the current folder)."""
    root = secrets._PACKAGE_ROOT
    if not any((root / m).exists() for m in (".git", "_toc.yml", "requirements.txt")):
        root = Path.cwd()
    return root / "artifacts" / "judgements" / "claude_cache.jsonl"


def _progress(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar, or None when disabled or for a single item."""
    if not enabled or total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item")


class ClaudeJudge:
    """Claude as judge: `ClaudeJudge(ClaudeConfig(...))`, or `ClaudeJudge()` for the defaults.

    `score(items)` returns one `Score` per item in input order. Items already in the cache send no
    request; the rest go out through a thread pool of `config.concurrency` workers, or as Message
    Batches (see `ClaudeConfig`). `api_key` (else the environment or `.env`), a prebuilt `client`, or an
    `http_client` for the SDK are the connection, kept apart from the settings.
    """

    def __init__(self, config: ClaudeConfig | None = None, *, api_key: str | None = None, client: Any = None,
                 http_client: Any = None) -> None:
        self.config = config = config if config is not None else ClaudeConfig()
        self.model = config.model
        self.rubric = load_rubric() if config.rubric is None else check_rubric(config.rubric)
        self.rubric_version = self.rubric["version"]
        self._rubric_sha = hashlib.sha256(json.dumps(self.rubric, sort_keys=True).encode()).hexdigest()[:12]
        self.id = f"claude:{config.model}:rubric-{self.rubric_version}"
        self.force_tool = (not config.model.startswith(NO_FORCED_TOOL_PREFIXES)) if config.force_tool is None else bool(config.force_tool)
        self.max_tokens = config.max_tokens or (512 if self.force_tool else 4096)
        self.lock = threading.Lock()

        # The key is resolved (and a missing one reported) before any other work.
        if client is None:
            key = secrets.resolve_api_key(api_key)
            if key is None:
                where = ", ".join(str(p) for p in secrets.dotenv_candidates())
                raise secrets.MissingAPIKeyError(
                    f"no Anthropic API key for ClaudeJudge: pass api_key=..., set the {secrets.ENV_VAR} environment "
                    f"variable, or put a line {secrets.ENV_VAR}=... in a .env file (looked in: {where})"
                )
            self._secret = secrets.Secret(key)
            import anthropic

            client = anthropic.Anthropic(api_key=key, base_url=config.base_url, http_client=http_client, max_retries=0,
                                         timeout=float(config.timeout))
        else:
            known = api_key or getattr(client, "api_key", None)  # still redact it from error texts
            self._secret = secrets.Secret(known if isinstance(known, str) else None)
            with_options = getattr(client, "with_options", None)
            if callable(with_options):  # our own retry loop is the only one
                client = with_options(max_retries=0, timeout=float(config.timeout))
        self.client = client
        self.retry = RetryPolicy(self.id, self._secret, config.retries, float(config.backoff_base), float(config.backoff_max))
        cache_path = (Path(config.cache_path) if config.cache_path is not None else _default_cache_path()) if config.cache else None
        self.cache = ScoreCache(cache_path, self.id)  # checks the file can be written before any request is paid for
        self._batches = Batches(self)

    @property
    def cache_path(self) -> Path | None:
        """The JSONL file judgements are stored in (None when the cache is off)."""
        return self.cache.path

    def __repr__(self) -> str:
        c = self.config
        return (f"ClaudeJudge(id={self.id!r}, cache_path={str(self.cache_path) if self.cache_path else None!r}, "
                f"concurrency={c.concurrency}, retries={c.retries}, use_batches={c.use_batches!r}, batch_threshold={c.batch_threshold})")

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
            cached = self.cache.get(key)
            if cached is not None:
                results[key] = cached
            else:
                todo[key] = item
        if todo:
            log.info("%s: %d item(s), %d cached, %d to judge", self.id, len(items), len(items) - len(todo), len(todo))
            results.update(self._batches.resume(set(todo)))
            todo = {k: v for k, v in todo.items() if k not in results}
        if todo:
            use_batches = self.config.use_batches
            batched = use_batches if use_batches is not None else len(todo) >= self.config.batch_threshold
            pending = list(todo.items())
            results.update(self._batches.score(pending) if batched else self._score_threads(pending))
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
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> ClaudeJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one result ----------------------------------------------------------------------------------

    def fail(self, error: str) -> Score:
        """A missing score carrying the (redacted) reason."""
        return Score(None, None, self.id, error=self._secret.redact(error))

    def score_message(self, key: str, message: Any) -> Score:
        """The Score of one API reply; a valid one is cached under `key` at once."""
        try:
            al, co, rationale = parse_message(message)
        except InvalidReply as exc:
            log.info("%s: invalid reply: %s", self.id, exc)
            return self.fail(f"invalid judge reply: {exc}")
        score = Score(al, co, self.id, None, rationale)
        self.cache.put({key: score}, model=self.model, rubric_version=self.rubric_version, rubric_sha=self._rubric_sha,
                       time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        return score

    # ---- one request per item, bounded concurrency -----------------------------------------------------

    def _score_single(self, key: str, item: Item) -> Score:
        try:
            message = self.retry.call(lambda: self.client.messages.create(**self.request_params(item)), "messages.create")
        except CallFailed as exc:
            return self.fail(str(exc))
        except Exception as exc:  # never let one item crash a sweep
            log.warning("%s: unexpected error while judging: %s", self.id, self.retry.error_text(exc))
            return self.fail(self.retry.error_text(exc))
        return self.score_message(key, message)

    def _score_threads(self, todo: list[tuple[str, Item]]) -> dict[str, Score]:
        out: dict[str, Score] = {}
        bar = _progress(len(todo), f"judging ({self.model})", self.config.progress)
        executor = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(todo)), thread_name_prefix="claude-judge")
        try:
            futures = {executor.submit(self._score_single, key, item): key for key, item in todo}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        executor.shutdown(wait=True)
        return out
