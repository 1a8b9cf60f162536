"""The codex backend's ``app_server`` mode: the translator fed with real transcripts of
``codex app-server`` 0.169.0 (``tests/data/captures/codex_app_*.jsonl``, both directions), and
real codex agents through ``start_agent`` (one app-server process across turns, a new one only
after an interrupt, which ends the turn in-band)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends._codex_app import AppServerTranslator
from support_agents import Passthrough
from support_cli import quiet_env, require_cli

import genagent_thespian as g
from genagent_thespian import BackendError, BackendErrorKind, Event, EventKind, Response
from genagent_thespian.testing import (
    FakeLLMServer,
    Reply,
    Text,
    system_processes,
    wait_until,
)

CAPTURES = Path(__file__).resolve().parent.parent / "data" / "captures"


def transcript(name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (CAPTURES / f"codex_app_{name}.jsonl").read_text().splitlines()
    ]


def turns_of(name: str) -> list[list[Event]]:
    """Replay each ``turn/start`` of a transcript through a fresh translator."""
    turns: list[list[Event]] = []
    translator: AppServerTranslator | None = None
    started: set[Any] = set()
    previous = None
    for entry in transcript(name):
        sent, received = entry.get("send"), entry.get("recv")
        if sent and sent.get("method") == "turn/start":
            if translator is not None:
                previous = translator.cumulative
            translator = AppServerTranslator(
                thread_id=sent["params"]["threadId"],
                previous_usage=previous,
                known_history=previous is not None,
            )
            started.add(sent["id"])
            turns.append([])
        elif received and translator is not None:
            if received.get("id") in started and "result" in received:
                translator.turn_id = received["result"]["turn"]["id"]
            elif "method" in received:
                turns[-1] += translator.feed(received)
    return turns


def terminal(events: list[Event]) -> Event:
    ends = [e for e in events if e.terminal]
    assert len(ends) == 1 and events[-1] is ends[0], [e.kind for e in events]
    return ends[0]


def test_text_transcript_streams_deltas_and_per_turn_usage() -> None:
    first, second = turns_of("text")
    assert terminal(first).data["text"] == "Hello one."
    assert terminal(second).data["text"] == "Hello two."
    deltas = [e.data["text"] for e in first if e.kind == EventKind.TEXT_DELTA]
    assert deltas == ["Hello one."]  # the completed item does not repeat the streamed text
    assert Response.from_events(first).text == "Hello one."
    usage = next(e.data["usage"] for e in second if e.kind == EventKind.USAGE)
    cumulative = terminal(second).data["cumulative_usage"]
    assert usage.scope == "turn" and usage.input_tokens == cumulative["input_tokens"] // 2
    assert first[0].kind == EventKind.TURN_STARTED


def test_tool_transcript_reports_the_command_and_its_output() -> None:
    (events,) = turns_of("tool")
    (tool,) = [e for e in events if e.kind == EventKind.TOOL_USE]
    assert tool.data["kind"] == "shell" and "cat README.md" in tool.data["input"]["command"]
    (result,) = [e for e in events if e.kind == EventKind.TOOL_RESULT]
    assert result.data["output"] == "hello from fake repo\n" and result.data["exit_code"] == 0
    assert terminal(events).data["text"] == "It says hello."


def test_interrupt_transcript_ends_in_band_as_cancelled() -> None:
    interrupted, after = turns_of("interrupt")
    error = terminal(interrupted).data["error"]
    assert isinstance(error, BackendError) and error.kind == BackendErrorKind.CANCELLED
    assert terminal(after).data["text"] == "after"
    sent = [e["send"]["method"] for e in transcript("interrupt") if "send" in e]
    assert sent.count("turn/interrupt") == 1


def test_error_transcript_is_a_typed_failure_with_the_forwarded_status() -> None:
    (events,) = turns_of("error")
    error = terminal(events).data["error"]
    assert isinstance(error, BackendError)
    assert (error.kind, error.status_code) == (BackendErrorKind.AUTHENTICATION, 401)
    assert [e.kind for e in events].count(EventKind.WARNING) == 1  # the error notice


def test_resume_transcript_answers_an_unknown_thread_with_an_error() -> None:
    (answer,) = [e["recv"] for e in transcript("resume") if e.get("recv", {}).get("id") == 10]
    assert "no rollout found for thread id" in answer["error"]["message"]


def test_a_notification_of_another_turn_is_ignored() -> None:
    translator = AppServerTranslator(thread_id="t")
    translator.turn_id = "mine"
    late = {"method": "item/agentMessage/delta", "params": {"turnId": "old", "delta": "x"}}
    assert translator.feed(late) == []
    mine = {"method": "item/agentMessage/delta", "params": {"turnId": "mine", "delta": "y"}}
    assert [e.data["text"] for e in translator.feed(mine)] == ["y"]


# -- real codex agents ----------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def system() -> Iterator[Any]:
    system = g.start_system()
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def codex_options(server: FakeLLMServer, tmp_path: Path, workdir: Path) -> dict[str, Any]:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    provider = {
        "name": "fake",
        "base_url": server.openai_base_url,
        "env_key": "GENAGENT_TEST_CODEX_KEY",
        "supports_websockets": False,
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }
    return {
        "mode": "app_server",
        "binary": require_cli("codex"),
        "cwd": str(workdir),
        "env": {**quiet_env(home), "GENAGENT_TEST_CODEX_KEY": "sk-codex-test-not-real"},
        "model": "gpt-5.5",
        "sandbox": "danger-full-access",
        "provider": provider,
        "config": {
            "check_for_update_on_startup": False,
            "analytics.enabled": False,
            "feedback.enabled": False,
            "features.plugins": False,
            "features.apps": False,
        },
    }


def app_servers(workdir: Path) -> list[int]:
    """Pids of the live ``codex app-server`` group leaders running in ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.readlink(f"/proc/{pid}/cwd") != str(workdir) or os.getpgid(pid) != pid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"app-server" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
        except OSError:
            continue
        found.append(pid)
    return sorted(found)


def the_app_server(workdir: Path) -> int:
    leaders = wait_until(lambda: app_servers(workdir), timeout=20, message="an app-server")
    assert len(leaders) == 1, leaders
    return int(leaders[0])


@pytest.mark.cli
@pytest.mark.timeout(180)
def test_a_codex_agent_keeps_one_app_server_until_an_interrupt(
    system: Any, server: FakeLLMServer, tmp_path: Path
) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    server.script(Text("one"), Text("two"), Text("three"))
    g.start_agent(
        Passthrough,
        name="cx",
        backend="codex",
        backend_options=codex_options(server, tmp_path, workdir),
    )
    pids = []
    for word in ("one", "two", "three"):
        assert g.ask("cx", f"say {word}").text == word
        pids.append(the_app_server(workdir))
    assert pids[0] == pids[1] == pids[2], pids
    assert "say one" in json.dumps(server.model_requests[-1].body)  # one thread

    # An interrupt ends the turn in-band; the process is then retired and the next turn
    # resumes the thread in a new one.
    server.script(Reply([Text("word " * 100, chunks=100)], chunk_delay=0.1), Text("resumed"))
    ref = g.tell("cx", "talk slowly")
    server.wait_for_requests(4, timeout=60)
    g.interrupt("cx", ref=ref)
    result = wait_until(lambda: (p := g.poll("cx", ref)).done and p, timeout=30)
    assert isinstance(result.error, g.TurnInterrupted)
    wait_until(lambda: not app_servers(workdir), timeout=20, message="the app-server to end")
    assert g.ask("cx", "go on").text == "resumed"
    assert the_app_server(workdir) != pids[0]
    assert "say one" in json.dumps(server.model_requests[-1].body)  # the same thread

    g.stop("cx")
    wait_until(lambda: not app_servers(workdir), timeout=20, message="no app-server after stop")
