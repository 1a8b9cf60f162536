"""``HostedWorker``: an agent's turn worker living in the agent's own process.

An agent started with ``turn_worker="thread"`` runs its turns without a worker process. The
worker's whole logic (``TurnWorker``: a daemon thread per turn, the queue, the pipe, the
deferred events) is reused unchanged; only its surroundings change:

* **Messages are local.** The agent and the hosted worker exchange the same messages as
  with a worker process (``_StartTurn``, ``_TurnOutput``, ``_EndSession``...), but through
  the agent's local mailbox instead of Thespian: the agent's ``send`` to the worker's
  :class:`HostedAddress` and the worker's ``send`` to its agent each append to it, and the
  agent handles what it holds before returning from ``receiveMessage``, in order. That saves
  the two Thespian messages per turn (and the second process) that made up about half of
  the framework's CPU per CLI turn (``docs/performance.md``).
* **The pipe is the agent's.** The agent returns ``ThespianWatch`` on every hosted worker's
  pipe from every handler, so Thespian wakes it (a ``WatchMessage``) when a turn thread has
  output, as it wakes a worker process.
* **Nothing blocks the agent.** Ending a session or retiring the worker waits for the turn
  thread and closes the backend (a CLI's grace period): here that runs in a thread of its
  own, which reports its end through the same pipe (``_SessionEnded``, or the
  ``ChildActorExited`` a real worker's parent would get from Thespian). Only when the agent
  itself exits does it retire its workers in place, as a worker process would on its
  parent's exit.
* **Dying is giving up.** Where a worker process would exit (a ``WorkerExit`` of the test
  kit, a turn stream that never ends), a hosted worker reports its exit instead and is
  dropped; the agent then ends its process groups and fails its turn exactly as after a
  worker crash. A turn thread stuck in Python code cannot be killed: it is left behind
  (daemon), which is why the mode suits backends whose slow part is a child process that
  can be killed (the CLIs), not an HTTP client running in the thread itself.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections.abc import Callable

from thespian.actors import ActorAddress, ChildActorExited, ThespianWatch, WakeupMessage

from .._core.log import get_logger
from .._core.protocol import _EndSession, _SessionEnded
from .._core.types import Capabilities
from .worker import _JOIN_GRACE, TurnWorker

__all__ = ["HostedAddress", "HostedWorker"]

_log = get_logger("genagent_thespian.turn_thread")

_serial = itertools.count(1)
_CLOSER_EXIT = 1.0  # seconds to let a background end return after its last report


class HostedAddress(ActorAddress):
    """The address of a hosted worker: never reaches Thespian, only the agent's mailbox."""

    def __init__(self, worker: HostedWorker) -> None:
        super().__init__(("genagent-turn-thread", os.getpid(), next(_serial)))
        self.worker = worker

    def __getstate__(self) -> None:
        raise TypeError("a hosted worker's address is local to its agent's process")


class HostedWorker(TurnWorker):
    """A :class:`TurnWorker` run by its agent in the agent's process (module docstring)."""

    _owns_process = False

    def __init__(self, deliver: Callable[[object, ActorAddress], None], caps: Capabilities) -> None:
        """``deliver(message, sender)`` puts a message for the agent in its local mailbox."""
        super().__init__(caps)
        self.address = HostedAddress(self)
        self._deliver = deliver
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()  # from background ends
        self.ended = False  # its exit was reported: the agent stops watching its pipe
        self._closer: threading.Thread | None = None

    @property
    def fd(self) -> int:
        """The read end of the pipe its threads write to (watched by the agent)."""
        assert self._rfd is not None
        return self._rfd

    # ------------------------------------------------------------------ the actor surface

    def send(self, targetAddr: ActorAddress, msg: object) -> None:  # noqa: N803 (Thespian's)
        """Everything a worker sends goes to its agent: through the agent's local mailbox."""
        self._deliver(msg, self.address)

    def wakeupAfter(self, timePeriod: object, payload: object = None) -> None:  # noqa: N803
        """Never needed: the agent watches the pipe (no polling), and exits are reports."""
        raise RuntimeError("a hosted worker has no timers")

    def receiveMessage(self, message: object, sender: ActorAddress) -> ThespianWatch | None:
        """As a worker process, minus the wakeups it never arms."""
        if isinstance(message, WakeupMessage):
            return None
        return super().receiveMessage(message, sender)

    # ------------------------------------------------------------------ ending, not blocking

    def _drain(self) -> None:
        """Relay the turn thread's output, then what a background end reported."""
        super()._drain()
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, ChildActorExited):
                if self._closer is not None:
                    self._closer.join(_CLOSER_EXIT)  # it reported this as its last act
                self._ended()
            self._deliver(message, self.address)

    def _report(self, message: object) -> None:
        """Queue ``message`` for the agent from a background thread and wake the agent."""
        self._outbox.put(message)
        if self._wfd is not None:
            with contextlib.suppress(OSError):
                os.write(self._wfd, b"x")

    def _in_background(self, work: Callable[[], None], report: object, name: str) -> None:
        """Run ``work`` in a daemon thread, then report ``report`` to the agent."""

        def run() -> None:
            try:
                work()
            except Exception:
                _log.exception("hosted turn worker: %s failed", name)
            finally:
                self._report(report)

        self._closer = threading.Thread(target=run, name=f"genagent-{name}", daemon=True)
        self._closer.start()

    def _end_session(self, message: _EndSession, sender: ActorAddress) -> None:
        """Cancel, let the turn thread finish, end the session: in the background."""
        self._owner = sender
        self._cancel_all()
        self._in_background(lambda: self._finish_session(message), _SessionEnded(), "end-session")

    def _retire(self) -> None:
        """Retired by its agent (idle, replaced, the governor): end in the background, then
        report the exit a worker process's parent would get from Thespian."""
        if self._closer is not None and self._closer.is_alive():
            return  # already ending
        self._cancel_all()
        self._in_background(self._release, ChildActorExited(self.address), "retire")

    def retire_now(self) -> None:
        """The agent itself is exiting: retire in place (bounded), as a worker process would;
        an end already running in the background is waited for instead."""
        closer = self._closer
        if closer is not None and closer.is_alive():
            closer.join(_JOIN_GRACE + _CLOSER_EXIT)
        else:
            TurnWorker._retire(self)
        self.ended = True

    def _die_soon(self) -> None:
        """Where a worker process would exit: report its exit and be dropped (module docstring)."""
        self._exit_code = None
        self._running = None
        self._cancel_all()
        self._ended()
        self._deliver(ChildActorExited(self.address), self.address)

    def _ended(self) -> None:
        """Stop being watched; close the pipe only once no thread of it can write any more
        (a closed descriptor's number could be reused for an unrelated file)."""
        self.ended = True
        threads = (self._finishing, self._closer)
        if any(thread is not None and thread.is_alive() for thread in threads):
            return  # a stuck thread keeps its two descriptors (it is leaked anyway)
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = None
