"""``ProcessReaper``: ends recorded processes whose owning agent is gone, periodically.

The supervisor ends a dead agent's worker and CLIs as soon as it hears of the death; the
reaper catches what slipped past it (see ``_durable/reaper.py`` for the rule, checked by
pid + start time, never by pid alone). It runs in its own process, a child of the
supervisor, because ending a process waits up to a grace period: the supervisor must
never block. The first pass runs when it starts, then every :func:`reap_interval` seconds.

The reaper keeps its store connection open for the life of the system. With SQLite that
connection also keeps the write-ahead log and its shared index in place: when the last
connection to the file closes, SQLite checkpoints and deletes them, and the next process
to open the file rebuilds them, which every agent waking up in a fleet of sleeping ones
would otherwise pay (and race on: "database is locked" while the index is rebuilt).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._core.log import get_logger
from .._core.types import ActorAddress
from .._durable.location import open_store
from .._durable.reaper import reap_orphans
from .._durable.store import AgentStore

__all__ = ["REAP_INTERVAL_ENV", "ProcessReaper", "StartReaping", "reap_interval"]

#: Environment variable overriding the seconds between two passes of the reaper.
REAP_INTERVAL_ENV = "GENAGENT_REAP_INTERVAL"
#: Default seconds between two passes: orphans are rare (the supervisor ends leftovers at
#: once), so a pass is a cheap read of the process table of the store most of the time.
_DEFAULT_INTERVAL = 30.0

_log = get_logger("genagent_thespian.reaper")


def reap_interval() -> float:
    """Seconds between two reaper passes (``GENAGENT_REAP_INTERVAL``, default 30)."""
    try:
        value = float(os.environ.get(REAP_INTERVAL_ENV, _DEFAULT_INTERVAL))
    except ValueError:
        return _DEFAULT_INTERVAL
    return value if value > 0 else _DEFAULT_INTERVAL


@dataclass(frozen=True, slots=True)
class StartReaping:
    """Supervisor -> reaper: reap the process records of ``store_path`` every ``interval`` s."""

    store_path: str
    interval: float


class ProcessReaper(Actor):
    """Runs :func:`~genagent_thespian._durable.reaper.reap_orphans` on a timer."""

    def __init__(self) -> None:
        """Idle until ``StartReaping`` names the store and the interval."""
        super().__init__()
        self._job: StartReaping | None = None
        self._store: AgentStore | None = None

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Start on ``StartReaping``, pass on each wakeup, close the store on exit. Never raises."""
        if isinstance(message, StartReaping) and self._job is None:
            self._job = message
            self._pass()
        elif isinstance(message, WakeupMessage) and self._job is not None:
            self._pass()
        elif isinstance(message, ActorExitRequest):
            self._close_store()

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                _log.exception("reaper: closing the store failed")

    def _pass(self) -> None:
        """One reaping pass over the store's process records, then the next wakeup.

        A pass that fails (the store unreachable, a record unreadable) is logged, its
        connection dropped (the next pass opens a new one) and the timer armed anyway: the
        reaper is a safety net and must keep running after a bad pass.
        """
        job = self._job
        assert job is not None
        try:
            if self._store is None:
                self._store = open_store(job.store_path)
            try:
                ended = reap_orphans(self._store)
            except Exception:
                self._close_store()
                raise
            if ended:
                _log.warning(
                    "reaper ended %d orphaned process(es): %s",
                    len(ended),
                    ", ".join(f"{r.role} pid {r.pid}" for r in ended),
                )
        except Exception:
            _log.exception("reaper pass failed")
        self.wakeupAfter(job.interval)
