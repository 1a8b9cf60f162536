"""How often a worker wakes to send a turn's output: per event when somebody watches the
turn, once at its end when nobody does (``_StartTurn.stream``).

Every wake-up becomes a Thespian message to the agent, with a fixed cost in both processes;
an unwatched claude turn is one message instead of two. The worker is built here in this
process, on the pipe it watches under multiprocTCPBase, so the wake-ups can be counted as
the bytes its turn thread writes; ``tests/actors/test_turn_ending.py`` runs the same rules
for real (a delta streams while the backend is busy, a watcher that comes mid-turn gets
what was held).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from genagent_thespian import Backend, Event, TurnContext
from genagent_thespian._actors.worker import TurnWorker, _Running
from genagent_thespian._core.protocol import _StartTurn, _StreamTurn, _TurnOutput


class TwoDeltas(Backend):
    """Two text deltas and the result."""

    name = "two-deltas"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        yield Event.text_delta("a")
        yield Event.text_delta("b")
        yield Event.result("ab")


def _worker() -> tuple[TurnWorker, list[Any]]:
    # The pipe and its wake-up bytes as under multiprocTCPBase; in this process otherwise.
    worker = TurnWorker(
        {"Thespian Watch Supported": True, "Thespian ActorSystem Name": "simpleSystem"}
    )
    sent: list[Any] = []
    worker.send = lambda to, message: sent.append(message)
    return worker, sent


def _wakeups(worker: TurnWorker) -> int:
    assert worker._rfd is not None
    try:
        return len(os.read(worker._rfd, 4096))
    except BlockingIOError:
        return 0


def _start(worker: TurnWorker, *, stream: bool) -> None:
    start = _StartTurn(1, "r1", "go", {}, TwoDeltas, "a", stream=stream)
    worker.receiveMessage(start, "the agent")
    assert worker._running is not None
    worker._running.thread.join(10)


@pytest.mark.parametrize(("stream", "wakeups"), [(True, 3), (False, 1)])
def test_a_turn_wakes_its_worker_per_event_only_when_watched(stream: bool, wakeups: int) -> None:
    worker, sent = _worker()
    _start(worker, stream=stream)
    # The first turn of a worker announces it at once (its pid); then only the turn's output.
    assert [type(m) for m in sent] == [_TurnOutput] and not sent[0].events
    assert _wakeups(worker) == wakeups + 1  # + the "ready" of a new worker's first turn
    worker._drain()
    [output] = sent[1:]  # all of it in one message once drained
    assert [e.kind for e in output.events] == ["text_delta", "text_delta", "result"]
    assert output.done and output.error is None
    worker.receiveMessage(_StreamTurn(1), "the agent")  # the turn ended: nothing to do
    assert len(sent) == 2


def test_a_watcher_coming_mid_turn_makes_the_worker_send_what_it_holds() -> None:
    worker, sent = _worker()
    worker._queue.put(("event", (7, Event.text_delta("held"))))  # queued, no wake-up
    worker._owner = "the agent"
    worker._running = _Running(7, TurnContext(agent="a", ref="r7"), threading.Thread())
    worker.receiveMessage(_StreamTurn(7), "the agent")
    [output] = sent
    assert [e.data["text"] for e in output.events] == ["held"] and not output.done
    assert worker._running.watched.is_set()  # what the turn yields next wakes the worker
    worker.receiveMessage(_StreamTurn(7), "the agent")  # said twice: nothing more
    assert len(sent) == 1
