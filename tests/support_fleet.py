"""Test support: a convention across network namespaces, one "host" per node, on a bridge.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_postgres import PostgresServer, find_binaries

from genagent_thespian._api.system import free_port
from genagent_thespian.testing import wait_until

TESTS = Path(__file__).resolve().parent
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class FleetNode:
    """One node process in its namespace (``tests/support_fleet_node.py``), or a client
    process attached to one (``script="support_fleet_client.py"``)."""

    def __init__(
        self,
        netns: str,
        address: str,
        env: dict[str, str],
        *args: str,
        port: int = 0,
        script: str = "support_fleet_node.py",
        isolated: bool = True,
    ) -> None:
        self.netns, self.address = netns, address
        command = [
            *(["ip", "netns", "exec", netns] if isolated else []),
            sys.executable,
            str(TESTS / script),
            "--bind-host",
            address,
            "--admin-port",
            str(port or free_port()),
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
        self.admin_port: int = int(info.get("admin_port", port))
        self.pgid: int = int(info.get("pgid", self.process.pid))

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
    """The bridge, the namespaces, the store and the nodes of one test.

    ``isolated=False`` runs the same nodes on loopback without namespaces (no root needed;
    the store is a SQLite file): every "host" is 127.0.0.1 and partitions are not possible.
    """

    def __init__(self, tmp_path: Path, *, isolated: bool = True) -> None:
        self.isolated = isolated
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
        if not isolated:
            return
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, label: str) -> str:
        """Make a namespace ``label`` with an address on the bridge; return the namespace."""
        if not self.isolated:
            self.namespaces[f"local-{label}"] = ("127.0.0.1", "")
            return f"local-{label}"
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

    def start(self, netns: str, *args: str, port: int = 0) -> FleetNode:
        address = self.namespaces[netns][0]
        env = self._env(netns)
        node = FleetNode(netns, address, env, *args, port=port, isolated=self.isolated)
        self.nodes.append(node)
        return node

    def new_store(self) -> str:
        """A store for one convention: a PostgreSQL database, or a SQLite file on loopback."""
        if self.store is not None:
            return self.store.new_database()
        return str(self.tmp_path / f"store-{len(self.nodes)}.sqlite3")

    def client(self, node: FleetNode) -> FleetNode:
        """A client process on ``node``'s host, attached to it (``AgentSystem.attach``)."""
        client = FleetNode(
            node.netns,
            node.address,
            self._env(node.netns),
            port=node.admin_port,
            script="support_fleet_client.py",
            isolated=self.isolated,
        )
        self.nodes.append(client)
        return client

    def _env(self, netns: str) -> dict[str, str]:
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
            GENAGENT_LEADER_LEASE_SECONDS=str(LEASE),
            GENAGENT_SECRET=self.secret,
        )
        return env

    def set_link(self, node: FleetNode, up: bool) -> None:
        """Drop (or restore) ``node``'s veth on the bridge side: a partition (or its heal)."""
        _ip("link", "set", self.namespaces[node.netns][1], "up" if up else "down")

    def kill(self, node: FleetNode) -> None:
        """SIGKILL every process of ``node`` (its admin's group and the node process): a crash."""
        for group in (node.pgid, node.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        node.process.wait(10)

    def close(self) -> None:
        try:
            for node in reversed(self.nodes):
                node.stop()
            groups = [g for node in self.nodes for g in (node.pgid, node.process.pid)]
            wait_until(lambda: not any(_group_alive(g) for g in groups), timeout=10)
        finally:
            if self.store is not None:
                self.store.stop()
            if self.isolated:
                self._remove_network()
        if self.isolated:
            left = _ip("netns", "list")
            assert not any(netns in left for netns in self.namespaces), left
            links = _ip("-o", "link", "show")
            assert self.bridge not in links
            assert not any(outside in links for _, outside in self.namespaces.values()), links

    def _remove_network(self) -> None:
        for netns, (_, outside) in self.namespaces.items():
            # Deleting one end removes the pair, even if something still pins the netns.
            subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


def fleet_fixture(tmp_path: Path, *, isolated: bool = True) -> Iterator[Fleet]:
    """The body of the ``fleet`` fixtures: skip where unavailable, clean up after."""
    if not isolated:
        local = Fleet(tmp_path, isolated=False)
        try:
            yield local
        finally:
            local.close()
        return
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
