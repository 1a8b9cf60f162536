"""A convention across network namespaces: one "host" per node, joined by a bridge.

The fixture makes a bridge in the test's namespace (with the PostgreSQL store on its
address) and one namespace per node, each with a veth pair onto the bridge, all on a private
/24 that exists nowhere else; it removes them afterwards. Nodes run with ``ip netns exec``
(``tests/support_fleet_node.py``). Dropping a node's veth on the bridge side partitions it
from every other node and from the store; setting it up again heals the partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_postgres import PostgresServer, find_binaries

from genagent_thespian._api.system import free_port
from genagent_thespian._os.processes import process_alive
from genagent_thespian.testing import read_history, wait_until

pytestmark = pytest.mark.netns

TESTS = Path(__file__).resolve().parents[1]
#: Lease of durable agents in these tests (seconds); detection is 1 s x 3.
LEASE = 6.0


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs these tests as root)"
    if subprocess.run(["which", "ip"], capture_output=True, check=False).returncode != 0:
        return "the ip command is missing (apt-get install -y iproute2)"
    if find_binaries() is None:
        return "PostgreSQL server binaries not found (Debian's postgresql package)"
    return None


class FleetNode:
    """One node process in its namespace (see ``tests/support_fleet_node.py``)."""

    def __init__(self, netns: str, address: str, env: dict[str, str], *args: str) -> None:
        self.netns, self.address = netns, address
        command = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            str(TESTS / "support_fleet_node.py"),
            "--bind-host",
            address,
            "--admin-port",
            str(free_port()),
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        info = json.loads(self._next_line(90.0))
        self.node: str = info["node"]
        self.admin_port: int = info["admin_port"]
        self.pgid: int = info["pgid"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _next_line(self, timeout: float) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node in {self.netns} did not answer in time") from None

    def call(self, wait: float = 90.0, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        reply: dict[str, Any] = json.loads(self._next_line(wait))
        return reply

    def stop(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for group in (self.pgid, self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


class Fleet:
    """The bridge, the namespaces, the store and the nodes of one test."""

    def __init__(self, tmp_path: Path) -> None:
        tag = os.getpid() % 10000
        self.subnet = f"10.214.{tag % 250}"
        self.bridge = f"gab{tag}"
        self.bridge_address = f"{self.subnet}.1"
        self.namespaces: dict[str, tuple[str, str]] = {}  # name -> (address, host-side veth)
        self.nodes: list[FleetNode] = []
        self.tmp_path = tmp_path
        self.tag = tag
        self.store: PostgresServer | None = None
        self.secret = os.urandom(32).hex()  # every host of the convention shares it
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, label: str) -> str:
        """Make a namespace ``label`` with an address on the bridge; return the namespace."""
        index = len(self.namespaces) + 10
        netns, inside = f"gaf{self.tag}{label}", f"gai{self.tag}{label}"
        outside = f"gao{self.tag}{label}"
        address = f"{self.subnet}.{index}"
        _ip("netns", "add", netns)
        self.namespaces[netns] = (address, outside)
        _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
        _ip("link", "set", inside, "netns", netns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", inside)
        _ip("-n", netns, "link", "set", inside, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def start(self, netns: str, *args: str) -> FleetNode:
        address = self.namespaces[netns][0]
        home = self.tmp_path / netns
        home.mkdir(exist_ok=True)
        # Nothing of this process's own node settings (the transport hardening exports
        # THESPIAN_BASE_IPADDR, secrets...) leaks into another host's node.
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("GENAGENT_", "THESP"))
        }
        env = dict(
            inherited,
            HOME=str(home),
            XDG_STATE_HOME=str(home / "state"),
            PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]),
            GENAGENT_LEASE_SECONDS=str(LEASE),
            GENAGENT_SECRET=self.secret,
        )
        node = FleetNode(netns, address, env, *args)
        self.nodes.append(node)
        return node

    def set_link(self, node: FleetNode, up: bool) -> None:
        """Drop (or restore) ``node``'s veth on the bridge side: a partition (or its heal)."""
        _ip("link", "set", self.namespaces[node.netns][1], "up" if up else "down")

    def close(self) -> None:
        try:
            for node in reversed(self.nodes):
                node.stop()
        finally:
            if self.store is not None:
                self.store.stop()
            for netns, (_, outside) in self.namespaces.items():
                # Deleting one end removes the pair, even if something still pins the netns.
                subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
                subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        left = _ip("netns", "list")
        assert not any(netns in left for netns in self.namespaces), left
        links = _ip("-o", "link", "show")
        assert self.bridge not in links
        assert not any(outside in links for _, outside in self.namespaces.values()), links


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    reason = _why_unavailable()
    if reason:
        pytest.skip(reason)
    made = Fleet(tmp_path)
    try:
        binaries = find_binaries()
        assert binaries is not None
        made.store = PostgresServer(binaries, listen=made.bridge_address)
        yield made
    finally:
        made.close()


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
