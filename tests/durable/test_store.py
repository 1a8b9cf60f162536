"""Tests of the durable agent store: the contract on both stores, then SQLite durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genagent_thespian._core.errors import AgentAlreadyExists, AgentNotFound, InvalidOption
from genagent_thespian._durable.postgres import PostgresAgentStore
from genagent_thespian._durable.store import (
    SCHEMA_VERSION,
    AgentStore,
    MemoryAgentStore,
    ProcessRecord,
    SQLiteAgentStore,
    StaleIncarnation,
    StoreCorrupted,
    StoredRequest,
    StoreError,
    StoreSchemaMismatch,
    agent_key,
    describe_process,
    end_recorded_processes,
)
from genagent_thespian._os.processes import process_alive, wait_for_exit
from genagent_thespian._os.procfs import boot_id, process_stat
from genagent_thespian.testing import wait_until

KEY = agent_key("coder")
OTHER = agent_key(("team", 2))


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AgentStore]:
    """Each store of the contract: SQLite, PostgreSQL (a real server) and memory."""
    made: AgentStore
    if request.param == "sqlite":
        made = SQLiteAgentStore(tmp_path / "agents.db")
    elif request.param == "postgres":
        made = PostgresAgentStore(request.getfixturevalue("postgres_url"))
    else:
        made = MemoryAgentStore()
    yield made
    made.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agents.db"


def run_python(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    """Start a Python child running ``code`` (dedented) with the package importable."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# --- the contract, on every store -----------------------------------------------------------


def test_create_and_load_round_trip(store: AgentStore) -> None:
    store.create_agent(KEY, b"name", b"spec")
    loaded = store.load(KEY)
    assert loaded is not None
    assert (loaded.key, loaded.name_blob, loaded.spec_blob) == (KEY, b"name", b"spec")
    assert loaded.state_blob is None
    assert loaded.results == ()
    assert loaded.incarnation == 0
    assert store.load(OTHER) is None


def test_blobs_come_back_byte_for_byte(store: AgentStore) -> None:
    every_byte = bytes(range(256)) * 4
    store.create_agent(KEY, every_byte, b"\x00")
    store.save_state(KEY, every_byte[::-1])
    store.put_result(KEY, "r0", every_byte, max_results=5)
    store.put_result(KEY, "r1", b"", max_results=5)
    loaded = store.load(KEY)
    assert loaded is not None
    assert loaded.name_blob == every_byte
    assert loaded.spec_blob == b"\x00"
    assert loaded.state_blob == every_byte[::-1]
    assert loaded.results == (StoredRequest("r0", every_byte), StoredRequest("r1", b""))


def test_create_twice_is_refused(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    with pytest.raises(AgentAlreadyExists):
        store.create_agent(KEY, b"n2", b"s2")
    loaded = store.load(KEY)
    assert loaded is not None and loaded.spec_blob == b"s"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.save_state(KEY, b"x"),
        lambda s: s.put_result(KEY, "r", b"x", max_results=3),
        lambda s: s.bump_incarnation(KEY),
    ],
)
def test_writes_to_an_unknown_agent_raise_agent_not_found(
    store: AgentStore, call: Callable[[AgentStore], object]
) -> None:
    with pytest.raises(AgentNotFound, match=KEY[:12]):
        call(store)
    assert store.list_agents() == []


def test_results_keep_the_newest_by_insertion_order(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.create_agent(OTHER, b"n", b"s")
    store.put_result(OTHER, "other", b"o", max_results=3)
    for i in range(7):
        store.put_result(KEY, f"r{i}", b"%d" % i, max_results=3)
    loaded = store.load(KEY)
    assert loaded is not None
    assert [r.ref for r in loaded.results] == ["r4", "r5", "r6"]
    # Storing a ref again makes it the newest, and the bound is per agent.
    store.put_result(KEY, "r4", b"again", max_results=3)
    loaded = store.load(KEY)
    assert loaded is not None
    assert [(r.ref, r.blob) for r in loaded.results] == [
        ("r5", b"5"),
        ("r6", b"6"),
        ("r4", b"again"),
    ]
    other = store.load(OTHER)
    assert other is not None and [r.ref for r in other.results] == ["other"]


def test_max_results_zero_keeps_nothing(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.put_result(KEY, "r1", b"x", max_results=5)
    store.put_result(KEY, "r2", b"y", max_results=0)
    loaded = store.load(KEY)
    assert loaded is not None and loaded.results == ()


def test_incarnation_counts_restarts_and_fences_stale_writes(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    assert store.bump_incarnation(KEY) == 1
    assert store.bump_incarnation(KEY) == 2
    store.save_state(KEY, b"new", incarnation=2)
    with pytest.raises(StaleIncarnation, match="incarnation 2"):
        store.save_state(KEY, b"old", incarnation=1)
    with pytest.raises(StaleIncarnation):
        store.save_state(KEY, b"older", incarnation=0)
    loaded = store.load(KEY)
    assert loaded is not None
    assert (loaded.state_blob, loaded.results) == (b"new", ())
    assert loaded.incarnation == 2


def test_begin_incarnation_bumps_and_loads_in_one_step(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.save_state(KEY, b"state")
    store.put_result(KEY, "done", b"r", max_results=5)

    restarted = store.begin_incarnation(KEY)

    assert restarted.incarnation == 1
    assert restarted.state_blob == b"state"
    assert restarted.results == (StoredRequest("done", b"r"),)
    with pytest.raises(StaleIncarnation):
        store.save_state(KEY, b"stale", incarnation=0)
    store.save_state(KEY, b"current", incarnation=1)
    with pytest.raises(AgentNotFound):
        store.begin_incarnation(OTHER)


def test_take_over_fences_leases_and_records_the_process_in_one_step(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.renew_lease(KEY, epoch=0, owner="old", seconds=30)
    store.save_state(KEY, b"state")
    me = describe_process(os.getpid(), "agent", None, KEY)
    assert me is not None

    taken = store.take_over(KEY, owner="new", seconds=20, process=me)

    assert taken.agent.incarnation == 1 and taken.agent.state_blob == b"state"
    previous = taken.previous_lease
    assert previous is not None and (previous.epoch, previous.owner) == (0, "old")
    assert 0 < previous.expires_in <= 30
    lease = store.lease(KEY)
    assert lease is not None and (lease.epoch, lease.owner) == (1, "new")
    assert 0 < lease.expires_in <= 20
    with pytest.raises(StaleIncarnation):
        store.renew_lease(KEY, epoch=0, owner="old", seconds=30)
    recorded = [(r.pid, r.role, r.agent_key) for r in store.recorded_processes()]
    assert recorded == [(os.getpid(), "agent", KEY)]

    second = store.take_over(KEY, owner="newer", seconds=20)
    assert second.agent.incarnation == 2
    assert second.previous_lease is not None and second.previous_lease.owner == "new"
    with pytest.raises(AgentNotFound):
        store.take_over(OTHER, owner="x", seconds=20, process=me)
    assert store.lease(OTHER) is None and len(store.recorded_processes()) == 1


def test_a_lease_belongs_to_the_current_incarnation_only(store: AgentStore) -> None:
    with pytest.raises(AgentNotFound):
        store.renew_lease(KEY, epoch=0, owner="a", seconds=30)
    store.create_agent(KEY, b"n", b"s")
    assert store.lease(KEY) is None
    store.renew_lease(KEY, epoch=0, owner="a", seconds=30)
    lease = store.lease(KEY)
    assert lease is not None and (lease.epoch, lease.owner) == (0, "a")
    assert 0 < lease.expires_in <= 30

    store.begin_incarnation(KEY)  # a new owner fences the old one
    with pytest.raises(StaleIncarnation):
        store.renew_lease(KEY, epoch=0, owner="a", seconds=30)
    store.renew_lease(KEY, epoch=1, owner="b", seconds=30)
    store.release_lease(KEY, epoch=0)  # not its lease any more: nothing happens
    lease = store.lease(KEY)
    assert lease is not None and (lease.epoch, lease.owner) == (1, "b") and lease.expires_in > 0
    store.release_lease(KEY, epoch=1)
    lease = store.lease(KEY)
    assert lease is not None and lease.expires_in <= 0
    store.delete_agent(KEY)
    assert store.lease(KEY) is None


def test_one_convention_leader_at_a_time_fenced_by_epoch(store: AgentStore) -> None:
    assert store.leadership("c") is None
    first = store.claim_leadership("c", "a", 0.5)
    assert (first.epoch, first.holder, first.acquired) == (1, "a", True)
    refused = store.claim_leadership("c", "b", 30)  # a's lease runs: b does not lead
    assert (refused.epoch, refused.holder, refused.acquired) == (1, "a", False)
    assert refused.expires_in > 0
    kept = store.claim_leadership("c", "a", 0.5)  # a renews: same epoch
    assert (kept.epoch, kept.acquired) == (1, True)
    assert store.claim_leadership("other", "b", 30).acquired  # conventions are separate

    def expired() -> bool:
        current = store.leadership("c")
        return current is not None and current.expires_in <= 0

    wait_until(expired, timeout=5)
    taken = store.claim_leadership("c", "b", 30)
    assert (taken.epoch, taken.holder, taken.acquired) == (2, "b", True)
    late = store.claim_leadership("c", "a", 30)  # the deposed leader cannot come back
    assert (late.epoch, late.holder, late.acquired) == (2, "b", False)
    current = store.leadership("c")
    assert current is not None and (current.epoch, current.holder) == (2, "b")
    store.release_leadership("c", "a")  # not a's lead: nothing happens
    assert not store.claim_leadership("c", "a", 30).acquired
    store.release_leadership("c", "b")  # a clean stop: the next claim need not wait
    after = store.claim_leadership("c", "a", 30)
    assert (after.epoch, after.holder, after.acquired) == (3, "a", True)


def test_session_files_are_replaced_by_name_and_fenced(store: AgentStore) -> None:
    with pytest.raises(AgentNotFound):
        store.put_session_files(KEY, {"projects/p/s.jsonl": b"x"})
    store.create_agent(KEY, b"n", b"s")
    assert store.session_files(KEY) == {}
    store.put_session_files(KEY, {"projects/p/s.jsonl": b"one\n", "b.json": b"{}"}, incarnation=0)
    store.put_session_files(KEY, {"projects/p/s.jsonl": b"one\ntwo\n"})
    assert store.session_files(KEY) == {"b.json": b"{}", "projects/p/s.jsonl": b"one\ntwo\n"}
    store.begin_incarnation(KEY)
    with pytest.raises(StaleIncarnation):
        store.put_session_files(KEY, {"b.json": b"stale"}, incarnation=0)
    for bad in ("/etc/passwd", "../x", "a/../../x", ""):
        with pytest.raises(InvalidOption):
            store.put_session_files(KEY, {bad: b"x"})
    assert store.session_files(KEY)["b.json"] == b"{}"
    store.delete_agent(KEY)
    assert store.session_files(KEY) == {}


def test_delete_removes_the_agent_and_everything_under_it(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.create_agent(OTHER, b"n2", b"s2")
    store.save_state(KEY, b"state")
    store.put_result(KEY, "r", b"r", max_results=5)
    store.put_result(OTHER, "r", b"other", max_results=5)

    assert store.delete_agent(KEY) is True
    assert store.delete_agent(KEY) is False

    assert store.load(KEY) is None
    assert [e.key for e in store.list_agents()] == [OTHER]
    other = store.load(OTHER)
    assert other is not None and other.results == (StoredRequest("r", b"other"),)
    # The name can be used again from scratch.
    store.create_agent(KEY, b"n", b"s")
    again = store.load(KEY)
    assert again is not None
    assert (again.results, again.state_blob, again.incarnation) == ((), None, 0)


def test_list_agents(store: AgentStore) -> None:
    store.create_agent(KEY, b"first", b"s")
    store.create_agent(OTHER, b"second", b"s")
    store.bump_incarnation(OTHER)
    entries = {e.key: (e.name_blob, e.incarnation) for e in store.list_agents()}
    assert entries == {KEY: (b"first", 0), OTHER: (b"second", 1)}


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.create_agent("", b"n", b"s"),
        lambda s: s.create_agent(KEY, "not bytes", b"s"),
        lambda s: s.put_result(KEY, "", b"x", max_results=3),
        lambda s: s.put_result(KEY, 7, b"x", max_results=3),
        lambda s: s.put_result(KEY, "r", {"not": "bytes"}, max_results=3),
        lambda s: s.save_state(KEY, "not bytes"),
        lambda s: s.put_result(KEY, "r", b"x", max_results=-1),
        lambda s: s.put_result(KEY, "r", b"x", max_results=True),
        lambda s: s.record_process(os.getpid(), role=""),
        lambda s: s.record_process(-3, role="agent"),
    ],
)
def test_bad_arguments_are_invalid_option(
    store: AgentStore, call: Callable[[AgentStore], object]
) -> None:
    store.create_agent(KEY, b"n", b"s")
    with pytest.raises(InvalidOption):
        call(store)


def test_closed_store_raises_store_error(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.load(KEY)


def test_threads_share_one_store(store: AgentStore) -> None:
    store.create_agent(KEY, b"n", b"s")
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for i in range(40):
                store.put_result(KEY, f"t{thread}-{i}", b"x", max_results=1000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    loaded = store.load(KEY)
    assert loaded is not None
    refs = [r.ref for r in loaded.results]
    assert len(refs) == 160
    for thread in range(4):
        mine = [r for r in refs if r.startswith(f"t{thread}-")]
        assert mine == [f"t{thread}-{i}" for i in range(40)]


# --- agent keys -----------------------------------------------------------------------------


def test_agent_key_is_stable_across_processes_and_hash_seeds() -> None:
    name = ("pool", frozenset({"alpha", "beta", "gamma", "delta"}), 3, 2.5, None, b"\x01")
    code = """
        import sys
        from genagent_thespian._durable.store import agent_key
        print(agent_key(("pool", frozenset({"alpha", "beta", "gamma", "delta"}), 3, 2.5,
                         None, b"\\x01")))
    """
    keys = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            timeout=60,
        )
        keys.add(out.stdout.strip())
    assert keys == {agent_key(name)}


def test_agent_key_distinguishes_types_and_structure() -> None:
    names = ["1", 1, 1.0, True, b"1", ("1",), (("1",),), frozenset({"1"}), None, ("a", "b")]
    keys = [agent_key(n) for n in names]
    assert len(set(keys)) == len(names)
    assert agent_key(("a", "b")) != agent_key(("ab",))


def test_agent_key_of_an_unpicklable_name_is_invalid_option() -> None:
    with pytest.raises(InvalidOption, match="cannot be pickled"):
        agent_key(threading.Lock())


# --- SQLite: persistence, durability, several processes --------------------------------------


def test_everything_survives_reopening(db_path: Path) -> None:
    with SQLiteAgentStore(db_path) as first:
        first.create_agent(KEY, b"n", b"spec")
        for i in range(20):
            first.put_result(KEY, f"r{i:02d}", b"%d" % i, max_results=100)
        first.save_state(KEY, b"state")
        first.bump_incarnation(KEY)

    with SQLiteAgentStore(db_path) as second:
        loaded = second.load(KEY)
    assert loaded is not None
    assert loaded.results == tuple(StoredRequest(f"r{i:02d}", b"%d" % i) for i in range(20))
    assert (loaded.state_blob, loaded.incarnation) == (b"state", 1)


def test_file_is_in_wal_mode_with_the_chosen_synchronous(db_path: Path) -> None:
    for level, expected in (("FULL", 2), ("normal", 1)):
        with SQLiteAgentStore(db_path, synchronous=level) as store:  # type: ignore[arg-type]
            conn = store._conn()
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("option", "value"), [("synchronous", "OFF"), ("busy_timeout", -1), ("busy_timeout", "5")]
)
def test_bad_sqlite_options(db_path: Path, option: str, value: object) -> None:
    with pytest.raises(InvalidOption, match=option):
        SQLiteAgentStore(db_path, **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_an_acknowledged_write_survives_sigkill(db_path: Path, synchronous: str) -> None:
    """The writer prints each number right after its state snapshot and result are written
    (as the runtime acknowledges a tell after its snapshot); kill -9 it mid-stream."""
    with SQLiteAgentStore(db_path) as setup:
        setup.create_agent(KEY, b"n", b"s")
    writer = run_python(
        """
        import sys
        from genagent_thespian._durable.store import SQLiteAgentStore
        store = SQLiteAgentStore(sys.argv[1], synchronous=sys.argv[3])
        i = 0
        while True:
            store.save_state(sys.argv[2], b"state-%d" % i)
            store.put_result(sys.argv[2], f"r{i:05d}", b"payload-%d" % i, max_results=100000)
            print(i, flush=True)
            i += 1
        """,
        str(db_path),
        KEY,
        synchronous,
    )
    assert writer.stdout is not None
    acknowledged = [int(writer.stdout.readline()) for _ in range(25)][-1]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    assert writer.stderr is not None
    writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    with SQLiteAgentStore(db_path) as reopened:
        loaded = reopened.load(KEY)
    assert loaded is not None and loaded.state_blob is not None
    assert int(loaded.state_blob.removeprefix(b"state-")) >= acknowledged
    refs = [r.ref for r in loaded.results]
    assert refs[: acknowledged + 1] == [f"r{i:05d}" for i in range(acknowledged + 1)]
    assert loaded.results[0].blob == b"payload-0"


def test_concurrent_writer_processes(db_path: Path) -> None:
    with SQLiteAgentStore(db_path) as setup:
        setup.create_agent(KEY, b"shared", b"s")
        for w in range(4):
            setup.create_agent(agent_key(("own", w)), b"own", b"s")
    writers = [
        run_python(
            """
            import sys
            from genagent_thespian._durable.store import SQLiteAgentStore, StoredRequest, agent_key
            writer = int(sys.argv[3])
            store = SQLiteAgentStore(sys.argv[1], busy_timeout=30, synchronous="NORMAL")
            own = agent_key(("own", writer))
            for i in range(60):
                store.put_result(sys.argv[2], f"w{writer}-{i:03d}", b"x", max_results=1000)
                store.save_state(own, b"%d" % i)
                store.put_result(own, f"r{i}", b"y", max_results=10)
            store.close()
            print("done", flush=True)
            """,
            str(db_path),
            KEY,
            str(w),
        )
        for w in range(4)
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert out.strip() == "done"

    with SQLiteAgentStore(db_path) as store:
        shared = store.load(KEY)
        assert shared is not None
        refs = [r.ref for r in shared.results]
        assert len(refs) == 240
        for w in range(4):
            mine = [r for r in refs if r.startswith(f"w{w}-")]
            assert mine == [f"w{w}-{i:03d}" for i in range(60)]
            own = store.load(agent_key(("own", w)))
            assert own is not None
            assert own.state_blob == b"59"
            assert [r.ref for r in own.results] == [f"r{i}" for i in range(50, 60)]


def test_a_forked_child_uses_its_own_connection(db_path: Path) -> None:
    store = SQLiteAgentStore(db_path)
    store.create_agent(KEY, b"n", b"s")
    store.put_result(KEY, "parent-1", b"p", max_results=10)
    parent_connection = store._connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            store.put_result(KEY, "child-1", b"c", max_results=10)
            code = 0 if store._connection is not parent_connection else 2
            store.close()
        finally:
            os._exit(code)
    exited = wait_for_exit(pid, 30)
    if not exited:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert exited
    assert os.waitstatus_to_exitcode(status) == 0
    store.put_result(KEY, "parent-2", b"p", max_results=10)
    loaded = store.load(KEY)
    assert loaded is not None
    assert [r.ref for r in loaded.results] == ["parent-1", "child-1", "parent-2"]
    assert store._connection is parent_connection
    store.close()


# --- SQLite: schema and damage --------------------------------------------------------------


def test_schema_version_mismatch_is_a_clear_error(db_path: Path) -> None:
    SQLiteAgentStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    with pytest.raises(StoreSchemaMismatch, match="version 99") as excinfo:
        SQLiteAgentStore(db_path)
    assert str(db_path) in str(excinfo.value)


def test_another_applications_database_is_refused(db_path: Path) -> None:
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE invoices (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreSchemaMismatch, match="another application"):
        SQLiteAgentStore(db_path)
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("PRAGMA application_id = 1234")
    raw.commit()
    raw.close()
    with pytest.raises(StoreSchemaMismatch, match="not a genagent-thespian store"):
        SQLiteAgentStore(db_path)


def test_a_file_that_is_not_a_database_is_store_corrupted(db_path: Path) -> None:
    db_path.write_bytes(b"this is not SQLite at all " * 200)
    with pytest.raises(StoreCorrupted, match="damaged"):
        SQLiteAgentStore(db_path)


def test_a_damaged_header_is_store_corrupted(db_path: Path) -> None:
    with SQLiteAgentStore(db_path) as store:
        store.create_agent(KEY, b"n", b"s")
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path.read_bytes())
    data[0:16] = b"\xff" * 16
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupted):
        SQLiteAgentStore(db_path)


@pytest.mark.parametrize(
    ("column", "part"),
    [("state", "state snapshot"), ("spec", "start spec"), ("name", "name")],
)
def test_a_damaged_record_is_store_corrupted_naming_the_part(
    db_path: Path, column: str, part: str
) -> None:
    with SQLiteAgentStore(db_path) as store:
        store.create_agent(KEY, b"n", b"spec")
        store.create_agent(OTHER, b"n", b"spec")
        store.save_state(KEY, b"state")
    raw = sqlite3.connect(db_path)
    raw.execute(f"UPDATE agents SET {column} = X'DEADBEEF' WHERE key = ?", (KEY,))
    raw.commit()
    raw.close()
    with SQLiteAgentStore(db_path) as store:
        with pytest.raises(StoreCorrupted, match=part) as excinfo:
            store.load(KEY)
        assert KEY[:12] in str(excinfo.value)
        assert store.load(OTHER) is not None  # the other agents stay readable


def test_begin_incarnation_on_a_damaged_record_changes_nothing(db_path: Path) -> None:
    with SQLiteAgentStore(db_path) as store:
        store.create_agent(KEY, b"n", b"s")
        store.save_state(KEY, b"state")
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE agents SET state = X'00' WHERE key = ?", (KEY,))
    raw.commit()
    raw.close()
    with SQLiteAgentStore(db_path) as store:
        with pytest.raises(StoreCorrupted, match="state snapshot"):
            store.begin_incarnation(KEY)
        assert [e.incarnation for e in store.list_agents()] == [0]


def test_a_damaged_result_is_store_corrupted(db_path: Path) -> None:
    with SQLiteAgentStore(db_path) as store:
        store.create_agent(KEY, b"n", b"s")
        store.put_result(KEY, "r1", b"fine", max_results=10)
        store.put_result(KEY, "r2", b"fine", max_results=10)
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE results SET blob = X'00' WHERE ref = 'r2'")
    raw.commit()
    raw.close()
    with SQLiteAgentStore(db_path) as store, pytest.raises(StoreCorrupted, match="r2"):
        store.load(KEY)


# --- process records ------------------------------------------------------------------------


def sleeper(**popen: object) -> subprocess.Popen[str]:
    return run_python("import time; time.sleep(600)", **popen)


def reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_process_records_round_trip_and_detect_pid_reuse(store: AgentStore) -> None:
    proc = sleeper()
    try:
        record = store.record_process(proc.pid, role="cli", agent_key=KEY)
        assert record is not None
        stat = process_stat(proc.pid)
        assert stat is not None
        assert (record.pid, record.start_ticks, record.pgid) == (
            proc.pid,
            stat.start_ticks,
            stat.pgid,
        )
        assert store.recorded_processes() == [record]
        assert record.is_running()

        # The same pid with another start time (or boot) is a different process.
        reused = ProcessRecord(proc.pid, record.start_ticks + 1, record.boot, None, "cli")
        assert not reused.is_running()
        other_boot = ProcessRecord(proc.pid, record.start_ticks, "another-boot", None, "cli")
        assert not other_boot.is_running()

        proc.kill()
        assert wait_for_exit(proc.pid, 30)
        assert not record.is_running()
        assert store.forget_process(proc.pid, record.start_ticks + 1) == 0
        assert store.forget_process(proc.pid) == 1
        assert store.recorded_processes() == []
    finally:
        reap(proc)


def test_forgetting_processes_in_one_call_drops_exactly_those_named(store: AgentStore) -> None:
    procs = [sleeper() for _ in range(3)]
    try:
        records = [store.record_process(p.pid, role="worker", agent_key=KEY) for p in procs]
        assert all(r is not None for r in records)
        first, second, third = (r for r in records if r is not None)
        named = [(first.pid, first.start_ticks), (second.pid, second.start_ticks)]
        stale = (third.pid, third.start_ticks + 1)  # the third pid, another process
        assert store.forget_processes([*named, stale]) == 2
        assert store.recorded_processes() == [third]
        assert store.forget_processes([]) == 0
    finally:
        for proc in procs:
            reap(proc)


def test_recording_a_process_that_has_exited_records_nothing(store: AgentStore) -> None:
    proc = sleeper()
    proc.kill()
    proc.communicate(timeout=30)
    assert store.record_process(proc.pid, role="worker") is None
    assert store.recorded_processes() == []


def test_end_recorded_processes_ends_groups_and_spares_reused_pids(db_path: Path) -> None:
    # A "previous run": a CLI-like leader in its own session with a child in its group.
    leader = run_python(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(child.pid, flush=True)
        time.sleep(600)
        """,
        start_new_session=True,
    )
    lone = sleeper()  # shares our process group: must be ended alone, never by group
    innocent = sleeper(start_new_session=True)  # a later process reusing a recorded pid
    try:
        assert leader.stdout is not None
        grandchild = int(leader.stdout.readline())
        with SQLiteAgentStore(db_path) as previous_run:
            assert previous_run.record_process(leader.pid, role="cli") is not None
            assert previous_run.record_process(lone.pid, role="worker") is not None
            raw = previous_run._conn()
            stat = process_stat(innocent.pid)
            assert stat is not None
            raw.execute(
                "INSERT INTO processes VALUES (?, ?, ?, ?, ?, NULL, 0)",
                (innocent.pid, stat.start_ticks - 1, boot_id(), stat.pgid, "cli"),
            )

        with SQLiteAgentStore(db_path) as this_run:
            ended = end_recorded_processes(this_run, grace=5.0)
            assert sorted(r.pid for r in ended) == sorted([leader.pid, lone.pid])
            assert this_run.recorded_processes() == []

        assert wait_for_exit(grandchild, 30)
        assert not process_alive(leader.pid)
        assert not process_alive(lone.pid)
        assert process_alive(innocent.pid)
        assert process_alive(os.getpid())
    finally:
        for proc in (leader, lone, innocent):
            reap(proc)
    assert not any(process_alive(p.pid) for p in (leader, lone, innocent))


def test_a_fork_while_another_thread_holds_the_lock_does_not_deadlock_the_child(
    db_path: Path,
) -> None:
    store = SQLiteAgentStore(db_path)
    store.create_agent(KEY, b"n", b"s")
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with store._lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert holding.wait(30)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                store.put_result(KEY, "from-child", b"c", max_results=10)
                code = 0
            finally:
                os._exit(code)
        exited = wait_for_exit(pid, 30)
        if not exited:  # a deadlocked child must not outlive the test
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert exited, "the forked child deadlocked on the store's lock"
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join(30)
    loaded = store.load(KEY)
    assert loaded is not None and [r.ref for r in loaded.results] == ["from-child"]
    store.close()


def _locked() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorname = "SQLITE_BUSY"
    return error


def test_opening_retries_a_database_locked_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite answers "database is locked" at once, without its busy handler, to a process
    # opening the file while another rebuilds or removes the WAL index (measured with
    # thousands of durable agents starting and hibernating on one file).
    real = SQLiteAgentStore._connect
    failures = [2]

    def flaky(self: SQLiteAgentStore) -> sqlite3.Connection:
        if failures[0]:
            failures[0] -= 1
            raise _locked()
        return real(self)

    monkeypatch.setattr(SQLiteAgentStore, "_connect", flaky)
    store = SQLiteAgentStore(str(tmp_path / "agents.sqlite"), busy_timeout=5.0)
    assert store.load("a") is None  # opened, after two refusals
    assert failures == [0]
    store.close()


def test_opening_gives_up_on_a_lock_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(self: SQLiteAgentStore) -> sqlite3.Connection:
        raise _locked()

    monkeypatch.setattr(SQLiteAgentStore, "_connect", locked)
    with pytest.raises(StoreError, match="open failed: database is locked"):
        store = SQLiteAgentStore(str(tmp_path / "agents.sqlite"), busy_timeout=0.3)
        store.load("a")
