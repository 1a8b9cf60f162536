"""A real ``genagent`` node for the operator-tool tests, driven through real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support_signals import as_from_a_terminal

from genagent_thespian._api.system import free_port
from genagent_thespian._os.processes import processes_with_marker
from genagent_thespian.testing import wait_until

TESTS_DIR = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "genagent_thespian.cli"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _tail(log: Path, lines: int = 40) -> str:
    """The end of the node's log, for a failure message."""
    try:
        return "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"


class Node:
    """One node started with ``genagent node start`` in a private state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.state_dir = state_dir
        self.env = dict(os.environ)
        self.env.pop("GENAGENT_PORT", None)
        self.env["GENAGENT_STATE_DIR"] = str(state_dir)
        self.env.pop("GENAGENT_SECRET", None)
        self.env["GENAGENT_SECRET_FILE"] = str(state_dir.parent / "node.secret")
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.state: dict[str, Any] = {}
        self.children: list[subprocess.Popen[str]] = []

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``genagent ARGS`` to completion and return what it printed."""
        return subprocess.run(
            [*CLI, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=TESTS_DIR,
            check=False,
        )

    def json(self, *args: str, expect: int = 0, timeout: float = 60.0) -> Any:
        """Run ``genagent ARGS --json``, check the exit code, return the parsed document."""
        done = self.run(*args, "--json", timeout=timeout)
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start ``genagent ARGS`` in the background (stopped at teardown if still running)."""
        process = subprocess.Popen(
            [*CLI, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=TESTS_DIR,
            preexec_fn=as_from_a_terminal,  # noqa: PLW1509 (only signal dispositions; top ends on ^C)
        )
        self.children.append(process)
        return process

    def start(self) -> None:
        document = self.json("node", "start", "--port", str(self.port))
        self.state = document["node"]

    def start_agent(
        self, name: str, *options: str, impl: str = "support_operator:Scripted"
    ) -> None:
        option_args = [arg for option in options for arg in ("--option", option)]
        self.json("start", impl, "--name", name, *option_args)

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.json("status", name)["status"]
        return status

    def processes(self) -> list[int]:
        """Pids of the node process and every process of its actor system still running.

        Forked actors share the admin's process group (recorded as ``pgid``); programs
        they execute carry the system's marker in their environment.
        """
        pids = set(processes_with_marker(self.state.get("system_id", "")))
        pgid = self.state.get("pgid")
        if pgid is not None:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if os.getpgid(int(entry)) == pgid:
                            pids.add(int(entry))
                    except ProcessLookupError:
                        continue
        if self.state.get("pid") and _alive(self.state["pid"]):
            pids.add(self.state["pid"])
        return sorted(pid for pid in pids if _alive(pid))

    def stop(self) -> None:
        """End the commands spawned, then the node; assert each ended cleanly."""
        try:
            self._end_children()
        finally:
            self._stop_node()

    def _end_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    code = child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                    raise AssertionError(f"{child.args!r} ignored SIGTERM") from None
                assert code == 0, f"{child.args!r} ended with {code} on SIGTERM"
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()

    def _stop_node(self) -> None:
        if self.state:
            done = None
            if _alive(self.state["pid"]):  # not stopped by the test already
                # Beyond the node's own 60 s: a slow stop fails here, with the node's log.
                done = self.run("node", "stop", timeout=90.0)
            try:
                wait_until(lambda: not self.processes(), timeout=15.0)
            except AssertionError:
                left = self.processes()
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
                raise AssertionError(
                    f"processes of the node survived `node stop`: {left}"
                ) from None
            assert done is None or done.returncode == 0, (
                f"`node stop` failed: {done.stderr.strip()}\n{_tail(Path(self.state['log']))}"
            )


def node_fixture(tmp_path: Path) -> Iterator[Node]:
    """Start a node on a free port; stop it after the test and assert nothing is left."""
    node = Node(tmp_path / "state")
    node.start()
    try:
        yield node
    finally:
        node.stop()
