"""A node's home: the folder that makes a rerun of the same script find its agents again.

A node has a name (default ``"default"``) and a home folder::

    $GENAGENT_STATE_DIR/<name>/    when GENAGENT_STATE_DIR is set, else
    $XDG_STATE_HOME/genagent-thespian/<name>/    (XDG_STATE_HOME defaults to ~/.local/state)

holding ``agents.sqlite3`` (durable agents and the processes the runtime recorded),
``node.json`` and ``node.log`` (a ``genagent node``), and ``lock``. ``start_system()`` and
``genagent node start`` compute the same home for the same name, so the README's durable
agent is resumed by the next run with no option at all.

One home serves one running system at a time: the process that started the system holds a
POSIX lock on the ``lock`` file for the system's whole life, and the file names that
process, so a second system gets a clear :class:`~genagent_thespian.InvalidOption` instead
of sharing, and then sweeping, the first one's store. (A POSIX lock, not ``flock``: actor
processes forked from the holder must not keep it after a shutdown. It goes with the
holder, even SIGKILLed; the next system on the home then ends whatever the previous run
left, from the processes recorded in the store.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from pathlib import Path

from .._core.errors import InvalidOption
from .._os.private import private_folder
from .._os.state import STATE_DIR_ENV, state_folder

__all__ = ["DEFAULT_NODE", "STATE_DIR_ENV", "HomeLock", "node_home", "store_in"]

DEFAULT_NODE = "default"
_held: set[Path] = set()  # homes this process holds: a POSIX lock does not stop its owner
_held_lock = threading.Lock()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def node_home(name: str = DEFAULT_NODE) -> Path:
    """Return node ``name``'s home folder (not created).

    Raises:
        InvalidOption: ``name`` is not a plain name (letters, digits, ``.``, ``_``, ``-``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidOption(f"a node name is 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    return state_folder(name)


def store_in(home: Path) -> str:
    """Return the path of the durable-agent store in ``home``."""
    return str(home / "agents.sqlite3")


class HomeLock:
    """The lock that lets one running system use a home at a time.

    Two systems on one home would share one store: each would see the other's agents as
    leftovers of a previous run and end their processes at start. The lock turns that into
    a clear error at the second ``start_system``.
    """

    def __init__(self, home: Path) -> None:
        """Prepare the lock of ``home``; nothing is taken until :meth:`acquire`."""
        self.home = home
        self.path = home / "lock"
        self._fd: int | None = None
        self._key = home

    def acquire(self) -> None:
        """Take the lock (creating the home, mode 0700) or raise naming its holder.

        Raises:
            InvalidOption: another running system holds this home.
        """
        private_folder(self.home)
        key = self.home.resolve()
        with _held_lock:
            if key in _held:
                raise self._in_use(str(os.getpid()))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise self._in_use(holder) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _held.add(key)
        self._fd = fd
        self._key = key

    def _in_use(self, holder: str) -> InvalidOption:
        """The error for a home already held, naming the holder's pid and the two ways out."""
        return InvalidOption(
            f"the node home {self.home} is in use by another running system (pid {holder}); "
            "stop it first, or start this one with another node name"
        )

    def release(self) -> None:
        """Let the lock go (it also goes when every process holding it has ended)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _held_lock:
            with contextlib.suppress(OSError):
                os.close(fd)
            _held.discard(self._key)
