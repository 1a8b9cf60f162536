"""Actor, agent and backend classes the benchmarks start (importable, as actor classes must be).

* :class:`Echo` is the raw Thespian floor: it answers every message with the message itself.
* :class:`BenchAgent` is the smallest possible ``GenAgent``: it does nothing with a turn.
* :class:`InstantBackend` answers every turn at once with a stateless session, so the cost
  measured is the framework's and not the backend's (the scripted backend's session
  records every prompt and grows a little each turn); :class:`GovernedInstantBackend` is
  the same through the session governor.
* :class:`StampingBackend` streams text deltas stamped with ``time.time()`` at emission, for
  the streaming-delay benchmark.
* :class:`ProcessGroupBackend` starts a tiny provider process in its own process group,
  reports it with ``ctx.track_process_group``, and ends it when the turn is cancelled, the
  way the CLI backends do; for the interrupt benchmark.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ChildActorExited,
    ThespianWatch,
    WatchMessage,
)

from genagent_thespian import Backend, Event, EventKind, GenAgent, TurnContext

__all__ = [
    "BenchAgent",
    "CrashParent",
    "Echo",
    "Forwarder",
    "GovernedInstantBackend",
    "GroupKeeper",
    "InstantBackend",
    "ProcessGroupBackend",
    "Relay",
    "Stamper",
    "StampingBackend",
    "ThreadedEcho",
    "ThreadedStreamer",
]


class Echo(Actor):
    """The floor: answers every message by sending it straight back.

    ``("pgid",)`` is answered with ``("pgid", <process group>)`` so the harness can sweep
    the system; ``("pid",)`` with ``("pid", <pid>)``.
    """

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Echo ``message`` to ``sender`` (Thespian system messages are ignored)."""
        if isinstance(message, tuple) and message in (("pgid",), ("pid",)):
            value = os.getpgid(0) if message[0] == "pgid" else os.getpid()
            self.send(sender, (message[0], value))
        elif isinstance(message, str | bytes | tuple | int):
            self.send(sender, message)


class ThreadedEcho(Actor):
    """The design floor's worker: each request runs in a daemon thread (like a turn).

    The thread hands its answer over through a queue and one byte on a pipe, and the actor
    returns ``ThespianWatch([pipe])`` so Thespian wakes it to send: the same mechanism the
    framework's turn worker uses to stream on multiprocTCPBase.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._owner: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        """Start a job thread, or send what finished threads produced."""
        if isinstance(message, tuple) and message and message[0] == "job":
            if self._rfd is None:
                self._rfd, self._wfd = os.pipe()
                os.set_blocking(self._rfd, False)
            self._owner = sender
            threading.Thread(target=self._job, args=(message[1],), daemon=True).start()
        elif isinstance(message, WatchMessage) and self._rfd is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._rfd, 4096):
                    pass
            while True:
                try:
                    done = self._queue.get_nowait()
                except queue.Empty:
                    break
                self.send(self._owner, ("done", done))
        return ThespianWatch([self._rfd]) if self._rfd is not None else None

    def _job(self, payload: Any) -> None:
        self._queue.put(payload)
        assert self._wfd is not None
        os.write(self._wfd, b"x")


class Relay(Actor):
    """The design floor's agent: forwards each request to a child worker and relays back.

    ``("mode", "echo" | "thread")`` picks the child (:class:`Echo` or
    :class:`ThreadedEcho`); then every ``str`` request travels client -> relay -> child ->
    relay -> client, the same four hops as a turn.
    """

    def __init__(self) -> None:
        super().__init__()
        self._child: Any = None
        self._threaded = False
        self._waiting: dict[str, Any] = {}

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Route requests to the child and answers back to their callers."""
        if isinstance(message, tuple) and message and message[0] == "mode":
            self._threaded = message[1] == "thread"
            self._child = self.createActor(ThreadedEcho if self._threaded else Echo)
            self.send(sender, ("mode", os.getpgid(0)))
        elif isinstance(message, tuple) and message and message[0] == "done":
            self.send(self._waiting.pop(message[1]), message[1])
        elif isinstance(message, str) and sender == self._child:
            self.send(self._waiting.pop(message), message)
        elif isinstance(message, str):
            self._waiting[message] = sender
            self.send(self._child, ("job", message) if self._threaded else message)


class CrashParent(Actor):
    """The crash-notice floor: a parent that tells its caller when its child process dies.

    ``("spawn",)`` creates a child :class:`Echo` and answers ``("child", pid)``;
    ``("wait",)`` is answered with ``("exited",)`` once ``ChildActorExited`` arrives.
    """

    def __init__(self) -> None:
        super().__init__()
        self._child: Any = None
        self._spawner: Any = None
        self._waiter: Any = None
        self._exited = False

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Spawn, wait, and relay the child's exit."""
        if message == ("spawn",):
            self._exited = False
            self._spawner = sender
            self._child = self.createActor(Echo)
            self.send(self._child, ("pid",))
        elif isinstance(message, tuple) and message and message[0] == "pid":
            self.send(self._spawner, ("child", message[1]))
        elif message == ("wait",):
            self._waiter = sender
            if self._exited:
                self.send(sender, ("exited",))
        elif isinstance(message, ChildActorExited) and message.childAddress == self._child:
            self._child = None
            self._exited = True
            if self._waiter is not None:
                self.send(self._waiter, ("exited",))
                self._waiter = None


class GroupKeeper(Actor):
    """The interrupt floor: starts a provider process group, ends it on request.

    ``("start", pid_file)`` starts the provider in its own process group and answers
    ``("started", pid)``; ``("end",)`` ends the group exactly as :class:`ProcessGroupBackend`
    does (SIGINT, SIGKILL after a grace period) and answers ``("ended",)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._child: subprocess.Popen[bytes] | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Start or end the provider."""
        if isinstance(message, tuple) and message and message[0] == "start":
            self._child = _start_provider()
            self.send(sender, ("started", self._child.pid))
        elif message == ("end",) and self._child is not None:
            _end_group(self._child)
            self._child = None
            self.send(sender, ("ended",))
        elif isinstance(message, ActorExitRequest) and self._child is not None:
            _end_group(self._child)


class Forwarder(Actor):
    """The streaming design floor's agent: forwards stamped messages to its subscriber.

    ``("subscribe",)`` makes the sender the subscriber (answered ``("subscribed",)``);
    every ``("stamped", t)`` is then forwarded to it unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._subscriber: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Subscribe or forward."""
        if message == ("subscribe",):
            self._subscriber = sender
            self.send(sender, ("subscribed",))
        elif isinstance(message, tuple) and message[:1] == ("stamped",) and self._subscriber:
            self.send(self._subscriber, message)


class ThreadedStreamer(Actor):
    """The streaming design floor's worker: a thread stamps deltas, the pipe wakes the actor.

    ``("stream", count, pause, forwarder)`` starts a daemon thread that puts ``count``
    ``time.time()`` stamps on a queue ``pause`` seconds apart, writing one byte to a pipe
    for each; the actor (woken through ``ThespianWatch``) sends each stamp to
    ``forwarder``: the same path as a streamed delta (turn thread -> worker -> agent ->
    subscriber), with no framework code.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._queue: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._forwarder: Any = None

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        """Start a stream, or forward what the stream thread produced."""
        if isinstance(message, tuple) and message[:1] == ("stream",):
            _, count, pause, self._forwarder = message
            if self._rfd is None:
                self._rfd, self._wfd = os.pipe()
                os.set_blocking(self._rfd, False)
            threading.Thread(target=self._stream, args=(count, pause), daemon=True).start()
        elif isinstance(message, WatchMessage) and self._rfd is not None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._rfd, 4096):
                    pass
            while True:
                try:
                    stamp = self._queue.get_nowait()
                except queue.Empty:
                    break
                self.send(self._forwarder, ("stamped", stamp))
        return ThespianWatch([self._rfd]) if self._rfd is not None else None

    def _stream(self, count: int, pause: float) -> None:
        assert self._wfd is not None
        for index in range(count):
            if index:
                time.sleep(pause)
            self._queue.put(time.time())
            os.write(self._wfd, b"x")


class Stamper(Actor):
    """The streaming floor: ``("stamp",)`` answers ``("stamped", time.time())`` at once.

    The caller computes its receive time minus the stamp: the one-way latency of a raw
    message from an actor to an external caller.
    """

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Send one stamped one-way message."""
        if message == ("stamp",):
            self.send(sender, ("stamped", time.time()))
        elif message == ("pgid",):
            self.send(sender, ("pgid", os.getpgid(0)))


class BenchAgent(GenAgent):
    """An agent that does nothing with its turns: the framework's own cost, nothing else."""

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Pass every option through to the backend."""
        return dict(options)

    def handle_response(self, ref: str, response: Any) -> None:
        """Nothing to do: the caller gets the response."""
        return None


@dataclass(frozen=True, slots=True)
class _Session:
    session_id: str = "bench"


class InstantBackend(Backend):
    """Answers every turn at once with ``ok``; the session never changes."""

    name = "instant"
    live_session = False  # the framework's own cost: no session governor

    def start_session(self, options: Mapping[str, Any]) -> _Session:
        """Return the constant session."""
        return _Session()

    def prompt(self, session: Any, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Yield one delta and the result."""
        yield Event.text_delta("ok")
        yield Event.result("ok", session_id=session.session_id)


class GovernedInstantBackend(InstantBackend):
    """:class:`InstantBackend` whose session counts as live: every turn asks the governor.

    Beside the plain one, it measures the session governor's round trip per turn (a CLI
    backend pays it, with a session that is kept between turns)."""

    name = "instant-governed"
    live_session = True


@dataclass(frozen=True, slots=True)
class _StampSession:
    deltas: int = 10
    pause: float = 0.005


class StampingBackend(Backend):
    """Streams ``deltas`` text deltas ``pause`` seconds apart, each stamped at emission."""

    name = "stamping"
    live_session = False  # the framework's own cost: no session governor

    def start_session(self, options: Mapping[str, Any]) -> _StampSession:
        """Options ``deltas`` (count per turn) and ``pause`` (seconds between deltas)."""
        return _StampSession(
            deltas=int(options.get("deltas", 10)), pause=float(options.get("pause", 0.005))
        )

    def prompt(self, session: _StampSession, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Yield the stamped deltas, then the result."""
        for index in range(session.deltas):
            if index and ctx.cancelled.wait(session.pause):
                break
            yield Event.text_delta("x", sent=time.time(), index=index)
        yield Event.result("done")


#: A provider that never ends by itself: a child process sleeping in its own process group.
_PROVIDER = "import time\nwhile True:\n    time.sleep(1)\n"


@dataclass(frozen=True, slots=True)
class _GroupSession:
    pid_file: str


class ProcessGroupBackend(Backend):
    """Starts a long-running provider process per turn, in its own process group.

    Like a CLI backend: the group is reported with ``ctx.track_process_group``; when the
    turn is cancelled the group gets SIGINT, then SIGKILL after a short grace period, and
    the turn ends with a ``cancelled`` error. The provider's pid is written to the
    session's ``pid_file`` so the benchmark can watch it disappear.
    """

    name = "process-group"

    def start_session(self, options: Mapping[str, Any]) -> _GroupSession:
        """Option ``pid_file``: where each turn writes its provider's pid."""
        return _GroupSession(pid_file=str(options["pid_file"]))

    def prompt(self, session: _GroupSession, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run the provider until the turn is cancelled."""
        from genagent_thespian import BackendError, BackendErrorKind

        child = _start_provider()
        ctx.track_process_group(child.pid)
        tmp = session.pid_file + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(str(child.pid))
        os.replace(tmp, session.pid_file)
        yield Event(EventKind.TEXT_DELTA, {"text": "started"})
        ctx.cancelled.wait()
        _end_group(child)
        ctx.untrack_process_group(child.pid)
        yield Event.error(BackendError("cancelled", kind=BackendErrorKind.CANCELLED))


def _start_provider() -> subprocess.Popen[bytes]:
    """Start the provider process in a new session (so its own process group)."""
    return subprocess.Popen(
        [sys.executable, "-c", _PROVIDER],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _end_group(child: subprocess.Popen[bytes], grace: float = 0.2) -> None:
    """SIGINT the child's group, then SIGKILL it if it is still there after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGINT)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(5.0)
