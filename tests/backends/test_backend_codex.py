"""Tests of the Codex CLI backend.

Three layers: the line translator fed with the real captures of codex-cli 0.169
(``tests/data/captures``), fake ``codex`` scripts for faults the real program cannot be made
to show on demand, and the real ``codex`` program (marker ``cli``) driven against
:class:`FakeLLMServer` through a ``-c model_providers.<name>`` provider.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends._process import group_members
from genagent_thespian.backends.codex import (
    CodexBackend,
    CodexSession,
    CodexTurnTranslator,
    classify_codex_error,
)
from support_cli import (
    Tracker,
    assert_groups_gone,
    fake_cli,
    kinds,
    outside_connections,
    quiet_env,
    require_cli,
    run_turn,
    strace_wrapper,
    terminal,
    wait_until,
)

from genagent_thespian import (
    BackendError,
    BackendErrorKind,
    Event,
    EventKind,
    InvalidOption,
    Response,
)
from genagent_thespian._os.ports import free_port
from genagent_thespian.testing._fake_llm_server import (
    FakeLLMServer,
    Hang,
    HTTPError,
    Reply,
    StreamError,
    Text,
    ToolUse,
)

CAPTURES = Path(__file__).resolve().parent.parent / "data" / "captures"
pytestmark = pytest.mark.timeout(90)


def translate(name: str, **kwargs: Any) -> list[Event]:
    translator = CodexTurnTranslator(**kwargs)
    events: list[Event] = []
    for line in (CAPTURES / name).read_bytes().splitlines():
        events += translator.feed_line(line)
    if translator.terminal is None:
        events += translator.finish(returncode=1, cancelled=False)
    return events


def error_of(event: Event) -> BackendError:
    assert event.kind == EventKind.ERROR, event
    error = event.data["error"]
    assert isinstance(error, BackendError)
    return error


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


# -- translator, from the real captures ---------------------------------------------------


def test_text_capture() -> None:
    events = translate("codex_text.jsonl")
    assert kinds(events) == [
        "session_started",
        "turn_started",
        "thinking",
        "text_delta",
        "text",
        "usage",
        "result",
    ]
    assert events[0].data["thread_id"] == "01a21059-1790-7000-92dc-95cbb01db23d"
    usage = events[5].data["usage"]
    # codex input_tokens include the cached ones; ours are uncached only.
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (480, 1920)
    assert (usage.output_tokens, usage.reasoning_output_tokens) == (40, 16)
    assert usage.scope == "turn" and usage.cost_usd is None
    result = terminal(events)
    assert result.data["text"] == "Hello from the fake Responses API."
    assert result.data["session_id"] == events[0].data["thread_id"]
    assert Response.from_events(events).text == "Hello from the fake Responses API."


def test_tool_capture() -> None:
    events = translate("codex_tool.jsonl")
    (tool,) = of_kind(events, EventKind.TOOL_USE)
    assert tool.data == {
        "id": "item_1",
        "kind": "shell",
        "name": "shell",
        "input": {"command": "/bin/bash -lc 'cat README.md'"},
    }
    (result,) = of_kind(events, EventKind.TOOL_RESULT)
    assert result.data["tool_use_id"] == "item_1"
    assert result.data["output"] == "hello from fake repo\n"
    assert (result.data["exit_code"], result.data["is_error"]) == (0, False)
    assert events.index(tool) < events.index(result)
    assert terminal(events).data["text"] == "The README says: hello from fake repo."


def test_usage_is_the_delta_of_the_thread_totals() -> None:
    previous = {
        "input_tokens": 4800,
        "cached_input_tokens": 3840,
        "cache_write_input_tokens": 0,
        "output_tokens": 80,
        "reasoning_output_tokens": 32,
    }
    events = translate(
        "codex_resume.jsonl", previous_usage=previous, resumed=True, known_history=True
    )
    usage = of_kind(events, EventKind.USAGE)[0].data["usage"]
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (
        480,
        1920,
        40,
    )
    assert usage.scope == "turn"
    assert terminal(events).data["cumulative_usage"]["input_tokens"] == 7200
    # Resumed without stored totals: only the cumulative figure is known, and it says so.
    events = translate("codex_resume.jsonl", resumed=True, known_history=True)
    usage = of_kind(events, EventKind.USAGE)[0].data["usage"]
    assert usage.scope == "cumulative" and usage.cache_read_input_tokens == 5760


@pytest.mark.parametrize(
    ("capture", "kind", "status"),
    [
        ("codex_auth401.jsonl", BackendErrorKind.AUTHENTICATION, 401),
        ("codex_nokey.jsonl", BackendErrorKind.AUTHENTICATION, None),
        ("codex_500.jsonl", BackendErrorKind.OVERLOADED, None),
    ],
)
def test_turn_failed_is_a_typed_failure_and_error_lines_are_notices(
    capture: str, kind: str, status: int | None
) -> None:
    events = translate(capture)
    error = error_of(terminal(events))
    assert (error.kind, error.status_code) == (kind, status)
    assert error.retryable == (kind in BackendErrorKind.RETRYABLE)
    assert not any(e.kind == EventKind.ERROR for e in events[:-1])
    notices = of_kind(events, EventKind.RETRY) + of_kind(events, EventKind.WARNING)
    assert notices, "the top-level error lines are reported as notices"
    assert "sk-fake-codex" not in error.message


def test_reconnect_lines_are_retries_and_an_endless_stream_has_no_terminal() -> None:
    translator = CodexTurnTranslator()
    events: list[Event] = []
    for line in (CAPTURES / "codex_noauth_default.jsonl").read_bytes().splitlines():
        events += translator.feed_line(line)
    assert translator.terminal is None
    assert len(of_kind(events, EventKind.RETRY)) == 6
    (item_warning,) = [
        w for w in of_kind(events, EventKind.WARNING) if w.data["code"] == "item_error"
    ]
    assert "Falling back" in item_warning.data["message"]


def test_interrupted_turn_gets_a_synthesized_cancelled_error() -> None:
    translator = CodexTurnTranslator()
    for line in (CAPTURES / "codex_sigint.jsonl").read_bytes().splitlines():
        translator.feed_line(line)
    (final,) = translator.finish(returncode=1, cancelled=True)
    assert error_of(final).kind == BackendErrorKind.CANCELLED
    started = json.loads((CAPTURES / "codex_sigint.jsonl").read_bytes().splitlines()[0])
    assert final.data["session_id"] == started["thread_id"]
    assert translator.finish(returncode=1, cancelled=True) == []


def test_stream_ending_early_is_a_process_exit_error_with_the_last_error() -> None:
    translator = CodexTurnTranslator()
    translator.feed({"type": "thread.started", "thread_id": "t"})
    translator.feed({"type": "error", "message": "something broke"})
    (final,) = translator.finish(returncode=1, stderr="Error: boom", cancelled=False)
    error = error_of(final)
    assert error.kind == BackendErrorKind.PROCESS_EXIT
    assert "status 1" in error.message and "something broke" in error.message
    assert "boom" in error.message


def test_other_items_and_garbage() -> None:
    translator = CodexTurnTranslator()
    mcp_started = {
        "type": "item.started",
        "item": {
            "id": "i1",
            "type": "mcp_tool_call",
            "server": "fs",
            "tool": "read",
            "arguments": {"p": 1},
        },
    }
    mcp_done = {
        "type": "item.completed",
        "item": {
            "id": "i1",
            "type": "mcp_tool_call",
            "server": "fs",
            "tool": "read",
            "arguments": {"p": 1},
            "result": {"content": [{"type": "text", "text": "x"}]},
            "status": "failed",
            "error": {"message": "denied"},
        },
    }
    change = {
        "type": "item.completed",
        "item": {
            "id": "i2",
            "type": "file_change",
            "changes": [{"path": "a", "kind": "add"}],
            "status": "completed",
        },
    }
    events = translator.feed(mcp_started) + translator.feed(mcp_done) + translator.feed(change)
    events += translator.feed_line(b"WARNING: not json")
    events += translator.feed(
        {"type": "item.updated", "item": {"id": "i3", "type": "todo_list", "items": []}}
    )
    assert kinds(events) == ["tool_use", "tool_result", "tool_use", "tool_result", "warning", "raw"]
    assert events[0].data["name"] == "mcp__fs__read" and events[0].data["kind"] == "mcp"
    assert events[1].data["is_error"] is True
    assert events[3].data["is_error"] is False and events[2].data["kind"] == "file_change"


@pytest.mark.parametrize(
    ("message", "kind", "status"),
    [
        (
            "unexpected status 401 Unauthorized: Incorrect API key",
            BackendErrorKind.AUTHENTICATION,
            401,
        ),
        (
            "exceeded retry limit, last status: 429 Too Many Requests",
            BackendErrorKind.RATE_LIMITED,
            429,
        ),
        ("unexpected status 529 <unknown status code>", BackendErrorKind.OVERLOADED, 529),
        (
            "Selected model is at capacity. Please try a different model.",
            BackendErrorKind.OVERLOADED,
            None,
        ),
        ("unexpected status 502 Bad Gateway", BackendErrorKind.SERVER_ERROR, 502),
        ("unexpected status 400 Bad Request: bad", BackendErrorKind.INVALID_REQUEST, 400),
        ("stream disconnected before completion", BackendErrorKind.TRANSPORT, None),
        ("something odd", BackendErrorKind.UNKNOWN, None),
    ],
)
def test_classify_codex_error(message: str, kind: str, status: int | None) -> None:
    assert classify_codex_error(message) == (kind, status)


# -- options and argv -----------------------------------------------------------------------


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    return fake_cli(tmp_path, "print('never run')\n", name="codex")


def test_options_are_validated(tmp_path: Path, fake_binary: str) -> None:
    backend = CodexBackend()
    session = backend.start_session(
        {"binary": fake_binary, "cwd": tmp_path, "sandbox": "read-only"}
    )
    assert isinstance(session, CodexSession) and session.thread_id is None
    assert pickle.loads(pickle.dumps(session)) == session
    bad_options: list[dict[str, Any]] = [
        {"system_prompt": "x"},
        {"sandbox": "none"},
        {"approval_policy": "always"},
        {"model": ""},
        {"config": {"bad key": 1}},
        {"config": {"k": object()}},
        {"provider": {"name": "fake"}},
        {"provider": {"name": "fa ke", "base_url": "http://x"}},
        {"provider": {"name": "f", "base_url": "http://x", "colour": "red"}},
        {"provider": {"name": "f", "base_url": "http://x", "request_max_retries": "1"}},
        {"env": {"K": 1}},
        {"cwd": tmp_path / "missing"},
        {"max_line_bytes": 0},
    ]
    for bad in bad_options:
        with pytest.raises(InvalidOption, match="codex"):
            backend.start_session({"binary": fake_binary, **bad})


def test_command_puts_every_flag_before_resume(tmp_path: Path, fake_binary: str) -> None:
    backend = CodexBackend()
    session = backend.start_session(
        {
            "binary": fake_binary,
            "cwd": tmp_path,
            "model": "gpt-5.5",
            "sandbox": "workspace-write",
            "approval_policy": "never",
            "config": {"model_reasoning_effort": "high", "features.x": True, "n": 3},
            "provider": {"name": "fake", "base_url": "http://127.0.0.1:1/v1", "env_key": "K"},
        }
    )
    argv = backend.command(session, "--looks like a flag")
    assert argv[:4] == [fake_binary, "exec", "--json", "--skip-git-repo-check"]
    assert argv[-2:] == ["--", "--looks like a flag"]
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert 'model_provider="fake"' in overrides
    assert 'model_providers.fake.base_url="http://127.0.0.1:1/v1"' in overrides
    assert 'model_providers.fake.wire_api="responses"' in overrides
    assert 'model_reasoning_effort="high"' in overrides and "features.x=true" in overrides
    assert "n=3" in overrides and 'approval_policy="never"' in overrides
    assert "resume" not in argv
    resumed = backend.update_session(
        session,
        Event(EventKind.SESSION_STARTED, {"thread_id": "thread-1", "session_id": "thread-1"}),
    )
    argv = backend.command(resumed, "next")
    at = argv.index("resume")
    assert argv[at:] == ["resume", "thread-1", "--", "next"]
    assert argv.index("-s") < at and argv.index("-m") < at and argv.index("-c") < at


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "nowhere" / "codex")
    with pytest.raises(BackendError, match="nowhere/codex") as excinfo:
        CodexBackend().start_session({"binary": missing})
    assert not excinfo.value.retryable
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("GENAGENT_CODEX_BIN", raising=False)
    with pytest.raises(BackendError, match="'codex' not found on PATH"):
        CodexBackend().start_session({})
    binary = fake_cli(tmp_path, "print('x')\n", name="codex")
    backend = CodexBackend()
    session = backend.start_session({"binary": binary, "cwd": tmp_path})
    Path(binary).unlink()
    events, _ = run_turn(backend, session, "hi")
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.PROCESS_EXIT and binary in error.message


# -- fake codex programs ----------------------------------------------------------------------

FAKE_CODEX = """
import json, os, signal, sys, time

scenario = os.environ["FAKE_SCENARIO"]
sys.stderr.write("Reading additional input from stdin...\\n")
assert sys.stdin.read() == ""  # the backend closes stdin

def emit(obj):
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\\n")
    sys.stdout.flush()

emit({"type": "thread.started", "thread_id": "fake-thread"})
emit({"type": "turn.started"})
done = {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 4,
        "output_tokens": 2}}
if scenario == "garbage":
    emit("WARNING: proceeding, even though we could not create PATH aliases")
    emit("\\x1b[?25h")
    emit({"type": "item.completed",
          "item": {"id": "item_0", "type": "agent_message", "text": "fine"}})
    emit(done)
elif scenario == "huge":
    big = "q" * 1_500_000
    emit({"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": big}})
    emit(done)
elif scenario == "exit_early":
    emit({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "hm"}})
    sys.stderr.write("thread 'main' panicked: fake crash\\n")
    sys.exit(101)
elif scenario == "ignore_sigint":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    emit({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "hm"}})
    time.sleep(60)
"""


FAKE_APP_SERVER = """
import json, os, signal, sys, time

scenario = os.environ["FAKE_SCENARIO"]
assert sys.argv[1] == "app-server", sys.argv

def emit(obj):
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\\n")
    sys.stdout.flush()

def note(method, **params):
    emit({"method": method, "params": {"threadId": "fake-thread", "turnId": "t1", **params}})

usage = {"total": {"inputTokens": 10, "cachedInputTokens": 4, "outputTokens": 2}}
thinking = {"id": "i0", "type": "reasoning", "summary": ["hm"], "content": []}
for line in sys.stdin:
    request = json.loads(line)
    method, rid = request.get("method"), request.get("id")
    if method == "initialize":
        emit({"id": rid, "result": {"userAgent": "fake"}})
    elif method == "thread/start":
        emit({"id": rid, "result": {"thread": {"id": "fake-thread"}, "model": "m"}})
    elif method == "turn/start":
        emit({"id": rid, "result": {"turn": {"id": "t1", "status": "inProgress"}}})
        note("turn/started", turn={"id": "t1"})
        if scenario == "garbage":
            emit("WARNING: proceeding, even though we could not create PATH aliases")
            emit("\\x1b[?25h")
            note("item/completed", item={"id": "i0", "type": "agentMessage", "text": "fine"})
        elif scenario == "huge":
            big = {"id": "i0", "type": "agentMessage", "text": "q" * 1_500_000}
            note("item/completed", item=big)
        elif scenario == "exit_early":
            note("item/completed", item=thinking)
            sys.stderr.write("thread 'main' panicked: fake crash\\n")
            sys.exit(101)
        elif scenario == "ignore_sigint":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            note("item/completed", item=thinking)
            continue  # and never answers turn/interrupt
        note("thread/tokenUsage/updated", tokenUsage=usage)
        note("turn/completed", turn={"id": "t1", "status": "completed"})
    elif method == "turn/interrupt":
        time.sleep(60)
"""

MODES = ["app_server", "exec"]


@pytest.fixture(params=MODES)
def fake_codex(request: Any, tmp_path: Path) -> Iterator[tuple[CodexBackend, Tracker, Any]]:
    mode = request.param
    script = FAKE_APP_SERVER if mode == "app_server" else FAKE_CODEX
    binary = fake_cli(tmp_path, script, name="codex")
    backend = CodexBackend()
    tracker = Tracker()

    def session(scenario: str, **options: Any) -> CodexSession:
        env = {"FAKE_SCENARIO": scenario}
        return backend.start_session(
            {"binary": binary, "cwd": tmp_path, "env": env, "mode": mode, **options}
        )

    yield backend, tracker, session
    backend.close()
    assert_groups_gone(tracker.groups)
    assert all((g, False) in tracker.calls for g in tracker.groups)


def test_fake_garbage_on_stdout_is_reported(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    events, s = run_turn(backend, session("garbage"), "hi", tracker.context())
    assert terminal(events).data["text"] == "fine"
    assert len([w for w in of_kind(events, EventKind.WARNING) if w.data["code"] == "garbage"]) == 2
    assert s.thread_id == "fake-thread" and s.turns == 1


def test_fake_line_larger_than_one_megabyte(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    events, _ = run_turn(backend, session("huge"), "hi", tracker.context())
    assert len(terminal(events).data["text"]) == 1_500_000
    events, _ = run_turn(backend, session("huge", max_line_bytes=50_000), "hi", tracker.context())
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.PROTOCOL and "50000-byte" in error.message


def test_fake_exit_without_terminal_event(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    events, _ = run_turn(backend, session("exit_early"), "hi", tracker.context())
    final = terminal(events)
    error = error_of(final)
    assert error.kind == BackendErrorKind.PROCESS_EXIT and final.data["returncode"] == 101
    assert "fake crash" in error.message


def test_fake_turn_cancelled_before_it_starts_runs_nothing(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    ctx = tracker.context()
    ctx.cancelled.set()
    events, _ = run_turn(backend, session("garbage"), "hi", ctx)
    assert [e.kind for e in events] == [EventKind.ERROR]
    assert error_of(events[0]).kind == BackendErrorKind.CANCELLED
    assert tracker.calls == []


def test_fake_ignored_sigint_escalates(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    ctx = tracker.context()

    def on_event(event: Event) -> None:
        if event.kind == EventKind.THINKING:
            ctx.cancelled.set()

    events, _ = run_turn(
        backend, session("ignore_sigint", interrupt_grace_s=0.3), "hi", ctx, on_event=on_event
    )
    assert error_of(terminal(events)).kind == BackendErrorKind.CANCELLED
    assert_groups_gone(tracker.groups)


# -- the real codex program ---------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


class RealCodex:
    """The real codex program pointed at the fake server, with a tracked backend."""

    def __init__(self, binary: str, server: FakeLLMServer, tmp_path: Path, mode: str) -> None:
        self.mode = mode
        self.binary = binary
        self.server = server
        self.home = tmp_path / "home"
        (self.home / ".codex").mkdir(parents=True)
        self.workdir = tmp_path / "project"
        self.workdir.mkdir()
        (self.workdir / "README.md").write_text("hello from fake repo\n")
        self.tracker = Tracker()
        self.backends: list[CodexBackend] = []

    def options(self, retries: int = 0, **extra: Any) -> dict[str, Any]:
        provider = {
            "name": "fake",
            "base_url": self.server.openai_base_url,
            "env_key": "GENAGENT_TEST_CODEX_KEY",
            "supports_websockets": False,
            "request_max_retries": retries,
            "stream_max_retries": retries,
        }
        env = {**quiet_env(self.home), "GENAGENT_TEST_CODEX_KEY": "sk-codex-test-not-real"}
        return {
            "mode": self.mode,
            "binary": self.binary,
            "cwd": self.workdir,
            "env": env,
            "model": "gpt-5.5",
            "sandbox": "danger-full-access",
            "provider": provider,
            # Keep codex off the network: no update check, analytics or plugin sync
            # (without these it looks up github.com in the background).
            "config": {
                "check_for_update_on_startup": False,
                "analytics.enabled": False,
                "feedback.enabled": False,
                "features.plugins": False,
                "features.apps": False,
            },
            **extra,
        }

    def backend(self) -> CodexBackend:
        backend = CodexBackend()
        self.backends.append(backend)
        return backend

    def turn(
        self, backend: CodexBackend, session: Any, prompt: str, **kwargs: Any
    ) -> tuple[list[Event], Any]:
        ctx = kwargs.pop("ctx", None) or self.tracker.context()
        return run_turn(backend, session, prompt, ctx, **kwargs)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        assert_groups_gone(self.tracker.groups)


@pytest.fixture(params=MODES)
def real(request: Any, server: FakeLLMServer, tmp_path: Path) -> Iterator[RealCodex]:
    harness = RealCodex(require_cli("codex"), server, tmp_path, request.param)
    yield harness
    harness.close()


def input_text(request: Any) -> str:
    return json.dumps(request.body.get("input"))


@pytest.mark.cli
def test_real_text_turn(real: RealCodex) -> None:
    real.server.script(Text("Hello from the fake Responses API."))
    backend = real.backend()
    session = backend.start_session(real.options())
    events, session = real.turn(backend, session, "Say hello")
    final = terminal(events)
    assert final.kind == EventKind.RESULT, final.data
    assert final.data["text"] == "Hello from the fake Responses API."
    assert session.thread_id and final.data["session_id"] == session.thread_id
    usage = Response.from_events(events).usage
    assert usage is not None and usage.output_tokens > 0 and usage.scope == "turn"
    (request,) = real.server.model_requests
    assert request.model == "gpt-5.5" and "Say hello" in input_text(request)
    assert request.auth_fingerprint == FakeLLMServer.fingerprint("sk-codex-test-not-real")
    if real.mode == "exec":
        assert_groups_gone(real.tracker.groups)  # one process per turn, gone with it
    else:
        (pgid,) = real.tracker.groups
        assert group_members(pgid), "the session's app-server lives on between turns"
        assert backend.app_server_pid(session) == pgid
        backend.terminate_session(session)
        assert_groups_gone([pgid])
        assert (pgid, False) in real.tracker.calls


@pytest.mark.cli
def test_real_codex_connects_only_to_loopback(real: RealCodex, tmp_path: Path) -> None:
    wrapper, log = strace_wrapper(tmp_path, real.binary)
    real.server.script(Text("quiet"))
    backend = real.backend()
    events, _ = real.turn(
        backend, backend.start_session({**real.options(), "binary": wrapper}), "hi"
    )
    assert terminal(events).data["text"] == "quiet"
    assert any("127.0.0.1" in line for line in log.read_text().splitlines())
    assert outside_connections(log) == []


@pytest.mark.cli
def test_real_tool_use_turn_runs_the_command(real: RealCodex) -> None:
    real.server.script(ToolUse("exec_command", {"cmd": "cat README.md"}), Text("It says hello."))
    backend = real.backend()
    events, _ = real.turn(
        backend, backend.start_session(real.options()), "What does README.md say?"
    )
    assert terminal(events).data["text"] == "It says hello."
    (tool,) = of_kind(events, EventKind.TOOL_USE)
    assert tool.data["kind"] == "shell" and "cat README.md" in tool.data["input"]["command"]
    (result,) = of_kind(events, EventKind.TOOL_RESULT)
    assert "hello from fake repo" in result.data["output"] and result.data["exit_code"] == 0
    assert "hello from fake repo" in input_text(real.server.model_requests[1])


@pytest.mark.cli
def test_real_resume_two_turns_and_after_a_restart(real: RealCodex) -> None:
    real.server.script(Text("Noted: green."), Text("Still green."), Text("Green, as before."))
    backend = real.backend()
    session = backend.start_session(real.options())
    events, session = real.turn(backend, session, "My colour is green.")
    first_usage = of_kind(events, EventKind.USAGE)[0].data["usage"]
    thread_id = session.thread_id
    seen: list[list[str]] = []

    def record_argv(event: Event) -> None:
        if event.kind == EventKind.SESSION_STARTED:
            with open(f"/proc/{real.tracker.groups[-1]}/cmdline", "rb") as f:
                seen.append([p.decode() for p in f.read().split(b"\0") if p])

    events, session = real.turn(backend, session, "And now?", on_event=record_argv)
    assert terminal(events).data["session_id"] == thread_id
    assert "My colour is green." in input_text(real.server.model_requests[1])
    assert "Noted: green." in input_text(real.server.model_requests[1])
    second_usage = of_kind(events, EventKind.USAGE)[0].data["usage"]
    cumulative = terminal(events).data["cumulative_usage"]
    assert second_usage.scope == "turn"
    assert (
        second_usage.total_input_tokens + first_usage.total_input_tokens
        == cumulative["input_tokens"]
    )
    if real.mode == "exec":
        argv = seen[0]
        at = argv.index("resume")
        assert argv[at : at + 2] == ["resume", thread_id] and argv[-2:] == ["--", "And now?"]
        assert argv.index("-m") < at and argv.index("-s") < at
    else:
        assert seen == [] and len(real.tracker.groups) == 1  # the same app-server, same thread
    # A new backend instance (the worker was replaced, its processes ended) continues the
    # same thread.
    backend.close()
    restarted = real.backend()
    stored = restarted.resume_session(pickle.loads(pickle.dumps(session)))
    events, stored = real.turn(restarted, stored, "Which colour?")
    assert terminal(events).data.get("text") == "Green, as before.", terminal(events).data
    assert terminal(events).data["session_id"] == thread_id
    assert "My colour is green." in input_text(real.server.model_requests[2])
    assert stored.turns == 3
    if real.mode == "app_server":  # the new instance resumed the thread in its own process
        assert len(real.tracker.groups) == 2
        resumed = [e for e in events if e.kind == EventKind.SESSION_STARTED]
        assert [e.data["resumed"] for e in resumed] == [True]


@pytest.mark.cli
def test_real_interrupt_mid_stream_synthesizes_cancelled(real: RealCodex) -> None:
    real.server.script(Reply([Text("word " * 60, chunks=60)], chunk_delay=0.1))
    backend = real.backend()
    session = backend.start_session(real.options())
    ctx = real.tracker.context()

    def cancel_once_asked() -> None:
        real.server.wait_for_requests(1, timeout=30)
        ctx.cancelled.set()

    watcher = threading.Thread(target=cancel_once_asked)
    watcher.start()
    events, session = real.turn(backend, session, "talk slowly", ctx=ctx)
    watcher.join(10)
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.CANCELLED
    if real.mode == "app_server":  # codex ended the turn itself (turn/completed interrupted)
        assert error.message == "codex turn cancelled (interrupted)"
    assert_groups_gone(real.tracker.groups)
    assert session.thread_id  # learned before the interrupt, so the thread can go on
    real.server.script(Text("after the interrupt"))
    events, _ = real.turn(backend, session, "go on")
    assert terminal(events).data["text"] == "after the interrupt"


@pytest.mark.cli
@pytest.mark.parametrize("how", ["close", "terminate_session"])
def test_real_close_ends_a_turn_in_flight(real: RealCodex, how: str) -> None:
    hang = Hang()
    real.server.script(hang)
    backend = real.backend()
    session = backend.start_session(real.options())
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["events"], _ = real.turn(backend, session, "hang")

    thread = threading.Thread(target=run)
    thread.start()
    real.server.wait_for_requests(1, timeout=30)
    groups = wait_until(lambda: real.tracker.groups, 10, "the process group")
    assert group_members(groups[0])
    if how == "close":
        backend.close()  # what the worker does when the watchdog retires it
    else:
        backend.terminate_session(pickle.loads(pickle.dumps(session)))  # the agent stops
    thread.join(30)
    assert not thread.is_alive()
    assert error_of(terminal(outcome["events"])).kind == BackendErrorKind.CANCELLED
    assert_groups_gone(real.tracker.groups)
    hang.release()


@pytest.mark.cli
@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (HTTPError(401), BackendErrorKind.AUTHENTICATION, 401),
        (HTTPError(529), BackendErrorKind.OVERLOADED, 529),
        (HTTPError(500), BackendErrorKind.OVERLOADED, None),
        (StreamError(partial=Text("Hello from", chunks=2)), BackendErrorKind.OVERLOADED, None),
    ],
)
def test_real_failures_are_typed(
    real: RealCodex, reply: Any, kind: str, status: int | None
) -> None:
    real.server.script(reply)
    backend = real.backend()
    events, session = real.turn(backend, backend.start_session(real.options()), "hi")
    error = error_of(terminal(events))
    assert (error.kind, error.status_code) == (kind, status), error
    assert "sk-codex-test" not in error.message
    assert session.thread_id  # the thread survives a failed turn
    real.server.script(Text("recovered"))
    events, _ = real.turn(backend, session, "again")
    assert terminal(events).data["text"] == "recovered"


@pytest.mark.cli
def test_real_429_with_retry_after_is_retried_then_rate_limited(real: RealCodex) -> None:
    real.server.script(HTTPError(429, retry_after=1), HTTPError(429, retry_after=1))
    backend = real.backend()
    events, _ = real.turn(backend, backend.start_session(real.options(retries=1)), "hi")
    assert of_kind(events, EventKind.RETRY), kinds(events)
    error = error_of(terminal(events))
    assert (error.kind, error.status_code, error.retryable) == (
        BackendErrorKind.RATE_LIMITED,
        429,
        True,
    )
    assert len(real.server.model_requests) == 2


@pytest.mark.cli
def test_real_resume_of_a_thread_codex_lost_is_session_lost(real: RealCodex) -> None:
    backend = real.backend()
    session = backend.start_session(real.options(thread_id="00000000-0000-4000-8000-000000000000"))
    events, _ = real.turn(backend, session, "hello again")
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.SESSION_LOST and not error.retryable
    assert real.server.model_requests == []
    fresh = backend.renew_session(session)
    assert fresh.thread_id is None and fresh.options == session.options


@pytest.mark.cli
def test_real_unreachable_api_is_a_transport_error_within_the_budget(real: RealCodex) -> None:
    port = free_port()  # a loopback port nothing listens on
    options = real.options(max_network_retries=1)
    options["provider"] = {**options["provider"], "base_url": f"http://127.0.0.1:{port}/v1"}
    backend = real.backend()
    started = time.monotonic()
    events, _ = real.turn(backend, backend.start_session(options), "hello?")
    elapsed = time.monotonic() - started
    error = error_of(terminal(events))
    assert (error.kind, error.retryable) == (BackendErrorKind.TRANSPORT, True), error
    assert "max_network_retries" in error.message
    assert len(of_kind(events, EventKind.RETRY)) == 2  # the one allowed, and the one too many
    assert elapsed < 30, elapsed  # codex waits 5 s before its second attempt
    backend.close()
    assert_groups_gone(real.tracker.groups)


@pytest.mark.cli
def test_real_failure_then_success_streams_the_retry_then_the_result(real: RealCodex) -> None:
    real.server.script(HTTPError(429, retry_after=1), Text("second attempt"))
    backend = real.backend()
    events, _ = real.turn(backend, backend.start_session(real.options(retries=1)), "hi")
    assert terminal(events).data["text"] == "second attempt"
    retry_at = kinds(events).index(EventKind.RETRY)
    assert retry_at < kinds(events).index(EventKind.RESULT)
    assert len(real.server.model_requests) == 2


def test_fake_session_stored_before_app_server_mode_still_runs(fake_codex: Any) -> None:
    backend, tracker, session = fake_codex
    current = session("garbage")
    stored = CodexSession.__new__(CodexSession)
    stored.__setstate__(current.__getstate__()[:-1])  # the state of a record without `key`
    assert stored.key == "" and stored.options == current.options
    events, after = run_turn(backend, stored, "hi", tracker.context())
    assert terminal(events).data["text"] == "fine"
    assert after.turns == 1
