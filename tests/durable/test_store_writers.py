"""The SQLite store's writer queue: one writer at a time across processes, never stuck.

Each test holds the queue from a real second process and checks what a writer here sees:
it waits, gets a typed error at its timeout, goes on as soon as the holder lets go or dies,
and a forked child never keeps the lock of its parent. Opening a store that already has its
schema takes no write lock at all.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from genagent_thespian._durable.store import SQLiteAgentStore, StoreError, agent_key
from genagent_thespian._durable.writers import WriterQueue, WriterQueueTimeout
from genagent_thespian.testing import wait_until

KEY = agent_key("writer")

#: A process that takes the writer queue of argv[1], says "held", and keeps it until its
#: stdin closes. With argv[2] == "fork" it first forks a child that outlives the release.
_HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from genagent_thespian._durable.writers import WriterQueue

    queue = WriterQueue(sys.argv[1])
    with queue.turn(30.0):
        if len(sys.argv) > 2:
            child = os.fork()
            if child == 0:
                # A long-lived child (ended with the holder's group). It must not read the
                # parent's stdin: a read of its own could take the line meant for the parent.
                signal.pause()
                os._exit(0)
            print(child, flush=True)
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
    sys.stdin.read()
    """
)


class Holder:
    """A second process holding the writer queue of ``database``."""

    def __init__(self, database: Path, *, fork: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(database), *(["fork"] if fork else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.child = int(self.process.stdout.readline()) if fork else None
        assert self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "released\n"

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the holder and any forked child
        self.process.wait(10)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agents.sqlite"
    store = SQLiteAgentStore(path)
    store.create_agent(KEY, b"name", b"spec")
    store.close()
    yield path


def _write_in_thread(store: SQLiteAgentStore) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def write() -> None:
        try:
            store.save_state(KEY, b"state")
            outcome.append("written")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread, outcome


@contextmanager
def _held(database: Path, busy_timeout: float) -> Iterator[tuple[SQLiteAgentStore, Holder]]:
    """A store here, and a second process holding its writer queue; both closed after.

    A waiter an earlier test abandoned is gone first, so ``_waiting_in_queue`` speaks of
    this test's write only."""
    wait_until(lambda: not _waiting_in_queue(), timeout=10, message="an old waiter lingers")
    store = SQLiteAgentStore(database, busy_timeout=busy_timeout)
    holder = Holder(database)
    try:
        yield store, holder
    finally:
        holder.close()
        store.close()


def _waiting_in_queue() -> bool:
    """Whether a write of this process waits for its turn (its waiter thread is blocked)."""
    return any(t.name == "genagent-store-writer" for t in threading.enumerate())


def test_a_write_waits_for_the_holder_and_goes_on_when_it_lets_go(database: Path) -> None:
    with _held(database, busy_timeout=60.0) as (store, holder):
        thread, outcome = _write_in_thread(store)
        wait_until(_waiting_in_queue, timeout=10, message="the write did not queue")
        assert outcome == []  # still waiting behind the holder
        holder.release()
        thread.join(30)
        assert outcome == ["written"]
        loaded = store.load(KEY)
        assert loaded is not None and loaded.state_blob == b"state"


def test_a_write_that_never_gets_its_turn_fails_with_a_typed_error(database: Path) -> None:
    with _held(database, busy_timeout=0.3) as (store, holder):
        with pytest.raises(StoreError, match=r"save_state .*held the write lock for 0.3s"):
            store.save_state(KEY, b"state")
        holder.release()
        store.save_state(KEY, b"later")  # the abandoned wait did not keep the lock
        loaded = store.load(KEY)
        assert loaded is not None and loaded.state_blob == b"later"


def test_a_holder_killed_with_sigkill_lets_the_waiting_writer_in(database: Path) -> None:
    with _held(database, busy_timeout=60.0) as (store, holder):
        thread, outcome = _write_in_thread(store)
        wait_until(_waiting_in_queue, timeout=10, message="the write did not queue")
        holder.close()  # SIGKILL: the kernel releases the lock with the process
        thread.join(30)
        assert outcome == ["written"]


def test_a_forked_child_does_not_keep_its_parents_lock(database: Path) -> None:
    holder = Holder(database, fork=True)
    try:
        holder.release()
        assert holder.child is not None
        os.kill(holder.child, 0)  # the forked child is still alive
        with WriterQueue(str(database)).turn(5.0):
            pass
    finally:
        holder.close()


def test_a_waiter_that_gave_up_releases_the_lock_when_it_gets_it(database: Path) -> None:
    queue = WriterQueue(str(database))
    holder = Holder(database)
    try:
        with pytest.raises(WriterQueueTimeout), queue.turn(0.1):
            pass
        holder.release()
        # The abandoned waiter thread takes the lock and lets go at once: the next turn
        # gets it, within a bound far above that hand-over.
        with queue.turn(10.0):
            pass
    finally:
        holder.close()


def test_opening_an_existing_store_takes_no_write_lock(database: Path) -> None:
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # SQLite's own write lock, held by another writer
    try:
        store = SQLiteAgentStore(database, busy_timeout=0.2)
        try:
            loaded = store.load(KEY)
            assert loaded is not None and loaded.name_blob == b"name"
        finally:
            store.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_the_lock_file_is_private(database: Path) -> None:
    mode = os.stat(str(database) + "-writers").st_mode & 0o777
    assert mode == 0o600
