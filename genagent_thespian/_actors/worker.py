"""``TurnWorker``: the child actor of an agent that runs backend turns.

The agent never blocks; the worker does the slow part. For each ``_StartTurn`` it runs
``backend.prompt(...)`` in a daemon thread, and the actor's main loop forwards whatever the
thread produced to the agent as ``_TurnOutput`` messages while the turn runs.

Why a thread, a queue and a pipe: on ``multiprocTCPBase`` an actor's ``self.send()`` calls
are only transmitted after ``receiveMessage`` returns, so a handler that blocked on the LLM
could not stream. The thread pushes items on a queue and writes one byte to a pipe; the
actor returns ``ThespianWatch([pipe])`` from every handler, so Thespian wakes it (about
2 ms, measured) to drain the queue and send. Bases without ``ThespianWatch``
(``simpleSystemBase``) poll the queue with ``wakeupAfter`` instead.

Why some items do not wake the actor: every ``_TurnOutput`` is a Thespian message with a
fixed cost in both processes (framing, HMAC, pickling, the agent's dispatch), which made
up most of the framework's CPU per CLI turn. Items nobody waits for (the events of
``_DEFERRED_KINDS``: session and turn announcements, usage, unmapped provider lines; a
session re-announced unchanged) are queued without the wake-up byte and travel, in order,
with the next item that matters: an event a streaming user sees (text, deltas, tools,
retries, warnings), a changed session (durable at once), a process group, the turn's end.
And the events a streaming user sees wake the actor only when somebody watches the turn
(``_StartTurn.stream``: a ``Watch`` subscriber, a ``turn.event`` telemetry handler, an
implementation's ``handle_stream_event``); otherwise they too ride with the turn's end. A
claude turn thus costs one message instead of five, and the streaming latency of what
users watch is unchanged. Someone who starts watching mid-turn makes the agent send
``_StreamTurn``: the worker sends what it holds at once and streams from then on.

Why the worker never raises: Thespian re-delivers a message whose handler raised, which
would run an LLM call twice. Every exception of the thread is caught and reported as the
turn's failure; the handlers themselves only move data.

The worker is reused for the agent's next turn while healthy (spawning a process costs
about ten raw round trips) and replaced after a crash, or when a cancelled turn does not
end within the grace period.

The messages between an agent and its worker (one worker per agent at a time)::

    AgentActor                                   TurnWorker              turn thread
      _WorkerHello (a worker made ahead) ----->  <-- _TurnOutput(0, pid)
      _StartTurn(turn_id, prompt, session) --->  _start ------------->  [wait: previous
                                                                         stream, dead groups]
      <-- _TurnOutput(pid)        (first turn: the worker runs)          ready
      <-- _TurnOutput(waiting)    (behind a stream still ending)         backend.prompt()
      <-- _TurnOutput(ready)      (the backend call begins: watchdog)    events -> queue
      <-- _TurnOutput(events, session, process_groups)  <-- _drain <--   byte on the pipe
      <-- _TurnOutput(done, error, duration_ms)                           terminal event
      _StreamTurn(turn_id) (a watcher came) --> send what is queued, stream the rest
      _CancelTurn(turn_id) -------------------> ctx.cancelled.set()
      _WarmSession(session) ------------------> _warm ------------->  backend.warm()
      <-- _SessionWarmed(process_groups, session, done)  <-- _drain   (prewarm=True)
      _EndSession(session) -------------------> join, terminate_session, close
      <-- _SessionEnded
      ActorExitRequest -----------------------> _retire: cancel, join (bounded), close

Every ``_StartTurn`` is answered by exactly one ``_TurnOutput`` with ``done`` (or, for a
``WorkerExit`` of the test kit, by the worker's death, which the agent sees as
``ChildActorExited`` and answers as ``TurnCrashed``); every ``_WarmSession`` by exactly one
``_SessionWarmed`` with ``done``.

A prewarm (``_WarmSession``) runs ``Backend.warm`` in the turn thread's place: a turn that
arrives meanwhile waits for it like for a previous turn's stream (``waiting``), then runs
on the process it started, so prewarm never starts a second process and never makes a
turn wait for more than the start-up it would have paid itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from thespian.actors import (
    Actor,
    ActorExitRequest,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from .._core.backend import Backend, TurnContext, WorkerExit
from .._core.errors import (
    BackendError,
    BackendErrorKind,
    GenAgentError,
    InvalidOption,
    MessageTooLarge,
    TurnCrashed,
)
from .._core.log import get_logger
from .._core.protocol import (
    _CancelTurn,
    _EndSession,
    _SessionEnded,
    _SessionWarmed,
    _StartTurn,
    _StreamTurn,
    _TurnOutput,
    _WarmSession,
    _WorkerHello,
)
from .._core.turn import Event, EventKind
from .._core.types import ActorAddress, Capabilities, Fields, Sender, Session
from .._os.heap import share_inherited_heap
from .._os.processes import terminate_process_group

__all__ = ["TurnWorker"]

_log = get_logger("genagent_thespian.worker")

_POLL_INTERVAL = 0.002  # seconds between queue polls where ThespianWatch is unsupported
_EXIT_DELAY = 0.05  # seconds between reporting an Exit item and dying (lets the report go out)
_JOIN_GRACE = 5.0  # seconds a retiring worker waits for its turn thread
_CLEANUP_WAIT = 30.0  # seconds a turn waits for the previous turn's stream to finish
_GROUPS_GONE_WAIT = 10.0  # seconds a turn waits for killed process groups to be gone
#: Seconds a turn waits for a prewarm still starting the session (``Backend.warm``): more
#: than a CLI's own start-up bound (codex's app-server handshake allows 60 s), since the
#: turn would otherwise have waited for that start itself.
_WARM_WAIT = 90.0
_PREWARM_REF = "prewarm"  # the ref of the TurnContext a prewarm runs with

# Events that ride with the next item that wakes the actor (see the module docstring).
_DEFERRED_KINDS = frozenset(
    {EventKind.SESSION_STARTED, EventKind.TURN_STARTED, EventKind.USAGE, EventKind.RAW}
)


@dataclass
class _Running:
    """The turn in progress: its id, the context its cancel flag lives in, its thread, and
    whether somebody watches it (its events wake the actor as they come)."""

    turn_id: int
    ctx: TurnContext
    thread: threading.Thread
    watched: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)


class TurnWorker(Actor):
    """Runs an agent's turns; one per agent at a time (see the module docstring).

    A child of its agent, so its death reaches the agent as ``ChildActorExited``. It catches
    every exception and reports it as the turn's failure: Thespian re-delivers a message
    whose handler raised, which would run an LLM call twice.
    """

    #: Whether this worker is a process of its own (its heap is frozen at its start); a
    #: worker hosted in its agent's process (``turn_thread.HostedWorker``) is not.
    _owns_process = True

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        """Read from the capabilities whether ``ThespianWatch`` works here and if isolated.

        Without watch support (``simpleSystemBase``) the queue is polled on wakeups instead of
        a pipe; without isolation a ``WorkerExit`` cannot really exit the process. Outputs go
        to the sender of ``_StartTurn`` (its agent, the worker's parent).
        """
        super().__init__()
        caps = capabilities or {}
        self._watch_supported = bool(caps.get("Thespian Watch Supported"))
        self._isolated = caps.get("Thespian ActorSystem Name") != "simpleSystem"
        if self._isolated and self._owns_process:
            share_inherited_heap()  # before anything here can start a full collection
        self._owner: Sender = None
        self._backends: dict[type[Backend], Backend] = {}
        self._queue: queue.SimpleQueue[tuple[str, tuple[object, ...]]] = queue.SimpleQueue()
        self._running: _Running | None = None
        self._finishing: threading.Thread | None = None  # the last turn's (or prewarm's) thread
        self._finishing_wait = _CLEANUP_WAIT  # how long a next turn waits for that thread
        self._warming: TurnContext | None = None  # the prewarm in progress, until reported
        # (session given, session returned) of the last prewarm that changed it: a turn sent
        # before the agent heard of the change runs with what warm made (see _run_turn).
        self._warmed: tuple[Session, Session] | None = None
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._poll_armed = False
        self._exit_code: int | None = None
        # Turns whose output the transport refused (over max_frame_bytes): ended, and what
        # they still produce is not sent (see _on_undeliverable).
        self._undeliverable: set[int] = set()
        self._announced = False
        self._groups: set[int] = set()  # live process groups the agent was told about
        self._groups_lock = threading.Lock()

    # ------------------------------------------------------------------ dispatch

    def receiveMessage(self, message: object, sender: ActorAddress) -> ThespianWatch | None:
        """Dispatch by type; always return the current watch (see module docstring).

        Thespian keeps watching only the file descriptors the *last* handler returned, so
        every path returns the watch, even for messages the worker ignores; the one
        exception is ``ActorExitRequest``, after which the pipe is closed. A cancel for a
        turn that is not running (it ended meanwhile) is ignored: its end was reported.
        """
        try:
            if isinstance(message, _StartTurn):
                self._start(message, sender)
            elif isinstance(message, _WorkerHello):
                # Only the pid: the first turn still reports ``ready`` (not ``_announced``).
                self.send(sender, _TurnOutput(0, pid=os.getpid()))
            elif isinstance(message, _WarmSession):
                self._warm(message, sender)
            elif isinstance(message, _CancelTurn):
                running = self._running
                if running is not None and running.turn_id == message.turn_id:
                    running.ctx.cancelled.set()
            elif isinstance(message, _StreamTurn):
                self._stream_turn(message.turn_id)
            elif isinstance(message, WatchMessage):
                self._drain()
            elif isinstance(message, WakeupMessage):
                self._on_wakeup(message)
            elif isinstance(message, _EndSession):
                self._end_session(message, sender)
            elif isinstance(message, ActorExitRequest):
                self._retire()
                return None
            elif isinstance(message, PoisonMessage):
                self._on_undeliverable(message)
            elif isinstance(message, ChildActorExited):
                pass
        except Exception:
            _log.exception("turn worker failed to handle %s", type(message).__name__)
        return self._watch()

    def _watch(self) -> ThespianWatch | None:
        """The ``ThespianWatch`` on the pipe that wakes this actor when its thread has output.

        Returned from every ``receiveMessage``: on multiprocTCPBase Thespian then delivers a
        ``WatchMessage`` as soon as the turn thread writes, a 2 ms relay instead of a poll."""
        if self._watch_supported and self._rfd is not None:
            return ThespianWatch([self._rfd])
        return None

    # ------------------------------------------------------------------ turns

    def _start(self, message: _StartTurn, sender: ActorAddress) -> None:
        """Start a turn in a daemon thread; refuse a second one while a turn runs.

        The backend call blocks for the whole turn, and an actor inside ``receiveMessage``
        sends nothing (measured: its sends wait until it returns), so the call runs in a
        thread that reports through a queue and this actor stays free to relay."""
        self._owner = sender
        if self._running is not None:
            error = TurnCrashed(
                "the worker is busy with another turn", agent=message.agent, ref=message.ref
            )
            self.send(sender, _TurnOutput(message.turn_id, done=True, error=error, pid=os.getpid()))
            return
        if self._watch_supported and self._rfd is None:
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
        backend = self._backend_for(message.backend)
        previous, wait = self._finishing, self._finishing_wait
        # The agent starts the watchdog at once unless told to wait for ``ready`` (the same
        # rule as ``AgentActor._start_turn``): on a new worker, with groups to wait out, or
        # (``waiting``, which the agent cannot know) behind a stream still ending.
        behind = previous is not None and previous.is_alive()
        report_ready = not self._announced or bool(message.wait_gone) or behind
        ctx = TurnContext(
            agent=message.agent,
            ref=message.ref,
            on_process_group=self._on_process_group,
            isolated=self._isolated,
        )
        watched = threading.Event()
        if message.stream:
            watched.set()
        thread = threading.Thread(
            target=self._run_turn,
            args=(backend, message, ctx, previous, wait, report_ready, watched),
            name=f"genagent-turn-{message.turn_id}",
            daemon=True,
        )
        self._running = _Running(message.turn_id, ctx, thread, watched)
        thread.start()
        self._finishing, self._finishing_wait = thread, _CLEANUP_WAIT
        if not self._announced:
            # Tell the agent at once that this worker runs (and its pid): a worker that
            # dies before its start-up handshake gets no exit notice from Thespian.
            self._announced = True
            self.send(sender, _TurnOutput(message.turn_id, pid=os.getpid()))
        elif behind and not message.wait_gone:
            self.send(sender, _TurnOutput(message.turn_id, waiting=True, pid=os.getpid()))
        if not self._watch_supported:
            self._arm_poll()

    def _stream_turn(self, turn_id: int) -> None:
        """Somebody started watching turn ``turn_id``: send what it queued, stream the rest."""
        running = self._running
        if running is None or running.turn_id != turn_id or running.watched.is_set():
            return
        running.watched.set()
        self._drain()

    def _backend_for(self, backend_cls: type[Backend]) -> Backend:
        """The worker's one instance of ``backend_cls``: live resources (an HTTP client, a CLI
        process) belong to the worker and are reused across the agent's turns."""
        backend = self._backends.get(backend_cls)
        if backend is None:
            backend = backend_cls()
            self._backends[backend_cls] = backend
        return backend

    def _run_turn(
        self,
        backend: Backend,
        message: _StartTurn,
        ctx: TurnContext,
        previous: threading.Thread | None,
        wait: float,
        report_ready: bool,
        watched: threading.Event,
    ) -> None:
        """Thread body: play one turn, reporting everything through the queue. Never raises.

        The turn-ending contract (see :class:`Backend`): the turn's outcome is reported at
        its terminal event, so the caller's reply is not delayed, and the stream is then
        consumed until the backend's generator returns by itself, so that the backend's own
        code decides what to keep (a live CLI process) and what to end. ``close()`` is only
        called when the turn did not get that far (the backend raised, or yielded garbage).
        """
        turn_id = message.turn_id
        if not self._wait_for_previous(turn_id, previous, wait):
            return
        self._wait_groups_gone(message.wait_gone)
        if report_ready:
            self._put("ready", (turn_id,))
        started = time.monotonic()
        session = message.session
        warmed, self._warmed = self._warmed, None  # written before the warm thread ended
        if warmed is not None and warmed[0] == session and warmed[1] != session:
            # The turn was sent during the prewarm: it runs on what warm made of the session
            # (codex: the app-server's key), and the agent gets that session with the turn.
            session = warmed[1]
            self._put("session", (turn_id, session), wake=False)
        stream = None
        exhausted = False
        reported = False
        try:
            stream = backend.prompt(session, message.prompt, ctx)
            terminal: Event | None = None
            for event in stream:
                if not isinstance(event, Event):
                    raise TypeError(f"backend yielded {type(event).__name__}, not Event")
                if terminal is not None:
                    _log.debug("%s yielded %s after the terminal event", backend.name, event.kind)
                    continue
                changed = False
                if event.kind in (EventKind.SESSION_STARTED, EventKind.RESULT):
                    updated = backend.update_session(session, event)
                    changed = updated is not session and updated != session
                    session = updated
                    if changed:
                        self._put("session", (turn_id, session), wake=False)
                if event.terminal:
                    terminal = event
                    reported = True
                    self._put("event", (turn_id, event), wake=False)
                    error = _terminal_error(terminal, backend)
                    self._put("done", (turn_id, error, _ms_since(started)))
                elif changed or event.kind in _DEFERRED_KINDS:
                    self._put("event", (turn_id, event), wake=changed)
                else:  # what a watcher sees: sent at once if somebody watches
                    self._put("event", (turn_id, event), wake=False, watched=watched)
            exhausted = True
            if not reported:
                self._put("done", (turn_id, _terminal_error(None, backend), _ms_since(started)))
        except BackendError as exc:
            exhausted = True  # a generator that raised has finished
            if not reported:
                self._put("done", (turn_id, _backend_error(exc, backend), _ms_since(started)))
        except WorkerExit as exc:
            exhausted = True
            self._put("exit", (turn_id, exc.code))
        except BaseException as exc:
            if not reported:
                crash = TurnCrashed(f"the turn raised {type(exc).__name__}: {exc}")
                self._put("done", (turn_id, crash, _ms_since(started)))
            else:
                _log.exception("%s failed after its terminal event", backend.name)
        finally:
            close = getattr(stream, "close", None)
            if close is not None and not exhausted:
                try:
                    close()
                except Exception:
                    _log.debug("closing the backend stream failed", exc_info=True)

    def _warm(self, message: _WarmSession, sender: ActorAddress) -> None:
        """Start ``Backend.warm`` in the turn thread's place (see the module docstring).

        A turn already running has started the session itself: nothing to warm. Otherwise
        the prewarm runs after whatever the last turn's stream still does, and the next
        turn waits for it (``_finishing``)."""
        self._owner = sender
        if self._running is not None or self._warming is not None:
            self.send(sender, _SessionWarmed(done=True, pid=os.getpid()))
            return
        if self._watch_supported and self._rfd is None:
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
        backend = self._backend_for(message.backend)
        ctx = TurnContext(
            agent=message.agent,
            ref=_PREWARM_REF,
            on_process_group=self._on_process_group,
            isolated=self._isolated,
        )
        previous, wait = self._finishing, self._finishing_wait
        thread = threading.Thread(
            target=self._run_warm,
            args=(backend, message.session, ctx, previous, wait),
            name="genagent-prewarm",
            daemon=True,
        )
        self._warming = ctx
        thread.start()
        self._finishing, self._finishing_wait = thread, _WARM_WAIT
        if not self._watch_supported:
            self._arm_poll()

    def _run_warm(
        self,
        backend: Backend,
        session: Session,
        ctx: TurnContext,
        previous: threading.Thread | None,
        wait: float,
    ) -> None:
        """Thread body of a prewarm: ``backend.warm``, then one ``warmed`` report. Never raises."""
        started = time.monotonic()
        warmed, error = session, None
        if previous is not None:
            previous.join(wait)
        if previous is not None and previous.is_alive():
            error = "the previous turn's stream has not ended"
        elif not ctx.cancelled.is_set():
            try:
                warmed = backend.warm(session, ctx)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                _log.debug("%s: warm raised", backend.name, exc_info=True)
        changed = warmed is not session and warmed != session
        if changed:
            self._warmed = (session, warmed)
        self._put("warmed", (warmed if changed else None, changed, error, _ms_since(started)))

    def _wait_for_previous(
        self, turn_id: int, previous: threading.Thread | None, wait: float
    ) -> bool:
        """Wait until the previous turn's stream (or a prewarm) has finished (``wait`` s at most).

        The previous turn was answered at its terminal event, but its backend generator may
        still be ending a provider process; the next turn must not start one for the same
        session meanwhile. A prewarm may still be starting the process the turn will use.
        A clean-up that never ends means the worker is stuck: it exits, so the agent ends
        its process groups and uses a new worker.
        """
        if previous is None:
            return True
        previous.join(wait)
        if not previous.is_alive():
            return True
        _log.error("the previous turn's backend stream did not end within %ss", wait)
        self._put("exit", (turn_id, 1))
        return False

    @staticmethod
    def _wait_groups_gone(groups: tuple[int, ...]) -> None:
        """Wait (bounded) until the process groups the agent killed have no live member.

        A provider process of this session that a crashed or replaced worker left behind
        may still be writing its transcript; a new one must not start beside it.
        """
        for pgid in groups:
            with contextlib.suppress(InvalidOption):
                if not terminate_process_group(
                    pgid, grace=_GROUPS_GONE_WAIT, signals=(signal.SIGKILL,)
                ):
                    _log.error("process group %s survived SIGKILL for %ss", pgid, _GROUPS_GONE_WAIT)

    def _put(
        self,
        kind: str,
        payload: tuple[object, ...],
        *,
        wake: bool = True,
        watched: threading.Event | None = None,
    ) -> None:
        """Queue a report from the turn thread; ``wake``: also wake the actor through the pipe
        to send it (with everything queued before it); ``watched``: wake it only if that is
        set. The flag is read after the item is queued: a ``_StreamTurn`` handled meanwhile
        either finds the item in the queue (and sends it) or has set the flag first."""
        self._queue.put((kind, payload))
        wake = wake or (watched is not None and watched.is_set())
        if wake and self._wfd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wfd, b"x")

    def _on_process_group(self, pgid: int, alive: bool) -> None:
        """A backend started (or ended) a process group: the agent must know, to end it if this
        worker dies. A live group tracked again is not news: backends that keep a process
        across turns track it on every turn (each turn has its own context)."""
        with self._groups_lock:
            if alive == (pgid in self._groups):
                return
            (self._groups.add if alive else self._groups.discard)(pgid)
        self._put("pgroup", (pgid, alive))

    # ------------------------------------------------------------------ draining

    def _drain(self) -> None:
        """Relay everything the turn thread queued to the agent, one ``_TurnOutput`` per turn.

        Events of one wakeup travel in one message (the agent handles them in order), with the
        process-group changes; a reported ``exit`` makes the worker die afterwards."""
        if self._rfd is not None:
            try:
                while os.read(self._rfd, 65536):
                    pass
            except BlockingIOError:
                pass
        outputs: dict[int, Fields] = {}
        pgroups: list[tuple[int, bool]] = []
        warmed: tuple[object, ...] | None = None
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "pgroup":
                pgroups.append(cast("tuple[int, bool]", payload))
                continue
            if kind == "warmed":
                warmed = payload
                continue
            turn_id = cast(int, payload[0])
            out = outputs.setdefault(turn_id, {"events": []})
            if kind == "event":
                out["events"].append(payload[1])
            elif kind == "session":
                out["session_changed"] = True
                out["session"] = payload[1]
            elif kind == "ready":
                out["ready"] = True
            elif kind == "done":
                out.update(done=True, error=payload[1], duration_ms=payload[2])
            elif kind == "exit":
                self._exit_code = cast(int, payload[1])
        if self._owner is None:
            return
        if warmed is not None or (pgroups and not outputs and self._running is None):
            self._send_warmed(warmed, pgroups)
            pgroups = []
        if pgroups and not outputs and self._running is not None:
            outputs[self._running.turn_id] = {"events": []}
        for turn_id, out in outputs.items():
            events = tuple(out.pop("events"))
            fields = out
            if turn_id in self._undeliverable:
                # Ended for the agent already: only the process facts still matter to it.
                events, fields = (), {}
                if not pgroups:
                    continue
            message = _TurnOutput(
                turn_id,
                events=events,
                process_groups=tuple(pgroups),
                pid=os.getpid(),
                **fields,
            )
            pgroups = []
            self.send(self._owner, message)
            if out.get("done") and self._running is not None and self._running.turn_id == turn_id:
                self._running = None
        if self._exit_code is not None:
            self._die_soon()

    def _send_warmed(
        self, warmed: tuple[object, ...] | None, pgroups: list[tuple[int, bool]]
    ) -> None:
        """Relay a prewarm's facts: the process groups it started, its end (``warmed``).

        Process groups reported while no turn runs (a prewarm's) travel here too: they
        must reach the agent, which ends them should this worker die."""
        fields: Fields = {}
        if warmed is not None:
            session, changed, error, duration_ms = warmed
            fields = {"done": True, "error": error, "duration_ms": duration_ms}
            if changed:
                fields.update(session_changed=True, session=session)
            self._warming = None
        self.send(
            self._owner,
            _SessionWarmed(process_groups=tuple(pgroups), pid=os.getpid(), **fields),
        )

    def _on_undeliverable(self, poison: PoisonMessage) -> None:
        """The transport refused an output to the agent: the turn fails, typed, at once.

        A ``_TurnOutput`` whose pickle exceeds the transport's ``max_frame_bytes`` (a huge
        reply, or a session that grew with one) comes back as a ``PoisonMessage``; without
        this its turn would never end for the agent, and its caller would wait for an
        answer that cannot come. The turn is cancelled (its outcome cannot be delivered),
        the agent gets its end with ``MessageTooLarge``, and whatever the turn still
        produces is dropped, except the process facts the agent needs to clean up."""
        original = poison.poisonMessage
        if not isinstance(original, _TurnOutput) or self._owner is None:
            return
        turn_id = original.turn_id
        if turn_id in self._undeliverable:
            return
        self._undeliverable.add(turn_id)
        running = self._running
        if running is not None and running.turn_id == turn_id:
            running.ctx.cancelled.set()
            self._running = None  # a next turn waits for this thread to finish (_start)
        error = MessageTooLarge(
            "the turn's output is larger than the transport's max_frame_bytes and could not "
            "reach the agent; the turn was ended (raise max_frame_bytes, or make replies and "
            "sessions smaller)"
        )
        self.send(
            self._owner,
            _TurnOutput(
                turn_id,
                done=True,
                error=error,
                process_groups=original.process_groups,
                pid=os.getpid(),
            ),
        )

    def _arm_poll(self) -> None:
        """Poll the queue with a wakeup where Thespian cannot watch a pipe (simpleSystemBase)."""
        if not self._poll_armed:
            self._poll_armed = True
            self.wakeupAfter(_POLL_INTERVAL, payload="poll")

    def _on_wakeup(self, message: WakeupMessage) -> None:
        """Poll the queue (``poll``), or carry out a delayed real exit (``exit``)."""
        if message.payload == "poll":
            self._poll_armed = False
            self._drain()
            if self._running is not None or self._warming is not None:
                self._arm_poll()
        elif message.payload == "exit":
            os._exit(self._exit_code or 1)

    def _die_soon(self) -> None:
        """Carry out a ``WorkerExit``: really exit where isolated, else report a crash."""
        code = self._exit_code
        running = self._running
        self._running = None
        if self._isolated:
            self.wakeupAfter(_EXIT_DELAY, payload="exit")
            return
        self._exit_code = None
        if running is not None and self._owner is not None:
            crash = TurnCrashed(f"the worker process exited with code {code} (simulated)")
            self.send(
                self._owner, _TurnOutput(running.turn_id, done=True, error=crash, pid=os.getpid())
            )

    # ------------------------------------------------------------------ ending

    def _end_session(self, message: _EndSession, sender: ActorAddress) -> None:
        """The agent is stopping: cancel the turn, let its thread finish, end the session, report.

        The session is ended here, where its live resources are, so no CLI process
        outlives the agent; ``_SessionEnded`` lets the agent's stop complete."""
        self._cancel_all()  # the agent is stopping: its turn ends now
        self._finish_session(message)
        self.send(sender, _SessionEnded())

    def _finish_session(self, message: _EndSession) -> None:
        """End the session where its live resources are, after its turn thread (bounded)."""
        self._join_turn_threads()
        backend = self._backend_for(message.backend)
        try:
            backend.terminate_session(message.session)
        except Exception:
            _log.exception("terminate_session of %s raised", type(backend).__name__)
        self._close_backends()

    def _retire(self) -> None:
        """The worker is being removed: cancel the running turn, end its threads and backends."""
        self._cancel_all()
        self._release()
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = None

    def _cancel_all(self) -> None:
        """Set the cancel flag of the running turn and of a prewarm in progress."""
        running = self._running
        if running is not None:
            running.ctx.cancelled.set()
        if self._warming is not None:
            self._warming.cancelled.set()

    def _release(self) -> None:
        """Let the turn thread end its stream (bounded), then close every backend."""
        self._join_turn_threads()
        self._close_backends()

    def _join_turn_threads(self) -> None:
        """Let the running or finishing turn thread end its stream (bounded)."""
        finishing = self._finishing
        if finishing is not None:
            finishing.join(_JOIN_GRACE)

    def _close_backends(self) -> None:
        """Close every backend instance; a failing close is logged, never raised."""
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:
                _log.exception("close of %s raised", type(backend).__name__)


def _ms_since(started: float) -> float:
    """Milliseconds since the monotonic time ``started`` (a turn's ``duration_ms``)."""
    return (time.monotonic() - started) * 1000.0


def _backend_error(exc: BackendError, backend: Backend) -> BackendError:
    """Name the backend in an error that does not say which one raised it (for the caller)."""
    if exc.backend is None:
        exc.backend = backend.name
    return exc


def _terminal_error(terminal: Event | None, backend: Backend) -> GenAgentError | None:
    """Return the failure a turn's terminal event stands for (``None`` for a result).

    Every failure becomes a typed error naming the backend: a ``BackendError`` the backend
    made is kept (its kind and retry hints are the backend's knowledge); an ``error`` event
    with only a message and a kind or code is wrapped; no terminal event at all is
    ``no_terminal_event``, so a broken backend is reported, never taken for success.
    """
    if terminal is None:
        return BackendError(
            "the backend ended the turn without a result or error event",
            kind=BackendErrorKind.NO_TERMINAL_EVENT,
            backend=backend.name,
        )
    if terminal.kind == EventKind.RESULT:
        return None
    error = terminal.data.get("error")
    if isinstance(error, BackendError):
        return _backend_error(error, backend)
    if isinstance(error, GenAgentError):
        return error
    message = str(terminal.data.get("message") or error or "the backend reported an error")
    kind = str(terminal.data.get("kind") or terminal.data.get("code") or BackendErrorKind.UNKNOWN)
    return BackendError(message, kind=kind, backend=backend.name)
