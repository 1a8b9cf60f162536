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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
