"""Transport security across network namespaces: two "hosts" joined by a veth pair.

The test creates two namespaces and a veth pair with private addresses (10.213.7.1/30 and
10.213.7.2/30, which exist inside the namespaces only and are routed nowhere else), runs
Thespian nodes in them with ``ip netns exec``, and removes everything afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from security_support import Node, free_port, listening_sockets, run_client
from transport_attacks import rss_kib

pytestmark = pytest.mark.netns

ADDRESS_A = "10.213.7.1"
ADDRESS_B = "10.213.7.2"


def _why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs these tests as root)"
    if shutil.which("ip") is None:
        return "the ip command is missing (apt-get install -y iproute2)"
    return None


@dataclass(frozen=True)
class NamespacePair:
    a: str
    b: str


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}


@pytest.fixture
def netns_pair() -> Iterator[NamespacePair]:
    reason = _why_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    pair = NamespacePair(a=f"gat{tag}a", b=f"gat{tag}b")
    veth_a, veth_b = f"gav{tag}a", f"gav{tag}b"
    try:
        _ip("netns", "add", pair.a)
        _ip("netns", "add", pair.b)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", pair.a)
        _ip("link", "set", veth_b, "netns", pair.b)
        for ns, veth, address in ((pair.a, veth_a, ADDRESS_A), (pair.b, veth_b, ADDRESS_B)):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in (pair.a, pair.b):
            if ns in _namespaces():
                _ip("netns", "del", ns)
        assert not {pair.a, pair.b} & _namespaces()
        links = _ip("-o", "link", "show")
        assert veth_a not in links and veth_b not in links


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    """Nodes started by a test; stopped in reverse order (members before the leader)."""
    started: list[Node] = []
    yield started
    for node in reversed(started):
        node.stop()
    for node in started:
        assert node.leftovers == [], "the graceful shutdown left processes behind"
        assert node.pids() == []


def _start(
    started: list[Node], tmp_path: Path, netns: str, secret_hex: str | None, **config: object
) -> Node:
    config.setdefault("admin_port", free_port())
    log = tmp_path / f"thespian-{netns}-{config['admin_port']}.log"
    node = Node(config, secret_hex=secret_hex, thesplog=log, netns=netns)
    started.append(node)
    return node


def test_default_node_is_unreachable_from_another_namespace(
    netns_pair: NamespacePair, nodes: list[Node], tmp_path: Path
) -> None:
    secret_hex = secrets.token_hex(32)
    hardened = _start(nodes, tmp_path, netns_pair.a, secret_hex)
    stock = _start(nodes, tmp_path, netns_pair.a, None, secure=False)  # the control
    hardened_ports = sorted({port for _, _, port in hardened.listeners()})
    stock_ports = sorted({port for _, _, port in stock.listeners()})
    assert {addr for _, addr, _ in hardened.listeners()} == {"127.0.0.1"}

    refused = run_client(
        {"mode": "probe", "host": ADDRESS_A, "ports": hardened_ports + stock_ports},
        secret_hex=None,
        netns=netns_pair.b,
    )
    assert all(refused[str(port)] for port in hardened_ports), refused
    # Stock Thespian in the same namespace is reachable over the same veth pair.
    assert not any(refused[str(port)] for port in stock_ports), refused

    answer = run_client(
        {"admin_port": hardened.admin_port, "script": "ask_echo"},
        secret_hex=secret_hex,
        netns=netns_pair.a,
    )
    assert answer["answer"][0] == "echo"  # served on loopback inside its namespace


def test_multi_host_convention_works_and_resists_the_attack(
    netns_pair: NamespacePair, nodes: list[Node], tmp_path: Path
) -> None:
    secret_hex = secrets.token_hex(32)
    leader_port = free_port()
    convention = [ADDRESS_A, leader_port]
    leader = _start(
        nodes,
        tmp_path,
        netns_pair.a,
        secret_hex,
        admin_port=leader_port,
        bind_host=ADDRESS_A,
        convention=convention,
        node="A",
    )
    member = _start(
        nodes,
        tmp_path,
        netns_pair.b,
        secret_hex,
        bind_host=ADDRESS_B,
        convention=convention,
        node="B",
    )
    client = {"admin_port": member.admin_port, "bind_host": ADDRESS_B, "script": "ask_remote"}

    first = run_client({**client, "target": "A"}, secret_hex=secret_hex, netns=netns_pair.b)
    kind, remote_pid, text = first["answer"]
    assert (kind, text) == ("node-echo", "across")
    assert remote_pid in leader.pids()  # the actor runs in namespace A, the client in B
    assert {addr for _, addr, _ in leader.listeners()} == {ADDRESS_A}
    assert {addr for _, addr, _ in member.listeners()} == {ADDRESS_B}

    markers = tmp_path / "markers"
    markers.mkdir()
    ports = sorted({port for _, _, port in leader.listeners()})
    served = run_client(
        {"mode": "attack", "host": ADDRESS_A, "ports": ports, "marker_dir": str(markers)},
        secret_hex=None,
        netns=netns_pair.b,
    )
    assert served[f"{leader_port}-framed"], served  # the admin read the payload and refused it

    again = run_client({**client, "target": "A"}, secret_hex=secret_hex, netns=netns_pair.b)
    assert again["answer"][0] == "node-echo"
    member.stop()
    leader.stop()
    assert sorted(markers.iterdir()) == []
    log = Path(tmp_path / f"thespian-{netns_pair.a}-{leader_port}.log").read_text()
    assert f"refused a TCP frame from {ADDRESS_B}" in log
    assert secret_hex not in log


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_issue_12_attacks_from_another_namespace_end_nothing(
    netns_pair: NamespacePair, nodes: list[Node], tmp_path: Path
) -> None:
    """A negative prefix to every port, a 100 MB body, 200 half-open connections per port."""
    secret_hex = secrets.token_hex(32)
    node = _start(nodes, tmp_path, netns_pair.a, secret_hex, bind_host=ADDRESS_A)
    client = {"admin_port": node.admin_port, "bind_host": ADDRESS_A, "script": "ask_echo"}
    assert run_client(client, secret_hex=secret_hex, netns=netns_pair.a)["answer"][0] == "echo"
    pids = node.pids()
    # The starter's own endpoint (inherited by the processes it forked) is read only while
    # the starter calls into the system; the attacks target the ports the node serves.
    starter = {port for _, _, port in listening_sockets([node.proc.pid])}
    ports = sorted({port for _, _, port in node.listeners()} - starter)
    peak = _PeakRss(pids)
    with peak:
        attacked = run_client(
            {"mode": "named_attacks", "host": ADDRESS_A, "ports": ports, "flood_per_port": 200},
            secret_hex=None,
            netns=netns_pair.b,
            timeout=180,
        )
    assert all(attacked["negative_prefix_closed"].values()), attacked
    assert attacked["big_body"]["closed"] and attacked["big_body"]["sent"] < 100 * 1000 * 1000
    assert attacked["flood_opened"] == 200 * len(ports)
    assert attacked["flood_closed_by_node"] == attacked["flood_opened"]
    assert max(peak.growth_kib.values()) < 16 * 1024, peak.growth_kib
    assert node.pids() == pids  # no process ended or was replaced
    again = run_client(client, secret_hex=secret_hex, netns=netns_pair.a)
    assert again["answer"][0] == "echo"
    node.stop()
    log = Path(tmp_path / f"thespian-{netns_pair.a}-{node.admin_port}.log").read_text()
    assert f"refused a TCP frame from {ADDRESS_B}" in log


class _PeakRss:
    """Samples the resident memory of *pids* in a thread; ``growth_kib`` after the block."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._base = {pid: rss_kib(pid) for pid in pids}
        self._peak = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.growth_kib: dict[int, int] = {}

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self._pids:
                with contextlib.suppress(OSError, AssertionError):
                    self._peak[pid] = max(self._peak[pid], rss_kib(pid))

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.growth_kib = {pid: self._peak[pid] - self._base[pid] for pid in self._pids}
