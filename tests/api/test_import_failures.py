"""Import failures are clear: a class the node cannot import is refused in one line naming
the node's working directory, its ``sys.path`` and the fix, from the API and from the CLI.

Only on ``multiprocTCPBase`` (the ``agent_system`` fixture): on ``simpleSystemBase`` the
agent runs in the caller's own process, which imported the class already, and the CLI
needs a node's admin port to attach to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_agents import Recorder

import genagent_thespian as g

AGENT_MODULE = """
import genagent_thespian as g

class Coder(g.GenAgent):
    def init_agent(self, options):
        return {"script": ["ok"]}

    def handle_response(self, ref, response):
        return None
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project folder with ``mymod.py`` that only this test process can import."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mymod.py").write_text(AGENT_MODULE)
    yield folder
    sys.modules.pop("mymod", None)


def _assert_one_clear_line(text: str, project: Path) -> None:
    assert "cannot import mymod:Coder" in text
    assert "ModuleNotFoundError" in text
    assert f"working directory is {os.getcwd()}" in text  # the node's, not the project's
    assert "sys.path is [" in text and str(project) not in text.split("sys.path is")[1]
    assert "PYTHONPATH" in text
    assert "\n" not in text.strip()


def test_start_agent_with_a_class_the_node_cannot_import_says_why(
    agent_system: g.AgentSystem, project: Path
) -> None:
    # The system's processes were forked before the project joined this process's path.
    sys.path.insert(0, str(project))
    try:
        import mymod

        with pytest.raises(g.AgentStartFailed) as caught:
            g.start_agent(mymod.Coder, name="coder", backend="scripted")
    finally:
        sys.path.remove(str(project))
    _assert_one_clear_line(str(caught.value), project)
    assert "coder" not in g.list_agents()
    g.start_agent(Recorder, name="fine", backend="scripted", default="ok")
    assert g.ask("fine", "still working?").text == "ok"  # the supervisor carried on


def test_genagent_start_with_a_class_the_node_cannot_import_says_why(
    agent_system: g.AgentSystem, project: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "genagent_thespian.cli",
            "start",
            "mymod:Coder",
            "--name",
            "coder",
            "--port",
            str(agent_system.admin_port),
        ],
        cwd=project,  # the command can import mymod; the node, started elsewhere, cannot
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    _assert_one_clear_line(lines[0], project)
