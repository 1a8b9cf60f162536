"""AnthropicBackend against FakeLLMServer through base_url, with the real anthropic SDK."""

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
from genagent_thespian.backends.anthropic import (
    AnthropicBackend,
    AnthropicSession,
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

KEY = "sk-ant-api03-very-secret-test-key"
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def backend() -> Iterator[AnthropicBackend]:
    backend = AnthropicBackend()
    yield backend
    backend.close()


def start(backend: AnthropicBackend, server: FakeLLMServer, **options: Any) -> AnthropicSession:
    return backend.start_session(
        {"api_key": KEY, "base_url": server.url, "model": "claude-x", **options}
    )


def turn(
    backend: AnthropicBackend, session: AnthropicSession, prompt: str, **kwargs: Any
) -> list[Event]:
    return collect_turn(backend, session, prompt, timeout=20, **kwargs)


def advance(
    backend: AnthropicBackend, session: AnthropicSession, events: list[Event]
) -> AnthropicSession:
    for event in events:
        if event.kind in (EventKind.SESSION_STARTED, EventKind.RESULT):
            session = backend.update_session(session, event)
    return session


def error_of(events: list[Event]) -> BackendError:
    assert [e.kind for e in events].count(EventKind.ERROR) == 1
    assert events[-1].kind == EventKind.ERROR
    assert not any(e.kind == EventKind.RESULT for e in events)
    error = events[-1].data["error"]
    assert isinstance(error, BackendError)
    assert error.backend == "anthropic"
    return error


# --------------------------------------------------------------------------------- turns


def test_text_turn_events_and_response(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(
        Reply(
            [Text("Hello there", chunks=["Hel", "lo", " there"])],
            usage={"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 100},
        )
    )
    session = start(backend, server, system="Be brief.", max_tokens=64, temperature=0.5)
    events = turn(backend, session, "Say hello")
    kinds = [e.kind for e in events]
    assert kinds == [
        "session_started",
        "turn_started",
        "text_delta",
        "text_delta",
        "text_delta",
        "text",
        "usage",
        "result",
    ]
    assert events[0].data["session_id"] == session.session_id
    result = events[-1].data
    assert result["stop_reason"] == "end_turn"
    assert result["session_id"] == session.session_id
    assert result["pending_tool_uses"] == []
    usage = events[-2].data["usage"]
    assert usage == Usage(
        input_tokens=20, output_tokens=7, cache_read_input_tokens=100, model="claude-x"
    )
    response = Response.from_events(events)
    assert response.text == "Hello there"
    assert response.stop_reason == "end_turn"
    assert response.usage == usage
    (request,) = server.model_requests
    assert request.stream
    assert request.body["system"] == [{"type": "text", "text": "Be brief."}]
    assert request.body["max_tokens"] == 64
    assert request.body["temperature"] == 0.5
    assert request.body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert request.auth_fingerprint == FakeLLMServer.fingerprint(KEY)


def test_session_started_only_on_the_first_turn(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script("one", "two")
    session = start(backend, server)
    first = turn(backend, session, "a")
    session = advance(backend, session, first)
    second = turn(backend, session, "b")
    assert [e.kind for e in first].count("session_started") == 1
    assert [e.kind for e in second].count("session_started") == 0
    assert second[0].data["turn_index"] == 1


def test_tool_use_turn_ends_and_the_next_prompt_answers_it(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(
        Reply(
            [
                Thinking("I should look it up", signature="sig-1"),
                Text("Let me check."),
                ToolUse("get_weather", {"city": "Paris"}, id="toolu_1", chunks=3),
            ]
        ),
        Text("It is 22 C in Paris."),
    )
    session = start(backend, server, tools=TOOLS)
    events = turn(backend, session, "Weather in Paris?")
    tool_use = next(e for e in events if e.kind == EventKind.TOOL_USE)
    assert tool_use.data["id"] == "toolu_1"
    assert tool_use.data["name"] == "get_weather"
    assert tool_use.data["input"] == {"city": "Paris"}
    assert "".join(e.data["partial_json"] for e in events if e.kind == "tool_input_delta") == (
        '{"city": "Paris"}'
    )
    thinking = next(e for e in events if e.kind == EventKind.THINKING)
    assert thinking.data["signature"] == "sig-1"
    result = events[-1]
    assert result.data["stop_reason"] == "tool_use"
    assert result.data["pending_tool_uses"] == [
        {"id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    session = advance(backend, session, events)
    assert [b["id"] for b in session.pending_tool_uses] == ["toolu_1"]

    events = turn(backend, session, "22 C")
    assert Response.from_events(events).text == "It is 22 C in Paris."
    second = server.model_requests[1].body
    assert second["tools"] == TOOLS
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "thinking", "thinking": "I should look it up", "signature": "sig-1"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert second["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 C"}],
    }


def test_several_tool_calls_answered_by_id(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(
        Reply([ToolUse("a", {}, id="toolu_a"), ToolUse("b", {"x": 1}, id="toolu_b")]),
        "thanks",
        Reply([ToolUse("a", {}, id="toolu_c")]),
    )
    session = start(backend, server, tools=[{"name": "a"}, {"name": "b"}])
    session = advance(backend, session, turn(backend, session, "go"))
    prompt = tool_results_prompt([ToolResult("toolu_b", "B!"), ToolResult("toolu_a", "boom", True)])
    session = advance(backend, session, turn(backend, session, prompt))
    blocks = server.model_requests[1].body["messages"][-1]["content"]
    assert blocks == [
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "B!"},
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "boom", "is_error": True},
    ]
    # Answers that do not match the pending calls are refused before any request.
    session = advance(backend, session, turn(backend, session, "next"))
    events = turn(backend, session, tool_results_prompt({"toolu_wrong": "x"}))
    error = error_of(events)
    assert error.kind == BackendErrorKind.INVALID_REQUEST
    assert "toolu_c" in str(error)
    assert len(server.model_requests) == 3


def test_two_turns_send_the_whole_history(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script("first answer", "second answer")
    session = start(backend, server)
    session = advance(backend, session, turn(backend, session, "first prompt"))
    assert session.turn_index == 1
    events = turn(backend, session, "second prompt")
    assert Response.from_events(events).text == "second answer"
    assert server.model_requests[1].body["messages"] == [
        {"role": "user", "content": "first prompt"},
        {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
        {"role": "user", "content": "second prompt"},
    ]


def test_resume_in_a_fresh_backend_after_pickling(server: FakeLLMServer) -> None:
    server.script("remembered", "still here")
    first_backend = AnthropicBackend()
    session = start(first_backend, server)
    session = advance(first_backend, session, turn(first_backend, session, "remember 42"))
    first_backend.close()
    stored = pickle.dumps(session)

    restarted = AnthropicBackend()  # as in a new worker process
    try:
        resumed = restarted.resume_session(pickle.loads(stored))
        assert resumed == session
        events = turn(restarted, resumed, "what number?")
    finally:
        restarted.close()
    assert [e.kind for e in events].count("session_started") == 0
    assert Response.from_events(events).text == "still here"
    assert server.model_requests[1].body["messages"][:2] == [
        {"role": "user", "content": "remember 42"},
        {"role": "assistant", "content": [{"type": "text", "text": "remembered"}]},
    ]


def test_prompt_caching_marks_outgoing_copy_only(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script("a", "b")
    session = start(backend, server, system="sys", prompt_caching="1h")
    session = advance(backend, session, turn(backend, session, "one"))
    turn(backend, session, "two")
    body = server.model_requests[1].body
    breakpoint_ = {"type": "ephemeral", "ttl": "1h"}
    assert body["system"] == [{"type": "text", "text": "sys", "cache_control": breakpoint_}]
    assert body["messages"][0] == {"role": "user", "content": "one"}
    assert body["messages"][-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "two", "cache_control": breakpoint_}],
    }
    assert "cache_control" not in repr(session.messages)


def test_thinking_option_is_sent(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(Reply([Thinking("hmm", chunks=2), Text("ok")]))
    session = start(backend, server, thinking=2048)
    events = turn(backend, session, "think")
    assert server.model_requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert [e.data["text"] for e in events if e.kind == "thinking_delta"] == ["hm", "m"]


RESUME_SCRIPT = """
import pickle, sys
from genagent_thespian import Response, TurnContext
from genagent_thespian.backends.anthropic import AnthropicBackend
session = pickle.load(open(sys.argv[1], "rb"))
backend = AnthropicBackend()
events = list(backend.prompt(session, "and now?", TurnContext(agent="t", ref="r")))
backend.close()
print(events[-1].kind, Response.from_events(events).text)
"""


def test_resume_in_another_process(
    backend: AnthropicBackend, server: FakeLLMServer, tmp_path: Path
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
    assert server.model_requests[1].body["messages"][0] == {"role": "user", "content": "hello"}


# ------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options",
    [
        {"no_such": 1},
        {"model": ""},
        {"max_tokens": 0},
        {"max_tokens": True},
        {"temperature": 1.5},
        {"tools": "get_weather"},
        {"tools": [{"description": "no name"}]},
        {"thinking": 10},
        {"prompt_caching": "forever"},
        {"max_retries": -1},
        {"timeout": 0},
    ],
)
def test_bad_options_are_refused(
    backend: AnthropicBackend, server: FakeLLMServer, options: Any
) -> None:
    with pytest.raises(InvalidOption):
        start(backend, server, **options)


def test_options_must_be_a_mapping(backend: AnthropicBackend) -> None:
    with pytest.raises(InvalidOption, match="mapping"):
        backend.start_session(["model"])  # type: ignore[arg-type]  # the wrong type is the point


def test_bad_api_key_value_is_not_echoed(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    with pytest.raises(InvalidOption) as caught:
        backend.start_session({"api_key": 12345, "base_url": server.url})
    assert "12345" not in str(caught.value)


def test_missing_key_is_an_authentication_error(
    backend: AnthropicBackend, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(BackendError) as caught:
        backend.start_session({"base_url": server.url})
    assert caught.value.kind == BackendErrorKind.AUTHENTICATION
    assert not caught.value.retryable


def test_key_from_the_environment_is_read_at_turn_time_and_not_stored(
    backend: AnthropicBackend, server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    server.script("ok")
    session = backend.start_session({"base_url": server.url})
    assert session.api_key is None
    assert "sk-ant-from-env" not in repr(pickle.dumps(session))
    turn(backend, session, "hi")
    assert server.model_requests[0].auth_fingerprint == FakeLLMServer.fingerprint("sk-ant-from-env")


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("item", "kind", "retryable", "retry_after", "status"),
    [
        (HTTPError(401), BackendErrorKind.AUTHENTICATION, False, None, 401),
        (HTTPError(403), BackendErrorKind.AUTHENTICATION, False, None, 403),
        (HTTPError(400), BackendErrorKind.INVALID_REQUEST, False, None, 400),
        (HTTPError(429, retry_after=7), BackendErrorKind.RATE_LIMITED, True, 7.0, 429),
        (
            HTTPError(429, headers={"retry-after-ms": "1500"}),
            BackendErrorKind.RATE_LIMITED,
            True,
            1.5,
            429,
        ),
        (HTTPError(529, retry_after=2), BackendErrorKind.OVERLOADED, True, 2.0, 529),
        (HTTPError(500), BackendErrorKind.SERVER_ERROR, True, None, 500),
        (
            HTTPError(503, error_type="overloaded_error"),
            BackendErrorKind.OVERLOADED,
            True,
            None,
            503,
        ),
    ],
)
def test_http_errors_are_mapped(
    backend: AnthropicBackend,
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
    assert pickle.loads(pickle.dumps(error)) == error


def test_error_in_the_middle_of_a_200_stream(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(StreamError(Text("Hello from", chunks=2), error_type="overloaded_error"))
    session = start(backend, server)
    events = turn(backend, session, "hi")
    assert [e.data["text"] for e in events if e.kind == "text_delta"] == ["Hello", " from"]
    error = error_of(events)
    assert error.kind == BackendErrorKind.OVERLOADED
    assert error.retryable
    assert error.status_code is None
    assert "middle of the stream" in str(error)


def test_an_error_turn_leaves_the_session_unchanged(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(HTTPError(529), "fine now")
    session = start(backend, server)
    failed = turn(backend, session, "one")
    after = advance(backend, session, failed)
    assert after.messages == () and after.turn_index == 0
    events = turn(backend, after, "two")
    assert Response.from_events(events).text == "fine now"
    assert server.model_requests[1].body["messages"] == [{"role": "user", "content": "two"}]


def test_sdk_retries_are_configurable(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(HTTPError(429, retry_after=0), "after one retry")
    session = start(backend, server, max_retries=1)
    events = turn(backend, session, "hi")
    assert Response.from_events(events).text == "after one retry"
    assert len(server.model_requests) == 2


def test_default_is_no_sdk_retry(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(HTTPError(500), "never reached")
    events = turn(backend, start(backend, server), "hi")
    assert error_of(events).kind == BackendErrorKind.SERVER_ERROR
    assert len(server.model_requests) == 1


def test_garbage_sse_is_a_protocol_error(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(Raw("event: message_start\ndata: {this is not json\n\n"))
    error = error_of(turn(backend, start(backend, server), "hi"))
    assert error.kind == BackendErrorKind.PROTOCOL


def test_stream_cut_at_an_event_boundary_is_a_protocol_error(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    body = (
        'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        '"type":"message","role":"assistant","model":"m","content":[],"usage":'
        '{"input_tokens":1,"output_tokens":1}}}\n\n'
    )
    server.script(Raw(body))
    error = error_of(turn(backend, start(backend, server), "hi"))
    assert error.kind == BackendErrorKind.PROTOCOL
    assert "message_stop" in str(error)


def test_truncated_connection_is_a_transport_error(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(Truncated(Text("abcdef", chunks=3), after_events=4))
    events = turn(backend, start(backend, server), "hi")
    error = error_of(events)
    assert error.kind == BackendErrorKind.TRANSPORT
    assert error.retryable


def test_unreachable_server_is_a_transport_error(backend: AnthropicBackend) -> None:
    with FakeLLMServer() as gone:
        url = gone.url
    session = backend.start_session({"api_key": KEY, "base_url": url})
    error = error_of(turn(backend, session, "hi"))
    assert error.kind == BackendErrorKind.TRANSPORT


def pump_threads_end(timeout: float = 5.0) -> bool:
    """Wait until no anthropic turn thread is left (a cancelled stream must not linger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name.startswith("anthropic-turn-") for t in threading.enumerate()):
            return True
        threading.Event().wait(0.02)
    return False


def set_after_first_request(server: FakeLLMServer, event: threading.Event) -> None:
    """Set ``event`` once ``server`` has received a request (the target of a helper thread)."""
    server.wait_for_requests(1, timeout=10)
    event.set()


def _set_on_text(event: threading.Event, turn_event: Event) -> None:
    if turn_event.kind == "text_delta":
        event.set()


# ---------------------------------------------------------------------------- cancelling


def cancel_when(
    backend: AnthropicBackend,
    session: AnthropicSession,
    condition_event: threading.Event,
    ctx: TurnContext,
) -> tuple[list[Event], float]:
    """Run a turn, set ctx.cancelled once ``condition_event`` is set; return events, seconds."""
    outcome: dict[str, list[Event]] = {}

    def run() -> None:
        outcome["events"] = turn(backend, session, "go slowly", ctx=ctx)

    thread = threading.Thread(target=run)
    thread.start()
    assert condition_event.wait(10)
    cancelled_at = time.monotonic()
    ctx.cancelled.set()
    thread.join(10)
    assert not thread.is_alive()
    return outcome["events"], time.monotonic() - cancelled_at


def test_interrupt_mid_stream_ends_promptly_and_disconnects(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(Reply([Text("x" * 200, chunks=200)], chunk_delay=0.05))
    session = start(backend, server)
    ctx = TurnContext(agent="t", ref="r")
    streaming = threading.Event()
    outcome = {}

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
    took = time.monotonic() - cancelled_at
    assert not thread.is_alive()
    assert took < 1.0
    events = outcome["events"]
    error = error_of(events)
    assert error.kind == BackendErrorKind.CANCELLED
    assert not error.retryable
    assert events[-1].data["usage"].input_tokens == 12  # what message_start reported
    (request,) = server.model_requests
    assert request.wait_done(5)
    assert request.client_disconnected
    assert pump_threads_end()
    assert backend.update_session(session, events[-1]) is session


def test_interrupt_before_any_response_header(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(Hang())
    session = start(backend, server)
    ctx = TurnContext(agent="t", ref="r")
    arrived = threading.Event()
    threading.Thread(target=set_after_first_request, args=(server, arrived), daemon=True).start()
    events, took = cancel_when(backend, session, arrived, ctx)
    assert took < 1.0
    assert error_of(events).kind == BackendErrorKind.CANCELLED
    (request,) = server.model_requests
    assert request.wait_done(5)
    assert request.client_disconnected
    assert pump_threads_end()


def test_the_backend_serves_the_next_turn_after_a_cancel(
    backend: AnthropicBackend, server: FakeLLMServer
) -> None:
    server.script(Hang(prefix=Text("partial")), "after the cancel")
    session = start(backend, server)
    ctx = TurnContext(agent="t", ref="r")
    arrived = threading.Event()
    threading.Thread(target=set_after_first_request, args=(server, arrived), daemon=True).start()
    events, _ = cancel_when(backend, session, arrived, ctx)
    assert error_of(events).kind == BackendErrorKind.CANCELLED
    events = turn(backend, session, "again")
    assert Response.from_events(events).text == "after the cancel"


def test_cancelled_before_the_turn_starts(backend: AnthropicBackend, server: FakeLLMServer) -> None:
    server.script(Hang())
    ctx = TurnContext(agent="t", ref="r")
    ctx.cancelled.set()
    events = turn(backend, start(backend, server), "hi", ctx=ctx)
    assert error_of(events).kind == BackendErrorKind.CANCELLED


# ------------------------------------------------------------------------------- secrets


def test_api_key_never_shows(
    backend: AnthropicBackend, server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(HTTPError(401, message=f"Invalid key {KEY}"), StreamError("x", message=KEY))
    session = start(backend, server)
    assert KEY not in repr(session)
    assert KEY not in str(session)
    errors = [error_of(turn(backend, session, "hi")) for _ in range(2)]
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert KEY not in repr(error.__reduce__())
    assert KEY not in caplog.text
    assert "***" in str(errors[0])
