"""A stable home: the same node name finds the same store, and one system runs per home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from operator_node import Node
from support_agents import calls

import genagent_thespian as g
from genagent_thespian._api.home import node_home
from genagent_thespian._nodes.node import state_dir

TESTS = Path(__file__).resolve().parent.parent

# The README's durable agent, as a user's script would run it: no store, no node option.
RERUN_SCRIPT = """
import sys
import genagent_thespian as g
from support_agents import Counter

with g.start_system():
    g.start_agent(Counter, name="my-coder", backend="scripted", default="ok",
                  durable=True, log=sys.argv[1])
    g.ask("my-coder", "one more")
"""


def test_durable_agent_survives_a_rerun_of_the_script_with_no_extra_option(
    tmp_path: Path,
) -> None:
    log = tmp_path / "counter.jsonl"
    env = _fresh_env(tmp_path)
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", RERUN_SCRIPT, str(log)],
            cwd=TESTS,
            env=env,
            check=True,
            timeout=120,
        )
    assert [record["value"] for record in calls(log, "count")] == [1, 2]
    home = tmp_path / "state" / "genagent-thespian" / "default"
    assert (home / "agents.sqlite3").exists()
    assert (home / "node.secret").stat().st_mode & 0o777 == 0o600  # the secret lives there too


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment with a state folder of its own and no secret option."""
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    for name in ("GENAGENT_STATE_DIR", "GENAGENT_SECRET", "GENAGENT_SECRET_FILE", "GENAGENT_PORT"):
        env.pop(name, None)
    return env


HOLDING_SCRIPT = """
import sys
import genagent_thespian as g
from support_agents import Recorder

with g.start_system() as system:
    g.start_agent(Recorder, name="held-open", backend="scripted", default="ok")
    print(system.admin_port, flush=True)
    sys.stdin.read()
"""


def test_genagent_commands_reach_a_script_system_with_no_secret_option(tmp_path: Path) -> None:
    env = _fresh_env(tmp_path)
    script = subprocess.Popen(
        [sys.executable, "-c", HOLDING_SCRIPT],
        cwd=TESTS,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.stdout is not None and script.stdin is not None
        port = script.stdout.readline().strip()
        listed = subprocess.run(
            [sys.executable, "-m", "genagent_thespian.cli", "ls", "--port", port],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "held-open" in listed.stdout
    finally:
        if script.stdin is not None:
            script.stdin.close()
        assert script.wait(timeout=60) == 0


def test_a_second_system_on_the_same_home_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = g.AgentSystem.start(home=tmp_path / "home")
    try:
        with pytest.raises(g.InvalidOption, match=rf"in use .*\(pid {os.getpid()}\)"):
            g.AgentSystem.start(home=tmp_path / "home")
    finally:
        first.shutdown()
    again = g.AgentSystem.start(home=tmp_path / "home")  # free once the first is shut down
    again.shutdown()


def test_start_system_while_a_node_runs_on_its_home_is_refused_naming_the_node(
    tmp_path: Path,
) -> None:
    """``genagent node start`` and a script's ``start_system()`` find the same home, and the
    home's lock (held by the node's own process) turns the second system into a clear error
    instead of two systems sharing one store."""
    node = Node(tmp_path / "state")
    node.start()
    try:
        script = subprocess.run(
            [sys.executable, "-c", "import genagent_thespian as g; g.start_system()"],
            cwd=TESTS,
            env=node.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert script.returncode != 0
        home = tmp_path / "state" / "default"
        assert f"the node home {home} is in use" in script.stderr, script.stderr
        assert f"(pid {node.state['pid']})" in script.stderr
        assert node.json("ls")["agents"] == []  # the node carries on
    finally:
        node.stop()


def test_node_command_and_start_system_share_the_default_home(tmp_path: Path) -> None:
    system = g.AgentSystem.start(base="simpleSystemBase")
    try:
        assert system.home == node_home("default") == state_dir()
        assert system.store_path == str(node_home("default") / "agents.sqlite3")
        assert oct(node_home("default").stat().st_mode & 0o777) == oct(0o700)
    finally:
        system.shutdown()


@pytest.mark.parametrize("name", ["", "../up", "a/b", "x" * 65])
def test_bad_node_names_are_refused(name: str) -> None:
    with pytest.raises(g.InvalidOption, match="node name"):
        node_home(name)
