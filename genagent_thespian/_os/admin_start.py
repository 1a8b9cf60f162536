"""How the admin of a system starts: without the starter's sockets and pipes, knowing its starter.

On ``multiprocTCPBase`` Thespian forks the admin from the user's process, and every actor
process from the admin; none of them closes what it inherited (Thespian's
``closeUnusedFiles`` is commented out; a child closes only its parent's own transport
sockets). So every process of the system held a copy of each socket and pipe the user's
program had open when it started the system, for the system's whole life:

* a listening socket the program closed stayed bound: the port could not be bound again,
  and connections to it were queued by the kernel and never accepted (a half-open flood of
  such a port kept its connections open for good);
* the write end of a pipe kept its reader from ever seeing end of file (a ``subprocess``
  output read to the end would hang);
* a connected socket the program closed was never seen closed by its peer.

:func:`install_admin_start` wraps the function Thespian runs in the admin's new process
(``multiprocCommon.startAdmin``) so that it first releases every inherited socket and pipe
except standard input, output and error (each descriptor then refers to ``/dev/null``).
Regular files and terminals are kept: they do not hold anything open for others, and
logging handlers the program configured may still write to them until the admin's logging
is forwarded. The admin's children are forked from it afterwards, so they inherit none of
it either.

The wrapper also notes the starter's pid (:func:`starter_pid`) while it is still the new
process's parent: Thespian then forks once more to detach the admin, whose parent is init
from then on, and the shutdown guard must know who started the system.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
from collections.abc import Callable
from typing import Any

from thespian.system import multiprocCommon

__all__ = ["close_inherited_sockets_and_pipes", "install_admin_start", "starter_pid"]

_thespian_start_admin: Callable[..., Any] = multiprocCommon.startAdmin
_starter: int | None = None  # in an admin: the pid of the process that started the system


def starter_pid() -> int | None:
    """In an admin started here (and the actors it forked): the pid of the process that
    started the system; ``None`` in any other process."""
    return _starter


def close_inherited_sockets_and_pipes() -> list[int]:
    """Release this process's sockets and pipes, except standard input, output and error.

    Each descriptor is pointed at ``/dev/null`` (``dup2``) rather than closed: Python
    objects copied from the starter (its sockets, Thespian's transport objects) still hold
    those numbers and close them when they are finalized. Closed, a number would be reused
    by the admin's own next socket, which such a late ``close`` would then end; pointing at
    ``/dev/null`` releases the socket or pipe and keeps the number taken. Returns the
    descriptors released. Only for a process that has not opened any of its own yet (the
    admin, before its transport exists)."""
    released = []
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in _open_descriptors():
            if fd <= 2 or fd == null:
                continue
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor)
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                with contextlib.suppress(OSError):
                    os.dup2(null, fd, inheritable=False)
                    released.append(fd)
    finally:
        os.close(null)
    return released


def _open_descriptors() -> list[int]:
    """This process's open file descriptors (``/proc/self/fd``, ``/dev/fd`` elsewhere)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return sorted(int(name) for name in os.listdir(folder) if name.isdigit())
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return list(range(min(soft, 65536)))


def _start_admin(*args: Any, **kwargs: Any) -> Any:
    """Thespian's ``startAdmin``, in a process rid of the starter's sockets and pipes, which
    remembers its starter."""
    global _starter
    _starter = os.getppid()
    close_inherited_sockets_and_pipes()
    return _thespian_start_admin(*args, **kwargs)


def install_admin_start() -> None:
    """Have the admins this process starts release what they inherit. Idempotent."""
    multiprocCommon.startAdmin = _start_admin
