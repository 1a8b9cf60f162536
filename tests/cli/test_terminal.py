"""``genagent ask`` and ``genagent top`` in a real terminal (tmux), at 80 and 200 columns.

Each test opens a private tmux server (its own socket) whose pane runs a shell with the
node's environment, types commands into it, and reads the screen with ``capture-pane``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_node import Node, node_fixture

from genagent_thespian.testing import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)"),
]


class Terminal:
    """One tmux pane of a given size, on a private server."""

    def __init__(self, node: Node, tmp_path: Path, width: int) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.width = width
        env = " ".join(
            f"{key}={shlex.quote(node.env[key])}"
            for key in ("GENAGENT_STATE_DIR", "GENAGENT_SECRET_FILE", "PYTHONPATH", "PATH")
        )
        self._tmux(
            "new-session", "-d", "-s", "t", "-x", str(width), "-y", "40",
            f"env -i HOME={shlex.quote(str(tmp_path))} TERM=xterm-256color {env} "
            f"PS1='$ ' bash --norc --noprofile",
        )  # fmt: skip
        self.genagent = f"{shlex.quote(sys.executable)} -m genagent_thespian.cli"

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "t", line, "Enter")

    def run(self, command: str) -> None:
        """Type ``genagent COMMAND`` (after clearing the screen)."""
        self.type(f"clear; {self.genagent} {command}; echo exit=$?")

    def ctrl_c(self) -> None:
        self._tmux("send-keys", "-t", "t", "C-c")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        wait_until(lambda: text in self.screen(), timeout=timeout, message=f"{text!r} on screen")
        return self.screen()

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from node_fixture(tmp_path)


@pytest.fixture(params=[80, 200], ids=lambda width: f"{width}cols")
def terminal(request: pytest.FixtureRequest, node: Node, tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(node, tmp_path, request.param)
    try:
        yield term
    finally:
        term.close()


TOOLS = (
    '{"tools": [{"name": "Bash", "input": {"command": "pytest -q"}, "output": "3 passed"},'
    ' {"name": "Edit", "input": {"path": "b.py"}, "output": "no such file", "error": true}],'
    ' "text": "All green."}'
)


def test_ask_shows_tools_text_and_an_elapsed_time_spinner(node: Node, terminal: Terminal) -> None:
    node.start_agent("a", f'script=[{TOOLS}, {{"slow": "one two three four", "seconds": 3}}]')
    terminal.run("ask a 'fix it'")
    screen = terminal.wait_for("exit=0")
    assert "→ Bash pytest -q" in screen
    assert "✓ 3 passed" in screen
    assert "✗ no such file" in screen
    assert "All green." in screen
    assert "2 tool call(s)" in screen  # the summary line on a terminal

    terminal.run("ask a 'slow one'")
    spinning = terminal.wait_for("a is working")
    assert "Ctrl-C: detach" in spinning
    assert any(line.rstrip().endswith("s  Ctrl-C: detach") for line in spinning.splitlines())
    screen = terminal.wait_for("exit=0")
    assert "one two three four" in screen
    assert all(len(line) <= terminal.width for line in screen.splitlines())


def test_ctrl_c_says_the_turn_keeps_running_and_how_to_end_it(
    node: Node, terminal: Terminal
) -> None:
    node.start_agent("a", 'script=[{"slow": "w1 w2 w3 w4 w5 w6 w7 w8", "seconds": 60}]')
    terminal.run("ask a 'long'")
    terminal.wait_for("w1")
    terminal.ctrl_c()
    screen = terminal.wait_for("exit=130")
    joined = " ".join(screen.split())  # the message may wrap at 80 columns
    assert "The turn keeps running on a" in joined
    assert "genagent interrupt a --ref" in joined
    assert node.status("a")["state"] == "processing"


def test_ctrl_c_with_interrupt_ends_the_turn(node: Node, terminal: Terminal) -> None:
    node.start_agent("a", 'script=[{"slow": "w1 w2 w3 w4 w5 w6 w7 w8", "seconds": 60}]')
    terminal.run("ask --interrupt a 'long'")
    terminal.wait_for("w1")
    terminal.ctrl_c()
    screen = terminal.wait_for("exit=130")
    assert "interrupted a's turn" in " ".join(screen.split())
    wait_until(lambda: node.status("a")["state"] == "idle", timeout=10)


def test_asking_a_halted_agent_says_it_is_queued(node: Node, terminal: Terminal) -> None:
    node.start_agent("a", 'script=["later"]')
    node.json("halt", "a")
    terminal.run("ask a 'hello'")
    screen = terminal.wait_for("queued at a (halted)")
    assert "a is halted" in screen and "genagent resume a" in screen
    terminal.ctrl_c()
    screen = terminal.wait_for("exit=130")
    assert "The prompt stays queued at a" in " ".join(screen.split())
    assert node.status("a")["queued"] == 1


def test_top_fits_the_terminal_shows_failures_and_notices_a_stopped_node(
    node: Node, terminal: Terminal
) -> None:
    node.start_agent("failing", 'script=[{"fail": "server_error", "message": "provider down"}]')
    node.start_agent("worker", 'script=[{"slow": "busy", "seconds": 120}]')
    node.start_agent("resting", 'script=["ok"]')
    assert node.run("ask", "failing", "x").returncode == 1
    node.json("tell", "worker", "work")
    node.json("halt", "resting")
    terminal.run("top --interval 0.3")
    screen = terminal.wait_for("processing")
    lines = screen.splitlines()
    assert all(len(line) <= terminal.width for line in lines)
    assert "1 busy, 1 halted, 1 failed" in screen
    failing = next(line for line in lines if line.startswith("failing"))
    assert failing.split()[:2] == ["failing", "idle"]
    assert "BackendError: provider down"[: terminal.width - 50] in failing
    resting = next(line for line in lines if line.startswith("resting"))
    assert resting.split()[1] == "halted"
    wide_columns = ("TOKENS IN/OUT", "BACKEND", "NODE")
    assert all((column in screen) == (terminal.width >= 120) for column in wide_columns)

    node.run("node", "stop")
    screen = terminal.wait_for("exit=3", timeout=10)
    assert "node stopped" in screen
    assert "SystemNotRunning: the node on" in " ".join(screen.split())
