"""Finding and ending the operating-system processes the framework started.

Thespian leaves the children of a SIGKILLed actor running. Three mechanisms make sure
nothing the framework started outlives its owner:

* a turn worker asks the kernel to SIGKILL it when its agent dies
  (:func:`die_with_parent`, ``PR_SET_PDEATHSIG``);
* programs a backend executes (the ``claude`` and ``codex`` CLIs) inherit the agent's
  ``GENAGENT_AGENT_ID`` and the system's ``GENAGENT_SYSTEM_ID`` in their environment, so
  :func:`processes_with_marker` finds them even in a process group of their own. (The
  marker is only visible in ``/proc/<pid>/environ`` for processes that were *executed*
  after it was set; forked actors show their parent's original environment, which is why
  the worker uses the parent-death signal instead);
* every actor shares the admin's process group, which ``shutdown`` kills as a last sweep.

This module is the one place that signals processes: :func:`kill_process` and
:func:`kill_process_group` both answer whether a signal was sent, never signal the caller
itself, its own group or init, and treat a process that is gone, or not ours to signal, as
nothing to do. (The chaos test kit adds argument checks that tell a test it aimed at
itself.) Process facts come from psutil, except the
two it lacks (process groups, start-time identity), which ``procfs.py`` reads from ``/proc``.
"""

from __future__ import annotations

import ctypes  # at import, not in each child: shared after the fork, not copied per process
import os
import select
import signal
import threading
import time

import psutil

from .._core.errors import InvalidOption
from .procfs import process_group_members

__all__ = [
    "AGENT_MARKER",
    "SYSTEM_MARKER",
    "children_die_with_this_process",
    "children_of",
    "descendants_of",
    "die_with_parent",
    "kill_marked",
    "kill_process",
    "kill_process_group",
    "owner_alive",
    "owner_identity",
    "process_alive",
    "processes_with_marker",
    "terminate_process_group",
    "wait_for_exit",
]

SYSTEM_MARKER = "GENAGENT_SYSTEM_ID"
AGENT_MARKER = "GENAGENT_AGENT_ID"


def processes_with_marker(value: str, *, variable: str = SYSTEM_MARKER) -> list[int]:
    """Return the pids (other than this process) whose environment has ``variable=value``.

    Processes that vanish or are not ours to read while the table is walked are skipped:
    they are gone, or not something this user could have started.
    """
    if not value:
        return []
    own = os.getpid()
    found = []
    for process in psutil.process_iter():
        if process.pid == own:
            continue
        try:
            if process.environ().get(variable) == value:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_marked(value: str, *, variable: str) -> list[int]:
    """SIGKILL every process marked ``variable=value``; return their pids."""
    pids = processes_with_marker(value, variable=variable)
    for pid in pids:
        kill_process(pid)
    return pids


def kill_process(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``pid``, never to this process or to init.

    Returns:
        ``True`` if the signal was sent; ``False`` if there was no such process, it is not
        ours to signal, or it is this process or a pid <= 1 (0 and negative pids name
        groups, 1 is init), which are never signalled.

    Raises:
        InvalidOption: ``pid`` is not an int.
    """
    _check_int("pid", pid)
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        psutil.Process(pid).send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of group ``pgid``, never to the caller's own group.

    Returns:
        ``True`` if the signal was sent; ``False`` if the group has no process, is not ours
        to signal, or is the caller's own group or a pgid <= 1 (never signalled: that would
        take the caller down, and in a test run the test runner).

    Raises:
        InvalidOption: ``pgid`` is not an int.
    """
    _check_int("process group", pgid)
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)  # psutil has no process-group call
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _check_int(what: str, value: object) -> None:
    """Refuse a pid or group that is not an int (``bool`` included) before any signal is sent."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOption(f"invalid {what} {value!r}: expected an int")


def terminate_process_group(
    pgid: int,
    *,
    grace: float = 2.0,
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL),
) -> bool:
    """End every process of group ``pgid``: each signal in turn, ``grace`` seconds apart.

    Returns:
        ``True`` if the group is empty at the end.

    Raises:
        InvalidOption: ``pgid`` is not an int > 1, or is the caller's own group: a group
            this module never signals cannot be made empty, so waiting for it is a mistake.
    """
    _check_int("process group", pgid)
    if pgid <= 1 or pgid == os.getpgrp():
        raise InvalidOption(f"refusing to terminate process group {pgid} (the caller's or init)")
    for sig in signals:
        members = process_group_members(pgid)
        if not members:
            return True
        kill_process_group(pgid, sig)
        deadline = time.monotonic() + grace
        for pid in members:
            wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
    return not process_group_members(pgid)


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` seconds.

    Uses a pidfd where the kernel offers one (woken by the exit itself), otherwise polls with
    a growing interval. A zombie counts as exited; it is not reaped here (unlike
    ``psutil.Process.wait``, which reaps a child), so a ``subprocess.Popen`` that owns the
    child still gets its exit status.

    Returns:
        ``True`` if the process is gone, ``False`` if it was still running at the deadline.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    pidfd = -1
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        except OSError:
            pidfd = -1
    try:
        interval = 0.001
        while process_alive(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd >= 0:
                # Readable once the process has terminated; zombies also become readable.
                select.select([pidfd], [], [], remaining)
            else:
                select.select([], [], [], min(interval, remaining))
                interval = min(interval * 2, 0.05)
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


_forking_pid = 0


def children_die_with_this_process() -> None:
    """Make every process forked *directly* by this one die when this one dies.

    Registered with ``os.register_at_fork`` so the parent-death signal is set in the child
    right after ``fork``, before Thespian's own child start-up (which waits on a parent
    that may already be gone). Grandchildren (the CLI programs a worker starts) are not
    affected: the hook only acts in children whose forking process was this one.

    Only forks made by the main thread count (Thespian forks child actors there). The
    kernel sends the parent-death signal when the *thread* that forked the child ends, so
    a CLI started by a turn thread of this process (``turn_worker="thread"``) must not get
    it: it would be killed when that turn's thread returns, although the session keeps it.
    """
    owner = os.getpid()

    def before() -> None:
        """Note which process is forking, so the child can tell whether its parent is the owner."""
        global _forking_pid
        main = threading.current_thread() is threading.main_thread()
        _forking_pid = os.getpid() if main else 0

    def after_in_child() -> None:
        """In a child of the owner, ask the kernel to kill it when the owner dies."""
        if _forking_pid == owner:
            die_with_parent(expected_parent=owner)

    os.register_at_fork(before=before, after_in_child=after_in_child)


def die_with_parent(*, expected_parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; no-op elsewhere).

    If the parent is already gone (it died before this call), exit now.
    """
    parent = os.getppid() if expected_parent is None else expected_parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (a zombie that has exited counts as dead)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def children_of(pid: int) -> list[int]:
    """Return the pids of the live (non-zombie) direct children of ``pid``, sorted."""
    return _live(pid, recursive=False)


def descendants_of(pid: int) -> list[int]:
    """Return every live descendant of ``pid`` (children, their children, ...), sorted."""
    return _live(pid, recursive=True)


def _live(pid: int, *, recursive: bool) -> list[int]:
    """The live children (or all descendants) of ``pid``, sorted; none if ``pid`` is gone.

    Zombies are left out: they have exited and only wait for their parent to reap them, so there is
    nothing left in them to stop or wait for.
    """
    try:
        found = psutil.Process(pid).children(recursive=recursive)
    except psutil.NoSuchProcess:
        return []
    return sorted(p.pid for p in found if process_alive(p.pid))


def owner_identity(pid: int | None = None) -> tuple[int, float]:
    """Return ``(pid, start time)`` of a process (default: this one).

    A pid alone can be reused by a stranger once its process is gone; together with the
    start time it names one process for good.
    """
    process = psutil.Process(pid)
    return process.pid, process.create_time()


def owner_alive(identity: tuple[int, float]) -> bool:
    """Whether the process ``identity`` (from :func:`owner_identity`) still runs.

    A zombie no longer runs: a SIGKILLed script whose parent has not reaped it yet is gone.
    """
    pid, started = identity
    try:
        process = psutil.Process(pid)
        return bool(process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
