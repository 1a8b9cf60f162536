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
"""

from __future__ import annotations

import contextlib
import ctypes  # at import, not in each child: shared after the fork, not copied per process
import os
import signal

__all__ = [
    "AGENT_MARKER",
    "SYSTEM_MARKER",
    "children_die_with_this_process",
    "die_with_parent",
    "is_alive",
    "kill_marked",
    "kill_process",
    "kill_process_group",
    "processes_with_marker",
]

SYSTEM_MARKER = "GENAGENT_SYSTEM_ID"
AGENT_MARKER = "GENAGENT_AGENT_ID"


def processes_with_marker(value: str, *, variable: str = SYSTEM_MARKER) -> list[int]:
    """Return the pids (other than this process) whose environment has ``variable=value``."""
    if not value:
        return []
    needle = f"{variable}={value}".encode()
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_marked(value: str, *, variable: str) -> list[int]:
    """SIGKILL every process marked ``variable=value``; return their pids."""
    pids = processes_with_marker(value, variable=variable)
    for pid in pids:
        kill_process(pid)
    return pids


def kill_process(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid``, ignoring a process that is already gone (never this one)."""
    if pid <= 1 or pid == os.getpid():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to process group ``pgid`` unless it is this process's own group."""
    if pgid <= 1 or pgid == os.getpgid(0):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


_forking_pid = 0


def children_die_with_this_process() -> None:
    """Make every process forked *directly* by this one die when this one dies.

    Registered with ``os.register_at_fork`` so the parent-death signal is set in the child
    right after ``fork``, before Thespian's own child start-up (which waits on a parent
    that may already be gone). Grandchildren (the CLI programs a worker starts) are not
    affected: the hook only acts in children whose forking process was this one.
    """
    owner = os.getpid()

    def before() -> None:
        global _forking_pid
        _forking_pid = os.getpid()

    def after_in_child() -> None:
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


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
