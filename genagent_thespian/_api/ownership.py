"""A script-owned actor system never outlives its script.

``start_system()`` forks Thespian's admin into a session of its own (it daemonizes), so
nothing the operating system does to the script reaches the actor processes: left alone,
they would keep running, ports open, after the script has ended. Every way a script ends
is therefore covered here or in the supervisor:

* normal exit, an uncaught exception, Ctrl-C (``KeyboardInterrupt``): an ``atexit`` hook
  shuts down every system this process started and has not shut down;
* ``SIGTERM`` and ``SIGHUP``: their default action ends the process without ``atexit``, so
  while a system is owned they raise ``SystemExit`` in the main thread instead (only when
  the script has not installed handlers of its own), which unwinds the script and runs the
  hook;
* ``SIGKILL`` (nothing runs in the script): the system's supervisor checks the owner's pid
  and start time every :data:`~genagent_thespian._actors.supervisor.OWNER_CHECK_INTERVAL`
  seconds and, once the owner is gone, stops every agent (durable records kept) and ends
  the system's processes.

A ``genagent node`` is a process of its own that owns its system, so a node outlives the
script that started it and ends with ``genagent node stop``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from .._core.log import get_logger

__all__ = ["adopt", "release"]


class Owned(Protocol):
    """What this module needs of an ``AgentSystem``: a way to end it."""

    def shutdown(self) -> None: ...


#: Signals whose default action would end the script without running ``atexit``.
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_log = get_logger("genagent_thespian.system")
_lock = threading.Lock()
_owned: list[Owned] = []
_owner_pid = 0
_previous_handlers: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}


def adopt(system: Owned) -> None:
    """Shut ``system`` down when this process ends, however it ends (but SIGKILL)."""
    global _owner_pid
    with _lock:
        if _owner_pid != os.getpid():  # first system, or a forked child's inherited state
            _owned.clear()
            _previous_handlers.clear()
            _owner_pid = os.getpid()
            atexit.register(_shutdown_owned)
        _owned.append(system)
        if len(_owned) == 1:
            _install_signal_handlers()


def release(system: Owned) -> None:
    """Forget ``system`` (it is shut down); restore the signal handlers after the last one."""
    with _lock:
        if system in _owned:
            _owned.remove(system)
        if not _owned:
            _restore_signal_handlers()


def _shutdown_owned() -> None:
    """``atexit`` hook: shut every owned system down, newest first; a failure is logged.

    Newest first, the reverse of their starts, as nested ``with`` blocks would end them.
    """
    if os.getpid() != _owner_pid:
        return  # a forked child (an actor process) must not shut its parent's systems down
    with _lock:
        systems = list(reversed(_owned))
    for system in systems:
        try:
            system.shutdown()
        except Exception:
            _log.exception("shutting down the actor system at exit failed")


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP handler: turn the signal into ``SystemExit`` so ``atexit`` runs.

    The default action of these signals ends the process without running ``atexit``, and
    the system would outlive its script until the supervisor's owner check noticed.
    """
    with _lock:
        owning = bool(_owned)
    if not owning:  # released from another thread: behave as the default action would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> None:
    """Handle the ending signals while a system is owned, unless the user set a handler.

    A handler the user installed is left alone (their code decides how the script ends);
    only the main thread may set handlers, and elsewhere the supervisor's owner check is
    the safety net.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the supervisor still watches us
    for signum in _ENDING_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            _previous_handlers[signum] = signal.signal(signum, _exit_on_signal)


def _restore_signal_handlers() -> None:
    """Put back the handlers this module replaced, if they are still ours to replace."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous_handlers.items()):
        with contextlib.suppress(ValueError, TypeError):
            if signal.getsignal(signum) is _exit_on_signal:
                signal.signal(signum, previous)
        del _previous_handlers[signum]
