"""A convention across network namespaces: a member partitioned from the others and healed.

The fleet (bridge, namespaces, PostgreSQL store, node processes) is ``tests/support_fleet.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_fleet import Fleet, fleet_fixture

from genagent_thespian._os.processes import process_alive
from genagent_thespian.testing import read_history, wait_until

pytestmark = pytest.mark.netns


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_fixture(tmp_path)


def test_a_partitioned_owner_stands_down_before_its_successor_runs_and_heals_cleanly(
    fleet: Fleet, tmp_path: Path
) -> None:
    assert fleet.store is not None
    store = fleet.store.new_database()
    history = tmp_path / "history.jsonl"
    leader_ns, first_ns, second_ns = fleet.host("l"), fleet.host("a"), fleet.host("b")
    leader = fleet.start(leader_ns, "--store", store)
    leader_at = f"{leader.address}:{leader.admin_port}"
    members = [
        fleet.start(ns, "--leader", leader_at, "--label", "claude=yes")
        for ns in (first_ns, second_ns)
    ]
    wait_until(lambda: leader.call(op="nodes")["count"] == 3, timeout=30)
    started = leader.call(
        op="start",
        name="d",
        script=["one", "two", "three"],
        placement={"claude": "yes"},
        history=str(history),
    )
    assert started == {"ok": True}
    assert leader.call(op="ask", name="d", prompt="first", timeout=30) == {"text": "one"}
    before = leader.call(op="status", name="d")
    owner = next(m for m in members if m.node == before["node"])
    survivor = next(m for m in members if m is not owner)

    partitioned_at = time.monotonic()
    fleet.set_link(owner, up=False)
    successor: dict[str, Any] = {}

    def taken_over() -> bool:
        status = leader.call(op="status", name="d")
        if status.get("pid") not in (None, before["pid"]):
            # The successor is registered (it owns the agent now): the cut-off owner must
            # have stood down already.
            successor.update(status, old_owner_alive=process_alive(before["pid"]))
            return True
        return False

    wait_until(taken_over, timeout=30, message="the agent was not taken over")
    took = time.monotonic() - partitioned_at
    assert successor["node"] == survivor.node
    assert successor["old_owner_alive"] is False, "two live owners"

    fleet.set_link(owner, up=True)  # heal
    wait_until(lambda: leader.call(op="nodes")["count"] == 3, timeout=30)
    assert leader.call(op="ask", name="d", prompt="after", timeout=30) == {"text": "two"}
    assert read_history(history) == ["first", "after"]  # nothing ran twice
    assert not process_alive(before["pid"])
    after = leader.call(op="status", name="d")
    assert after["pid"] == successor["pid"] and after["node"] == survivor.node
    print(f"partitioned owner replaced after {took:.1f}s")


def test_placement_member_loss_and_a_client_on_every_host(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.store is not None
    store = fleet.store.new_database()
    leader_ns, first_ns, second_ns = fleet.host("l"), fleet.host("a"), fleet.host("b")
    leader = fleet.start(leader_ns, "--store", store)
    leader_at = f"{leader.address}:{leader.admin_port}"
    first = fleet.start(first_ns, "--leader", leader_at, "--label", "claude=yes")
    second = fleet.start(
        second_ns, "--leader", leader_at, "--label", "claude=yes", "--label", "codex=yes"
    )
    wait_until(lambda: leader.call(op="nodes")["count"] == 3, timeout=30)
    histories = {name: tmp_path / f"{name}.jsonl" for name in ("c", "p", "h")}
    placements: dict[str, dict[str, str]] = {"c": {"codex": "yes"}, "p": {"claude": "yes"}}
    for name in ("c", "p", "h"):
        started = leader.call(
            op="start",
            name=name,
            script=[f"{name}{i}" for i in range(1, 6)],
            placement=placements.get(name),
            history=str(histories[name]),
        )
        assert started == {"ok": True}
    where = {name: leader.call(op="status", name=name)["node"] for name in ("c", "p", "h")}
    # Labels decide, and load spreads: c needs codex (second), p goes to the emptier first.
    assert where == {"c": second.node, "p": first.node, "h": leader.node}

    # A client attached on every host reaches every agent by name, wherever it runs.
    clients = [fleet.client(node) for node in (leader, first, second)]
    for number, client in enumerate(clients, start=1):
        for name in ("c", "p", "h"):
            reply = client.call(op="ask", name=name, prompt=f"{name}-q{number}", timeout=30)
            assert reply == {"text": f"{name}{number}"}, (client.node, name, reply)

    # The member running p dies with all its processes: p moves to the other claude node.
    before = clients[0].call(op="status", name="p")
    killed_at = time.monotonic()
    fleet.kill(first)
    survivors = (clients[0], clients[2])
    reply = survivors[1].call(op="ask", name="p", prompt="p-q4", timeout=40)
    moved_in = time.monotonic() - killed_at
    assert reply == {"text": "p4"}
    after = survivors[0].call(op="status", name="p")
    assert after["node"] == second.node and after["pid"] != before["pid"]
    assert survivors[0].call(op="ask", name="p", prompt="p-q5", timeout=30) == {"text": "p5"}
    assert read_history(histories["p"]) == [f"p-q{i}" for i in range(1, 6)]  # once each
    for name in ("c", "h"):
        assert read_history(histories[name]) == [f"{name}-q{i}" for i in (1, 2, 3)]
    print(f"member killed -> its durable agent answered elsewhere after {moved_in:.1f}s")


def test_a_supervisor_fan_out_runs_with_its_agents_on_other_hosts(fleet: Fleet) -> None:
    """Pattern state travels by messages: facade, coordinator and workers on three hosts."""
    assert fleet.store is not None
    leader_ns, coord_ns, work_ns = fleet.host("l"), fleet.host("c"), fleet.host("w")
    leader = fleet.start(leader_ns, "--store", fleet.store.new_database())
    leader_at = f"{leader.address}:{leader.admin_port}"
    coordinating = fleet.start(coord_ns, "--leader", leader_at, "--label", "coord=yes")
    working = fleet.start(work_ns, "--leader", leader_at, "--label", "work=yes")
    wait_until(lambda: leader.call(op="nodes")["count"] == 3, timeout=30)

    reply = leader.call(
        op="fanout",
        script=["t1\nt2\nt3", "FINAL"],
        placement={"coord": "yes"},
        worker_placement={"work": "yes"},
        timeout=60,
    )
    assert reply["ok"] is True and reply["final"] == "FINAL", reply
    assert reply["coordinator"] == coordinating.node  # not the facade's host
    # Every worker ran on the workers' host (its HOME names it) and reached the
    # coordinator on another host; the facade read the outcome from a third.
    assert reply["results"] == {f"t{i}": f"R[t{i}]@{work_ns}" for i in (1, 2, 3)}
    assert working.node != coordinating.node != leader.node
    assert reply["left"] == []  # the workers and, after stop, the coordinator are gone


@pytest.mark.cli
def test_a_durable_claude_agent_moved_to_another_host_continues_its_conversation(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The real claude CLI on two member hosts, each with its own HOME (where claude keeps
    its transcripts) and its own model server on its own loopback; the store is PostgreSQL.
    The member running the agent dies; on the other one, the agent's next turn carries the
    earlier conversation to that host's model server."""
    from support_cli import quiet_env, require_cli

    from genagent_thespian._api.system import free_port
    from genagent_thespian._durable.postgres import PostgresAgentStore
    from genagent_thespian._durable.store import agent_key

    binary = require_cli("claude")
    assert fleet.store is not None
    leader_ns = fleet.host("l")
    store_url = fleet.store.new_database()
    leader = fleet.start(leader_ns, "--store", store_url)
    leader_at = f"{leader.address}:{leader.admin_port}"
    members = [
        fleet.start(fleet.host(label), "--leader", leader_at, "--label", "claude=yes")
        for label in ("a", "b")
    ]
    wait_until(lambda: leader.call(op="nodes")["count"] == 3, timeout=30)
    workdir = tmp_path / "project"
    workdir.mkdir()
    port = free_port()  # the same port on each host's own loopback
    env = {
        key: value
        for key, value in quiet_env(tmp_path).items()
        if key not in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "CODEX_HOME")
    }
    env.update(
        ANTHROPIC_API_KEY="sk-test-not-a-real-key", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}"
    )
    started = leader.call(
        op="start_claude",
        name="mover",
        binary=binary,
        cwd=str(workdir),
        env=env,
        placement={"claude": "yes"},
    )
    assert started == {"ok": True}, started
    owner = next(m for m in members if m.node == leader.call(op="status", name="mover")["node"])
    survivor = next(m for m in members if m is not owner)
    assert owner.call(op="llm", port=port, texts=["Noted: PELICAN."])["url"]
    assert survivor.call(op="llm", port=port, texts=["The word was PELICAN."])["url"]
    first = leader.call(op="ask", name="mover", prompt="Remember the word PELICAN", timeout=60)
    assert first == {"text": "Noted: PELICAN."}
    assert survivor.call(op="llm_requests")["bodies"] == []  # the first turn ran on the owner
    # The agent stores the turn's transcript before it answers, so the host may die the
    # moment the answer is out (when the save came just after the answer, a kill at once
    # got session_lost in one run of three).
    store = PostgresAgentStore(store_url)
    try:
        assert store.session_files(agent_key("mover"))
    finally:
        store.close()

    killed_at = time.monotonic()
    fleet.kill(owner)
    answer = leader.call(op="ask", name="mover", prompt="Which word?", timeout=60)
    moved_in = time.monotonic() - killed_at
    assert answer == {"text": "The word was PELICAN."}, answer
    assert leader.call(op="status", name="mover")["node"] == survivor.node
    bodies = survivor.call(op="llm_requests")["bodies"]
    assert bodies and "Remember the word PELICAN" in bodies[-1]  # the earlier conversation
    survivor_home = tmp_path / survivor.netns
    assert list((survivor_home / ".claude" / "projects").glob("*/*.jsonl"))  # restored there
    print(f"member killed -> the claude agent answered on the other host after {moved_in:.1f}s")
