"""A turn's output the transport refuses (over ``max_frame_bytes``) ends the turn, typed.

Thespian hands a message its transport refused back to the sender as a ``PoisonMessage``
and tells nobody else. The worker decides what follows; it is built here in this process,
with what it would send recorded, because a ``_TurnOutput`` over the frame limit whose
prompt, session and start message all fit cannot be produced on demand through a real
turn. The agent's side (an answer too large for its caller) runs for real in
``tests/os/test_security.py::test_an_answer_over_the_frame_limit_fails_typed_and_the_agent_goes_on``.
"""

from __future__ import annotations

import threading
from typing import Any

from thespian.actors import PoisonMessage

from genagent_thespian import MessageTooLarge, TurnContext
from genagent_thespian._actors.worker import TurnWorker, _Running
from genagent_thespian._core.protocol import _TurnOutput
from genagent_thespian._core.turn import Event


def _worker() -> tuple[TurnWorker, list[Any], TurnContext]:
    worker = TurnWorker({"Thespian ActorSystem Name": "simpleSystem"})
    sent: list[Any] = []
    worker.send = lambda to, message: sent.append(message)
    worker.wakeupAfter = lambda *args, **kwargs: None
    worker._owner = "the agent"
    ctx = TurnContext(agent="a", ref="r1")
    worker._running = _Running(7, ctx, threading.Thread(target=lambda: None))
    return worker, sent, ctx


def test_a_refused_output_ends_the_turn_with_message_too_large_and_cancels_it() -> None:
    worker, sent, ctx = _worker()
    refused = _TurnOutput(
        7, events=(Event("text", {"text": "x" * 10}),), process_groups=((42, True),)
    )
    worker.receiveMessage(PoisonMessage(refused), None)

    assert ctx.cancelled.is_set()  # its outcome cannot be delivered: the backend stops
    assert worker._running is None  # a next turn is not refused as "busy"
    [ended] = sent
    assert isinstance(ended, _TurnOutput) and ended.turn_id == 7 and ended.done
    assert isinstance(ended.error, MessageTooLarge)
    assert ended.process_groups == ((42, True),)  # the agent still learns its processes

    worker.receiveMessage(PoisonMessage(refused), None)  # a second refusal of that turn
    assert len(sent) == 1


def test_what_an_ended_turn_still_produces_is_dropped_except_its_process_facts() -> None:
    worker, sent, _ = _worker()
    worker.receiveMessage(PoisonMessage(_TurnOutput(7, done=True)), None)
    sent.clear()
    worker._queue.put(("event", (7, Event("text", {"text": "late"}))))
    worker._queue.put(("done", (7, None, 1.0)))
    worker._drain()
    assert sent == []  # nothing of the ended turn reaches the agent a second time
    worker._queue.put(("pgroup", (42, False)))
    worker._queue.put(("event", (7, Event("text", {"text": "later"}))))
    worker._drain()
    [facts] = sent
    assert facts.turn_id == 7 and facts.process_groups == ((42, False),)
    assert facts.events == () and not facts.done
