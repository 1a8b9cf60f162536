"""PostgreSQL specifics: secrets kept out of errors, processes sharing one database, schema
checks, and a durable agent resumed from a PostgreSQL store after SIGKILL.

The store's contract itself runs on PostgreSQL through the ``store`` fixture of
``test_store.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest
from support_agents import Counter, calls
from support_postgres import PostgresServer

import genagent_thespian as g
from genagent_thespian._api.system import free_port
from genagent_thespian._core.errors import InvalidOption
from genagent_thespian._durable.location import describe_store, open_store
from genagent_thespian._durable.postgres import PostgresAgentStore
from genagent_thespian._durable.store import (
    SCHEMA_VERSION,
    StoredRequest,
    StoreError,
    StoreSchemaMismatch,
    agent_key,
)
from genagent_thespian.testing import Slow, read_history, system_processes, wait_until

KEY = agent_key("coder")


def test_a_url_opens_postgres_and_a_path_opens_sqlite(postgres_url: str, tmp_path: Path) -> None:
    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresAgentStore)
    with open_store(str(tmp_path / "a.db")) as store:
        assert type(store).__name__ == "SQLiteAgentStore"


def test_the_password_never_shows_in_errors_or_reprs(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    password = postgres_server.password
    with PostgresAgentStore(postgres_url) as store:
        assert password not in repr(store)
        assert password not in describe_store(postgres_url)
        assert describe_store(postgres_url).startswith("postgresql://genagent@127.0.0.1:")
    wrong = postgres_url.replace(password, "not-the-" + password)
    with pytest.raises(StoreError, match="password authentication failed") as refused:
        PostgresAgentStore(wrong)
    assert password not in str(refused.value)
    with pytest.raises(StoreError, match="open failed") as unreachable:
        PostgresAgentStore(f"postgresql://genagent:{password}@127.0.0.1:{free_port()}/x")
    assert password not in str(unreachable.value)


def test_records_written_by_one_process_are_read_by_another(postgres_url: str) -> None:
    with PostgresAgentStore(postgres_url) as store:
        store.create_agent(KEY, b"name", b"spec")
        store.put_result(KEY, "r1", b"first", max_results=10)
    code = textwrap.dedent(
        """
        import sys
        from genagent_thespian._durable.postgres import PostgresAgentStore
        from genagent_thespian._durable.store import agent_key
        with PostgresAgentStore(sys.argv[1]) as store:
            key = agent_key("coder")
            store.put_result(key, "r2", b"second", max_results=10)
            store.save_state(key, b"s1")
        """
    )
    subprocess.run([sys.executable, "-c", code, postgres_url], check=True, timeout=60)
    with PostgresAgentStore(postgres_url) as store:
        loaded = store.load(KEY)
    assert loaded is not None
    assert loaded.state_blob == b"s1"
    assert loaded.results == (StoredRequest("r1", b"first"), StoredRequest("r2", b"second"))


def test_a_forked_child_uses_its_own_connection(postgres_url: str) -> None:
    store = PostgresAgentStore(postgres_url)
    store.create_agent(KEY, b"n", b"s")
    pid = os.fork()
    if pid == 0:  # the child: writes through a connection of its own, then leaves at once
        try:
            store.save_state(KEY, b"from the child")
            store.close()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.put_result(KEY, "r", b"parent still works", max_results=10)  # session left alone
    loaded = store.load(KEY)
    assert loaded is not None and loaded.state_blob == b"from the child"
    store.close()


def test_one_incarnation_fence_holds_across_connections(postgres_url: str) -> None:
    with PostgresAgentStore(postgres_url) as old, PostgresAgentStore(postgres_url) as new:
        old.create_agent(KEY, b"n", b"s")
        new.begin_incarnation(KEY)
        errors: list[BaseException] = []

        def stale_write() -> None:
            try:
                old.save_state(KEY, b"stale", incarnation=0)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=stale_write)
        thread.start()
        thread.join(30)
        assert [type(e).__name__ for e in errors] == ["StaleIncarnation"]
        new.save_state(KEY, b"current", incarnation=1)
        loaded = old.load(KEY)
        assert loaded is not None and loaded.state_blob == b"current"


def test_another_schema_version_is_refused(postgres_url: str) -> None:
    PostgresAgentStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE genagent_meta SET value = %s WHERE name = 'schema_version'",
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(StoreSchemaMismatch, match=f"schema version {SCHEMA_VERSION + 1}"):
        PostgresAgentStore(postgres_url)


def test_a_durable_agent_resumes_from_postgres_after_sigkill(
    postgres_url: str, tmp_path: Path
) -> None:
    log, history = tmp_path / "d.log", tmp_path / "history.jsonl"
    system = g.start_system(store_path=postgres_url, make_default=False)
    try:
        g.start_agent(
            Counter,
            name="d",
            backend="scripted",
            log=str(log),
            script=["one", Slow("in flight", 60.0), "three"],
            backend_options={"record_to": str(history)},
            durable=True,
            restart="permanent",
            system=system,
        )
        assert g.ask("d", "first", system=system).text == "one"
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(_ask_or_error("d", "second", system))
        )
        thread.start()
        # Killed once the in-flight turn has advanced the durable session (its position).
        wait_until(lambda: g.backend_session("d", system=system).position == 2)
        queued = g.tell("d", "third", system=system)
        old_pid = g.status("d", system=system).pid
        os.kill(old_pid, 9)
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], g.AgentRestarted)
        done = wait_until(lambda: (p := g.poll("d", queued, system=system)).done and p, timeout=30)
        assert done.response.text == "three"
        assert read_history(history) == ["first", "second", "third"]  # nothing ran twice
        assert [r["value"] for r in calls(log, "count")] == [1, 2]  # state came back
        with PostgresAgentStore(postgres_url) as store:
            assert [e.incarnation for e in store.list_agents()] == [1]
    finally:
        system.shutdown()
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def _ask_or_error(name: str, prompt: str, system: g.AgentSystem) -> object:
    try:
        return g.ask(name, prompt, system=system)
    except g.GenAgentError as exc:
        return exc


class _SilentServer:
    """A TCP listener that accepts connections and never answers: a server slow to accept
    (what PostgreSQL on a host under heavy load looks like to a client), counting tries."""

    def __init__(self) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[object] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)  # kept open, never answered

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()  # type: ignore[attr-defined]


def test_the_first_open_tries_a_server_slow_to_accept_again_until_its_patience_ends() -> None:
    server = _SilentServer()
    try:
        url = f"postgresql://genagent@127.0.0.1:{server.port}/agents"
        with pytest.raises(StoreError, match="ConnectionTimeout") as caught:
            PostgresAgentStore(url, connect_timeout=2, open_timeout=3)
        assert len(server.accepted) >= 2, "a timed-out connection is tried again"
        assert "genagent@127.0.0.1" in str(caught.value)
        with pytest.raises(InvalidOption, match="open_timeout"):
            PostgresAgentStore(url, open_timeout=0)
    finally:
        server.close()
