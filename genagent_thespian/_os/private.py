"""Files that hold secrets or prompts are created readable by their owner only, whatever the umask.

The durable store (prompts, sessions, options), its SQLite ``-wal``/``-shm`` companions, the
node secret, the node's log and state, and Thespian's internal log all go through here:
missing folders are created ``0700``, files ``0600``, both set explicitly (``chmod`` after
creation) so that neither a permissive umask (``022`` gives ``0644``) nor a restrictive one
changes the result. A file that already exists and belongs to this user is narrowed to
``0600``; a folder that already exists is left as it is (it may be the user's shared folder),
with a warning when others can enter it, once per folder in a process and the processes
forked from it after the warning.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .._core.log import get_logger

__all__ = ["FILE_MODE", "FOLDER_MODE", "narrow", "private_file", "private_folder"]

#: Mode of every file the library writes that may hold secrets or prompts.
FILE_MODE = 0o600
#: Mode of every folder the library creates for such files.
FOLDER_MODE = 0o700

_log = get_logger("genagent_thespian.private")
#: Open folders already warned about by this process, or by the process it was forked from:
#: every agent process opens the store, and a node of thousands of agents said it thousands
#: of times.
_warned: set[Path] = set()


def private_folder(path: str | os.PathLike[str]) -> Path:
    """Create *path* and any missing parent as ``0700``; warn if an existing one is open.

    Returns:
        The folder, as a :class:`~pathlib.Path`.
    """
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent creator: same result
            created.mkdir(mode=FOLDER_MODE)
            os.chmod(created, FOLDER_MODE)
    if not missing and folder not in _warned:
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            _warned.add(folder)
            _log.warning(
                "folder %s is open to others (mode %04o); the files genagent-thespian keeps "
                "there are private (0600), but consider chmod 700 %s",
                folder,
                mode,
                folder,
            )
    return folder


def private_file(path: str | os.PathLike[str], *, folder: bool = True) -> Path:
    """Make sure *path* exists as a ``0600`` file of this user, in a private folder.

    Creates it empty (exclusively, never through a symlink) if missing; narrows an existing
    file of this user to ``0600``. Another user's file is left alone (opening it fails later
    with a clear error, or it is theirs to protect).

    Args:
        path: The file.
        folder: Also create its folder ``0700`` (``False`` for a file in a shared folder
            such as ``/tmp``, which must exist).

    Returns:
        The file, as a :class:`~pathlib.Path`.
    """
    file = Path(path)
    if folder:
        private_folder(file.parent)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileExistsError:
        narrow(file)
        return file
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return file


def narrow(path: str | os.PathLike[str]) -> None:
    """Set an existing file of this user to ``0600`` (nothing if missing or not ours)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        info = os.lstat(path)
        ours = stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
        if ours and stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
