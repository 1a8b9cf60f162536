"""A worker made ahead of any turn (a woken agent's) tells its pid at once, and only that.

The agent records the worker's process while its caller's request is on its way, instead
of between the turn's first output and its answer. The hello must not count as the
worker's start-up announcement: the first turn still reports ``ready``, or an agent that
sent that turn before it learnt the pid would wait for a ``ready`` that never comes, and
its watchdog would never start. Built in this process, with what the worker sends
recorded (as in ``test_undeliverable_output.py``).
"""

from __future__ import annotations

import os
from typing import Any

from genagent_thespian._actors.worker import TurnWorker
from genagent_thespian._core.protocol import _TurnOutput, _WorkerHello


def test_a_hello_is_answered_with_the_pid_alone_and_the_first_turn_still_reports_ready() -> None:
    worker = TurnWorker({"Thespian ActorSystem Name": "simpleSystem"})
    sent: list[tuple[Any, Any]] = []
    worker.send = lambda to, message: sent.append((to, message))

    worker.receiveMessage(_WorkerHello(), "the agent")

    [(to, reply)] = sent
    assert to == "the agent"
    assert reply == _TurnOutput(0, pid=os.getpid())
    assert not (reply.ready or reply.waiting or reply.done or reply.events)
    assert not worker._announced, "the first turn must still say ready"
