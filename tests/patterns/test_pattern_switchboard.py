"""Acceptance tests of the Switchboard pattern (reference §5.1), scripted, multiprocTCPBase."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from genagent_thespian.patterns.switchboard import SessionBusy, SessionHalted, Switchboard

import genagent_thespian as g
from genagent_thespian import PollResult
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until

pytestmark = pytest.mark.usefixtures("any_agent_system")


def _text(result: PollResult) -> str:
    assert result.response is not None, result
    return result.response.text


@pytest.fixture
def board() -> Iterator[Switchboard]:
    with Switchboard() as switchboard:
        yield switchboard


def test_send_poll_inbox_ack_and_busy(board: Switchboard, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    board.start_session("s1", backend="scripted", script=[Gate(str(gate), "first"), "second"])
    board.start_session("s2", backend="scripted", script=["other"])

    ref = board.send("s1", "do one")
    assert board.poll("s1", ref).state == "pending"
    with pytest.raises(SessionBusy):
        board.send("s1", "do two")
    assert board.status("s1").queued == 0  # the rejected prompt was not queued

    open_gate(gate)
    wait_until(lambda: board.poll("s1", ref).done, timeout=10)
    assert _text(board.poll("s1", ref)) == "first"

    inbox = board.inbox("s1")
    assert [(e["status"], e["seq"], e["text"], e["ref"]) for e in inbox.new_requests] == [
        ("ok", 1, "first", ref)
    ]
    assert board.inbox("s1", ack=True).new_requests
    wait_until(lambda: board.inbox("s1").new_requests == [], timeout=10)
    assert board.inbox("s2").new_requests == []  # sessions are independent


def test_ack_only_marks_what_was_returned(board: Switchboard, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    board.start_session("s", backend="scripted", script=["one", Gate(str(gate), "two")])
    first = board.send("s", "a")
    wait_until(lambda: board.poll("s", first).done, timeout=10)
    second = board.send("s", "b")  # running while we acknowledge the first
    shown = board.inbox("s", ack=True).new_requests
    assert [e["seq"] for e in shown] == [1]
    open_gate(gate)
    wait_until(lambda: board.poll("s", second).done, timeout=10)
    wait_until(lambda: [e["seq"] for e in board.inbox("s").new_requests] == [2], timeout=10)


def test_failed_turn_is_recorded_in_history(board: Switchboard) -> None:
    board.start_session("s", backend="scripted", script=[Fail("server_error", "boom")])
    ref = board.send("s", "try")
    wait_until(lambda: board.poll("s", ref).done, timeout=10)
    assert board.poll("s", ref).state == "failed"
    [entry] = board.inbox("s").new_requests
    assert entry["status"] == "failed" and entry["seq"] == 1 and "boom" in entry["error"]


def test_halt_rejects_send_and_resume_unhalts(board: Switchboard) -> None:
    board.start_session("s", backend="scripted", script=["after resume"])
    board.halt("s")
    wait_until(lambda: board.status("s").halted, timeout=10)
    with pytest.raises(SessionHalted):
        board.send("s", "nope")
    board.resume("s")
    ref = board.send("s", "now")
    wait_until(lambda: board.poll("s", ref).done, timeout=10)
    assert _text(board.poll("s", ref)) == "after resume"


def test_summary_transcript_and_unknown_names(board: Switchboard) -> None:
    board.start_session("s", backend="scripted", default="ok")
    board.update_summary("s", "# notes")
    wait_until(lambda: board.summary("s") == "# notes", timeout=10)
    refs = [board.send("s", "x")]
    wait_until(lambda: board.poll("s", refs[0]).done, timeout=10)
    refs.append(board.send("s", "y"))
    wait_until(lambda: board.poll("s", refs[1]).done, timeout=10)
    assert [e["ref"] for e in board.transcript("s", limit=1)] == [refs[1]]
    with pytest.raises(g.AgentNotFound):
        board.send("nobody", "hi")
    with pytest.raises(g.AgentNotFound):
        board.inbox("nobody")
    board.stop_session("s")
    assert board.sessions == []
    with pytest.raises(g.AgentNotFound):
        board.send("s", "gone")


def test_concurrent_sends_to_an_idle_session_start_exactly_one_turn(
    board: Switchboard, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    board.start_session("s", backend="scripted", script=[Gate(str(gate), "only")], default="x")
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        try:
            board.send("s", f"prompt {index}")
            result = "sent"
        except SessionBusy:
            result = "busy"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["busy", "busy", "busy", "sent"]
    assert board.status("s").queued == 0
    open_gate(gate)
