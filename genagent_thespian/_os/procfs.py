"""Facts about OS processes that only ``/proc`` gives (Linux); ending them is ``processes.py``.

The orphan sweep at system start and the chaos test kit need two facts psutil does not
offer: the members of a process group, and whether the process behind a pid is still the
one we recorded, not a later process that was given the same pid. The last is answered by
a :class:`ProcessIdentity`: the pid, the process's start time in clock ticks since boot
(field 22 of ``/proc/<pid>/stat``) and the boot id, which together never repeat.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

__all__ = [
    "ProcessIdentity",
    "ProcessStat",
    "boot_id",
    "process_group_members",
    "process_identity",
    "process_stat",
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
    """Read ``/proc/<pid>/stat``; ``None`` if there is no such process.

    Any failure to read or parse is ``None`` as well: callers use this to decide whether a
    recorded process may be signalled, and an unreadable one must never be taken as ours.
    The command name is skipped by its last ``)``, since it may contain spaces and
    parentheses of its own.
    """
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


def _all_stats() -> Iterator[ProcessStat]:
    """Every process readable in ``/proc`` now; one that exits mid-scan is skipped."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = process_stat(int(entry))
            if stat is not None:
                yield stat


def process_group_members(pgid: int) -> list[int]:
    """Return the pids of the live (non-zombie) members of process group ``pgid``, sorted.

    Read from ``/proc`` because psutil does not expose a process's group on Linux.
    """
    return sorted(s.pid for s in _all_stats() if s.pgid == pgid and not s.is_zombie)
