"""A stable home: the same node name finds the same store, and one system runs per home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("GENAGENT_STATE_DIR", None)
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", RERUN_SCRIPT, str(log)],
            cwd=TESTS,
            env=env,
            check=True,
            timeout=120,
        )
    assert [record["value"] for record in calls(log, "count")] == [1, 2]
    assert (tmp_path / "state" / "genagent-thespian" / "default" / "agents.sqlite3").exists()


def test_a_second_system_on_the_same_home_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = g.AgentSystem.start(home=tmp_path / "home")
    try:
        with pytest.raises(g.InvalidOption, match=rf"in use .*\(pid {os.getpid()}\)"):
            g.AgentSystem.start(home=tmp_path / "home")
    finally:
        first.shutdown()
    again = g.AgentSystem.start(home=tmp_path / "home")  # free once the first is shut down
    again.shutdown()


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
