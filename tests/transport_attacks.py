"""Hostile peers for the hardened transport: a real leader node, raw sockets and a health oracle.

Used by ``test_security_attacks.py`` (named attacks on loopback), ``test_security_fuzz.py``
(hypothesis) and ``security_node.py`` (the same attacks from another network namespace). An
attacker here holds no secret: it only opens TCP connections and writes bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from security_support import Echo, listening_sockets
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian._nodes.convention import list_nodes, start_node
from genagent_thespian._nodes.membership import NODES_NAME, NodeWatcher
from genagent_thespian.testing import TelemetryCapture, system_processes, wait_until

#: The frame the issue reported: a negative length prefix, then 64 bytes.
NEGATIVE_PREFIX_FRAME = b"-5>" + b"x" * 64


def port_of(address: Any) -> int:
    """The TCP port of a Thespian actor address."""
    return int(address.addressDetails.connectArgs[0][1])


def rss_kib(pid: int) -> int:
    """Resident set size of *pid* in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _closed_by_peer(conn: socket.socket, timeout: float) -> bool:
    """Read until the peer closes (True) or *timeout* passes without that (False)."""
    conn.settimeout(timeout)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            raise
    return True


def send_and_wait_for_close(
    host: str, port: int, data: bytes, *, timeout: float = 10.0, shut_write: bool = False
) -> bool:
    """Send *data*, then wait until the receiver closes the connection.

    Returns:
        Whether the receiver closed it within *timeout* (a refused frame is closed at once;
        an incomplete frame the receiver is still waiting for is not).
    """
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            if shut_write:
                conn.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the receiver already closed (reset) it: that is an answer
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                return True
            raise
        return _closed_by_peer(conn, timeout)


@dataclass
class BigBodyResult:
    """What happened while streaming a large body at a port."""

    sent: int
    closed_by_receiver: bool
    peak_rss_growth_kib: int


def stream_body(
    host: str, port: int, pid: int, prefix: bytes, total: int, *, timeout: float = 30.0
) -> BigBodyResult:
    """Send *prefix* then up to *total* bytes of junk, sampling *pid*'s RSS as it goes.

    Stops when the receiver closes the connection (or the whole body is sent).
    """
    chunk = os.urandom(1024 * 1024)
    base = rss_kib(pid)
    peak = base
    sent = 0
    closed = False
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(prefix)
            while sent < total:
                piece = chunk[: total - sent]
                conn.sendall(piece)
                sent += len(piece)
                peak = max(peak, rss_kib(pid))
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                raise
            closed = True
        if not closed:
            closed = _closed_by_peer(conn, timeout)
        peak = max(peak, rss_kib(pid))
    return BigBodyResult(sent=sent, closed_by_receiver=closed, peak_rss_growth_kib=peak - base)


@dataclass
class HalfOpenFlood:
    """Idle TCP connections held open against ports: the attacker never writes or closes."""

    sockets: list[socket.socket] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)  # the port of each socket

    def open(self, host: str, port: int, count: int, *, send: bytes = b"") -> None:
        for _ in range(count):
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.setblocking(True)
            conn.settimeout(5.0)
            with contextlib.suppress(OSError):
                conn.connect((host, port))
                if send:
                    conn.sendall(send)
            self.sockets.append(conn)
            self.ports.append(port)

    def still_open(self) -> dict[int, int]:
        """How many held connections each port has not closed yet (ports with none left out)."""
        counts: dict[int, int] = {}
        for conn, port in zip(self.sockets, self.ports, strict=True):
            if not self.is_closed(conn):
                counts[port] = counts.get(port, 0) + 1
        return counts

    @staticmethod
    def is_closed(conn: socket.socket) -> bool:
        """Whether the receiver has closed *conn* (EOF or reset), without blocking."""
        conn.setblocking(False)
        try:
            return conn.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def closed_by_receiver(self) -> int:
        """How many of the held connections the receivers have closed."""
        return sum(self.is_closed(conn) for conn in self.sockets)

    def close(self) -> None:
        for conn in self.sockets:
            conn.close()
        self.sockets.clear()
        self.ports.clear()


@contextlib.contextmanager
def half_open_flood() -> Iterator[HalfOpenFlood]:
    flood = HalfOpenFlood()
    try:
        yield flood
    finally:
        flood.close()


def timed(call: Any) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class Leader:
    """A convention leader with one agent, and the ports of everything it runs."""

    def __init__(self, store: Path) -> None:
        self.system = start_node(capabilities={"hub": "yes"}, store_path=store)
        g.start_agent(
            Recorder, name="target", backend="scripted", default="pong", system=self.system
        )
        assert self.ask() == "pong"  # the agent has a worker now, and a port
        list_nodes(self.system)  # creates the node watcher
        watcher = self.system.asys.createActor(NodeWatcher, globalName=NODES_NAME)
        assert self.system.admin_port is not None
        self.ports = {
            "admin": self.system.admin_port,
            "registry": port_of(self.system.registry),
            "supervisor": port_of(self.system.supervisor),
            "telemetry": port_of(self.system.telemetry),
            "node watcher": port_of(watcher),
            "agent": port_of(g.whereis("target", system=self.system)),
        }

    def ask(self) -> str:
        return g.ask("target", "ping", timeout=30, system=self.system).text

    def pids(self) -> dict[str, int]:
        """Which process listens on each named port."""
        owners: dict[int, int] = {}
        for pid, _, port in listening_sockets(system_processes(self.system)):
            owners.setdefault(port, pid)  # the lowest pid: the owner, not a forked heir
        return {role: owners.get(port, -1) for role, port in self.ports.items()}

    def port_owners(self) -> dict[int, list[int]]:
        """The pids of the system's processes listening on each port."""
        owners: dict[int, list[int]] = {}
        for pid, _, port in listening_sockets(system_processes(self.system)):
            owners.setdefault(port, []).append(pid)
        return owners

    def all_ports(self) -> set[int]:
        """Every port the leader's processes serve (workers and logger included).

        Forked processes inherit their parent's listening sockets; the ones inherited from
        this (the client) process are its own endpoints, see :meth:`client_ports`.
        """
        served = {port for _, _, port in listening_sockets(system_processes(self.system))}
        return served - self.client_ports()

    @staticmethod
    def client_ports() -> set[int]:
        """The ports of this process's own Thespian endpoints (read only while it calls)."""
        return {port for _, _, port in listening_sockets([os.getpid()])}

    def assert_serving(self, pids_before: dict[str, int]) -> None:
        """Every service is the same process as before, and answers its kind of request."""
        assert self.pids() == pids_before
        agent_pid = g.status("target", system=self.system).pid
        with TelemetryCapture(["prompt.stop"], system=self.system) as capture:
            assert self.ask() == "pong"  # agent (and worker)
            capture.wait_for("prompt.stop", timeout=30)  # telemetry hub
        assert g.status("target", system=self.system).pid == agent_pid
        assert "target" in g.list_agents(system=self.system)  # registry
        assert [node.role for node in list_nodes(self.system)] == ["leader"]  # node watcher
        name = f"placed-{uuid.uuid4().hex[:8]}"
        g.start_agent(  # supervisor, placement through the admin
            Recorder,
            name=name,
            backend="scripted",
            default="placed",
            placement={"hub": "yes"},
            system=self.system,
        )
        assert g.ask(name, "hi", timeout=30, system=self.system).text == "placed"
        g.stop(name, system=self.system)
        echo = self.system.asys.createActor(Echo)  # the admin creates actors for clients
        assert self.system.asys.ask(echo, "still there?", 30)[2] == "still there?"

    def close(self) -> None:
        self.system.shutdown()
        wait_until(
            lambda: not system_processes(self.system),
            timeout=15,
            message="the leader's processes survived its shutdown",
        )
