"""Ports for a new admin: free ones nobody else will take, and a clear error for taken ones.

A port from ``bind(0)`` comes from the kernel's ephemeral range (``ip_local_port_range``,
32768-60999 on Linux), the range every ``bind(0)`` and every outgoing connection on the host
also draws from. Between the moment a free port is picked and the moment the new admin binds
it, any of them may get it; the starting process itself binds its own Thespian endpoint with
``bind(0)`` just before it forks the admin. Thespian then finds the admin port taken, takes the
taker for a running admin, asks it for 11 seconds, and fails with ``InvalidActorAddress: not a
valid or useable ActorSystem Admin`` (seen in CI: one system start of a whole suite run).

So :func:`free_port` draws below the ephemeral range, where only programs that name their port
bind, and checks the port has no socket at all on it (not even a closing connection); and
:func:`claim_port` turns a port that stays taken into an error naming its holder.
"""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import time

import psutil

from .._core.errors import InvalidOption

__all__ = ["CLAIM_WAIT", "claim_port", "free_port", "listener_pid", "port_holder"]

#: How many ports below the ephemeral range :func:`free_port` draws from.
_BAND = 16384
#: The lowest port it draws (ports below need privileges on most systems).
_LOWEST = 1024
#: Where Linux starts the ephemeral range unless configured; BSD and macOS start higher.
_DEFAULT_EPHEMERAL_START = 32768
#: How long :func:`claim_port` waits for a taken port to come free, in seconds.
CLAIM_WAIT = 10.0
#: Random candidates tried before falling back to a kernel-chosen port.
_TRIES = 64
_random = random.SystemRandom()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` with no socket on it, from below the ephemeral range.

    Falls back to a kernel-chosen port when every candidate drawn is taken (a host whose
    ephemeral range starts too low to leave a band below it, or a crowded one).
    """
    start = _ephemeral_start()
    lowest = max(_LOWEST, start - _BAND)
    if start - lowest >= _TRIES:
        for port in _random.sample(range(lowest, start), _TRIES):
            if _unused(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def claim_port(port: int, host: str = "127.0.0.1", *, wait: float | None = None) -> None:
    """Return once a listener could bind ``host:port``; wait up to ``wait`` seconds for it
    (:data:`CLAIM_WAIT` when ``None``).

    A node restarted on its port may find the admin of its previous run still closing: that
    ends within seconds, so a taken port is polled for a while before it counts as taken.

    Raises:
        InvalidOption: the port is still taken after ``wait`` seconds; the message names the
            process that listens on it when this user may see it.
    """
    deadline = time.monotonic() + (CLAIM_WAIT if wait is None else wait)
    while not _bindable(host, port):
        if time.monotonic() >= deadline:
            holder = port_holder(port)
            by = f" by {holder}" if holder else ""
            raise InvalidOption(
                f"the admin port {host}:{port} is in use{by}; pick another port, or leave it "
                "out to get a free one"
            )
        time.sleep(0.1)


def port_holder(port: int) -> str | None:
    """``"pid N (name)"`` of the process listening on TCP ``port``, if this user may see it."""
    pid = listener_pid(port)
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        return f"pid {pid} ({psutil.Process(pid).name()})"
    return f"pid {pid}"


def listener_pid(port: int, hosts: frozenset[str] | None = None) -> int | None:
    """The pid of the local process listening on TCP ``port`` (on one of ``hosts``, when
    given); ``None`` when there is none or this user may not see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections(kind="tcp"):
            if (
                connection.status == psutil.CONN_LISTEN
                and connection.laddr
                and connection.laddr.port == port
                and (hosts is None or connection.laddr.ip in hosts)
            ):
                return int(connection.pid) if connection.pid is not None else None
    return None


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux), or the usual default."""
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges,
    ):
        return int(ranges.read().split()[0])
    return _DEFAULT_EPHEMERAL_START


def _unused(host: str, port: int) -> bool:
    """Whether no socket at all is on ``host:port``: a bind without ``SO_REUSEADDR`` works."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _bindable(host: str, port: int) -> bool:
    """Whether a listener may bind ``host:port`` as Thespian's does (``SO_REUSEADDR``).

    Connections of an earlier run still closing on the port (``TIME_WAIT``) do not count;
    another listener or a live connection does. Any other failure (an address this host
    does not have) is left for Thespian's own bind to report.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno != errno.EADDRINUSE
    return True
