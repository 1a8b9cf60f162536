"""Leader failover across network namespaces: the leader's host dies, a standby takes over.

The first test also runs on loopback (no root needed; the store is a SQLite file).

Three "hosts" (``tests/support_fleet.py``): the leader candidate ``a`` (first in the list),
the standby candidate ``b`` and the member ``m``, with the store on PostgreSQL. ``a`` is
killed with SIGKILL (all its processes); ``b`` must take the lead under a new epoch, re-adopt
the agent running on ``m`` (same process), restart the durable agent that lived on ``a``,
and the clients attached on ``m``'s and ``b``'s hosts must find the new services by
themselves. A second test cuts the leader off (its veth dropped): it stands down, the
standby leads under epoch 2 and re-adopts, and the healed old leader stays a standby.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_fleet import Fleet, fleet_fixture

from genagent_thespian._api.system import free_port
from genagent_thespian._durable.location import open_store
from genagent_thespian._durable.postgres import PostgresAgentStore
from genagent_thespian._os.processes import process_alive
from genagent_thespian.testing import read_history, wait_until


@pytest.fixture(params=[pytest.param("netns", marks=pytest.mark.netns), "loopback"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """Hosts in network namespaces with PostgreSQL, or on loopback with SQLite (no root)."""
    yield from fleet_fixture(tmp_path, isolated=request.param == "netns")


@pytest.fixture
def netns_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Hosts in network namespaces (a partition needs them), store on PostgreSQL."""
    yield from fleet_fixture(tmp_path)


def test_a_standby_takes_over_when_the_leaders_host_dies(fleet: Fleet, tmp_path: Path) -> None:
    store_url = fleet.new_store()
    a_ns, b_ns, m_ns = fleet.host("a"), fleet.host("b"), fleet.host("m")
    a_port, b_port = free_port(), free_port()
    a_at = f"{fleet.namespaces[a_ns][0]}:{a_port}"
    b_at = f"{fleet.namespaces[b_ns][0]}:{b_port}"
    leaders = ("--leaders", f"{a_at},{b_at}")
    a = fleet.start(a_ns, *leaders, "--store", store_url, port=a_port)
    b = fleet.start(b_ns, *leaders, "--store", store_url, port=b_port)
    m = fleet.start(m_ns, *leaders, "--label", "claude=yes")
    wait_until(lambda: m.call(op="nodes")["count"] == 3, timeout=30)
    convention = f"{a_at},{b_at}"
    store = open_store(store_url)
    try:
        first = store.leadership(convention)
        assert first is not None and first.holder.startswith(a_at + "/") and first.epoch == 1

        on_member, on_leader = tmp_path / "member.jsonl", tmp_path / "leader.jsonl"
        started = a.call(
            op="start",
            name="dm",
            script=["m1", "m2", "m3", "m4"],
            placement={"claude": "yes"},
            history=str(on_member),
        )
        assert started == {"ok": True}
        assert a.call(
            op="start", name="dl", script=["l1", "l2", "l3", "l4"], history=str(on_leader)
        ) == {"ok": True}
        volatile = a.call(
            op="start",
            name="nm",
            script=["n1", "n2"],
            placement={"claude": "yes"},
            history=str(tmp_path / "volatile.jsonl"),
            durable=False,
        )
        assert volatile == {"ok": True}
        assert m.call(op="ask", name="nm", prompt="v1", timeout=30) == {"text": "n1"}
        volatile_agent = m.call(op="status", name="nm")
        assert m.call(op="ask", name="dm", prompt="p1", timeout=30) == {"text": "m1"}
        assert m.call(op="ask", name="dl", prompt="q1", timeout=30) == {"text": "l1"}
        member_agent = m.call(op="status", name="dm")
        leader_agent = m.call(op="status", name="dl")
        assert member_agent["node"] == m.node and leader_agent["node"] == a.node
        # The standby has not taken anything while the leader lives.
        still = store.leadership(convention)
        assert still is not None and (still.epoch, still.holder) == (first.epoch, first.holder)

        client = fleet.client(m)  # AgentSystem.attach on the member's host
        assert client.node == m.node
        on_standby = fleet.client(b)  # and on the standby's host, attached before the failover
        assert on_standby.node == b.node

        killed_at = time.monotonic()
        fleet.kill(a)
        wait_until(lambda: not process_alive(leader_agent["pid"]), timeout=10)
        # A call that cannot be served within its timeout gets a typed error, and only that.
        assert client.call(op="ask", name="dl", prompt="lost", timeout=2)["error"] == "AskTimeout"
        # The agent on the member keeps answering through the outage (the client holds its
        # address), from the same process.
        assert m.call(op="ask", name="dm", prompt="p2", timeout=30) == {"text": "m2"}
        # The durable agent that died with the leader's host answers again, restarted on the
        # standby; the attached client found the new leader's registry by itself.
        assert client.call(op="ask", name="dl", prompt="q2", timeout=40) == {"text": "l2"}
        recovered = time.monotonic() - killed_at
        assert m.call(op="ask", name="dl", prompt="q3", timeout=30) == {"text": "l3"}

        now = store.leadership(convention)
        assert now is not None and now.holder.startswith(b_at + "/")
        assert now.epoch == first.epoch + 1  # one new leader, fenced by a new epoch
        adopted = m.call(op="status", name="dm")
        assert adopted["pid"] == member_agent["pid"] and adopted["node"] == m.node
        assert adopted["restarts"] == member_agent["restarts"]  # re-adopted, not restarted
        # A non-durable agent on the member is re-adopted too (it has no record to resume).
        assert m.call(op="ask", name="nm", prompt="v2", timeout=30) == {"text": "n2"}
        assert m.call(op="status", name="nm")["pid"] == volatile_agent["pid"]
        moved = m.call(op="status", name="dl")
        assert moved["node"] == b.node and moved["pid"] != leader_agent["pid"]
        assert m.call(op="ask", name="dm", prompt="p3", timeout=30) == {"text": "m3"}
        # The client attached on the standby's host follows its node's directory to the new
        # services (the old registry's address it held is dead) and reaches both agents.
        assert on_standby.call(op="ask", name="dm", prompt="p4", timeout=30) == {"text": "m4"}
        assert on_standby.call(op="ask", name="dl", prompt="q4", timeout=30) == {"text": "l4"}
        standby_answered = time.monotonic() - killed_at
        assert read_history(on_member) == ["p1", "p2", "p3", "p4"]  # nothing lost or run twice
        assert read_history(on_leader) == ["q1", "q2", "q3", "q4"]
        # The new leader's node watcher knows the fleet without the dead host.
        wait_until(lambda: m.call(op="nodes")["count"] == 2, timeout=30)
        print(
            f"leader killed -> client answered by the moved agent after {recovered:.1f}s; "
            f"the standby host's client by {standby_answered:.1f}s"
        )
    finally:
        store.close()


@pytest.mark.netns
def test_a_partitioned_leader_stands_down_and_a_healed_one_stays_a_standby(
    netns_fleet: Fleet, tmp_path: Path
) -> None:
    fleet = netns_fleet
    assert fleet.store is not None
    store_url = fleet.store.new_database()
    a_ns, b_ns, m_ns = fleet.host("a"), fleet.host("b"), fleet.host("m")
    a_port, b_port = free_port(), free_port()
    a_at = f"{fleet.namespaces[a_ns][0]}:{a_port}"
    b_at = f"{fleet.namespaces[b_ns][0]}:{b_port}"
    leaders = ("--leaders", f"{a_at},{b_at}")
    a = fleet.start(a_ns, *leaders, "--store", store_url, port=a_port)
    b = fleet.start(b_ns, *leaders, "--store", store_url, port=b_port)
    m = fleet.start(m_ns, *leaders, "--label", "claude=yes")
    wait_until(lambda: m.call(op="nodes")["count"] == 3, timeout=30)
    convention = f"{a_at},{b_at}"
    history = tmp_path / "member.jsonl"
    store = PostgresAgentStore(store_url)
    try:
        started = a.call(
            op="start",
            name="dm",
            script=["m1", "m2", "m3"],
            placement={"claude": "yes"},
            history=str(history),
        )
        assert started == {"ok": True}
        assert m.call(op="ask", name="dm", prompt="p1", timeout=30) == {"text": "m1"}
        before = m.call(op="status", name="dm")

        cut_at = time.monotonic()
        fleet.set_link(a, up=False)  # the leader loses the store and every other node

        def b_leads() -> bool:
            current = store.leadership(convention)
            return current is not None and current.holder.startswith(b_at + "/")

        wait_until(b_leads, timeout=30, message="the standby did not take the lead")
        took = time.monotonic() - cut_at
        current = store.leadership(convention)
        assert current is not None and current.epoch == 2
        # The agent on the member was re-adopted by the new leader, not restarted.
        wait_until(lambda: m.call(op="services")["epoch"] == 2, timeout=30)
        assert m.call(op="ask", name="dm", prompt="p2", timeout=30) == {"text": "m2"}
        assert m.call(op="status", name="dm")["pid"] == before["pid"]

        fleet.set_link(a, up=True)  # heal: the old leader finds the lead taken
        wait_until(lambda: a.call(op="services")["epoch"] == 2, timeout=30)
        healed = store.leadership(convention)
        assert healed is not None and healed.epoch == 2 and healed.holder == current.holder
        # The deposed leader's stand-down did not end the agent it had started.
        assert m.call(op="ask", name="dm", prompt="p3", timeout=30) == {"text": "m3"}
        assert m.call(op="status", name="dm")["pid"] == before["pid"]
        assert read_history(history) == ["p1", "p2", "p3"]

        # The new leader stops cleanly: it releases the lead, the healed candidate takes it
        # at its next claim, and the agent the stopped leader started on the member keeps
        # its process (re-adopted again).
        started = m.call(
            op="start",
            name="dn",
            script=["n1", "n2"],
            placement={"claude": "yes"},
            history=str(tmp_path / "second.jsonl"),
        )
        assert started == {"ok": True}
        assert m.call(op="ask", name="dn", prompt="v1", timeout=30) == {"text": "n1"}
        second = m.call(op="status", name="dn")

        def a_leads() -> bool:
            now = store.leadership(convention)
            return now is not None and now.holder.startswith(a_at + "/") and now.expires_in > 0

        # The hand-over is timed from the stop's start while the stop goes on: the node's
        # process may take longer to end (Thespian waits up to 10 s for its admin), and timed
        # after it, the hand-over looked as slow as a lease expiry.
        held = store.leadership(convention)
        assert held is not None and held.holder.startswith(b_at + "/")
        stopping = threading.Thread(target=b.stop)
        stopped_at = time.monotonic()
        stopping.start()
        wait_until(a_leads, timeout=30, message="the healed candidate did not take the lead")
        handed = time.monotonic() - stopped_at
        # Before the stopped leader's lease could run out: its release reached the store (no
        # claim succeeds while a lease is held).
        assert handed < held.expires_in, (handed, held.expires_in)
        stopping.join(90)
        stop_took = time.monotonic() - stopped_at
        assert store.leadership(convention).epoch == 3  # type: ignore[union-attr]
        assert m.call(op="ask", name="dn", prompt="v2", timeout=30) == {"text": "n2"}
        # The new leader's registry names the same processes (re-adopted, not restarted).
        assert a.call(op="status", name="dn")["pid"] == second["pid"]
        assert a.call(op="status", name="dm")["pid"] == before["pid"]
        print(
            f"leader partitioned -> standby leads under epoch 2 after {took:.1f}s; "
            f"clean stop -> epoch 3 after {handed:.1f}s (the stopped node's process ended "
            f"after {stop_took:.1f}s)"
        )
    finally:
        store.close()
