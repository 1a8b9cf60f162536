"""Facts about OS processes from ``/proc``, and ways to end them (Linux).

The supervisor, the orphan sweep at system start and the chaos test kit all need the same
few facts: is a pid alive (a zombie is not), which processes are children of a pid or members
of a process group, and is the process behind a pid still the one we recorded, not a later
process that was given the same pid. The last is answered by a :class:`ProcessIdentity`:
the pid, the process's start time in clock ticks since boot (field 22 of
``/proc/<pid>/stat``) and the boot id, which together never repeat.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from .._core.errors import InvalidOption

__all__ = [
    "ProcessIdentity",
    "ProcessStat",
    "boot_id",
    "children_of",
    "kill_process",
    "kill_process_group",
    "process_alive",
    "process_group_members",
    "process_identity",
    "process_stat",
    "terminate_process_group",
    "wait_for_exit",
]


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """The fields of ``/proc/<pid>/stat`` that genagent-thespian uses.

    Attributes:
        pid: The process id.
        state: One letter (``R``, ``S``, ``Z`` for a zombie, ...).
        ppid: The parent's pid.
        pgid: The process group id.
        sid: The session id.
        start_ticks: Start time in clock ticks since boot.
    """

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int

    @property
    def is_zombie(self) -> bool:
        """Whether the process has exited and waits to be reaped."""
        return self.state in ("Z", "X")


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A pid plus what makes it unique over time: its start time and the boot it ran in.

    Attributes:
        pid: The process id.
        start_ticks: Start time in clock ticks since boot.
        boot: The kernel's boot id at the time.
    """

    pid: int
    start_ticks: int
    boot: str

    def is_running(self) -> bool:
        """Whether this very process (not a later one with the same pid) is still alive."""
        if self.boot != boot_id():
            return False
        stat = process_stat(self.pid)
        return stat is not None and not stat.is_zombie and stat.start_ticks == self.start_ticks


@cache
def boot_id() -> str:
    """Return the kernel's boot id (changes at every boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - every Linux we support has it
        return "unknown-boot"


def process_stat(pid: int) -> ProcessStat | None:
    """Read ``/proc/<pid>/stat``; ``None`` if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    after_name = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcessStat(
            pid=pid,
            state=after_name[0],
            ppid=int(after_name[1]),
            pgid=int(after_name[2]),
            sid=int(after_name[3]),
            start_ticks=int(after_name[19]),
        )
    except (IndexError, ValueError):
        return None


def process_identity(pid: int) -> ProcessIdentity | None:
    """Return the identity of the live process ``pid``, or ``None`` if it is not running."""
    stat = process_stat(pid)
    if stat is None or stat.is_zombie:
        return None
    return ProcessIdentity(pid=pid, start_ticks=stat.start_ticks, boot=boot_id())


def process_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (a zombie that has exited counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it is just not ours
    stat = process_stat(pid)
    return stat is not None and not stat.is_zombie


def _all_stats() -> Iterator[ProcessStat]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = process_stat(int(entry))
            if stat is not None:
                yield stat


def children_of(pid: int) -> list[int]:
    """Return the pids of the live (non-zombie) direct children of ``pid``, sorted."""
    return sorted(s.pid for s in _all_stats() if s.ppid == pid and not s.is_zombie)


def process_group_members(pgid: int) -> list[int]:
    """Return the pids of the live (non-zombie) members of process group ``pgid``, sorted."""
    return sorted(s.pid for s in _all_stats() if s.pgid == pgid and not s.is_zombie)


def kill_process(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``pid``.

    Returns:
        ``True`` if the signal was sent, ``False`` if there was no such process.

    Raises:
        InvalidOption: ``pid`` is not a positive int, or is this very process.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise InvalidOption(f"invalid pid {pid!r}: expected a positive int")
    if pid == os.getpid():
        raise InvalidOption(f"refusing to signal the calling process itself (pid {pid})")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of group ``pgid``.

    Returns:
        ``True`` if the signal was sent, ``False`` if the group has no process.

    Raises:
        InvalidOption: ``pgid`` is not a positive int, or is the caller's own group (which
            would signal the caller, and in a test run the test runner).
    """
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        raise InvalidOption(f"invalid process group {pgid!r}: expected an int > 1")
    if pgid == os.getpgrp():
        raise InvalidOption(f"refusing to signal the caller's own process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` seconds.

    Uses a pidfd where the kernel offers one (woken by the exit itself), otherwise polls with
    a growing interval. A zombie counts as exited; it is not reaped here, so a
    ``subprocess.Popen`` that owns the child still gets its exit status.

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


def terminate_process_group(
    pgid: int,
    *,
    grace: float = 2.0,
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL),
) -> bool:
    """End every process of group ``pgid``: each signal in turn, ``grace`` seconds apart.

    Returns:
        ``True`` if the group is empty at the end.
    """
    for sig in signals:
        members = process_group_members(pgid)
        if not members:
            return True
        kill_process_group(pgid, sig)
        deadline = time.monotonic() + grace
        for pid in members:
            wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
    return not process_group_members(pgid)
