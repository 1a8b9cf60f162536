"""Telemetry: events emitted in agent processes, handled in the user's process.

Agents emit events (``prompt.start``, ``state.changed``...; see ``docs/telemetry`` in the
README) as :class:`~genagent_thespian._core.machine.Emit` effects. The agent actor sends only the
names someone subscribed to, batched per message it handled, to the :class:`TelemetryHub`
(one per actor system), which forwards each batch to the subscribers that want it. Without
subscribers, agents send nothing.

In the user's process, :func:`~genagent_thespian.attach` (``_api/telemetry.py``) puts a
handler ``fn(name, measurements, metadata)`` in this module's table (:func:`add_handler`).
On the multiprocess bases a daemon thread (one per system and process)
subscribes to the hub through its own ``private()`` endpoint and calls the handlers; on
``simpleSystemBase`` the hub runs in the user's process and calls them directly. Handler
exceptions are logged and the handler stays attached (``:telemetry`` in Erlang would
detach it): here a failing handler is counted in :func:`handler_failures` instead.

The messages, with the process each side runs in::

    agent process      --_TelemetryJoin-->             TelemetryHub (one per system)
                       <--_TelemetryInterest(names)--  (at join, and when interest changes)
                       --_TelemetryInterestAck(seq)->
                       --_TelemetryBatch(events)-->    --_TelemetryBatch(wanted)--> bridge
    supervisor         --_TelemetryBatch / _TelemetryLeave(agent)-->
    user's process     --_TelemetrySubscribe(names)--> <--Accepted-- (once agents acked)
      TelemetryBridge thread: listen() -> dispatch_local -> the handlers

Why a thread with its own endpoint: a handler must see events whether or not the user's
code is inside an ``ask`` at that moment, and Thespian delivers to an external endpoint
only while someone listens on it; one ``private()`` context per thread is what the
multiproc bases support. Why ``attach`` waits for the agents' acknowledgements: an agent
that has not heard of the new interest yet would drop the first events of the very turn
the user starts next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from thespian.actors import Actor, ActorExitRequest, ActorSystem, WakeupMessage

from .._core.errors import InvalidOption
from .._core.log import get_logger
from .._core.protocol import (
    AddressBook,
    _TelemetryBatch,
    _TelemetryInterest,
    _TelemetryInterestAck,
    _TelemetryJoin,
    _TelemetryLeave,
    _TelemetrySubscribe,
)
from .._core.types import ActorAddress, Metadata
from ..messages import Accepted

__all__ = [
    "EVENT_NAMES",
    "TELEMETRY_NAME",
    "TelemetryBridge",
    "TelemetryHub",
    "add_handler",
    "dispatch_local",
    "handler_failures",
    "remove_handler",
    "wanted_names",
]

TELEMETRY_NAME = "genagent_thespian.telemetry"

#: Seconds the hub waits for agents to confirm a new interest before it answers anyway.
_INTEREST_ACK_TIMEOUT = 2.0

#: Every event name the framework emits.
EVENT_NAMES = frozenset(
    {
        "prompt.start",
        "prompt.stop",
        "prompt.error",
        "event.received",
        "state.changed",
        "mailbox.queued",
        "halted",
        "resumed",
        "turn.start",
        "turn.stop",
        "turn.error",
        "turn.rejected",
        "turn.cancelled",
        "turn.interrupted",
        "turn.event",
        "input.rejected",
        "request.dropped",
        "callback.error",
        "terminated",
        "agent.started",
        "agent.stopped",
        "agent.crashed",
        "agent.restarted",
        "agent.gave_up",
        "agent.hibernated",
        "agent.woken",
        "agent.adopted",  # a new convention leader took over a running agent
        "agent.fenced",  # a durable incarnation lost its lease to a newer one and ends
        "agent.unplaced",  # a restart found no node with room; it waits for one
        "session.lost",
        "session.prewarm",  # a prewarm started a session, found no free slot, or failed
    }
)

Handler = Callable[[str, dict[str, float], Metadata], None]

_log = get_logger("genagent_thespian.telemetry")


@dataclass(frozen=True)
class _Attachment:
    """One attached handler: its id, the names it wants (``None``: all), the callable."""

    handler_id: str
    names: frozenset[str] | None
    fn: Handler


_lock = threading.Lock()
_handlers: dict[str, _Attachment] = {}
_failures: dict[str, int] = {}


def add_handler(handler_id: str, event_names: Iterable[str] | None, fn: Handler) -> None:
    """Register ``fn`` for ``event_names`` (``None`` = all) in this process's handler table.

    The table is per process: the bridge thread (or, on ``simpleSystemBase``, the hub)
    calls :func:`dispatch_local`, which reads it. Subscribing the system to the new names is
    the caller's part (``_api/telemetry.py`` :func:`attach`).

    Raises:
        InvalidOption: ``handler_id`` is already attached, or a name is unknown.
    """
    names = None if event_names is None else frozenset(event_names)
    if names is not None:
        unknown = names - EVENT_NAMES
        if unknown:
            raise InvalidOption(f"unknown telemetry event name(s) {sorted(unknown)}")
    with _lock:
        if handler_id in _handlers:
            raise InvalidOption(f"telemetry handler {handler_id!r} is already attached")
        _handlers[handler_id] = _Attachment(handler_id, names, fn)


def remove_handler(handler_id: str) -> bool:
    """Remove a handler from this process's table. Returns whether it was there."""
    with _lock:
        return _handlers.pop(handler_id, None) is not None


def wanted_names() -> frozenset[str] | None:
    """The union of the attached handlers' names (``None`` = all, empty = none)."""
    with _lock:
        attachments = list(_handlers.values())
    names: set[str] = set()
    for attachment in attachments:
        if attachment.names is None:
            return None
        names |= attachment.names
    return frozenset(names)


def handler_failures() -> dict[str, int]:
    """How often each handler raised (handlers stay attached)."""
    with _lock:
        return dict(_failures)


def dispatch_local(events: Iterable[tuple[str, dict[str, float], Metadata]]) -> None:
    """Call this process's handlers for ``events``.

    A handler that raises is logged and counted (``handler_failures``), and the others
    still get the event: one broken handler must not blind the rest. The table is copied
    under the lock, so a handler may attach or detach handlers while it runs.
    """
    with _lock:
        attachments = list(_handlers.values())
    if not attachments:
        return
    for name, measurements, metadata in events:
        for attachment in attachments:
            if attachment.names is not None and name not in attachment.names:
                continue
            try:
                attachment.fn(name, measurements, metadata)
            except Exception:
                with _lock:
                    _failures[attachment.handler_id] = _failures.get(attachment.handler_id, 0) + 1
                _log.exception("telemetry handler %r raised on %s", attachment.handler_id, name)


def _union(interests: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """The names wanted by any of ``interests``; ``None`` (everything) as soon as one wants all."""
    names: set[str] = set()
    for interest in interests:
        if interest is None:
            return None
        names |= interest
    return frozenset(names)


class TelemetryHub(Actor):
    """Fans telemetry batches out to subscribers; tells agents what is wanted.

    One per actor system, under a global name. Agents send only the event names someone
    subscribed to, so an unobserved fleet costs no telemetry traffic; handlers attached in
    the user's process see events emitted in agent processes whatever the system base.
    """

    def __init__(self) -> None:
        """No agent, no subscriber: until someone subscribes, agents are told to send nothing."""
        super().__init__()
        self._agents = AddressBook()
        self._subscribers: dict[str, tuple[ActorAddress, frozenset[str] | None]] = {}
        self._local: dict[str, frozenset[str] | None] = {}  # in-process subscriptions by token
        self._seq = 0
        self._waiting: dict[
            int, tuple[ActorAddress, AddressBook]
        ] = {}  # seq -> (subscriber, pending)

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Route batches and subscriptions. Never raises.

        A joining agent is told the current interest at once, so it sends nothing nobody
        wants from its first event on. An interest acknowledgement that never comes (the
        agent died) is given up on after ``_INTEREST_ACK_TIMEOUT``: the subscriber is then
        answered anyway rather than left waiting.
        """
        try:
            if isinstance(message, _TelemetryBatch):
                self._route(message)
            elif isinstance(message, _TelemetryJoin):
                if message.active:
                    self._agents.add(sender)
                    self.send(sender, _TelemetryInterest(self._interest()))
                else:
                    self._forget_agent(sender)
            elif isinstance(message, _TelemetryLeave):
                self._forget_agent(message.address)
            elif isinstance(message, _TelemetryInterestAck):
                waiting = self._waiting.get(message.seq)
                if waiting is not None:
                    waiting[1].discard(sender)
                    self._release_if_done(message.seq)
            elif isinstance(message, WakeupMessage):
                self._release(message.payload)  # agents that never answered are dead
            elif isinstance(message, _TelemetrySubscribe):
                self._subscribe(message, sender)
            elif isinstance(message, ActorExitRequest):
                self._agents.clear()
                self._subscribers.clear()
        except Exception:
            _log.exception("telemetry hub failed handling %s", type(message).__name__)

    def _subscribe(self, message: _TelemetrySubscribe, sender: ActorAddress) -> None:
        """Add, change or remove a subscription; acknowledge once agents send what is wanted."""
        before = self._interest()
        if message.token.startswith("local:"):
            if message.active:
                self._local[message.token] = message.names
            else:
                self._local.pop(message.token, None)
        elif message.active:
            self._subscribers[str(sender)] = (sender, message.names)
        else:
            self._subscribers.pop(str(sender), None)
        after = self._interest()
        if after == before or not len(self._agents):
            self.send(sender, Accepted(None))
            return
        # Acknowledge only once every agent sends what is now wanted, so that events of a
        # turn requested right after attach() returns are never lost to the race.
        self._seq += 1
        pending = AddressBook()
        for agent in self._agents:
            pending.add(agent)
            self.send(agent, _TelemetryInterest(after, seq=self._seq))
        self._waiting[self._seq] = (sender, pending)
        self.wakeupAfter(_INTEREST_ACK_TIMEOUT, payload=self._seq)

    def _forget_agent(self, address: ActorAddress) -> None:
        """An agent left: stop waiting for its acknowledgement, stop telling it interests."""
        self._agents.discard(address)
        for seq, (_, pending) in list(self._waiting.items()):
            pending.discard(address)
            self._release_if_done(seq)

    def _release_if_done(self, seq: int) -> None:
        """Answer the subscriber of ``seq`` once every agent acknowledged it."""
        waiting = self._waiting.get(seq)
        if waiting is not None and not len(waiting[1]):
            self._release(seq)

    def _release(self, seq: int) -> None:
        """Answer the subscriber of ``seq`` now (all acknowledged, or the wait timed out)."""
        waiting = self._waiting.pop(seq, None)
        if waiting is not None:
            self.send(waiting[0], Accepted(None))

    def _interest(self) -> frozenset[str] | None:
        """The union of every subscription: what agents must send (``None``: everything)."""
        return _union([*(names for _, names in self._subscribers.values()), *self._local.values()])

    def _route(self, batch: _TelemetryBatch) -> None:
        """Send each subscriber the events of ``batch`` it asked for (in-process ones directly)."""
        if self._local:
            dispatch_local(batch.events)
        for subscriber, names in self._subscribers.values():
            if names is None:
                self.send(subscriber, batch)
                continue
            wanted = tuple(e for e in batch.events if e[0] in names)
            if wanted:
                self.send(subscriber, _TelemetryBatch(wanted))


class _System(Protocol):
    """What the bridge uses of its ``AgentSystem`` (``_api``, which this layer may not import)."""

    base: str
    asys: ActorSystem
    telemetry: ActorAddress

    def exchange(
        self,
        address: ActorAddress,
        message: object,
        matches: Callable[[object], bool],
        *,
        timeout: float | None,
        on_idle: Callable[[], object] | None = None,
    ) -> object: ...


class TelemetryBridge:
    """Carries one system's telemetry to this process's handlers.

    On the multiprocess bases a daemon thread owns a ``private()`` endpoint, subscribes it
    at the hub and calls :func:`dispatch_local` for each batch. On ``simpleSystemBase`` the
    hub runs in this process, so the bridge only registers an in-process subscription.
    """

    def __init__(self, system: _System) -> None:
        self._system = system
        self._token = f"local:{id(self)}" if system.base == "simpleSystemBase" else ""
        self._lock = threading.Lock()
        self._wanted: frozenset[str] | None = frozenset()
        self._sent: frozenset[str] | str | None = "never"
        self._changed = threading.Event()
        self._acked = threading.Condition(self._lock)
        self._generation = 0
        self._acked_generation = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self, wanted: frozenset[str] | None, *, timeout: float = 10.0) -> None:
        """Subscribe to ``wanted`` names and return once the hub has acknowledged."""
        if self._token:
            message = _TelemetrySubscribe(
                wanted, active=bool(wanted) or wanted is None, token=self._token
            )
            self._system.exchange(
                self._system.telemetry, message, lambda m: isinstance(m, Accepted), timeout=timeout
            )
            return
        with self._lock:
            self._wanted = wanted
            self._generation += 1
            target = self._generation
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="genagent-telemetry", daemon=True
                )
                self._thread.start()
            self._changed.set()
            self._acked.wait_for(
                lambda: self._acked_generation >= target or self._stopping.is_set(), timeout
            )

    def stop(self) -> None:
        """Unsubscribe and end the thread (idempotent)."""
        self._stopping.set()
        self._changed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _run(self) -> None:
        """Thread body: keep the hub subscription in step with the handlers and dispatch batches.

        Subscriptions are sent from this thread because the endpoint belongs to it (a
        ``private()`` context must not be shared between threads). ``listen`` wakes every 0.1 s
        so a changed interest or ``stop`` is seen promptly; a failure ends the thread with a log
        line, and ``sync`` callers are released rather than left waiting for an ack.
        """
        manager = self._system.asys.private()
        context = manager.__enter__()
        try:
            while not self._stopping.is_set():
                if self._changed.is_set():
                    self._changed.clear()
                    self._resubscribe(context)
                message = context.listen(0.1)
                if isinstance(message, _TelemetryBatch):
                    dispatch_local(message.events)
            self._send_subscription(context, frozenset(), active=False)
        except Exception:
            if not self._stopping.is_set():
                _log.exception("telemetry bridge stopped")
        finally:
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)
            with self._lock:
                self._acked.notify_all()

    def _resubscribe(self, context: ActorSystem) -> None:
        """Send the newest wanted names and mark their generation acknowledged for ``sync``."""
        with self._lock:
            wanted, generation = self._wanted, self._generation
        active = wanted is None or bool(wanted)
        self._send_subscription(context, wanted, active=active)
        with self._lock:
            self._acked_generation = generation
            self._acked.notify_all()

    def _send_subscription(
        self, context: ActorSystem, names: frozenset[str] | None, *, active: bool
    ) -> None:
        """Subscribe this endpoint at the hub and wait (up to 10 s) for its ``Accepted``.

        Batches that arrive before the acknowledgement are dispatched, not dropped: events keep
        flowing for the names subscribed earlier while the change is acknowledged.
        """
        reply = context.ask(self._system.telemetry, _TelemetrySubscribe(names, active=active), 10.0)
        deadline = time.monotonic() + 10.0
        while not isinstance(reply, Accepted) and time.monotonic() < deadline:
            if isinstance(reply, _TelemetryBatch):
                dispatch_local(reply.events)
            reply = context.listen(0.5)
