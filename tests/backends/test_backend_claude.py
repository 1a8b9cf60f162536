"""Tests of the Claude Code CLI backend.

Three layers: the line translator fed with the real captures of claude 2.1.331
(``tests/data/captures``), fake ``claude`` scripts for the faults the real program cannot
be made to show on demand (garbage, huge lines, a crash), and the real ``claude`` program
(marker ``cli``) driven against :class:`FakeLLMServer`.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends._process import group_members
from genagent_thespian.backends.claude import (
    SUBAGENT,
    ClaudeBackend,
    ClaudeSession,
    ClaudeTurnTranslator,
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
    translator = ClaudeTurnTranslator(**kwargs)
    events: list[Event] = []
    for line in (CAPTURES / name).read_bytes().splitlines():
        events += translator.feed_line(line)
    if translator.terminal is None:
        events += translator.finish(returncode=None, cancelled=False)
    return events


def error_of(event: Event) -> BackendError:
    assert event.kind == EventKind.ERROR, event
    error = event.data["error"]
    assert isinstance(error, BackendError)
    return error


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


# -- translator, from the real captures ---------------------------------------------------


def test_text_capture_gives_session_text_usage_and_result() -> None:
    events = translate("claude_text.jsonl")
    assert kinds(events) == ["session_started", "turn_started", "text", "usage", "result"]
    started = events[0].data
    assert started["session_id"] == "78f90e46-af68-4640-93b9-c653d7d0740c"
    assert started["model"] == "claude-sonnet-4-5"
    usage = events[3].data["usage"]
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (12, 4096, 9)
    assert usage.cost_usd == pytest.approx(0.0013998)
    result = terminal(events)
    assert result.data["text"] == "Hello from the fake API."
    assert result.data["session_id"] == started["session_id"]
    assert result.data["stop_reason"] == "end_turn"
    assert Response.from_events(events).text == "Hello from the fake API."


def test_partial_capture_streams_deltas_without_doubling_the_text() -> None:
    events = translate("claude_tool_partial.jsonl")
    terminal(events)
    deltas = "".join(e.data["text"] for e in of_kind(events, EventKind.TEXT_DELTA))
    blocks = [e.data for e in of_kind(events, EventKind.TEXT)]
    assert deltas == "Let me read the file.The file says: hello from fake repo."
    assert "".join(b["text"] for b in blocks) == deltas
    assert all(b["streamed"] for b in blocks)
    (tool,) = of_kind(events, EventKind.TOOL_USE)
    assert tool.data["name"] == "Read" and tool.data["kind"] == "function"
    assert tool.data["input"] == {"file_path": "/home/user/project/README.md"}
    partial_json = "".join(
        e.data["partial_json"] for e in of_kind(events, EventKind.TOOL_INPUT_DELTA)
    )
    assert json.loads(partial_json) == tool.data["input"]
    assert {e.data["id"] for e in of_kind(events, EventKind.TOOL_INPUT_DELTA)} == {tool.data["id"]}
    (result,) = of_kind(events, EventKind.TOOL_RESULT)
    assert result.data["tool_use_id"] == tool.data["id"]
    assert "hello from fake repo" in result.data["output"]
    assert result.data["is_error"] is False
    assert not of_kind(events, EventKind.DISCARD)
    assert Response.from_events(events).text == "The file says: hello from fake repo."


def test_midstream_retry_capture_discards_the_abandoned_deltas() -> None:
    events = translate("claude_midstream.jsonl")
    (discard,) = of_kind(events, EventKind.DISCARD)
    abandoned = discard.data["message_id"]
    deltas = of_kind(events, EventKind.TEXT_DELTA)
    assert deltas and {e.data["message_id"] for e in deltas} == {abandoned}
    assert discard.data["from_block_index"] == 0
    assert events.index(discard) > events.index(deltas[-1])
    (text,) = of_kind(events, EventKind.TEXT)
    assert text.data == {"text": "ok", "message_id": text.data["message_id"], "streamed": False}
    assert terminal(events).data["text"] == "ok"


@pytest.mark.parametrize(
    ("capture", "kind", "status", "code"),
    [
        ("claude_auth401.jsonl", BackendErrorKind.AUTHENTICATION, 401, "authentication_error"),
        (
            "claude_notloggedin.jsonl",
            BackendErrorKind.AUTHENTICATION,
            None,
            "authentication_failed",
        ),
        ("claude_429.jsonl", BackendErrorKind.RATE_LIMITED, 429, "rate_limit_error"),
        ("claude_529.jsonl", BackendErrorKind.OVERLOADED, 529, "overloaded_error"),
        ("claude_maxturns.jsonl", BackendErrorKind.INVALID_REQUEST, None, "max_turns"),
        ("claude_resume_missing.jsonl", BackendErrorKind.SESSION_LOST, None, "not_found"),
        ("claude_sigint.jsonl", BackendErrorKind.CANCELLED, None, "aborted_streaming"),
    ],
)
def test_is_error_results_are_failures_with_mapped_kinds(
    capture: str, kind: str, status: int | None, code: str
) -> None:
    events = translate(capture)
    final = terminal(events)
    error = error_of(final)
    assert (error.kind, error.status_code, final.data["code"]) == (kind, status, code)
    assert error.retryable == (kind in BackendErrorKind.RETRYABLE)
    assert error.backend == "claude"
    prose = error.message.removeprefix("claude: ")
    assert all(e.data["text"] != prose for e in of_kind(events, EventKind.TEXT))  # not model text
    assert of_kind(events, EventKind.USAGE)


def test_retry_lines_become_retry_events_and_give_retry_after() -> None:
    events = translate("claude_429.jsonl")
    (retry,) = of_kind(events, EventKind.RETRY)
    assert retry.data["status_code"] == 429 and retry.data["message"] == "rate_limit"
    assert retry.data["delay_ms"] == 1175
    assert error_of(terminal(events)).retry_after == pytest.approx(1.175)


def test_a_stream_cut_without_result_is_a_process_exit_error() -> None:
    translator = ClaudeTurnTranslator()
    for line in (CAPTURES / "claude_sigterm.jsonl").read_bytes().splitlines():
        translator.feed_line(line)
    assert translator.terminal is None
    (final,) = translator.finish(returncode=-15, stderr="Killed", cancelled=False)
    error = error_of(final)
    assert error.kind == BackendErrorKind.PROCESS_EXIT
    assert "status -15" in error.message and "Killed" in error.message
    init = json.loads((CAPTURES / "claude_sigterm.jsonl").read_bytes().splitlines()[0])
    assert final.data["session_id"] == init["session_id"]
    assert translator.finish(returncode=-15, cancelled=False) == []  # only one terminal


def test_stream_input_capture_splits_into_a_cancelled_turn_and_a_good_one() -> None:
    lines = (CAPTURES / "claude_stream_input_interrupt.jsonl").read_bytes().splitlines()
    first = ClaudeTurnTranslator()
    rest = iter(lines)
    events: list[Event] = []
    for line in rest:
        events += first.feed_line(line)
        if first.terminal is not None:
            break
    assert error_of(terminal(events)).kind == BackendErrorKind.CANCELLED
    assert any(e.data.get("code") == "interrupted" for e in of_kind(events, EventKind.WARNING))
    cancelled_total = first.terminal.data["total_cost_usd"] if first.terminal else None
    second = ClaudeTurnTranslator(previous_total_cost=cancelled_total)
    events = []
    for line in rest:
        events += second.feed_line(line)
    final = terminal(events)
    assert final.kind == EventKind.RESULT and final.data["text"] == "Hello from the fake API."
    assert final.data["cost_usd"] == pytest.approx(final.data["total_cost_usd"] - cancelled_total)


def test_per_turn_cost_comes_from_the_cumulative_total() -> None:
    resumed = translate("claude_resume.jsonl", previous_total_cost=0.0013998)
    assert terminal(resumed).data["total_cost_usd"] == pytest.approx(0.0027996)
    assert terminal(resumed).data["cost_usd"] == pytest.approx(0.0013998)
    # Without model_usage_since_last_result the backend subtracts the previous total.
    line = json.loads((CAPTURES / "claude_resume.jsonl").read_bytes().splitlines()[-1])
    del line["model_usage_since_last_result"]
    translator = ClaudeTurnTranslator(previous_total_cost=0.0013998)
    (usage, result) = translator.feed(line)
    assert result.data["cost_usd"] == pytest.approx(0.0013998)
    assert usage.data["usage"].cost_usd == pytest.approx(0.0013998)


def test_subagent_lines_are_kept_apart_from_the_main_text() -> None:
    translator = ClaudeTurnTranslator()
    init = (CAPTURES / "claude_text.jsonl").read_bytes().splitlines()[0]
    translator.feed_line(init)
    inner = {
        "type": "assistant",
        "message": {"id": "msg_sub", "content": [{"type": "text", "text": "inner work"}]},
        "parent_tool_use_id": "toolu_task",
    }
    delta = {
        "type": "stream_event",
        "event": {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "in"},
        },
        "parent_tool_use_id": "toolu_task",
        "api_message_id": "msg_sub",
    }
    events = translator.feed(delta) + translator.feed(inner)
    assert [e.kind for e in events] == [SUBAGENT, SUBAGENT]
    assert events[1].data["event"] == EventKind.TEXT
    assert events[1].data["parent_tool_use_id"] == "toolu_task"
    assert events[1].data["text"] == "inner work"
    result = json.loads((CAPTURES / "claude_text.jsonl").read_bytes().splitlines()[-1])
    events += translator.feed(result)
    assert Response.from_events(events).text == "Hello from the fake API."
    assert not of_kind(events, EventKind.TEXT)


def test_garbage_and_unknown_lines_do_not_break_the_turn() -> None:
    translator = ClaudeTurnTranslator()
    events = translator.feed_line(b"[SandboxDebug] something")
    events += translator.feed_line(b"\x1b[?25h")
    events += translator.feed_line(b"[1, 2]")
    events += translator.feed_line(b'{"type": "brand_new_thing", "x": 1}')
    events += translator.feed_line(
        b'{"type": "rate_limit_event", "rate_limit_info": {"status": "rejected"}}'
    )
    assert [e.kind for e in events] == ["warning", "warning", "warning", "raw", "warning"]
    assert events[0].data["code"] == "garbage"
    assert events[-1].data["code"] == "rate_limit"
    for line in (CAPTURES / "claude_text.jsonl").read_bytes().splitlines():
        events += translator.feed_line(line)
    assert terminal(events).kind == EventKind.RESULT


# -- options, sessions, argv ---------------------------------------------------------------


@pytest.fixture
def fake_binary(tmp_path: Path) -> str:
    return fake_cli(tmp_path, "print('never run')\n", name="claude")


def test_start_session_validates_options(tmp_path: Path, fake_binary: str) -> None:
    backend = ClaudeBackend()
    good = backend.start_session(
        {
            "binary": fake_binary,
            "cwd": tmp_path,
            "model": "claude-sonnet-4-5",
            "max_turns": 3,
            "max_budget_usd": 2,
            "allowed_tools": ["Read", "Bash(git status:*)"],
            "include_partial_messages": True,
            "env": {"A": "1"},
        }
    )
    assert isinstance(good, ClaudeSession)
    assert good.cwd == str(tmp_path) and good.binary == fake_binary
    uuid.UUID(good.session_id)
    assert pickle.loads(pickle.dumps(good)) == good
    bad_options: list[dict[str, Any]] = [
        {"modle": "x"},
        {"max_turns": "3"},
        {"max_turns": 0},
        {"max_turns": True},
        {"max_budget_usd": -1},
        {"include_partial_messages": 1},
        {"permission_mode": "yolo"},
        {"allowed_tools": [1]},
        {"env": {"A": 1}},
        {"env": ["A=1"]},
        {"cwd": str(tmp_path / "missing")},
        {"cwd": 3},
        {"session_id": "not-a-uuid"},
        {"mode": "interactive"},
        {"binary": 5},
    ]
    for bad in bad_options:
        with pytest.raises(InvalidOption) as excinfo:
            backend.start_session({"binary": fake_binary, **bad})
        assert "claude" in str(excinfo.value)
    with pytest.raises(InvalidOption, match="secret"):
        backend.start_session({"binary": fake_binary, "env": {"K": 1}, "bogus_secret": 1})


def test_env_values_never_appear_in_option_errors(fake_binary: str) -> None:
    with pytest.raises(InvalidOption) as excinfo:
        ClaudeBackend().start_session(
            {"binary": fake_binary, "env": {"KEY": "sk-ant-secret-value", "N": 1}}
        )
    assert "sk-ant-secret-value" not in str(excinfo.value)


def test_command_line_of_both_modes(tmp_path: Path, fake_binary: str) -> None:
    backend = ClaudeBackend()
    session = backend.start_session(
        {
            "binary": fake_binary,
            "cwd": tmp_path,
            "model": "m",
            "append_system_prompt": "Be brief.",
            "permission_mode": "acceptEdits",
            "allowed_tools": ["Read", "Bash"],
            "disallowed_tools": "Write",
            "max_turns": 4,
            "max_budget_usd": 1.5,
            "include_partial_messages": True,
        }
    )
    argv = backend.command(session, prompt=None)
    assert argv[:5] == [fake_binary, "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[5:7] == ["--input-format", "stream-json"]
    for pair in (
        ["--model", "m"],
        ["--append-system-prompt", "Be brief."],
        ["--permission-mode", "acceptEdits"],
        ["--allowedTools", "Read,Bash"],
        ["--disallowedTools", "Write"],
        ["--max-turns", "4"],
        ["--max-budget-usd", "1.5"],
    ):
        i = argv.index(pair[0])
        assert argv[i : i + 2] == pair
    assert "--include-partial-messages" in argv
    assert argv[-1] == f"--session-id={session.session_id}"
    resumed = backend.resume_session(backend.update_session(session, Event.result("x")))
    per_turn = backend.command(resumed, prompt="-starts with a dash")
    assert "--input-format" not in per_turn
    assert per_turn[-3:] == [f"--resume={session.session_id}", "--", "-starts with a dash"]
    existing = backend.start_session(
        {"binary": fake_binary, "cwd": tmp_path, "session_id": session.session_id, "resume": True}
    )
    assert backend.command(existing, prompt=None)[-1] == f"--resume={session.session_id}"
    with pytest.raises(InvalidOption, match="resume"):
        backend.start_session({"binary": fake_binary, "resume": True})
    fresh = backend.resume_session(session)  # no turn yet: nothing to resume
    assert backend.command(fresh, prompt=None)[-1].startswith("--session-id=")


def test_update_session_keeps_id_turns_and_cumulative_cost(
    tmp_path: Path, fake_binary: str
) -> None:
    backend = ClaudeBackend()
    session = backend.start_session({"binary": fake_binary, "cwd": tmp_path})
    started = backend.update_session(
        session, Event(EventKind.SESSION_STARTED, {"session_id": session.session_id, "model": "m"})
    )
    assert started.started and started.model == "m" and started.turns == 0
    done = backend.update_session(
        started, Event.result("t", total_cost_usd=0.5, session_id=session.session_id)
    )
    assert (done.turns, done.total_cost_usd) == (1, 0.5)
    assert backend.update_session(done, Event(EventKind.TEXT, {"text": "x"})) is done


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "bin" / "claude")
    with pytest.raises(BackendError, match=str(tmp_path / "bin" / "claude")) as excinfo:
        ClaudeBackend().start_session({"binary": missing})
    assert excinfo.value.kind == BackendErrorKind.PROCESS_EXIT and not excinfo.value.retryable
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("GENAGENT_CLAUDE_BIN", raising=False)
    with pytest.raises(BackendError, match="not found on PATH"):
        ClaudeBackend().start_session({})
    monkeypatch.setenv("GENAGENT_CLAUDE_BIN", missing)
    with pytest.raises(BackendError, match="bin/claude"):
        ClaudeBackend().start_session({})


@pytest.mark.parametrize("mode", ["stream", "per_turn"])
def test_binary_removed_after_start_ends_the_turn_with_an_error(tmp_path: Path, mode: str) -> None:
    binary = fake_cli(tmp_path, "print('x')\n", name="claude")
    backend = ClaudeBackend()
    session = backend.start_session({"binary": binary, "cwd": tmp_path, "mode": mode})
    os.unlink(binary)
    events, _ = run_turn(backend, session, "hi")
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.PROCESS_EXIT
    assert binary in error.message
    backend.close()


# -- fake claude programs -----------------------------------------------------------------

FAKE_CLAUDE = """
import json, os, signal, sys, time

scenario = os.environ["FAKE_SCENARIO"]
ids = [a.split("=", 1)[1] for a in sys.argv if a.startswith(("--session-id=", "--resume="))]
sid = ids[0] if ids else "s"
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid()}) + "\\n")

def emit(obj):
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\\n")
    sys.stdout.flush()

def init():
    emit({"type": "system", "subtype": "init", "session_id": sid, "model": "fake-model",
          "cwd": os.getcwd()})

def assistant(text):
    emit({"type": "assistant", "message": {"id": "msg_1", "model": "fake-model",
          "content": [{"type": "text", "text": text}]}, "parent_tool_use_id": None,
          "session_id": sid})

def result(text, cost=0.01):
    emit({"type": "result", "subtype": "success", "is_error": False, "result": text,
          "session_id": sid, "total_cost_usd": cost, "stop_reason": "end_turn",
          "usage": {"input_tokens": 3, "output_tokens": 2}})

for line in sys.stdin:
    message = json.loads(line)
    if message.get("type") != "user":
        continue
    if scenario == "garbage":
        emit("[SandboxDebug] sandbox ready")
        init()
        emit("\\x1b[?25h")
        assistant("fine")
        emit("{not json")
        result("fine")
    elif scenario == "huge":
        init()
        big = "z" * 1_500_000
        assistant(big)
        result(big)
    elif scenario == "exit_early":
        init()
        assistant("partial")
        sys.stderr.write("fatal: the fake CLI crashed\\n")
        sys.exit(3)
    elif scenario == "ignore_interrupt":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        init()
        assistant("working")
        for control in sys.stdin:  # never answers the interrupt request
            pass
        time.sleep(60)
"""


@pytest.fixture
def fake_claude(tmp_path: Path) -> Iterator[tuple[ClaudeBackend, Tracker, Any]]:
    binary = fake_cli(tmp_path, FAKE_CLAUDE, name="claude")
    record = tmp_path / "record.jsonl"
    backend = ClaudeBackend()
    tracker = Tracker()

    def session(scenario: str, **options: Any) -> ClaudeSession:
        env = {"FAKE_SCENARIO": scenario, "FAKE_RECORD": str(record)}
        return backend.start_session({"binary": binary, "cwd": tmp_path, "env": env, **options})

    yield backend, tracker, session
    backend.close()
    assert_groups_gone(tracker.groups)


def test_garbage_on_stdout_is_reported_and_the_turn_succeeds(fake_claude: Any) -> None:
    backend, tracker, session = fake_claude
    events, _ = run_turn(backend, session("garbage"), "hi", tracker.context())
    final = terminal(events)
    assert final.kind == EventKind.RESULT and final.data["text"] == "fine"
    garbage = [e for e in of_kind(events, EventKind.WARNING) if e.data["code"] == "garbage"]
    assert len(garbage) == 3
    assert "[SandboxDebug]" in garbage[0].data["message"]


def test_a_line_larger_than_one_megabyte_is_read_whole(fake_claude: Any) -> None:
    backend, tracker, session = fake_claude
    events, _ = run_turn(backend, session("huge"), "hi", tracker.context())
    final = terminal(events)
    assert final.kind == EventKind.RESULT and len(final.data["text"]) == 1_500_000
    assert len(of_kind(events, EventKind.TEXT)[0].data["text"]) == 1_500_000


def test_a_line_over_the_cap_is_a_protocol_error_and_ends_the_process(fake_claude: Any) -> None:
    backend, tracker, session = fake_claude
    events, _ = run_turn(backend, session("huge", max_line_bytes=100_000), "hi", tracker.context())
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.PROTOCOL and "100000-byte" in error.message
    assert_groups_gone(tracker.groups)


def test_a_cli_that_exits_without_result_is_a_process_exit_error(
    fake_claude: Any, tmp_path: Path
) -> None:
    backend, tracker, session = fake_claude
    s = session("exit_early")
    events, s = run_turn(backend, s, "hi", tracker.context())
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.PROCESS_EXIT
    assert "status 3" in error.message and "fake CLI crashed" in error.message
    assert terminal(events).data["returncode"] == 3
    assert_groups_gone(tracker.groups)
    # The next turn starts a new process that resumes the session the CLI had recorded.
    events, _ = run_turn(backend, s, "again", tracker.context())
    assert error_of(terminal(events)).kind == BackendErrorKind.PROCESS_EXIT
    assert len(tracker.groups) == 2
    runs = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert f"--session-id={s.session_id}" in runs[0]["argv"]
    assert f"--resume={s.session_id}" in runs[1]["argv"]
    assert runs[1]["cwd"] == str(tmp_path)


def test_an_ignored_interrupt_escalates_to_killing_the_group(fake_claude: Any) -> None:
    backend, tracker, session = fake_claude
    ctx = tracker.context()

    def on_event(event: Event) -> None:
        if event.kind == EventKind.TEXT:
            ctx.cancelled.set()

    events, _ = run_turn(
        backend, session("ignore_interrupt", interrupt_grace_s=0.5), "hi", ctx, on_event=on_event
    )
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.CANCELLED
    assert_groups_gone(tracker.groups)
    assert (tracker.groups[0], False) in tracker.calls


# -- the real claude program --------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("hello from fake repo\n")
    return project


class RealClaude:
    """The real claude program pointed at the fake server, with a tracked backend."""

    def __init__(self, binary: str, server: FakeLLMServer, tmp_path: Path, workdir: Path) -> None:
        self.binary = binary
        self.server = server
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.workdir = workdir
        self.tracker = Tracker()
        self.backends: list[ClaudeBackend] = []

    def options(self, env: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        base_env = {
            **quiet_env(self.home),
            "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
            "ANTHROPIC_BASE_URL": self.server.url,
        }
        return {
            "binary": self.binary,
            "cwd": self.workdir,
            "env": {**base_env, **(env or {})},
            **extra,
        }

    def backend(self) -> ClaudeBackend:
        backend = ClaudeBackend()
        self.backends.append(backend)
        return backend

    def session(self, backend: ClaudeBackend, **extra: Any) -> ClaudeSession:
        return backend.start_session(self.options(**extra))

    def turn(
        self, backend: ClaudeBackend, session: Any, prompt: str, **kwargs: Any
    ) -> tuple[list[Event], Any]:
        ctx = kwargs.pop("ctx", None) or self.tracker.context()
        return run_turn(backend, session, prompt, ctx, **kwargs)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        assert_groups_gone(self.tracker.groups)


@pytest.fixture
def real(server: FakeLLMServer, tmp_path: Path, workdir: Path) -> Iterator[RealClaude]:
    harness = RealClaude(require_cli("claude"), server, tmp_path, workdir)
    yield harness
    harness.close()


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0") if part]


def texts_of(request: Any) -> str:
    return json.dumps(request.body.get("messages"))


@pytest.mark.cli
def test_real_text_turn_keeps_one_process_for_the_session(real: RealClaude) -> None:
    real.server.script(Text("Hello from the fake API."), Text("Second answer."))
    backend = real.backend()
    session = real.session(backend, model="claude-sonnet-4-5")
    events, session = real.turn(backend, session, "Say hello")
    final = terminal(events)
    assert final.kind == EventKind.RESULT, final.data
    assert kinds(events)[:2] == ["session_started", "turn_started"]
    assert final.data["session_id"] == session.session_id
    response = Response.from_events(events)
    assert response.text == "Hello from the fake API."
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.cost_usd is not None and response.usage.cost_usd > 0
    (request,) = real.server.model_requests
    assert request.model == "claude-sonnet-4-5"
    assert "Say hello" in texts_of(request)
    assert request.auth_fingerprint == FakeLLMServer.fingerprint("sk-ant-test-not-a-real-key")
    (pgid,) = real.tracker.groups
    assert group_members(pgid), "the session's process lives on between turns"
    # Second turn: same process, the request carries the first exchange.
    events, session = real.turn(backend, session, "And again")
    assert terminal(events).data["text"] == "Second answer."
    assert real.tracker.groups == [pgid]
    second = real.server.model_requests[1]
    assert "Say hello" in texts_of(second) and "Hello from the fake API." in texts_of(second)
    assert session.turns == 2
    assert session.total_cost_usd == pytest.approx(terminal(events).data["total_cost_usd"])
    first_cost = of_kind(events, EventKind.USAGE)[0].data["usage"].cost_usd
    assert first_cost is not None and first_cost < session.total_cost_usd
    backend.terminate_session(session)
    assert_groups_gone([pgid])
    assert (pgid, False) in real.tracker.calls


@pytest.mark.cli
def test_real_claude_connects_only_to_loopback(real: RealClaude, tmp_path: Path) -> None:
    wrapper, log = strace_wrapper(tmp_path, real.binary)
    real.server.script(Text("quiet"))
    backend = real.backend()
    session = backend.start_session({**real.options(), "binary": wrapper, "mode": "per_turn"})
    events, _ = real.turn(backend, session, "hi")
    assert terminal(events).data["text"] == "quiet"
    assert any("127.0.0.1" in line for line in log.read_text().splitlines())
    assert outside_connections(log) == []


@pytest.mark.cli
def test_real_per_turn_mode_resumes_with_the_same_session_id(real: RealClaude) -> None:
    real.server.script(Text("One."), Text("Two."))
    backend = real.backend()
    session = real.session(backend, mode="per_turn")
    seen: list[list[str]] = []

    def on_event(event: Event) -> None:
        if event.kind == EventKind.SESSION_STARTED:
            seen.append(cmdline(real.tracker.groups[-1]))

    events, session = real.turn(backend, session, "first", on_event=on_event)
    assert terminal(events).data["text"] == "One."
    events, session = real.turn(backend, session, "second", on_event=on_event)
    assert terminal(events).data["text"] == "Two."
    assert terminal(events).data["session_id"] == session.session_id
    assert f"--session-id={session.session_id}" in seen[0]
    assert f"--resume={session.session_id}" in seen[1]
    assert seen[1][-2:] == ["--", "second"]
    assert len(real.tracker.groups) == 2
    assert_groups_gone(real.tracker.groups)  # per-turn processes end with their turn
    assert "first" in texts_of(real.server.model_requests[1])


@pytest.mark.cli
def test_real_partial_messages_stream_deltas_once(real: RealClaude) -> None:
    real.server.script(Reply([Text("Streaming in several pieces.", chunks=4)]))
    backend = real.backend()
    session = real.session(backend, include_partial_messages=True)
    events, _ = real.turn(backend, session, "stream please")
    deltas = [e.data["text"] for e in of_kind(events, EventKind.TEXT_DELTA)]
    assert len(deltas) == 4
    (text,) = of_kind(events, EventKind.TEXT)
    assert "".join(deltas) == text.data["text"] == "Streaming in several pieces."
    assert text.data["streamed"] is True
    assert Response.from_events(events).text == "Streaming in several pieces."


@pytest.mark.cli
def test_real_tool_use_turn_runs_the_tool(real: RealClaude) -> None:
    real.server.script(
        Reply(
            [
                Text("Let me look."),
                ToolUse("Bash", {"command": "cat README.md", "description": "Read it"}),
            ]
        ),
        Text("It says hello."),
    )
    backend = real.backend()
    session = real.session(backend, allowed_tools=["Bash"])
    events, _ = real.turn(backend, session, "What does README.md say?")
    assert terminal(events).data["text"] == "It says hello."
    (tool,) = of_kind(events, EventKind.TOOL_USE)
    assert tool.data["name"] == "Bash" and tool.data["input"]["command"] == "cat README.md"
    (result,) = of_kind(events, EventKind.TOOL_RESULT)
    assert result.data["tool_use_id"] == tool.data["id"]
    assert "hello from fake repo" in str(result.data["output"])
    assert not result.data["is_error"]
    follow_up = real.server.model_requests[1]
    assert "tool_result" in texts_of(follow_up) and "hello from fake repo" in texts_of(follow_up)


@pytest.mark.cli
def test_real_resume_after_a_restart_of_the_process_holding_the_session(real: RealClaude) -> None:
    real.server.script(Text("Remembered: blue."), Text("You said blue."))
    first_backend = real.backend()
    session = real.session(first_backend)
    events, session = real.turn(first_backend, session, "My colour is blue.")
    assert terminal(events).kind == EventKind.RESULT
    first_backend.close()  # the worker retires: its process goes
    assert_groups_gone(real.tracker.groups)
    stored = pickle.loads(pickle.dumps(session))
    second_backend = real.backend()
    resumed = second_backend.resume_session(stored)
    seen: list[list[str]] = []
    events, resumed = real.turn(
        second_backend,
        resumed,
        "What is my colour?",
        on_event=lambda e: (
            seen.append(cmdline(real.tracker.groups[-1]))
            if e.kind == EventKind.SESSION_STARTED
            else None
        ),
    )
    final = terminal(events)
    assert final.data["text"] == "You said blue."
    assert final.data["session_id"] == session.session_id
    assert f"--resume={session.session_id}" in seen[0]
    assert not any(arg.startswith("--session-id") for arg in seen[0])
    second = real.server.model_requests[1]
    assert "My colour is blue." in texts_of(second) and "Remembered: blue." in texts_of(second)
    assert resumed.turns == 2


def _cancel_on_first(kind: str, ctx: Any) -> Any:
    def on_event(event: Event) -> None:
        if event.kind == kind:
            ctx.cancelled.set()

    return on_event


@pytest.mark.cli
def test_real_interrupt_mid_stream_ends_the_process_and_the_next_turn_resumes(
    real: RealClaude,
) -> None:
    real.server.script(
        Reply([Text("word " * 60, chunks=60)], chunk_delay=0.1), Text("Back after the interrupt.")
    )
    backend = real.backend()
    session = real.session(backend, include_partial_messages=True)
    ctx = real.tracker.context()
    events, session = real.turn(
        backend,
        session,
        "talk slowly",
        ctx=ctx,
        on_event=_cancel_on_first(EventKind.TEXT_DELTA, ctx),
    )
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.CANCELLED
    assert len(of_kind(events, EventKind.TEXT_DELTA)) < 60
    (pgid,) = real.tracker.groups
    # The in-band interrupt ended the turn; the process, maybe mid-tool, is not kept.
    assert_groups_gone([pgid])
    events, session = real.turn(backend, session, "carry on")
    assert terminal(events).data["text"] == "Back after the interrupt."
    assert len(real.tracker.groups) == 2
    assert "talk slowly" in json.dumps(real.server.model_requests[-1].body)


@pytest.mark.cli
def test_real_interrupt_per_turn_mode_ends_the_group(real: RealClaude) -> None:
    real.server.script(Reply([Text("word " * 60, chunks=60)], chunk_delay=0.1))
    backend = real.backend()
    session = real.session(backend, mode="per_turn", include_partial_messages=True)
    ctx = real.tracker.context()
    events, _ = real.turn(
        backend,
        session,
        "talk slowly",
        ctx=ctx,
        on_event=_cancel_on_first(EventKind.TEXT_DELTA, ctx),
    )
    assert error_of(terminal(events)).kind == BackendErrorKind.CANCELLED
    assert_groups_gone(real.tracker.groups)


@pytest.mark.cli
@pytest.mark.parametrize(
    ("mode", "how"), [("stream", "close"), ("per_turn", "close"), ("stream", "terminate_session")]
)
def test_real_close_ends_a_turn_in_flight(real: RealClaude, mode: str, how: str) -> None:
    hang = Hang(prefix=Text("starting"))
    real.server.script(hang)
    backend = real.backend()
    session = real.session(backend, mode=mode)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["events"], _ = real.turn(backend, session, "hang")

    thread = threading.Thread(target=run)
    thread.start()
    real.server.wait_for_requests(1, timeout=30)
    wait_until(lambda: real.tracker.groups, 10, "the process group")
    if how == "close":
        backend.close()  # what the worker does when the watchdog retires it
    else:
        backend.terminate_session(session)  # the agent stops
    thread.join(30)
    assert not thread.is_alive()
    assert error_of(terminal(outcome["events"])).kind == BackendErrorKind.CANCELLED
    assert_groups_gone(real.tracker.groups)
    hang.release()


@pytest.mark.cli
def test_real_killed_cli_is_a_process_exit_error(real: RealClaude) -> None:
    real.server.script(Reply([Text("word " * 60, chunks=60)], chunk_delay=0.1))
    backend = real.backend()
    session = real.session(backend, include_partial_messages=True)

    def kill_on_first_delta(event: Event) -> None:
        if event.kind == EventKind.TEXT_DELTA and not getattr(kill_on_first_delta, "done", False):
            kill_on_first_delta.done = True  # type: ignore[attr-defined]
            os.kill(real.tracker.groups[0], signal.SIGKILL)

    events, session = real.turn(backend, session, "talk", on_event=kill_on_first_delta)
    final = terminal(events)
    assert error_of(final).kind == BackendErrorKind.PROCESS_EXIT
    assert final.data["returncode"] == -signal.SIGKILL


@pytest.mark.cli
@pytest.mark.parametrize("mode", ["stream", "per_turn"])
def test_real_session_lost_before_claude_stored_it_starts_afresh(
    real: RealClaude, mode: str
) -> None:
    hang = Hang()
    real.server.script(hang)
    backend = real.backend()
    session = real.session(backend, mode=mode)

    def kill_at_start(event: Event) -> None:
        if event.kind == EventKind.SESSION_STARTED:
            os.kill(real.tracker.groups[-1], signal.SIGKILL)

    events, session = real.turn(backend, session, "first", on_event=kill_at_start)
    assert error_of(terminal(events)).kind == BackendErrorKind.PROCESS_EXIT
    assert session.started and session.turns == 0
    real.server.release_hangs()  # the killed process may or may not have asked already
    real.server.clear_script()
    real.server.script(Text("a fresh start"))
    events, session = real.turn(backend, session, "second")
    final = terminal(events)
    assert final.kind == EventKind.RESULT and final.data["text"] == "a fresh start"
    assert final.data["session_id"] == session.session_id
    assert any(e.data.get("code") == "session_not_recorded" for e in events)
    assert len(real.tracker.groups) == 3  # the killed one, the failed resume, the fresh one


@pytest.mark.cli
@pytest.mark.parametrize("mode", ["stream", "per_turn"])
def test_real_session_already_in_use_is_resumed(real: RealClaude, mode: str) -> None:
    real.server.script(Text("noted"), Text("It was ALBATROSS."))
    backend = real.backend()
    unannounced = real.session(backend, mode=mode)
    events, _ = real.turn(backend, unannounced, "Remember the word ALBATROSS")
    assert terminal(events).kind == EventKind.RESULT
    backend.close()
    # A record that missed claude's announcement still says "not started": claude refuses
    # --session-id for a session it has, and the backend resumes it instead.
    events, session = real.turn(real.backend(), unannounced, "Which word?")
    final = terminal(events)
    assert final.kind == EventKind.RESULT and final.data["text"] == "It was ALBATROSS."
    assert any(e.data.get("code") == "session_in_use" for e in events)
    assert session.started and session.session_id == unannounced.session_id
    assert "Remember the word ALBATROSS" in json.dumps(real.server.model_requests[-1].body)


@pytest.mark.cli
def test_real_resume_of_a_session_claude_lost_is_session_lost(real: RealClaude) -> None:
    backend = real.backend()
    session = real.session(backend, session_id=str(uuid.uuid4()), resume=True)
    events, _ = real.turn(backend, session, "hello again")
    error = error_of(terminal(events))
    assert error.kind == BackendErrorKind.SESSION_LOST and not error.retryable
    assert real.server.model_requests == []  # no blank session was started


def test_a_turn_cancelled_before_it_starts_runs_nothing(fake_claude: Any) -> None:
    backend, tracker, session = fake_claude
    ctx = tracker.context()
    ctx.cancelled.set()
    events, _ = run_turn(backend, session("garbage"), "hi", ctx)
    assert [e.kind for e in events] == [EventKind.ERROR]
    assert error_of(events[0]).kind == BackendErrorKind.CANCELLED
    assert tracker.calls == []


@pytest.mark.cli
@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (HTTPError(401), BackendErrorKind.AUTHENTICATION, 401),
        (HTTPError(529), BackendErrorKind.OVERLOADED, 529),
        (HTTPError(400), BackendErrorKind.INVALID_REQUEST, 400),
    ],
)
def test_real_http_errors_are_typed_failures(
    real: RealClaude, reply: Any, kind: str, status: int
) -> None:
    real.server.script(reply)
    backend = real.backend()
    events, session = real.turn(backend, real.session(backend), "hi")
    error = error_of(terminal(events))
    assert (error.kind, error.status_code) == (kind, status), error
    assert error.retryable == (kind in BackendErrorKind.RETRYABLE)
    assert "sk-ant-test" not in error.message
    # The session survives a failed turn.
    real.server.script(Text("recovered"))
    events, _ = real.turn(backend, session, "again")
    assert terminal(events).data["text"] == "recovered"


@pytest.mark.cli
def test_real_429_with_retry_after(real: RealClaude) -> None:
    real.server.script(HTTPError(429, retry_after=1), HTTPError(429, retry_after=1))
    backend = real.backend()
    session = real.session(backend, env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    events, _ = real.turn(backend, session, "hi")
    (retry,) = of_kind(events, EventKind.RETRY)
    assert retry.data["status_code"] == 429
    error = error_of(terminal(events))
    assert (error.kind, error.status_code, error.retryable) == (
        BackendErrorKind.RATE_LIMITED,
        429,
        True,
    )
    assert error.retry_after is not None and error.retry_after > 0
    assert len(real.server.model_requests) == 2


@pytest.mark.cli
def test_real_stream_that_fails_midway_is_retried_and_its_deltas_discarded(
    real: RealClaude,
) -> None:
    real.server.script(StreamError(partial=Text("Hello from", chunks=2)), Text("ok"))
    backend = real.backend()
    session = real.session(
        backend, include_partial_messages=True, env={"CLAUDE_CODE_MAX_RETRIES": "1"}
    )
    events, _ = real.turn(backend, session, "hi")
    final = terminal(events)
    assert final.kind == EventKind.RESULT and final.data["text"] == "ok"
    deltas = of_kind(events, EventKind.TEXT_DELTA)
    assert "".join(e.data["text"] for e in deltas) == "Hello from"
    (discard,) = of_kind(events, EventKind.DISCARD)
    assert discard.data["message_id"] == deltas[0].data["message_id"]
    assert Response.from_events(events).text == "ok"
