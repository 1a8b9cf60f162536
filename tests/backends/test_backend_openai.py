"""OpenAIBackend against FakeLLMServer through base_url, with the real openai SDK."""

from __future__ import annotations

import functools
import logging
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends.openai import (
    OpenAIBackend,
    OpenAISession,
    ToolResult,
    tool_results_prompt,
)

from genagent_thespian import (
    BackendError,
    BackendErrorKind,
    EventKind,
    InvalidOption,
    Response,
    TurnContext,
    Usage,
)
from genagent_thespian._core.turn import Event
from genagent_thespian.testing._conformance import collect_turn
from genagent_thespian.testing._fake_llm_server import (
    FakeLLMServer,
    Hang,
    HTTPError,
    Raw,
    Reply,
    ScriptItem,
    StreamError,
    Text,
    Thinking,
    ToolUse,
    Truncated,
)

KEY = "sk-proj-very-secret-openai-test-key"
TOOLS = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def backend() -> Iterator[OpenAIBackend]:
    backend = OpenAIBackend()
    yield backend
    backend.close()


def start(backend: OpenAIBackend, server: FakeLLMServer, **options: Any) -> OpenAISession:
    return backend.start_session(
        {"api_key": KEY, "base_url": server.openai_base_url, "model": "gpt-x", **options}
    )


def turn(backend: OpenAIBackend, session: OpenAISession, prompt: str, **kwargs: Any) -> list[Event]:
    return collect_turn(backend, session, prompt, timeout=20, **kwargs)


def advance(backend: OpenAIBackend, session: OpenAISession, events: list[Event]) -> OpenAISession:
    for event in events:
        if event.kind in (EventKind.SESSION_STARTED, EventKind.RESULT):
            session = backend.update_session(session, event)
    return session


def _set_on_text(event: threading.Event, turn_event: Event) -> None:
    if turn_event.kind == "text_delta":
        event.set()


def error_of(events: list[Event]) -> BackendError:
    assert [e.kind for e in events].count(EventKind.ERROR) == 1
    assert events[-1].kind == EventKind.ERROR
    assert not any(e.kind == EventKind.RESULT for e in events)
    error = events[-1].data["error"]
    assert isinstance(error, BackendError)
    assert error.backend == "openai"
    return error


# --------------------------------------------------------------------------------- turns


def test_text_turn_events_and_response(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(
        Reply(
            [Thinking("plan it", chunks=2), Text("Hello there", chunks=3)],
            usage={
                "input_tokens": 20,
                "cache_read_input_tokens": 80,
                "output_tokens": 9,
                "reasoning_tokens": 4,
            },
        )
    )
    session = start(
        backend,
        server,
        instructions="Be brief.",
        max_output_tokens=64,
        temperature=0.3,
        reasoning_effort="low",
    )
    events = turn(backend, session, "Say hello")
    kinds = [e.kind for e in events]
    assert kinds == [
        "session_started",
        "turn_started",
        "thinking_delta",
        "thinking_delta",
        "thinking",
        "text_delta",
        "text_delta",
        "text_delta",
        "text",
        "usage",
        "result",
    ]
    result = events[-1].data
    assert result["stop_reason"] == "end_turn"
    assert result["response_id"].startswith("resp_fake")
    assert result["session_id"] == session.session_id
    usage = events[-2].data["usage"]
    assert usage == Usage(
        input_tokens=20,
        cache_read_input_tokens=80,
        output_tokens=9,
        reasoning_output_tokens=4,
        model="gpt-x",
    )
    assert Response.from_events(events).text == "Hello there"
    (request,) = server.model_requests
    assert request.body["input"] == [{"role": "user", "content": "Say hello"}]
    assert request.body["instructions"] == "Be brief."
    assert request.body["max_output_tokens"] == 64
    assert request.body["temperature"] == 0.3
    assert request.body["reasoning"] == {"effort": "low"}
    assert request.body["store"] is True
    assert "previous_response_id" not in request.body
    assert request.auth_fingerprint == FakeLLMServer.fingerprint(KEY)


def test_function_call_turn_and_its_answer(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(
        Reply([Text("Checking."), ToolUse("lookup", {"q": "paris"}, id="call_1", chunks=2)]),
        Text("Paris is sunny."),
    )
    session = start(backend, server, tools=TOOLS)
    events = turn(backend, session, "Weather?")
    tool_use = next(e for e in events if e.kind == EventKind.TOOL_USE)
    assert (tool_use.data["id"], tool_use.data["name"]) == ("call_1", "lookup")
    assert tool_use.data["input"] == {"q": "paris"}
    deltas = [e for e in events if e.kind == EventKind.TOOL_INPUT_DELTA]
    assert "".join(e.data["partial_json"] for e in deltas) == '{"q": "paris"}'
    assert all(e.data["id"] == "call_1" for e in deltas)
    assert events[-1].data["stop_reason"] == "tool_use"
    session = advance(backend, session, events)
    assert session.pending_calls == ("call_1",)

    events = turn(backend, session, "sunny, 22 C")
    assert Response.from_events(events).text == "Paris is sunny."
    second = server.model_requests[1].body
    assert second["input"] == [
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 22 C"}
    ]
    assert second["previous_response_id"] == session.previous_response_id
    assert second["tools"] == TOOLS
    session = advance(backend, session, events)
    assert session.pending_calls == ()


def test_several_calls_answered_by_id(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(Reply([ToolUse("a", {}, id="call_a"), ToolUse("b", {}, id="call_b")]), "ok")
    session = start(backend, server, tools=[{"type": "function", "name": "a"}])
    session = advance(backend, session, turn(backend, session, "go"))
    answer = tool_results_prompt([ToolResult("call_b", "B"), ToolResult("call_a", "A")])
    turn(backend, session, answer)
    assert server.model_requests[1].body["input"] == [
        {"type": "function_call_output", "call_id": "call_b", "output": "B"},
        {"type": "function_call_output", "call_id": "call_a", "output": "A"},
    ]


def test_two_turns_continue_with_previous_response_id(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    server.script("first answer", "second answer")
    session = start(backend, server, instructions="sys")
    first = turn(backend, session, "first prompt")
    session = advance(backend, session, first)
    assert session.previous_response_id == first[-1].data["response_id"]
    events = turn(backend, session, "second prompt")
    assert Response.from_events(events).text == "second answer"
    second = server.model_requests[1].body
    assert second["previous_response_id"] == first[-1].data["response_id"]
    assert second["input"] == [{"role": "user", "content": "second prompt"}]
    assert second["instructions"] == "sys"  # not inherited, so sent again


def test_resume_in_a_fresh_backend_after_pickling(server: FakeLLMServer) -> None:
    server.script("remembered", "still here")
    first_backend = OpenAIBackend()
    session = start(first_backend, server)
    first = turn(first_backend, session, "remember 42")
    session = advance(first_backend, session, first)
    first_backend.close()
    stored = pickle.dumps(session)

    restarted = OpenAIBackend()
    try:
        resumed = restarted.resume_session(pickle.loads(stored))
        assert resumed == session
        events = turn(restarted, resumed, "what number?")
    finally:
        restarted.close()
    assert Response.from_events(events).text == "still here"
    assert [e.kind for e in events].count("session_started") == 0
    assert server.model_requests[1].body["previous_response_id"] == first[-1].data["response_id"]


def test_incomplete_response_is_max_tokens(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(Reply(["cut sho"], stop_reason="max_tokens"))
    events = turn(backend, start(backend, server), "long story")
    assert events[-1].kind == EventKind.RESULT
    assert events[-1].data["stop_reason"] == "max_tokens"
    assert Response.from_events(events).text == "cut sho"


RESUME_SCRIPT = """
import pickle, sys
from genagent_thespian import Response, TurnContext
from genagent_thespian.backends.openai import OpenAIBackend
session = pickle.load(open(sys.argv[1], "rb"))
backend = OpenAIBackend()
events = list(backend.prompt(session, "and now?", TurnContext(agent="t", ref="r")))
backend.close()
print(events[-1].kind, Response.from_events(events).text)
"""


def test_resume_in_another_process(
    backend: OpenAIBackend, server: FakeLLMServer, tmp_path: Path
) -> None:
    server.script("first", "from the new process")
    session = start(backend, server)
    session = advance(backend, session, turn(backend, session, "hello"))
    stored = tmp_path / "session.pickle"
    stored.write_bytes(pickle.dumps(session))
    completed = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(stored)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "result from the new process"
    assert server.model_requests[1].body["previous_response_id"] == session.previous_response_id


# ------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {"no_such": 1},
        {"model": 3},
        {"max_output_tokens": 0},
        {"temperature": 2.5},
        {"reasoning_effort": "extreme"},
        {"tools": [{"type": "function"}]},
        {"max_retries": 1.5},
        {"timeout": -1},
    ],
)
def test_bad_options_are_refused(
    backend: OpenAIBackend, server: FakeLLMServer, options: Any
) -> None:
    with pytest.raises(InvalidOption):
        start(backend, server, **options)


def test_missing_key_is_an_authentication_error(
    backend: OpenAIBackend, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendError) as caught:
        backend.start_session({"base_url": server.openai_base_url})
    assert caught.value.kind == BackendErrorKind.AUTHENTICATION


def test_key_from_the_environment(
    backend: OpenAIBackend, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-from-env")
    server.script("ok")
    session = backend.start_session({"base_url": server.openai_base_url})
    assert session.api_key is None
    turn(backend, session, "hi")
    assert server.model_requests[0].auth_fingerprint == FakeLLMServer.fingerprint(
        "sk-openai-from-env"
    )


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("item", "kind", "retryable", "retry_after", "status"),
    [
        (HTTPError(401), BackendErrorKind.AUTHENTICATION, False, None, 401),
        (HTTPError(400), BackendErrorKind.INVALID_REQUEST, False, None, 400),
        (HTTPError(429, retry_after=7), BackendErrorKind.RATE_LIMITED, True, 7.0, 429),
        (
            HTTPError(429, code="insufficient_quota"),
            BackendErrorKind.RATE_LIMITED,
            False,
            None,
            429,
        ),
        (HTTPError(503), BackendErrorKind.OVERLOADED, True, None, 503),
        (HTTPError(529), BackendErrorKind.OVERLOADED, True, None, 529),
        (HTTPError(500), BackendErrorKind.SERVER_ERROR, True, None, 500),
    ],
)
def test_http_errors_are_mapped(
    backend: OpenAIBackend,
    server: FakeLLMServer,
    item: ScriptItem,
    kind: str,
    retryable: bool,
    retry_after: float | None,
    status: int,
) -> None:
    server.script(item)
    session = start(backend, server)
    events = turn(backend, session, "hi")
    error = error_of(events)
    assert (error.kind, error.retryable, error.retry_after, error.status_code) == (
        kind,
        retryable,
        retry_after,
        status,
    )
    assert backend.update_session(session, events[-1]) is session


def test_unknown_previous_response_is_an_invalid_request(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    session = start(backend, server)
    stale = OpenAISession(**{**session.__dict__, "previous_response_id": "resp_gone"})
    error = error_of(turn(backend, stale, "hi"))
    assert error.kind == BackendErrorKind.INVALID_REQUEST
    assert "previous_response_not_found" in str(error)


@pytest.mark.parametrize("openai_event", ["response.failed", "error"])
def test_failure_in_the_middle_of_a_200_stream(
    backend: OpenAIBackend, server: FakeLLMServer, openai_event: str
) -> None:
    server.script(StreamError(Text("Hello from", chunks=2), openai_event=openai_event))
    events = turn(backend, start(backend, server), "hi")
    assert [e.data["text"] for e in events if e.kind == "text_delta"] == ["Hello", " from"]
    error = error_of(events)
    assert error.kind == BackendErrorKind.OVERLOADED
    assert error.retryable
    assert error.status_code is None


def test_an_error_turn_leaves_the_session_unchanged(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    server.script("one", HTTPError(500), "three")
    session = start(backend, server)
    session = advance(backend, session, turn(backend, session, "one"))
    kept = session.previous_response_id
    session = advance(backend, session, turn(backend, session, "two"))
    assert session.previous_response_id == kept
    turn(backend, session, "three")
    assert server.model_requests[2].body["previous_response_id"] == kept


def test_sdk_retries_are_configurable(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(HTTPError(429, retry_after=0), "after one retry")
    events = turn(backend, start(backend, server, max_retries=1), "hi")
    assert Response.from_events(events).text == "after one retry"
    assert len(server.model_requests) == 2


def test_garbage_sse_is_a_protocol_error(backend: OpenAIBackend, server: FakeLLMServer) -> None:
    server.script(Raw("event: response.created\ndata: {this is not json\n\n"))
    assert error_of(turn(backend, start(backend, server), "hi")).kind == BackendErrorKind.PROTOCOL


def test_stream_without_a_terminal_event_is_a_protocol_error(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    body = 'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
    server.script(Raw(body))
    error = error_of(turn(backend, start(backend, server), "hi"))
    assert error.kind == BackendErrorKind.PROTOCOL


def test_truncated_connection_is_a_transport_error(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    server.script(Truncated(Text("abcdef", chunks=3), after_events=5))
    error = error_of(turn(backend, start(backend, server), "hi"))
    assert error.kind == BackendErrorKind.TRANSPORT


def pump_threads_end(timeout: float = 5.0) -> bool:
    """Wait until no openai turn thread is left (a cancelled stream must not linger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name.startswith("openai-turn-") for t in threading.enumerate()):
            return True
        threading.Event().wait(0.02)
    return False


# ---------------------------------------------------------------------------- cancelling


def test_interrupt_mid_stream_ends_promptly_and_disconnects(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    server.script(Reply([Text("x" * 200, chunks=200)], chunk_delay=0.05))
    session = start(backend, server)
    ctx = TurnContext(agent="t", ref="r")
    streaming = threading.Event()
    outcome: dict[str, list[Event]] = {}

    def run() -> None:
        outcome["events"] = turn(
            backend,
            session,
            "go",
            ctx=ctx,
            on_event=functools.partial(_set_on_text, streaming),
        )

    thread = threading.Thread(target=run)
    thread.start()
    assert streaming.wait(10)
    cancelled_at = time.monotonic()
    ctx.cancelled.set()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 1.0
    error = error_of(outcome["events"])
    assert error.kind == BackendErrorKind.CANCELLED
    (request,) = server.model_requests
    assert request.wait_done(5)
    assert request.client_disconnected
    assert pump_threads_end()


def test_interrupt_before_any_response_header(
    backend: OpenAIBackend, server: FakeLLMServer
) -> None:
    server.script(Hang(), "next turn")
    session = start(backend, server)
    ctx = TurnContext(agent="t", ref="r")
    outcome: dict[str, list[Event]] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(events=turn(backend, session, "x", ctx=ctx))
    )
    thread.start()
    server.wait_for_requests(1, timeout=10)
    cancelled_at = time.monotonic()
    ctx.cancelled.set()
    thread.join(10)
    assert time.monotonic() - cancelled_at < 1.0
    assert error_of(outcome["events"]).kind == BackendErrorKind.CANCELLED
    (request,) = server.model_requests
    assert request.wait_done(5)
    assert request.client_disconnected
    assert pump_threads_end()
    events = turn(backend, session, "again")
    assert Response.from_events(events).text == "next turn"


# ------------------------------------------------------------------------------- secrets


def test_api_key_never_shows(
    backend: OpenAIBackend, server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(HTTPError(401, message=f"Incorrect API key provided: {KEY}"))
    session = start(backend, server)
    assert KEY not in repr(session)
    error = error_of(turn(backend, session, "hi"))
    assert KEY not in str(error)
    assert KEY not in repr(error.__reduce__())
    assert KEY not in caplog.text
