"""Fencing: an incarnation whose epoch is stale (another one took the record over) runs no
turn, writes nothing, answers nobody and exits; the owner answers, and nothing runs twice.

The takeover is made directly in the store (what a new incarnation on another host does when
it begins), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._durable.location import open_store
from genagent_thespian._durable.store import agent_key
from genagent_thespian._os.processes import process_alive
from genagent_thespian.testing import Slow, read_history, system_processes, wait_until


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "store.sqlite3")


def test_a_fenced_incarnation_runs_nothing_and_the_owner_answers(
    store_location: str, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    system = g.start_system(store_path=store_location, make_default=False)
    try:
        g.start_agent(
            Recorder,
            name="d",
            backend="scripted",
            script=["one", "two"],
            backend_options={"record_to": str(history)},
            durable=True,
            restart="permanent",
            system=system,
        )
        assert g.ask("d", "first", system=system).text == "one"
        fenced_pid = g.status("d", system=system).pid
        with open_store(store_location) as store:
            taken_over = store.begin_incarnation(agent_key("d")).incarnation

        # The fenced incarnation refuses to start this turn and exits; the supervisor's
        # next incarnation takes the record over and answers the same request.
        assert g.ask("d", "second", timeout=60, system=system).text == "two"
        assert read_history(history) == ["first", "second"]  # run once, by the owner
        assert g.status("d", system=system).pid != fenced_pid
        wait_until(lambda: not process_alive(fenced_pid), message="the fenced agent lives on")
        with open_store(store_location) as store:
            assert [e.incarnation for e in store.list_agents()] == [taken_over + 1]
    finally:
        system.shutdown()
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def test_an_owner_cut_off_from_the_store_stops_when_its_lease_runs_out(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store becomes unreachable for the agent (its session is ended and logins are
    refused): it cannot renew, so it ends its running turn and exits by itself, instead of
    running on as a second owner while a successor could take over."""
    import psycopg

    monkeypatch.setenv("GENAGENT_LEASE_SECONDS", "2")
    history = tmp_path / "history.jsonl"
    system = g.start_system(store_path=postgres_url, make_default=False)
    admin = psycopg.connect(postgres_url, autocommit=True)
    try:
        g.start_agent(
            Recorder,
            name="d",
            backend="scripted",
            script=["one", Slow("never finishes here", 120.0)],
            backend_options={"record_to": str(history)},
            durable=True,
            restart="permanent",
            max_restarts=100,
            restart_window=60.0,
            system=system,
        )
        assert g.ask("d", "first", system=system).text == "one"
        owner = g.status("d", system=system).pid
        g.tell("d", "second", system=system)
        wait_until(lambda: g.status("d", system=system).state == "processing")

        row = admin.execute("SELECT current_user").fetchone()
        assert row is not None
        role = row[0]
        admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        wait_until(
            lambda: not process_alive(owner),
            timeout=15,
            message="the cut-off owner did not stop when its lease ran out",
        )
        admin.execute(f'ALTER ROLE "{role}" LOGIN')
        wait_until(
            lambda: (p := g.status("d", system=system).pid) != owner and p,
            timeout=30,
            message="no successor took the agent over",
        )
        successor = g.status("d", system=system)
        assert successor.restarts >= 1 and successor.state == "idle"
        assert read_history(history) == ["first", "second"]  # the cut-off turn was not rerun
    finally:
        with contextlib.suppress(Exception):
            admin.execute(f'ALTER ROLE "{role}" LOGIN')
        admin.close()
        system.shutdown()
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")
