"""A loopback stand-in for the Anthropic API, for testing the judge with the real `anthropic` SDK.

`FakeAnthropic` runs a `ThreadingHTTPServer` on 127.0.0.1 (free port) in a thread. It answers
`POST /v1/messages` from a script of replies (then from a default responder), implements the
Message Batches endpoints (`POST /v1/messages/batches`, `GET /v1/messages/batches/{id}`,
`GET /v1/messages/batches/{id}/results` as JSONL), records every request (method, path, headers,
JSON body) and counts requests in flight at once. Bodies follow the shapes of the real API.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted HTTP reply: status, JSON body (or raw bytes), extra headers, delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def tool_message(tool_input: Any, model: str = "claude-sonnet-5", name: str = "record_scores") -> dict:
    """A Messages API reply whose content is one tool_use block with `tool_input`."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": tool_input}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 321, "output_tokens": 42},
    }


def text_message(text: str, model: str = "claude-sonnet-5") -> dict:
    """A Messages API reply with only a text block (no tool call)."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 321, "output_tokens": 12},
    }


def scores(al: Any, co: Any, rationale: str = "fine") -> Reply:
    """A 200 reply recording these scores."""
    return Reply(200, tool_message({"assistant_likeness": al, "coherence": co, "rationale": rationale}))


def error(status: int, kind: str = "api_error", message: str = "scripted error", headers: dict | None = None) -> Reply:
    """An error reply with the API's error body shape."""
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex[:12]}"}
    return Reply(status, body, dict(headers or {}))


def prompt_of(body: Any) -> str:
    """The user prompt text of a Messages request body."""
    content = body["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def tag(body: Any, name: str) -> str:
    """Text between <name> and </name> in the request's prompt (the judge wraps query and response so)."""
    match = re.search(rf"<{name}>\n(.*?)\n</{name}>", prompt_of(body), re.S)
    return match.group(1) if match else ""


def default_responder(body: Any) -> Reply:
    """Score from the response text: 'score=A/C' in it gives (A, C); otherwise (7, 8)."""
    match = re.search(r"score=(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", tag(body, "response"))
    if match:
        return scores(float(match.group(1)), float(match.group(2)), "scripted by response text")
    return scores(7, 8)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout test) leaves a broken pipe: not worth a traceback on stderr."""


class FakeAnthropic:
    """Scripted Messages + Batches API on 127.0.0.1; see the module docstring."""

    def __init__(self, responder: Callable[[Any], Reply] = default_responder, delay: float = 0.0) -> None:
        self.responder = responder
        self.delay = delay  # seconds every /v1/messages reply waits (for concurrency tests)
        self.script: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.batches: dict[str, dict] = {}
        self.batch_polls_before_end = 1  # retrieve() answers in_progress this many times first
        self.batch_result: Callable[[str, Any], dict] | None = None  # (custom_id, params) -> result object
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_GET(self) -> None:
                fake._handle(self, "GET")

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for tests -----------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next POST /v1/messages requests (FIFO)."""
        self.script.extend(replies)

    def seen(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally filtered by method and exact path."""
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs if (method is None or r.method == method) and (path is None or r.path == path)]

    def message_requests(self) -> list[Recorded]:
        return self.seen("POST", "/v1/messages")

    # ---- request handling ------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(Recorded(method, path, {k.lower(): v for k, v in handler.headers.items()}, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply, content_type = self._route(method, path, body)
            if reply.delay:
                time.sleep(reply.delay)
            self._send(handler, reply, content_type)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _route(self, method: str, path: str, body: Any) -> tuple[Reply, str]:
        if method == "POST" and path == "/v1/messages":
            with self._lock:
                reply = self.script.popleft() if self.script else None
            if reply is None:
                reply = self.responder(body)
            if self.delay and not reply.delay:
                reply = Reply(reply.status, reply.body, reply.headers, self.delay)
            return reply, "application/json"
        if method == "POST" and path == "/v1/messages/batches":
            return Reply(200, self._create_batch(body)), "application/json"
        match = re.fullmatch(r"/v1/messages/batches/([A-Za-z0-9_]+)(/results)?", path)
        if method == "GET" and match:
            batch_id, results = match.group(1), match.group(2)
            if batch_id not in self.batches:
                return error(404, "not_found_error", f"no batch {batch_id}"), "application/json"
            if results:
                return Reply(200, self._results_jsonl(batch_id)), "application/binary"
            return Reply(200, self._poll_batch(batch_id)), "application/json"
        return error(404, "not_found_error", f"no route {method} {path}"), "application/json"

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply, content_type: str) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    # ---- batches ---------------------------------------------------------------------------------

    def _batch_json(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        ended = b["status"] == "ended"
        n = len(b["requests"])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": b["status"],
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "ended_at": "2026-01-01T00:05:00Z" if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def _create_batch(self, body: Any) -> dict:
        batch_id = f"msgbatch_{uuid.uuid4().hex[:20]}"
        with self._lock:
            self.batches[batch_id] = {"requests": body["requests"], "status": "in_progress", "polls": 0}
        return self._batch_json(batch_id)

    def _poll_batch(self, batch_id: str) -> dict:
        with self._lock:
            b = self.batches[batch_id]
            b["polls"] += 1
            if b["status"] != "ended" and b["polls"] > self.batch_polls_before_end:
                b["status"] = "ended"
        return self._batch_json(batch_id)

    def _results_jsonl(self, batch_id: str) -> bytes:
        lines = []
        # Reverse order: results are not guaranteed to follow request order.
        for request in reversed(self.batches[batch_id]["requests"]):
            cid, params = request["custom_id"], request["params"]
            if self.batch_result is not None:
                result = self.batch_result(cid, params)
            else:
                reply = self.responder(params)
                result = {"type": "succeeded", "message": reply.body}
            lines.append(json.dumps({"custom_id": cid, "result": result}))
        return ("\n".join(lines) + "\n").encode()
