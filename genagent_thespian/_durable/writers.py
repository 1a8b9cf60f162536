"""The queue that the SQLite store's writers from every process wait in.

SQLite lets one writer at a time into a database file, and a writer that finds it taken
waits in SQLite's busy handler: it sleeps and tries again, with pauses that grow to 100 ms.
Writers that keep arriving take the lock between those tries, so under a steady stream of
writes (thousands of durable agents starting, hibernating and waking at once) one writer can
lose every try until its ``busy_timeout`` runs out. Measured: 42 writes waited past 10 s in a
wave of 1,000 wake-ups, and agents failed to start.

:class:`WriterQueue` puts an exclusive ``flock`` on a side file (``<db>-writers``) around each
write transaction. A blocked ``flock`` sleeps in the kernel and is woken the moment the
holder lets go, so the lock is never idle while someone waits, and a waiter's delay is
bounded by the writes ahead of it rather than by luck. The kernel releases the lock when its
holder's file is closed or its process dies, SIGKILL included, so a killed writer never
blocks the others.

A ``flock`` has no timeout, but a store call must not wait forever (a writer stopped with
SIGSTOP holds the lock). A contended acquisition therefore waits in a helper thread that owns
its own file descriptor: the caller waits for that thread up to the timeout, and a helper
whose caller gave up releases the lock as soon as it gets it.

A lock belongs to the open file, which a forked child shares: a child keeping a copy would
hold the lock for its whole life. Every descriptor of the queue is therefore closed in a
forked child (Thespian forks each actor process) before the child runs.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from .._os.private import private_file

__all__ = ["WriterQueue", "WriterQueueTimeout"]


class WriterQueueTimeout(Exception):
    """No turn in the writer queue within the timeout (the caller turns it into a store error)."""


class _Waiter:
    """One blocked acquisition, run in its own thread on its own file descriptor."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._guard = threading.Lock()
        self._granted = threading.Event()
        self._abandoned = False
        self.fd: int | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            fd = _open(self._path)
        except OSError as exc:
            self.error = exc
            self._granted.set()
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            _close(fd)
            self.error = exc
            self._granted.set()
            return
        with self._guard:
            if self._abandoned:
                _close(fd)  # the caller stopped waiting: let the next writer in
                return
            self.fd = fd
            self._granted.set()

    def wait(self, timeout: float) -> int:
        """The locked descriptor, once granted within ``timeout`` seconds."""
        self._granted.wait(timeout)
        with self._guard:
            if self.fd is not None:
                return self.fd
            if self.error is not None:
                raise self.error
            self._abandoned = True
        raise WriterQueueTimeout(f"no turn to write within {timeout:g}s")


#: Every descriptor of a writer queue open in this process (held or being waited for).
_DESCRIPTORS: set[int] = set()
_DESCRIPTORS_GUARD = threading.Lock()


def _open(path: str) -> int:
    with _DESCRIPTORS_GUARD:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _DESCRIPTORS.add(fd)
    return fd


def _close(fd: int) -> None:
    with _DESCRIPTORS_GUARD:
        _DESCRIPTORS.discard(fd)
        os.close(fd)


def _close_inherited() -> None:
    """In a forked child: close the parent's descriptors so no copy keeps a lock alive.

    The guard is held across the fork (see the registration below), so the set names every
    descriptor the child inherited: none can be opened but not yet listed.
    """
    global _DESCRIPTORS_GUARD
    for fd in _DESCRIPTORS:
        with suppress(OSError):
            os.close(fd)
    _DESCRIPTORS.clear()
    _DESCRIPTORS_GUARD = threading.Lock()


def _hold_guard() -> None:
    _DESCRIPTORS_GUARD.acquire()  # looked up at each fork: a forked child has its own guard


def _release_guard() -> None:
    _DESCRIPTORS_GUARD.release()


os.register_at_fork(
    before=_hold_guard, after_in_parent=_release_guard, after_in_child=_close_inherited
)


class WriterQueue:
    """Serialize the write transactions of every process on one database file.

    Args:
        database: The database file's path; the lock lives beside it in ``<database>-writers``
            (created ``0600``, holding no data).
    """

    def __init__(self, database: str) -> None:
        self.path = database + "-writers"
        private_file(self.path)

    @contextmanager
    def turn(self, timeout: float) -> Iterator[None]:
        """Hold the write lock for the body; wait at most ``timeout`` seconds for it.

        Raises:
            WriterQueueTimeout: the lock stayed taken for ``timeout`` seconds.
            OSError: the lock file could not be opened or locked.
        """
        fd = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _close(fd)
            waiter = _Waiter(self.path)
            threading.Thread(target=waiter.run, name="genagent-store-writer", daemon=True).start()
            fd = waiter.wait(timeout)
        except BaseException:
            _close(fd)
            raise
        try:
            yield
        finally:
            _close(fd)  # closing the only descriptor of this open file releases the lock
