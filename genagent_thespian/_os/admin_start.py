"""How the admin of a system starts: without the sockets and pipes of the program that starts it.

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

The program's own Thespian endpoint is among the sockets released: the admin talks to it
by connecting to its address, as to any other (and knows it by that address, which the
shutdown guard uses), never through an inherited descriptor.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat

from thespian.system import multiprocCommon

from .._core.types import ThespianInternal

__all__ = ["close_inherited_sockets_and_pipes", "install_admin_start"]

_thespian_start_admin = multiprocCommon.startAdmin


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


def _start_admin(*args: ThespianInternal) -> None:
    """Thespian's ``startAdmin`` (given its positional arguments, as ``multiprocessing`` does),
    in a process rid of the starter's sockets and pipes."""
    close_inherited_sockets_and_pipes()
    _thespian_start_admin(*args)


def install_admin_start() -> None:
    """Have the admins this process starts close what they inherit. Idempotent."""
    multiprocCommon.startAdmin = _start_admin
