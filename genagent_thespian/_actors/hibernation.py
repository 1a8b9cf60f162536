"""When an idle durable agent may hibernate, and what it hands over when it does.

A hibernated agent has no process: its record in the store holds its state, session,
halted flag and counters; its name stays in the registry without an address; the
supervisor keeps its ``send_after`` timers and wakes it for the earliest one. Any call
wakes it through ``WhereIs(wait=True)``, the same path that waits out a restart, and a
call already sent to its old address is sent again to the new incarnation (a durable
agent drops a ref it already holds). ``status`` and ``list_agents`` answer from the
registry without waking it.

This module holds the decisions, free of Thespian: whether the agent is idle enough
(:func:`blocker`), and which of its pending deadlines travel with it (:func:`sleeping_timers`).
The agent actor carries them out (``AgentActor._try_hibernate``).

A sleep and a wake, as messages::

    agent: idle hibernate_after s, nothing in flight: save the record, release the lease
    agent --_Hibernating(status, timers, wake_at)--> supervisor   (state HIBERNATED)
    agent: retire the worker, ActorExitRequest to itself           (its process ends)
    supervisor --_Hibernated(name, status)--> registry             (entry kept, no address)
    caller --WhereIs(name, wait=True)--> registry --_Wake--> supervisor
    supervisor --_InitAgent(incarnation + 1, timers)--> new agent  (resumes from its record)
    new agent --_AgentReady--> supervisor --_Register--> registry --Located--> caller
    (or: the earliest timer falls due and the supervisor wakes it by itself, _WakeDue)

A wake is a restart in all but name: a new process and incarnation, counted in ``wakes``
rather than ``restarts``, so ``status`` does not report a healthy agent as flapping.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from .._core.machine import AgentMachine
from .._core.validate import DEFAULT_HIBERNATE_AFTER
from ..messages import AgentSpec

__all__ = [
    "WAKE_GRACE",
    "SleepingTimers",
    "blocker",
    "first_nap",
    "hibernate_seconds",
    "sleeping_timers",
]

#: Seconds a just started (or woken) agent stays up at least, when ``hibernate_after`` is
#: shorter: it was started for a caller whose request is on its way. Measured: in a wave of
#: 16 concurrent wake-ups under load, half the callers' requests arrived more than a second
#: after their agent was back, so agents with ``hibernate_after=1`` went back to sleep and
#: were woken twice.
WAKE_GRACE = 10.0


def hibernate_seconds(spec: AgentSpec) -> float:
    """Idle seconds before ``spec``'s agent hibernates; ``0.0``: never.

    ``start_agent`` resolves ``None`` already; a spec built by hand (raw Thespian code) gets
    the same default here. Only durable agents hibernate: they have a record to wake from.
    """
    if not spec.durable:
        return 0.0
    if spec.hibernate_after is None:
        return DEFAULT_HIBERNATE_AFTER
    return max(0.0, float(spec.hibernate_after))


def first_nap(hibernate_after: float) -> float:
    """Idle seconds before a just started agent may hibernate (see ``WAKE_GRACE``)."""
    return max(hibernate_after, min(WAKE_GRACE, 3 * hibernate_after))


def blocker(
    machine: AgentMachine,
    *,
    worker_busy: bool,
    watchers: int,
    awaiting_replies: bool,
    stopping: bool,
) -> str | None:
    """Why the agent must stay up now, or ``None`` when it may hibernate.

    Anything in flight keeps it up: a turn, queued or self-chained prompts, buffered
    notifications, a worker still ending a cancelled turn, replies it awaits from other
    agents (``TellCompleted``, look-ups), and ``Watch`` subscribers, whose stream would
    silently end with the process.
    """
    if stopping:
        return "stopping"
    if machine.current is not None or worker_busy:
        return "a turn is running"
    if machine.mailbox or machine.self_chain is not None or machine.pending:
        return "work is queued"
    if len(machine.delayed) > 1:
        # The record re-queues delayed prompts at once on waking: one can wait for its
        # due time as the wake-up time, several would all run at the earliest.
        return "several delayed prompts"
    if watchers:
        return "it has Watch subscribers"
    if awaiting_replies:
        return "it awaits replies from other agents"
    return None


@dataclass(frozen=True, slots=True)
class SleepingTimers:
    """What the supervisor keeps for a sleeping agent.

    Attributes:
        timers: ``send_after`` timers as ``(timer_id, due, message)``, ``due`` wall-clock.
        wake_at: Wall-clock time of the earliest timer or delayed prompt (``None``: none).
    """

    timers: tuple[tuple[str, float, object], ...]
    wake_at: float | None


class _UserTimer(Protocol):
    """What the agent's ``user_timer`` payloads carry (the class is the agent's own)."""

    timer_id: str
    message: object


def sleeping_timers(
    pending: Iterable[tuple[float, object]],
    *,
    now: float,
    user_timer: type,
    delayed: type,
) -> SleepingTimers:
    """Pick from the agent's pending deadlines what outlives its process.

    ``pending`` is ``Deadlines.pending_items()``: ``(seconds left, payload)``. Payloads of
    type ``user_timer`` (with ``timer_id`` and ``message``) travel with the agent; those of
    type ``delayed`` (a delayed self-chain or retry, re-queued from the record on waking)
    only set the wake-up time. Every other deadline (the lease, the worker's idle timer)
    concerns the process and ends with it.

    Raises:
        pickle.PicklingError, TypeError...: a timer's message cannot be pickled, so it
            cannot be handed to the supervisor (the agent then stays up).
    """
    timers: list[tuple[str, float, object]] = []
    wake_at: float | None = None
    for left, payload in pending:
        if isinstance(payload, user_timer):
            due = now + max(0.0, left)
            timer = cast(_UserTimer, payload)  # a ``user_timer`` instance, checked above
            timers.append((timer.timer_id, due, timer.message))
        elif isinstance(payload, delayed):
            due = now + max(0.0, left)
        else:
            continue
        wake_at = due if wake_at is None else min(wake_at, due)
    kept = tuple(timers)
    pickle.dumps(kept)
    return SleepingTimers(kept, wake_at)
