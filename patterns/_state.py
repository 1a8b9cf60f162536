"""State snapshots of pattern agents, readable by each pattern's client-side facade.

A pattern's result lives on its agents (the phase a Research agent reached, the drafts a
Checkpointer produced). The core has no public way for a client to read an agent's state
(upstream's ``status(name).agent_state``; see ``tests/patterns/test_core_gaps_patterns.py``), so
until it has one, pattern agents publish a JSON snapshot of their state to a file the
facade names when it starts them (option ``state_file``), and the facade reads that file.

The write is atomic (a temporary file renamed over the old one) and happens inside the
callback, before the agent answers its caller, so a caller that got its answer always
reads a snapshot at least that fresh. The files live in a private directory
(``mkdtemp``, mode 0700) the facade removes when it stops. This ties a pattern's agents to
the facade's host; swapping :func:`read_snapshot` for a core state query is the only
change needed once the core has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from typing import Any

from genagent_thespian import GenAgent

__all__ = ["SnapshotAgent", "StateDir", "read_snapshot"]


class SnapshotAgent(GenAgent):
    """A ``GenAgent`` that can publish a JSON snapshot of its state (see the module doc).

    Subclasses call :meth:`setup_snapshots` from ``init_agent`` and :meth:`publish` after
    every state change; they implement :meth:`snapshot`.
    """

    state_file: str | None = None

    def setup_snapshots(self, options: Mapping[str, Any]) -> None:
        """Remember the ``state_file`` option (``None``: nothing is published)."""
        path = options.get("state_file")
        self.state_file = os.fspath(path) if path is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Return the state to publish (JSON-compatible). Override in subclasses."""
        return {}

    def publish(self) -> None:
        """Write :meth:`snapshot` to ``state_file`` atomically (no-op without one)."""
        if self.state_file is None:
            return
        data = json.dumps(self.snapshot(), default=str)
        directory = os.path.dirname(self.state_file) or "."
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".snapshot-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(data)
            os.replace(temporary, self.state_file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def read_snapshot(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the snapshot published at ``path``, or ``None`` before the first one."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


class StateDir:
    """A private directory of snapshot files, one per agent name."""

    def __init__(self, prefix: str = "genagent-pattern-") -> None:
        self.path = tempfile.mkdtemp(prefix=prefix)
        # Removed with the facade even if nobody calls remove() (or stop()).
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def file_for(self, name: Any) -> str:
        """Return the snapshot path for agent ``name`` (any hashable term)."""
        digest = hashlib.sha256(repr(name).encode("utf-8")).hexdigest()[:24]
        return os.path.join(self.path, f"{digest}.json")

    def read(self, name: Any) -> dict[str, Any] | None:
        """Return agent ``name``'s latest snapshot, or ``None``."""
        return read_snapshot(self.file_for(name))

    def remove(self) -> None:
        """Delete the directory and every snapshot in it."""
        self._finalizer()
