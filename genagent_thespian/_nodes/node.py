"""A ``genagent`` node: one long-lived actor system that command-line calls attach to.

``genagent node start`` runs :func:`run_node` in a detached process (its own session, so
it outlives the shell) and waits until the node has written its *state file*; later
commands find the node through ``--port``, the ``GENAGENT_PORT`` environment variable or
that state file, in this order. ``genagent node stop`` sends the node process ``SIGTERM``;
the node then stops every agent in order, shuts the actor system down and removes the
state file.

The state file is ``node.json`` in the node's home (``_api/home.py``: by default
``~/.local/state/genagent-thespian/default/``), next to the node's log (``node.log``) and
its durable agents (``agents.sqlite3``): the same home ``start_system()`` uses, so a script
and a node never run on one store at once (the home's lock refuses the second).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .._api.home import DEFAULT_NODE, node_home
from .._api.system import AgentSystem
from .._core.errors import GenAgentError, InvalidOption, SystemNotRunning
from .._core.types import JsonObject
from .._os.private import private_file
from .._os.processes import processes_with_marker

__all__ = [
    "DEFAULT_PORT",
    "STOP_TIMEOUT",
    "NodeState",
    "connect",
    "find_port",
    "port_open",
    "read_state",
    "run_node",
    "start_node",
    "state_dir",
    "state_path",
    "stop_node",
]

#: The admin port a node uses when neither ``--port`` nor ``GENAGENT_PORT`` gives one.
DEFAULT_PORT = 19500
PORT_ENV = "GENAGENT_PORT"
BIND_HOST_ENV = "GENAGENT_BIND_HOST"


@dataclass(frozen=True, slots=True)
class NodeState:
    """What a running node records about itself in its state file."""

    port: int
    pid: int
    system_id: str
    pgid: int | None
    started_at: float
    log: str


#: Seconds ``genagent node stop`` gives the node to stop its agents in order before killing it.
STOP_TIMEOUT = 60.0


def state_dir() -> Path:
    """Return the home of the node (the folder holding its state file, log and store)."""
    return node_home(DEFAULT_NODE)


def state_path() -> Path:
    """Return the path of the node state file."""
    return state_dir() / "node.json"


def read_state() -> NodeState | None:
    """Return the recorded node, or ``None`` when there is none or its process is gone.

    A state file left by a node that was killed (no clean stop removed it) is stale: its
    port may belong to something else by now, so commands treat it as no node at all.
    """
    path = state_path()
    try:
        data = json.loads(path.read_text("utf-8"))
        state = NodeState(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(state.pid):
        return None
    return state


def find_port(explicit: int | None = None) -> int:
    """Return the admin port of the node to talk to.

    Raises:
        SystemNotRunning: no ``--port``, no ``GENAGENT_PORT`` and no running recorded node.
        InvalidOption: ``GENAGENT_PORT`` is not a port number.
    """
    if explicit is not None:
        return explicit
    from_env = os.environ.get(PORT_ENV)
    if from_env:
        try:
            return _valid_port(int(from_env))
        except ValueError:
            raise InvalidOption(f"{PORT_ENV} must be a port number, got {from_env!r}") from None
    state = read_state()
    if state is None:
        raise SystemNotRunning(
            "no node is running (none recorded in "
            f"{state_path()}); start one with `genagent node start` or pass --port"
        )
    return state.port


def find_bind_host(explicit: str | None = None) -> str:
    """Return the address the node to talk to listens on.

    ``--bind-host``, else ``GENAGENT_BIND_HOST``, else loopback. A convention node started
    with ``genagent-node --bind-host 10.0.0.11`` listens on that address only, so commands
    on its host must name it.
    """
    return explicit or os.environ.get(BIND_HOST_ENV) or "127.0.0.1"


def port_open(port: int, *, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Return whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(port: int, *, bind_host: str = "127.0.0.1") -> AgentSystem:
    """Attach to the node listening on ``bind_host:port`` (this host).

    The port is probed first: attaching Thespian to a port nobody listens on would start a
    new, unowned actor system in the calling process instead of failing.

    Raises:
        SystemNotRunning: nothing listens on ``bind_host:port``.
    """
    if not port_open(port, host=bind_host):
        elsewhere = f" (bound elsewhere? --bind-host or ${BIND_HOST_ENV})"
        raise SystemNotRunning(
            f"no node is listening on port {port} of {bind_host}"
            f"{elsewhere if bind_host == '127.0.0.1' else ''}; "
            "start one with `genagent node start`"
        )
    from thespian.actors import ActorSystemException

    try:
        return AgentSystem.attach(port, bind_host=bind_host)
    except ActorSystemException as exc:
        raise SystemNotRunning(
            f"the node on port {port} did not accept this client ({type(exc).__name__}); "
            "commands must use the node's secret (GENAGENT_SECRET, GENAGENT_SECRET_FILE or "
            f"{state_dir() / 'node.secret'})"
        ) from None


# ------------------------------------------------------------------------- running a node


def run_node(
    port: int,
    *,
    ready: Callable[[NodeState], object] | None = None,
    say: Callable[[str], object] | None = None,
) -> int:
    """Run a node in this process until ``SIGTERM`` or ``SIGINT``; return an exit code.

    Args:
        port: The admin port (must be free).
        ready: Called with the :class:`NodeState` once the node serves requests.
        say: Called with a line when the node begins to stop and when it has stopped (the
            detached node's log shows how long its stop took).
    """
    _valid_port(port)
    if port_open(port):
        raise InvalidOption(f"port {port} is already in use; pick another with --port")
    existing = read_state()
    if existing is not None:
        raise InvalidOption(
            f"a node is already recorded on port {existing.port} (pid {existing.pid}) in "
            f"{state_path()}; stop it with `genagent node stop` first"
        )
    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    # Agent modules named on the command line are imported by actor processes forked from
    # this one: the directory the node was started from counts, as it does for `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    system = AgentSystem.start(base="multiprocTCPBase", admin_port=port, home=state_dir())
    path = state_path()
    try:
        state = NodeState(
            port=port,
            pid=os.getpid(),
            system_id=system.system_id,
            pgid=system.pgid,
            started_at=time.time(),
            log=str(state_dir() / "node.log"),
        )
        _write_state(path, state)
        if ready is not None:
            ready(state)
        while not stopping.wait(0.5):
            pass
    finally:
        began = time.monotonic()
        if say is not None:
            say("stopping the node")
        system.shutdown()
        if say is not None:
            say(f"node stopped in {time.monotonic() - began:.1f}s")
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text("utf-8")).get("pid") == os.getpid():
                path.unlink()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def start_node(port: int, *, timeout: float = 60.0) -> NodeState:
    """Start a node in a detached process and return its state once it serves requests.

    Raises:
        InvalidOption: the port is taken, or a node is already recorded.
        GenAgentError: the node process failed to start (with the end of its log).
    """
    _valid_port(port)
    existing = read_state()
    if existing is not None:
        raise InvalidOption(
            f"a node is already running on port {existing.port} (pid {existing.pid}); "
            "stop it with `genagent node stop` first"
        )
    if port_open(port):
        raise InvalidOption(f"port {port} is already in use; pick another with --port")
    log_path = private_file(state_dir() / "node.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genagent_thespian.cli",
                "node",
                "start",
                "--foreground",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise GenAgentError(
                f"the node process exited with code {code} while starting: {_tail(log_path)}"
            )
        state = read_state()
        if state is not None and state.pid == process.pid and port_open(port):
            return state
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise GenAgentError(f"the node did not start within {timeout:g}s: {_tail(log_path)}")


def stop_node(port: int | None = None, *, timeout: float = STOP_TIMEOUT) -> tuple[NodeState, bool]:
    """Stop the recorded node (on ``port``, when given) and wait until it is gone.

    The node gets ``SIGTERM`` and ``timeout`` seconds to stop its agents in order; after that
    it is killed, with whatever of its system survives it.

    Returns:
        The node's state, and whether it had to be killed.

    Raises:
        SystemNotRunning: no running node is recorded (for that port).
    """
    state = read_state()
    if state is None or (port is not None and state.port != port):
        where = f" on port {port}" if port is not None else ""
        raise SystemNotRunning(f"no node started by `genagent node start` is running{where}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = _alive(state.pid)
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
    # Whatever survived an unclean end (orphaned actors) carries the system's marker.
    if state.pgid is not None and state.pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(state.pgid, signal.SIGKILL)
    for pid in processes_with_marker(state.system_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        state_path().unlink()
    return state, killed


def state_as_dict(state: NodeState) -> JsonObject:
    """Return ``state`` as a JSON-ready dict."""
    return asdict(state)


def _write_state(path: Path, state: NodeState) -> None:
    """Write the state file atomically, readable by its owner only.

    Written to a private temporary file and renamed over the old one: a command reading the
    file while the node writes it sees the old state or the new, never half a JSON.
    """
    temporary = private_file(path.with_suffix(f".{os.getpid()}.tmp"))
    temporary.write_text(json.dumps(asdict(state), indent=2), "utf-8")
    os.replace(temporary, path)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's process counts; a zombie does not).

    A state file whose node process is gone is stale: commands must not try its port.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (a node this process started and has not reaped) is not alive.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _valid_port(port: int) -> int:
    """``port``, or ``InvalidOption`` if it is not a TCP port number."""
    if not 0 < port < 65536:
        raise InvalidOption(f"port must be between 1 and 65535, got {port}")
    return port


def _tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` of the node's log on one line, for an error saying why it failed."""
    try:
        text = path.read_text("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
