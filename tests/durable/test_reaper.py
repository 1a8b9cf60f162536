"""The orphan reaper: recorded processes whose owning agent process is gone are ended.

Real processes (``sleep`` in Python children, CLI-like ones in their own session), a real
SQLite store, and for the node's periodic pass a real multiprocTCPBase system.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import genagent_thespian as g
from genagent_thespian._actors.reaper import REAP_INTERVAL_ENV
from genagent_thespian._durable.reaper import orphans, reap_orphans
from genagent_thespian._durable.store import ProcessRecord, SQLiteAgentStore, agent_key
from genagent_thespian._os.procfs import process_stat
from genagent_thespian.testing import system_processes, wait_until


def sleeper(*, session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=session
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def spawn(procs: list[subprocess.Popen[bytes]], *, session: bool = False) -> int:
    proc = sleeper(session=session)
    procs.append(proc)
    return proc.pid


def dead(procs: list[subprocess.Popen[bytes]], pid: int) -> None:
    proc = next(p for p in procs if p.pid == pid)
    proc.kill()
    proc.wait(timeout=30)


def ended(pid: int) -> bool:
    """Whether ``pid`` has exited (a child of this test stays a zombie until reaped)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return status == "zombie"  # psutil.STATUS_ZOMBIE


def spawn_after(procs: list[subprocess.Popen[bytes]], earlier: int) -> int:
    """Spawn a sleeper that started at a later clock tick (10 ms) than ``earlier``."""
    before = process_stat(earlier)
    assert before is not None

    def later() -> int | None:
        pid = spawn(procs)
        stat = process_stat(pid)
        if stat is not None and stat.start_ticks > before.start_ticks:
            return pid
        dead(procs, pid)
        return None

    found: int = wait_until(later, timeout=10)
    return found


def test_a_cli_whose_agent_died_is_ended_and_one_whose_agent_lives_is_kept(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    alive, gone = agent_key("alive"), agent_key("gone")
    with SQLiteAgentStore(tmp_path / "s.sqlite3") as store:
        owner = spawn(procs)
        kept_cli = spawn(procs, session=True)  # started no earlier than its agent
        store.record_process(owner, role="agent", agent_key=alive)
        store.record_process(kept_cli, role="cli", agent_key=alive)

        dead_owner = spawn(procs)
        orphan_cli = spawn(procs, session=True)
        orphan_worker = spawn(procs)
        store.record_process(dead_owner, role="agent", agent_key=gone)
        store.record_process(orphan_cli, role="cli", agent_key=gone)
        store.record_process(orphan_worker, role="worker", agent_key=gone)
        dead(procs, dead_owner)

        reaped = reap_orphans(store, grace=5.0)

        assert sorted(r.pid for r in reaped) == sorted([orphan_cli, orphan_worker])
        assert ended(orphan_cli) and ended(orphan_worker)
        assert psutil.Process(kept_cli).is_running() and psutil.Process(owner).is_running()
        remaining = {(r.pid, r.role) for r in store.recorded_processes()}
        assert remaining == {(owner, "agent"), (kept_cli, "cli")}  # the gone ones forgotten


def test_a_cli_older_than_every_live_incarnation_of_its_agent_is_an_orphan(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    key = agent_key("restarted")
    with SQLiteAgentStore(tmp_path / "s.sqlite3") as store:
        old_cli = spawn(procs, session=True)
        store.record_process(old_cli, role="cli", agent_key=key)
        new_agent = spawn_after(procs, old_cli)
        store.record_process(new_agent, role="agent", agent_key=key)
        to_end, gone = orphans(store.recorded_processes())
        assert [r.pid for r in to_end] == [old_cli] and gone == []


def test_a_reused_pid_or_another_hosts_record_is_never_signalled(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    innocent = spawn(procs, session=True)
    stat = process_stat(innocent)
    assert stat is not None
    key = agent_key("ghost")
    reused = ProcessRecord(innocent, stat.start_ticks + 1, "x", innocent, "cli", key)
    records = [reused, ProcessRecord(innocent, stat.start_ticks, "another-boot", None, "cli", key)]
    to_end, gone = orphans(records)
    assert to_end == []
    assert gone == []  # neither is of this boot: left to its own node
    with SQLiteAgentStore(tmp_path / "s.sqlite3") as store:
        raw = store.record_process(innocent, role="cli", agent_key=key)
        assert raw is not None
        store.forget_process(innocent)
        # The same pid recorded with a start time it never had: a later process reusing it.
        with store._conn() as conn:
            conn.execute(
                "INSERT INTO processes VALUES (?, ?, ?, ?, ?, ?, ?)",
                (innocent, raw.start_ticks + 7, raw.boot, innocent, "cli", key, 0.0),
            )
        assert reap_orphans(store, grace=1.0) == []
        assert store.recorded_processes() == []  # forgotten as gone
    assert psutil.Process(innocent).is_running()


def test_the_nodes_reaper_ends_an_orphan_while_the_system_runs(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REAP_INTERVAL_ENV, "0.3")
    store_path = tmp_path / "store.sqlite3"
    system = g.start_system(store_path=str(store_path))
    try:
        # What a SIGKILLed agent's supervisor never ended: a CLI in its own session, its
        # agent process gone, both recorded by the agent while it ran.
        owner = spawn(procs)
        cli = spawn(procs, session=True)
        with SQLiteAgentStore(store_path) as store:
            store.record_process(owner, role="agent", agent_key=agent_key("lost"))
            store.record_process(cli, role="cli", agent_key=agent_key("lost"))
        dead(procs, owner)
        wait_until(
            lambda: ended(cli),
            timeout=20,
            message="the reaper did not end the orphaned CLI",
        )
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")
