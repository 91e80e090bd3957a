"""ClaudeJudge against a loopback fake of the Anthropic API, through the real `anthropic` SDK.

Covers retries (429 with retry-after, persistent 5xx, timeouts, connection errors), validation of the
tool answer, the JSONL cache, key hygiene, the Message Batches path (and resuming an interrupted
batch), the concurrency bound, and where the API key comes from.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import axes_lib.judge.secrets as secrets_mod
from axes_lib.judge import (
    DEFAULT_MODEL,
    ClaudeConfig,
    ClaudeJudge,
    Item,
    Judge,
    MissingAPIKeyError,
    Score,
    UnwritableCacheError,
    available_claude_key,
    load_rubric,
    parse_tool_input,
)
from tests.fake_anthropic import FakeAnthropic, Reply, error, scores, tag, text_message, tool_message

KEY = "fake-anthropic-key-SECRET123"


@functools.cache
def http():
    """One HTTP client for all judges here: building one loads the CA bundle (~0.15 s), which adds up."""
    import anthropic

    return anthropic.DefaultHttpxClient()


@pytest.fixture(scope="module", autouse=True)
def close_http():
    """Close the shared client's pooled connections when the module is done (no sockets left to the interpreter's exit)."""
    yield
    if http.cache_info().currsize:
        http().close()
        http.cache_clear()


@pytest.fixture
def server():
    with FakeAnthropic() as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch, tmp_path):
    """No key from the developer's environment or .env files leaks into a test."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setattr(secrets_mod, "_PACKAGE_ROOT", tmp_path / "no-repo")
    monkeypatch.chdir(tmp_path)


def make_judge(server: FakeAnthropic, tmp_path: Path, **kw) -> ClaudeJudge:
    opts = dict(
        base_url=server.url,
        cache_path=tmp_path / "judgements" / "cache.jsonl",
        retries=3,
        backoff_base=0.001,
        backoff_max=0.01,
        poll_interval=0.01,
        progress=False,
    )
    opts.update(kw)
    return ClaudeJudge(ClaudeConfig(**opts), api_key=KEY, http_client=http())


def cache_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "judgements" / "cache.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# --------------------------------------------------------------------------------------------------
# interface, rubric, request shape


def test_interface_rubric_and_request_shape(server, tmp_path):
    judge = make_judge(server, tmp_path)
    assert isinstance(judge, Judge)
    rubric = load_rubric()
    assert rubric["version"] == "v1" and {"system", "assistant_likeness", "coherence", "template"} <= set(rubric)
    assert judge.id == f"claude:{DEFAULT_MODEL}:rubric-v1"

    item = Item("What is the capital of France?", "Paris, my friend! score=6/9", meta={"persona": "P3RSONA", "secret_meta": "M3TA"})
    score = judge.score([item])[0]
    assert score == Score(6.0, 9.0, judge.id, None, "scripted by response text")

    (req,) = server.message_requests()
    body = req.body
    assert body["model"] == DEFAULT_MODEL
    assert body["tool_choice"] == {"type": "tool", "name": "record_scores", "disable_parallel_tool_use": True}
    assert body["thinking"] == {"type": "disabled"}  # forced tool use needs thinking off
    assert "temperature" not in body
    (tool,) = body["tools"]
    props = tool["input_schema"]["properties"]
    for scale in ("assistant_likeness", "coherence"):
        assert props[scale]["type"] == "number" and props[scale]["minimum"] == 0 and props[scale]["maximum"] == 10
    assert set(tool["input_schema"]["required"]) >= {"assistant_likeness", "coherence"}
    assert tag(body, "query") == item.query and tag(body, "response") == item.response
    assert "M3TA" not in json.dumps(body) and "P3RSONA" not in json.dumps(body)  # meta is not sent
    assert body["system"] == rubric["system"]
    # The key does reach the API (so the hygiene test below is meaningful).
    assert any(KEY in v for v in req.headers.values())


def test_models_that_reject_forced_tools_get_auto(server, tmp_path):
    judge = make_judge(server, tmp_path, model="claude-sonnet-5-5")
    assert judge.score_one("q", "a").ok
    body = server.message_requests()[0].body
    assert body["tool_choice"] == {"type": "auto"} and "thinking" not in body


# --------------------------------------------------------------------------------------------------
# 1-2: retries


def test_429_with_retry_after_then_success(server, tmp_path):
    server.push(error(429, "rate_limit_error", "slow down", headers={"retry-after": "0"}), scores(4, 5))
    judge = make_judge(server, tmp_path)
    score = judge.score_one("q", "a")
    assert (score.assistant_likeness, score.coherence, score.error) == (4.0, 5.0, None)
    assert len(server.message_requests()) == 2


def test_retry_after_is_honoured(server, tmp_path):
    server.push(error(429, "rate_limit_error", headers={"retry-after": "0.3"}), scores(4, 5))
    judge = make_judge(server, tmp_path)
    start = time.monotonic()
    assert judge.score_one("q", "a").ok
    assert time.monotonic() - start >= 0.3  # backoff_max is 0.01, so only retry-after explains the wait


def test_persistent_500_gives_error_after_bounded_retries(server, tmp_path):
    server.responder = lambda body: error(500, "api_error", "internal boom")
    judge = make_judge(server, tmp_path, retries=2)
    score = judge.score_one("q", "a")
    assert score.assistant_likeness is None and score.coherence is None and not score.ok
    assert "500" in score.error and "3 attempt" in score.error and "internal boom" in score.error
    assert len(server.message_requests()) == 3  # 1 + retries
    assert cache_lines(tmp_path) == []


def test_529_overloaded_is_retried_and_400_is_not(server, tmp_path):
    server.push(error(529, "overloaded_error"), scores(1, 2))
    judge = make_judge(server, tmp_path)
    assert judge.score_one("q", "a").ok
    assert len(server.message_requests()) == 2

    server.push(error(400, "invalid_request_error", "tool_choice not supported"))
    bad = judge.score_one("q2", "a2")
    assert not bad.ok and "400" in bad.error and "tool_choice not supported" in bad.error
    assert len(server.message_requests()) == 3  # no retry of a 400


def test_timeout_is_retried(server, tmp_path):
    server.push(Reply(200, tool_message({"assistant_likeness": 1, "coherence": 1, "rationale": "late"}), delay=1.0), scores(2, 3))
    judge = make_judge(server, tmp_path, timeout=0.2)
    score = judge.score_one("q", "a")
    assert (score.assistant_likeness, score.coherence) == (2.0, 3.0)
    assert len(server.message_requests()) == 2


def test_connection_errors_are_retried_then_reported(tmp_path):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ClaudeConfig(base_url=f"http://127.0.0.1:{port}", cache_path=tmp_path / "c.jsonl", retries=2, backoff_base=0.001,
                          progress=False)
    judge = ClaudeJudge(config, api_key=KEY, http_client=http())
    sleeps: list[float] = []
    judge.retry.sleep = sleeps.append
    score = judge.score_one("q", "a")
    assert not score.ok and "APIConnectionError" in score.error and "3 attempt" in score.error
    assert len(sleeps) == 2 and all(0 <= s <= 0.01 for s in sleeps)


def test_401_stops_all_requests(server, tmp_path):
    server.responder = lambda body: error(401, "authentication_error", "invalid x-api-key")
    judge = make_judge(server, tmp_path, concurrency=1)
    out = judge.score([Item(f"q{i}", "a") for i in range(3)])
    assert all(not s.ok and "401" in s.error for s in out)
    assert len(server.message_requests()) == 1


# --------------------------------------------------------------------------------------------------
# 3: malformed answers


@pytest.mark.parametrize(
    "reply, fragment",
    [
        (tool_message({"assistant_likeness": 7, "rationale": "no coherence"}), "lacks ['coherence']"),
        (tool_message({"assistant_likeness": "7", "coherence": 8, "rationale": "string"}), "str '7', not a number"),
        (tool_message({"assistant_likeness": 12, "coherence": 8, "rationale": "too high"}), "outside 0-10"),
        (tool_message({"assistant_likeness": 5, "coherence": -1, "rationale": "too low"}), "outside 0-10"),
        (tool_message({"assistant_likeness": True, "coherence": 8}), "bool"),
        (tool_message("not an object"), "not an object"),
        (tool_message({"assistant_likeness": 5, "coherence": 5}, name="other_tool"), "no record_scores tool call"),
        (text_message("I'd rate it 7/10."), "no record_scores tool call"),
    ],
)
def test_malformed_answers_are_missing_not_crashes(server, tmp_path, reply, fragment):
    server.push(Reply(200, reply))
    judge = make_judge(server, tmp_path)
    score = judge.score_one("q", "a")
    assert score.assistant_likeness is None and score.coherence is None
    assert fragment in score.error
    assert len(server.message_requests()) == 1  # a malformed answer is not retried in the same run
    assert cache_lines(tmp_path) == []  # ... and not cached, so the next run asks again
    again = make_judge(server, tmp_path).score_one("q", "a")
    assert again.ok and len(server.message_requests()) == 2


def test_mixed_batch_of_good_and_bad_answers(server, tmp_path):
    server.push(scores(3, 4), scores(12, 4), scores(5, 6))
    judge = make_judge(server, tmp_path, concurrency=1)
    out = judge.score([Item("a", "1"), Item("b", "2"), Item("c", "3")])
    assert [s.ok for s in out] == [True, False, True]
    assert len(cache_lines(tmp_path)) == 2


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["assistant_likeness", "coherence", "rationale", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-50, 50), st.floats(allow_nan=True), st.text(max_size=5))))
def test_tool_input_validation_property(data):
    def valid(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 10

    expect = all(k in data and valid(data[k]) for k in ("assistant_likeness", "coherence"))
    try:
        al, co, _ = parse_tool_input(data)
    except ValueError:
        assert not expect
    else:
        assert expect and (al, co) == (float(data["assistant_likeness"]), float(data["coherence"]))


# --------------------------------------------------------------------------------------------------
# 4: cache


def test_cache_hit_sends_no_request(server, tmp_path):
    item = Item("Why is the sky blue?", "Rayleigh scattering. score=9/9")
    first = make_judge(server, tmp_path).score([item])[0]
    assert first.ok and len(server.message_requests()) == 1
    (record,) = cache_lines(tmp_path)
    assert record["judge"] == f"claude:{DEFAULT_MODEL}:rubric-v1" and record["rubric_version"] == "v1"
    assert (record["assistant_likeness"], record["coherence"]) == (9.0, 9.0) and len(record["key"]) == 64

    second = make_judge(server, tmp_path).score([item, item])  # a new instance reads the same file
    assert second == [first, first]
    assert len(server.message_requests()) == 1

    # Another model or rubric is another judge: no false hits.
    make_judge(server, tmp_path, model="claude-haiku-4-5").score([item])
    assert len(server.message_requests()) == 2
    other = {**load_rubric(), "version": "v2"}
    j2 = make_judge(server, tmp_path, rubric=other)
    assert j2.id.endswith("rubric-v2")
    j2.score([item])
    assert len(server.message_requests()) == 3


def test_duplicates_in_one_call_are_judged_once(server, tmp_path):
    judge = make_judge(server, tmp_path)
    out = judge.score([Item("q", "a"), ("q", "a"), {"query": "q", "response": "a", "meta": {"x": 1}}])
    assert out[0] == out[1] == out[2] and out[0].ok
    assert len(server.message_requests()) == 1


def test_truncated_last_line_is_tolerated(server, tmp_path):
    make_judge(server, tmp_path).score([Item("q1", "a1")])
    path = tmp_path / "judgements" / "cache.jsonl"
    with open(path, "a") as fh:
        fh.write('{"key": "abc", "judge": "claude:')  # an interrupted append
    judge = make_judge(server, tmp_path)
    assert judge.score([Item("q1", "a1")])[0].ok and len(server.message_requests()) == 1
    judge.score([Item("q2", "a2")])
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["assistant_likeness"] == 7.0  # the new record is on its own line
    assert len(make_judge(server, tmp_path).cache) == 2


def test_unwritable_cache_fails_before_any_request(server, tmp_path):
    """A cache that cannot be written is an error naming its path when the judge is built, before anything is paid for."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be\n")
    path = blocker / "judgements" / "cache.jsonl"
    with pytest.raises(UnwritableCacheError, match="not-a-folder"):
        make_judge(server, tmp_path, cache_path=path)
    assert server.requests == []


def test_failed_cache_write_keeps_the_paid_scores(server, tmp_path, monkeypatch):
    """When appending to the cache fails mid-run, every paid score is still returned (and reused in this
    process); a warning counts the scores that were not persisted, and the next write catches up."""
    import axes_lib.judge.cache as cache_mod

    real = cache_mod.append_jsonl
    calls = []

    def flaky(path, records):
        calls.append(len(records))
        if len(calls) in (2, 3):
            raise OSError(28, "No space left on device")
        return real(path, records)

    monkeypatch.setattr(cache_mod, "append_jsonl", flaky)
    judge = make_judge(server, tmp_path, use_batches=True)  # results are read (and cached) one by one, in order
    items = [Item(f"q{i}", f"score={i}/{9 - i}") for i in range(4)]
    with pytest.warns(RuntimeWarning, match="are not persisted") as caught:
        out = judge.score(items)
    assert [(s.assistant_likeness, s.coherence) for s in out] == [(float(i), float(9 - i)) for i in range(4)]
    counts = [re.search(r"(\d+) score\(s\) are not persisted", str(w.message)).group(1) for w in caught]
    assert counts == ["1", "2"]  # the score that could not be written is carried to the next write
    assert calls == [1, 1, 2, 3] and judge.cache.unsaved == 0  # the fourth write stored all three pending scores
    assert sorted(r["assistant_likeness"] for r in cache_lines(tmp_path)) == [0.0, 1.0, 2.0, 3.0]
    n = len(server.requests)
    assert judge.score(items) == out and len(server.requests) == n  # nothing is paid for twice


# --------------------------------------------------------------------------------------------------
# 5: the key is never written anywhere


def test_key_never_leaks(server, tmp_path, caplog, capsys):
    for name in ("", "anthropic", "httpx2", "httpcore2", "axes_lib.judge"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    server.push(
        error(429, "rate_limit_error", headers={"retry-after": "0"}),
        scores(5, 5),
        error(400, "invalid_request_error", f"bad key {KEY} echoed back"),  # a server echoing the key
    )
    judge = make_judge(server, tmp_path, concurrency=1, progress=True)
    out = judge.score([Item("q1", "a1"), Item("q2", "a2")])
    server.responder = lambda body: error(503, "api_error", f"down; {KEY}")
    out += judge.score([Item("q3", "a3")])
    server.responder = lambda body: scores(1, 1)
    out += make_judge(server, tmp_path, use_batches=True).score([Item("q4", "a4"), Item("q5", "a5")])

    assert any(s.ok for s in out) and any(not s.ok for s in out)
    assert "<redacted>" in " ".join(s.error for s in out if s.error)
    captured = capsys.readouterr()
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    texts = {
        "cache and other files": written,
        "logs": caplog.text + " ".join(str(r.args) for r in caplog.records),
        "stdout": captured.out,
        "stderr": captured.err,
        "repr": repr(judge) + str(vars(judge)),
        "errors": " ".join(str(s) for s in out),
    }
    assert "Sending HTTP Request" in caplog.text  # the SDK's debug logs were captured
    for where, text in texts.items():
        assert KEY not in text, f"API key found in {where}"
        assert "SECRET123" not in text, f"part of the API key found in {where}"


# --------------------------------------------------------------------------------------------------
# 6: Message Batches


def test_batches_path(server, tmp_path):
    server.batch_polls_before_end = 2

    def result(custom_id, params):
        text = tag(params, "response")
        if text == "bad":
            return {"type": "succeeded", "message": tool_message({"assistant_likeness": 11, "coherence": 3})}
        if text == "err":
            return {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}}
        if text == "exp":
            return {"type": "expired"}
        return {"type": "succeeded", "message": server.responder(params).body}

    server.batch_result = result
    items = [Item(f"q{i}", f"score={i}/{10 - i}") for i in range(5)] + [Item("qb", "bad"), Item("qe", "err"), Item("qx", "exp")]
    judge = make_judge(server, tmp_path, use_batches=True)
    out = judge.score(items)

    assert [(s.assistant_likeness, s.coherence) for s in out[:5]] == [(float(i), float(10 - i)) for i in range(5)]
    assert "outside 0-10" in out[5].error and "overloaded_error: busy" in out[6].error and "expired" in out[7].error
    assert server.message_requests() == []  # nothing went through /v1/messages
    (create,) = server.seen("POST", "/v1/messages/batches")
    batch_id = next(iter(server.batches))
    requests = create.body["requests"]
    assert [r["custom_id"] for r in requests] == [judge.cache_key(it) for it in items]
    assert all(r["params"]["tool_choice"]["name"] == "record_scores" for r in requests)
    assert len(server.seen("GET", f"/v1/messages/batches/{batch_id}")) >= 3  # polled until ended
    assert len(server.seen("GET", f"/v1/messages/batches/{batch_id}/results")) == 1
    assert len(cache_lines(tmp_path)) == 5
    assert not (tmp_path / "judgements" / "cache.batches.json").exists()  # nothing left pending

    n = len(server.requests)
    again = make_judge(server, tmp_path, use_batches=True).score(items[:5])
    assert again == out[:5] and len(server.requests) == n  # cached: no request at all


def test_batch_threshold_switches_path(server, tmp_path):
    judge = make_judge(server, tmp_path, batch_threshold=3)
    judge.score([Item("a", "1"), Item("b", "2")])
    assert len(server.message_requests()) == 2 and not server.seen("POST", "/v1/messages/batches")
    judge.score([Item("c", "3"), Item("d", "4"), Item("e", "5")])
    assert len(server.message_requests()) == 2 and len(server.seen("POST", "/v1/messages/batches")) == 1


def test_interrupted_batch_is_resumed_not_resubmitted(server, tmp_path):
    server.batch_polls_before_end = 10**6  # never ends during the first run
    items = [Item(f"q{i}", f"score={i}/{i}") for i in range(3)]
    first = make_judge(server, tmp_path, use_batches=True, batch_timeout=0.05).score(items)
    assert all(not s.ok and "run again to resume" in s.error for s in first)
    assert (tmp_path / "judgements" / "cache.batches.json").exists()

    server.batch_polls_before_end = 0
    second = make_judge(server, tmp_path, use_batches=True).score(items)
    assert [s.assistant_likeness for s in second] == [0.0, 1.0, 2.0]
    assert len(server.seen("POST", "/v1/messages/batches")) == 1  # resumed, not paid for twice
    assert not (tmp_path / "judgements" / "cache.batches.json").exists()


# --------------------------------------------------------------------------------------------------
# 7: concurrency bound and order


def test_concurrency_bound_and_order(tmp_path):
    with FakeAnthropic(delay=0.2) as srv:
        judge = make_judge(srv, tmp_path, concurrency=2)
        items = [Item(f"q{i}", f"answer {i} score={i}/{9 - i}") for i in range(6)]
        start = time.monotonic()
        out = judge.score(items)
        elapsed = time.monotonic() - start
    assert [(s.assistant_likeness, s.coherence) for s in out] == [(float(i), float(9 - i)) for i in range(6)]
    assert srv.max_in_flight == 2  # bounded, and actually concurrent
    assert 0.55 < elapsed < 3.0  # 6 items x 0.2 s / 2 workers (loose upper bound for busy CI machines)


# --------------------------------------------------------------------------------------------------
# 8-9: where the key comes from


def test_missing_key_is_a_clear_error_at_construction(tmp_path, server):
    assert not available_claude_key()
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY") as info:
        ClaudeJudge(ClaudeConfig(base_url=server.url, cache_path=tmp_path / "c.jsonl"), http_client=http())
    assert ".env" in str(info.value)
    assert server.requests == [] and not (tmp_path / "c.jsonl").exists()


def test_dotenv_key_loading(tmp_path, server, monkeypatch):
    (tmp_path / ".env").write_text(
        "# settings\nOTHER=1\nexport ANTHROPIC_API_KEY=\"fake-anthropic-key-DOTENV\"  \nHF_TOKEN=x\n", encoding="utf-8"
    )
    assert available_claude_key()
    judge = ClaudeJudge(ClaudeConfig(base_url=server.url, cache_path=tmp_path / "c.jsonl", progress=False), http_client=http())
    assert judge.score_one("q", "a").ok
    assert server.requests[-1].headers.get("authorization", "").endswith("fake-anthropic-key-DOTENV") or \
        server.requests[-1].headers.get("x-api-key") == "fake-anthropic-key-DOTENV"
    assert "fake-anthropic-key-DOTENV" not in repr(judge)

    # The environment wins over .env, and the argument over both.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-key-ENV")
    no_cache = ClaudeConfig(base_url=server.url, cache=False, progress=False)
    ClaudeJudge(no_cache, http_client=http()).score_one("q", "env")
    assert "fake-anthropic-key-ENV" in json.dumps(server.requests[-1].headers)
    ClaudeJudge(no_cache, api_key=KEY, http_client=http()).score_one("q", "arg")
    assert KEY in json.dumps(server.requests[-1].headers)


def test_dotenv_in_repo_root(tmp_path, server, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / ".env").write_text("ANTHROPIC_API_KEY='fake-anthropic-key-ROOT'\n")
    monkeypatch.chdir(repo / "notebooks")  # papermill runs notebooks from their folder
    assert available_claude_key()
    ClaudeJudge(ClaudeConfig(base_url=server.url, cache=False, progress=False), http_client=http()).score_one("q", "a")
    assert "fake-anthropic-key-ROOT" in json.dumps(server.requests[-1].headers)


def test_prebuilt_client_is_accepted(server, tmp_path):
    import anthropic

    client = anthropic.Anthropic(api_key=KEY, base_url=server.url, max_retries=7)
    server.push(error(500), error(500), scores(2, 2))
    judge = ClaudeJudge(ClaudeConfig(cache=False, retries=1, backoff_base=0.001, progress=False), client=client)
    score = judge.score_one("q", "a")
    assert not score.ok and len(server.message_requests()) == 2  # our bound (1 retry), not the client's 7


def test_bad_arguments_name_the_problem(server):
    with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
        ClaudeConfig(concurrency=0)
    with pytest.raises(ValueError, match="model"):
        ClaudeConfig(model="")
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        ClaudeConfig(timeout=0)
    with pytest.raises(ValueError, match="template lacks"):
        ClaudeJudge(ClaudeConfig(base_url=server.url, rubric={**load_rubric(), "template": "$query only"}), api_key=KEY,
                    http_client=http())
    judge = ClaudeJudge(ClaudeConfig(base_url=server.url, cache=False, progress=False), api_key=KEY, http_client=http())
    with pytest.raises(TypeError, match="item 1"):
        judge.score([Item("q", "a"), 42])


def test_pending_batch_the_api_no_longer_knows_is_dropped(server, tmp_path):
    judge = make_judge(server, tmp_path, use_batches=True)
    item = Item("q", "score=4/4")
    pending = tmp_path / "judgements" / "cache.batches.json"
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(json.dumps({"batches": [{"id": "msgbatch_gone", "judge": judge.id, "keys": [judge.cache_key(item)]}]}))
    score = judge.score([item])[0]
    assert (score.assistant_likeness, score.coherence) == (4.0, 4.0)  # judged afresh in the same run
    assert len(server.seen("GET", "/v1/messages/batches/msgbatch_gone")) == 1  # a 404 is not retried
    assert len(server.seen("POST", "/v1/messages/batches")) == 1
    assert not pending.exists()
