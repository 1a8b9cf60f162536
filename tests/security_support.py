"""Actors and process helpers for the transport security tests.

Importable by name (never ``__main__``) so that Thespian's forked actor processes and the
node subprocesses started by ``security_node.py`` find the same classes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ActorSystemMessage, ChildActorExited

from genagent_thespian import testing

TESTS_DIR = Path(__file__).resolve().parent
NODE_SCRIPT = TESTS_DIR / "security_node.py"


# -- actors ------------------------------------------------------------------------------------


class Echo(Actor):
    """Replies ``('echo', pid, msg)``; remembers told messages until asked ``'told?'``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[Any] = []

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ActorSystemMessage):
            return
        if isinstance(msg, tuple) and msg[:1] == ("tell",):
            self.told.append(msg[1])
        elif msg == "told?":
            self.send(sender, list(self.told))
        elif msg == "selector?":  # what this process's transport selects with
            from thespian.system.transport import TCPTransport

            self.send(sender, ("selector", TCPTransport.selectors.DefaultSelector.__name__))
        elif isinstance(msg, bytes):
            self.send(sender, ("echo-bytes", len(msg), msg[-16:]))
        else:
            self.send(sender, ("echo", os.getpid(), msg))


class Parent(Actor):
    """Creates an :class:`Echo` child on ``'spawn'`` and relays ``('via-child', x)`` through it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.child: Any = None
        self.waiting: Any = None

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ChildActorExited | ActorExitRequest | ActorSystemMessage):
            return
        if msg == "spawn":
            self.child = self.createActor(Echo)
            self.send(sender, "spawned")
        elif isinstance(msg, tuple) and msg[:1] == ("via-child",):
            self.waiting = sender
            self.send(self.child, msg[1])
        elif isinstance(msg, tuple) and msg[:1] == ("echo",) and self.waiting is not None:
            self.send(self.waiting, ("from-child", os.getpid(), msg))


class NodeEcho(Actor):
    """Echo placed by capability: created only on the node whose ``node`` capability matches."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict[str, Any], requirements: Any) -> bool:
        wanted = (requirements or {}).get("node")
        return wanted is None or capabilities.get("node") == wanted

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if not isinstance(msg, ActorSystemMessage):
            self.send(sender, ("node-echo", os.getpid(), msg))


# -- the attack --------------------------------------------------------------------------------


class MarkerPayload:
    """Unpickling this creates the file *path*: the remote-code-execution probe."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def attack_port(
    host: str, port: int, marker: str, *, framed: bool, timeout: float = 3.0
) -> bytes | None:
    """Send the payload to *host*:*port*; return the server's answer, ``None`` if none came.

    With *framed* the payload is wrapped in Thespian's ``b"<length>>"`` framing, otherwise sent
    raw. The write side is shut after sending, so a serving process reads the frame, acts on it
    and closes; a process that is not running its transport loop (an idle starter) leaves the
    connection queued and *timeout* ends the wait (the payload stays queued for it).
    """
    payload = pickle.dumps(MarkerPayload(marker))
    data = b"%d>" % len(payload) + payload if framed else payload
    received = b""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError as exc:  # a hardened receiver may close (reset) before all is sent
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
            return received
        try:
            while chunk := conn.recv(4096):
                received += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
    return received


def attack_all(host: str, ports: Iterable[int], marker_dir: Path) -> dict[str, bytes | None]:
    """Attack every port in parallel, framed and raw; markers are ``marker_dir/<port>-<kind>``."""
    jobs = [(port, framed) for port in sorted(set(ports)) for framed in (True, False)]
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
        futures = {
            f"{port}-{'framed' if framed else 'raw'}": pool.submit(
                attack_port,
                host,
                port,
                str(marker_dir / f"{port}-{'framed' if framed else 'raw'}"),
                framed=framed,
            )
            for port, framed in jobs
        }
    return {name: future.result() for name, future in futures.items()}


# -- process and socket helpers -----------------------------------------------------------------


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll *condition* until it returns a truthy value or *timeout* seconds pass."""
    message = f"timed out after {timeout}s waiting for {what}"
    return testing.wait_until(condition, timeout=timeout, interval=0.05, message=message)


def free_port() -> int:
    """A TCP and UDP port that is free on every interface right now."""
    for _ in range(200):
        port = random.randint(16384, 32767)  # below the kernel's ephemeral range
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is *pgid*."""
    found = []
    for pid in _pids():
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(pid)
    return found


def pids_with_token(token: str) -> list[int]:
    """Live processes whose command line contains *token* (forks keep their parent's)."""
    found = []
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(pid)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _listen_table(pid: int) -> dict[int, tuple[str, int]]:
    """LISTEN sockets of *pid*'s network namespace: inode -> (address, port)."""
    table: dict[int, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                hex_addr, hex_port = fields[1].split(":")
                table[int(fields[9])] = (_decode_addr(hex_addr), int(hex_port, 16))
    return table


def _decode_addr(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """Every listening TCP socket held by *pids*: ``(pid, address, port)``."""
    found = []
    tables: dict[str, dict[int, tuple[str, int]]] = {}  # one read per network namespace
    for pid in pids:
        try:
            namespace = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if namespace not in tables:
            tables[namespace] = _listen_table(pid)
        inodes = _socket_inodes(pid)
        for inode, (addr, port) in tables[namespace].items():
            if inode in inodes:
                found.append((pid, addr, port))
    return found


def find_listener_pid(port: int) -> int | None:
    """The process (in this network namespace) that listens on TCP *port*."""
    own = {inode for inode, (_, p) in _listen_table(os.getpid()).items() if p == port}
    if not own:
        return None
    for pid in _pids():
        if _socket_inodes(pid) & own:
            return pid
    return None


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group *pgid* (the sweep for a Thespian system)."""
    if pgid in (0, 1, os.getpgrp()):
        raise AssertionError(f"refusing to kill process group {pgid}: it is not a node's")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# -- node subprocesses --------------------------------------------------------------------------


def python_command(netns: str | None = None) -> list[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, sys.executable, str(NODE_SCRIPT)]


def subprocess_env(secret_hex: str | None, thesplog: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENAGENT_", "THESP"))}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(TESTS_DIR), str(TESTS_DIR.parent), env.get("PYTHONPATH")])
    )
    if secret_hex is not None:
        env["GENAGENT_SECRET"] = secret_hex
    if thesplog is not None:
        env["THESPLOG_FILE"] = str(thesplog)
    return env


class Node:
    """A Thespian node in a subprocess (``security_node.py node``), stopped and swept on exit."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        secret_hex: str | None,
        thesplog: Path | None = None,
        netns: str | None = None,
        timeout: float = 60.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.admin_port: int = config["admin_port"]
        # Every process forked from the node carries this token in its command line: the
        # sweep finds them even if one left the admin's process group.
        self.token = f"node-{os.getpid()}-{random.getrandbits(64):016x}"
        self.proc = subprocess.Popen(
            [*python_command(netns), json.dumps({"mode": "node", "token": self.token, **config})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**subprocess_env(secret_hex, thesplog), **(extra_env or {})},
            text=True,
        )
        self.pgid: int | None = None
        self.leftovers: list[int] = []  # processes still alive after the graceful shutdown
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(timeout)
            raise AssertionError(f"node failed to start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.info = json.loads(line)
        if self.info["pgid"] in (os.getpgrp(), os.getpgid(self.proc.pid)):
            raise AssertionError(f"the admin did not get its own process group: {self.info}")
        self.pgid = self.info["pgid"]

    def pids(self) -> list[int]:
        """The node's live processes other than its starter: its process group, by token."""
        found = set(pids_with_token(self.token)) - {self.proc.pid}
        if self.pgid:
            found.update(pids_in_group(self.pgid))
        return sorted(found)

    def listeners(self) -> list[tuple[int, str, int]]:
        return listening_sockets(self.pids())

    def stop(self) -> str:
        """Shut the system down, sweep its process group, return the node's stderr.

        The admin and actors inherit the starter's stdout/stderr, so the pipes are read only
        once every process of the group has ended.
        """
        try:
            if self.proc.poll() is None and self.proc.stdin:
                with contextlib.suppress(BrokenPipeError):
                    self.proc.stdin.write("stop\n")
                    self.proc.stdin.flush()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not self.pids(), 15, "a graceful shutdown")
            self.leftovers = self.pids()
        finally:
            if self.pgid:
                kill_group(self.pgid)
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not self.pids(), 10, f"the processes of node {self.token} to end")
            if self.proc.poll() is None:
                self.proc.kill()
            _, stderr = self.proc.communicate(timeout=10)
        return stderr or ""

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_client(
    config: dict[str, Any],
    *,
    secret_hex: str | None,
    netns: str | None = None,
    thesplog: Path | None = None,
    timeout: float = 90.0,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``security_node.py client`` and return the JSON it printed."""
    done = subprocess.run(
        [*python_command(netns), json.dumps({"mode": "client", **config})],
        capture_output=True,
        text=True,
        env={**subprocess_env(secret_hex, thesplog), **(extra_env or {})},
        timeout=timeout,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(f"client failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["_stderr"] = done.stderr
    return result


def connect_refused(host: str, port: int) -> bool:
    """Whether a TCP connection to *host*:*port* is actively refused."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return False
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED
