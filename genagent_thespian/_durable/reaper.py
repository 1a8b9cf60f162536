"""Orphan reaping: end recorded processes whose owning agent process is gone.

Every process a durable agent starts is recorded in the store with its pid, start time and
boot id (``AgentRecord.record_process``: the agent itself as ``"agent"``, its turn worker as
``"worker"``, each CLI process group as ``"cli"``). The supervisor ends what a dead agent
leaves behind as soon as it hears of the death; this is the belt and braces for what it
never heard of or could not end (its own process was killed with the agent, a CLI moved
out of its group, a death Thespian never announced): a node's reaper runs :func:`reap_orphans`
at start and periodically (``_actors/reaper.py``).

**Owner.** A worker or CLI record belongs to agent key ``K``; it is owned while some
``"agent"`` process of ``K`` started no later than it is still running (checked by pid +
start time + boot, never by pid alone). A process older than every live agent process of
its key was started by an incarnation that is gone: it is an orphan. Records of another
boot (another host sharing a PostgreSQL store, or a previous boot) are left to their own
node; records of processes that are gone are forgotten.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from .._os import processes as _processes
from .._os import procfs
from .store import AgentStore, ProcessRecord

__all__ = ["orphans", "reap_orphans"]

#: Roles whose process an agent starts on its own behalf (the agent's own record is "agent").
_OWNED_ROLES = ("worker", "cli")


def orphans(records: Sequence[ProcessRecord]) -> tuple[list[ProcessRecord], list[ProcessRecord]]:
    """Split this boot's records into ``(orphans to end, records of gone processes)``.

    Pure apart from reading ``/proc`` (``ProcessRecord.is_running``)."""
    boot = procfs.boot_id()
    here = [r for r in records if r.boot == boot]
    running = {(r.pid, r.start_ticks): r.is_running() for r in here}
    live_agents: dict[str, list[int]] = {}
    for record in here:
        if (
            record.role == "agent"
            and record.agent_key
            and running[(record.pid, record.start_ticks)]
        ):
            live_agents.setdefault(record.agent_key, []).append(record.start_ticks)
    to_end: list[ProcessRecord] = []
    gone: list[ProcessRecord] = []
    for record in here:
        if not running[(record.pid, record.start_ticks)]:
            gone.append(record)
            continue
        if record.role not in _OWNED_ROLES or not record.agent_key:
            continue
        owners = live_agents.get(record.agent_key, [])
        if not any(started <= record.start_ticks for started in owners):
            to_end.append(record)
    return to_end, gone


def reap_orphans(store: AgentStore, *, grace: float = 2.0) -> list[ProcessRecord]:
    """End the orphans among ``store``'s process records and forget them and the gone ones.

    A CLI still leading its recorded process group is ended with its group (its own
    children go with it); any other orphan alone. SIGTERM first, SIGKILL after ``grace``
    seconds. The caller's own process and process group are never signalled.

    Returns:
        The records whose processes were ended.
    """
    to_end, gone = orphans(store.recorded_processes())
    ended: list[ProcessRecord] = []
    for record in to_end:
        if record.pid == os.getpid():
            continue
        stat = procfs.process_stat(record.pid)
        pgid = record.pgid
        if (
            stat is not None
            and pgid is not None
            and pgid > 1
            and stat.pgid == pgid
            and pgid == record.pid
            and pgid != os.getpgrp()
        ):
            _processes.terminate_process_group(pgid, grace=grace)
        else:
            _end(record, grace)
        ended.append(record)
    store.forget_processes([(r.pid, r.start_ticks) for r in (*ended, *gone)])
    return ended


def _end(record: ProcessRecord, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace``; each only while the recorded process runs.

    ``is_running`` compares the start time too: a pid the kernel gave to another process
    since the record was made is never signalled.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not record.is_running():
            return
        _processes.kill_process(record.pid, sig)
        _processes.wait_for_exit(record.pid, grace)
