"""The raw actor protocol is public and always answers.

A plain Thespian client reaches agents with public names only (``g.use_node_secret()``,
``g.client_capabilities()``), every request it sends gets exactly one reply (a duplicate
ref, a missing ref, a message nobody expects), and its ``shutdown()`` cannot stop the node.

Only on ``multiprocTCPBase`` (the ``agent_system`` fixture): a raw client is a second
Thespian system joining the node over TCP, and a ``simpleSystemBase`` system has no port
to join.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_agents import Minimal, Recorder
from thespian.actors import ActorSystem

import genagent_thespian as g
from genagent_thespian.messages import Failure, Prompt, Status
from genagent_thespian.testing import Gate

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


class _Foreign:
    """A message class the framework has never heard of."""


@pytest.fixture
def raw(agent_system: g.AgentSystem) -> Iterator[Any]:
    """A raw Thespian client of the test system, made with public names only."""
    g.use_node_secret()  # the system's own process: already installed, a no-op
    asys = ActorSystem("multiprocTCPBase", g.client_capabilities(), transientUnique=True)
    yield asys  # never shut down here: that is the node's business (and refused anyway)


def _gated_agent(tmp_path: Path, name: str = "held") -> Path:
    gate = tmp_path / "gate"
    g.start_agent(Recorder, name=name, backend="scripted", script=[Gate(str(gate), "first")])
    return gate


def test_a_duplicate_ref_from_another_caller_gets_duplicate_request(
    raw: Any, tmp_path: Path
) -> None:
    gate = _gated_agent(tmp_path)
    address = g.whereis("held")
    original = Prompt("the original")
    with raw.private() as first, raw.private() as second:
        first.tell(address, original)
        copy = second.ask(address, Prompt("a copy", ref=original.ref), 30)
        assert isinstance(copy, Failure) and isinstance(copy.error, g.DuplicateRequest)
        assert copy.ref == original.ref and "queued or running" in str(copy.error)
        gate.touch()
        answer = first.listen(30)
        assert isinstance(answer, g.Response) and answer.ref == original.ref
        again = second.ask(address, Prompt("once more", ref=original.ref), 30)
        assert isinstance(again, Failure) and isinstance(again.error, g.DuplicateRequest)
        assert "answered already" in str(again.error)


def test_the_same_caller_resending_a_held_ref_gets_exactly_one_answer(
    raw: Any, tmp_path: Path
) -> None:
    gate = _gated_agent(tmp_path)
    address = g.whereis("held")
    prompt = Prompt("sent twice")
    with raw.private() as client:
        client.tell(address, prompt)
        client.tell(address, prompt)  # as the API re-sends to a restarted durable agent
        gate.touch()
        assert isinstance(client.listen(30), g.Response)
        # The agent answers this caller in order: a second answer would arrive first.
        status = client.ask(address, Status(), 30)
        assert type(status).__name__ == "AgentStatus"


@pytest.mark.parametrize("ref", [None, "", 42])
def test_a_prompt_without_a_usable_ref_is_refused(raw: Any, ref: Any) -> None:
    g.start_agent(Recorder, name="refs", backend="scripted", default="ok")
    reply = raw.ask(g.whereis("refs"), Prompt("hello", ref=ref), 30)
    assert isinstance(reply, Failure) and isinstance(reply.error, g.InvalidPrompt)
    assert "ref" in str(reply.error)


@pytest.mark.parametrize("message", [None, {"prompt": "hi"}, _Foreign()], ids=repr)
def test_unexpected_messages_get_a_typed_failure_from_agent_and_registry(
    raw: Any, agent_system: g.AgentSystem, message: Any
) -> None:
    g.start_agent(Minimal, name="plain", backend="scripted")
    for address in (g.whereis("plain"), agent_system.registry, agent_system.supervisor):
        reply = raw.ask(address, message, 30)
        assert isinstance(reply, Failure) and isinstance(reply.error, g.UnexpectedMessage)
    assert g.status("plain").state == "idle"  # and the agent carries on


def _readme_block(marker: str) -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    return next(b for b in blocks if marker in b)


def test_the_readme_raw_client_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "coder.py").write_text(_readme_block("# coder.py"))
    (tmp_path / "rawclient.py").write_text(_readme_block("g.client_capabilities()"))
    done = subprocess.run(
        [sys.executable, "rawclient.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "Response It parses the config."


def test_a_raw_client_in_another_process_cannot_shut_the_node_down(
    agent_system: g.AgentSystem,
) -> None:
    g.start_agent(Recorder, name="remote", backend="scripted", default="seen")
    client = [sys.executable, str(TESTS / "support_raw_client.py"), str(agent_system.admin_port)]
    done = subprocess.run(
        [*client, "remote"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"type": "Response", "text": "seen"}
    assert g.ask("remote", "still there?").text == "seen"  # the node kept running
