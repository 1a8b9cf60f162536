"""The ``genagent`` command line, every command through a real subprocess against a real node."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_node import CLI, Node, node_fixture

from genagent_thespian._api.system import free_port
from genagent_thespian._nodes.node import stop_node
from genagent_thespian.cli import main, parse_options
from genagent_thespian.testing import open_gate, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from node_fixture(tmp_path)


def test_node_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    node = Node(tmp_path / "state")
    node.start()
    assert node.state["port"] == node.port
    assert node.processes(), "the node should be running"
    info = node.json("node", "info")
    assert info["node"]["pid"] == node.state["pid"]
    second = node.run("node", "start", "--port", str(free_port()))
    assert second.returncode == 2
    assert "a node is already running" in second.stderr
    done = node.run("node", "stop")
    assert done.returncode == 0, done.stderr
    assert f"node on 127.0.0.1:{node.port} stopped" in done.stdout
    wait_until(lambda: not node.processes(), timeout=15.0, message="node processes left")
    assert not (tmp_path / "state" / "node.json").exists()
    log = Path(node.state["log"]).read_text("utf-8").splitlines()
    stopped = [n for n, line in enumerate(log) if re.fullmatch(r"node stopped in \d+\.\ds", line)]
    assert stopped and "stopping the node" in log[: stopped[0]], log
    after = node.run("ls")
    assert after.returncode == 3
    assert after.stderr.startswith("genagent: error: SystemNotRunning: no node is running")
    assert after.stderr.count("\n") == 1


def test_a_node_that_does_not_stop_in_time_is_killed_with_all_its_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(tmp_path / "state")
    node.start()
    node.start_agent("a", 'script=["hello"]')
    monkeypatch.setenv("GENAGENT_STATE_DIR", node.env["GENAGENT_STATE_DIR"])
    # No time at all to stop in order: the node is killed at once, and its actors with it.
    state, killed = stop_node(timeout=0.0)
    assert killed and state.pid == node.state["pid"]
    wait_until(lambda: not node.processes(), timeout=15.0, message="node processes left")
    assert not (tmp_path / "state" / "node.json").exists()


def test_start_ls_status_and_the_installed_entry_point(node: Node) -> None:
    node.start_agent("a", 'script=["hello"]')
    node.start_agent("b", "default=fine", impl="genagent_thespian.cli:ScriptedAgent")
    listing = node.json("ls")
    assert [row["name"] for row in listing["agents"]] == ["a", "b"]
    status = node.status("a")
    assert status["state"] == "idle"
    assert status["impl"] == "support_operator.Scripted"
    assert status["backend"] == "scripted"
    assert status["watchdog"] == 600.0
    entry_point = Path(sys.executable).parent / "genagent"
    plain = subprocess.run(
        [str(entry_point), "ls"], env=node.env, capture_output=True, text=True, check=False
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0].split() == [
        "a",
        "idle",
        "queued=0",
        "turns=0",
        "backend=scripted",
        f"node={status['node']}",
    ]
    human = node.run("status", "a")
    assert "state" in human.stdout and "idle" in human.stdout
    duplicate = node.run("start", "support_operator:Scripted", "--name", "a")
    assert duplicate.returncode == 1
    assert duplicate.stderr.startswith("genagent: error: AgentAlreadyExists:")


def test_ask_streams_text_before_the_turn_ends(node: Node, tmp_path: Path) -> None:
    # The turn holds after its first word until the test opens the latch: no clock involved.
    hold = tmp_path / "rest-of-the-reply"
    slow = {"slow": "alpha beta gamma delta", "seconds": 0.2, "hold": str(hold)}
    node.start_agent("a", "script=" + json.dumps([slow, "two"]))
    process = node.spawn("ask", "a", "go")
    assert process.stdout is not None
    first = process.stdout.read(5)
    assert first == "alpha"
    assert process.poll() is None, "the first fragment must arrive while the turn runs"
    assert node.status("a")["state"] == "processing"
    open_gate(hold)
    rest, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    assert first + rest == "alpha beta gamma delta\n"
    document = node.json("ask", "a", "again")
    assert document["text"] == "two"
    assert document["usage"]["output_tokens"] == 1
    assert document["model"] == "scripted"


def test_tell_poll_and_notify(node: Node) -> None:
    node.start_agent("a", 'script=["first", "said"]')
    told = node.json("tell", "a", "queued work")
    polled = node.json("poll", "a", told["ref"], "--wait", "20")
    assert polled["state"] == "completed"
    assert polled["response"]["text"] == "first"
    node.json("notify", "a", '{"say": "hello"}')
    wait_until(lambda: node.status("a")["turns"] == 2, timeout=20.0)
    unknown = node.run("poll", "a", "no-such-ref", "--json")
    assert unknown.returncode == 3
    assert json.loads(unknown.stdout)["error"]["type"] == "RequestNotFound"
    bad_json = node.run("notify", "a", "{not json")
    assert bad_json.returncode == 2
    assert bad_json.stderr.startswith("genagent: error: UsageError: the event must be JSON")


def test_interrupt_halt_resume_and_stop(node: Node) -> None:
    node.start_agent("a", 'script=[{"slow": "a very slow reply", "seconds": 60}, "after"]')
    ref = node.json("tell", "a", "long")["ref"]
    wait_until(lambda: node.status("a")["state"] == "processing", timeout=20.0)
    interrupted = node.json("interrupt", "a", "--ref", ref)
    assert interrupted["ref"] == ref
    failed = node.run("poll", "a", ref, "--wait", "20", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["type"] == "TurnInterrupted"
    nothing = node.run("interrupt", "a")
    assert nothing.returncode == 3
    assert nothing.stderr.startswith("genagent: error: RequestNotFound:")

    node.json("halt", "a")
    queued = node.json("tell", "a", "waits")["ref"]
    status = node.status("a")
    assert status["halted"] is True and status["queued"] == 1
    assert node.json("poll", "a", queued)["state"] == "pending"
    node.json("resume", "a")
    assert node.json("poll", "a", queued, "--wait", "20")["response"]["text"] == "after"

    stopped = node.run("stop", "a")
    assert stopped.returncode == 0 and stopped.stdout == "stopped a\n"
    gone = node.run("status", "a")  # stopped: says so until the name is reused (issue 14)
    assert gone.returncode == 1
    assert gone.stderr == "genagent: error: AgentStopped: the agent was stopped (agent='a')\n"


def test_errors_are_one_line_with_distinct_exit_codes(node: Node) -> None:
    node.start_agent("slow", 'script=[{"slow": "never in time", "seconds": 60}]')
    timeout = node.run("ask", "slow", "hurry", "--timeout", "0.5")
    assert timeout.returncode == 4
    assert timeout.stderr.startswith("genagent: error: AskTimeout: no answer within 0.5s")
    usage = node.run("start", "support_operator:Scripted", "--name", "x", "--option", "novalue")
    assert usage.returncode == 2
    assert "--option expects KEY=VALUE" in usage.stderr
    bad_class = node.run("start", "support_operator:Missing", "--name", "x", "--json")
    assert bad_class.returncode == 2
    assert json.loads(bad_class.stdout)["error"]["type"] == "InvalidOption"
    unknown_option = node.run(
        "start", "genagent_thespian.cli:ScriptedAgent", "--name", "x", "--option", "bogus=1"
    )
    assert unknown_option.returncode == 2
    assert "unknown option 'bogus'" in unknown_option.stderr
    missing = node.run("ask", "nobody", "hi", "--json")
    assert missing.returncode == 3
    answer = json.loads(missing.stdout)
    assert len(answer["error"].pop("ref")) == 32  # the prompt's ref, as g.ask reports it
    assert answer == {
        "ok": False,
        "exit_code": 3,
        "error": {
            "type": "AgentNotFound",
            "message": "no agent has that name",
            "agent": "nobody",
            "reason": "not_found",
        },
    }
    argparse_error = node.run("frobnicate")
    assert argparse_error.returncode == 2
    wrong_port = node.run("ls", "--port", str(free_port()))
    assert wrong_port.returncode == 3
    assert "no node is listening on port" in wrong_port.stderr


def test_a_client_without_the_node_secret_gets_one_error_line(node: Node) -> None:
    env = dict(node.env, GENAGENT_SECRET="ab" * 32)
    done = subprocess.run(
        [*CLI, "ls"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3
    assert done.stderr.startswith(
        f"genagent: error: SystemNotRunning: the node on port {node.port} did not accept"
    )
    assert done.stderr.count("\n") == 1


def test_port_from_the_environment(node: Node, tmp_path: Path) -> None:
    env = dict(node.env, GENAGENT_STATE_DIR=str(tmp_path / "elsewhere"))
    env["GENAGENT_PORT"] = str(node.port)
    done = subprocess.run(
        [*CLI, "ls", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "agents": []}


def test_top_once_and_live(node: Node) -> None:
    node.start_agent("worker", 'script=[{"slow": "busy busy", "seconds": 60}]')
    node.start_agent("idler")
    node.json("tell", "worker", "work")
    wait_until(lambda: node.status("worker")["state"] == "processing", timeout=20.0)
    node.json("halt", "idler")
    frame = node.run("top", "--once")
    assert frame.returncode == 0, frame.stderr
    lines = frame.stdout.splitlines()
    assert lines[0].startswith("genagent top ")
    assert f"127.0.0.1:{node.port} - 2 agents: 1 busy, 1 halted, 0 failed" in lines[0]
    # The node's session governor (on by default): the worker's session is live. Nobody
    # waits for a session, so the agents do not report their turns: busy is not shown.
    assert re.fullmatch(r"sessions 1/\d+ live", lines[1]), lines[1]
    assert lines[3].split()[:4] == ["AGENT", "STATE", "Q", "TURN"]
    assert "LAST ERROR" in lines[3]
    idler, worker = lines[4].split(), lines[5].split()
    assert idler[:4] == ["idler", "halted", "0", "-"]
    assert worker[:2] == ["worker", "processing"]
    assert worker[3].endswith("s/600s")
    assert all(len(line) <= 80 for line in lines), "a pipe gets 80 columns"
    assert "\x1b[" not in frame.stdout, "no colour when not on a terminal"
    data = node.json("top")
    assert {row["name"] for row in data["agents"]} == {"idler", "worker"}
    assert data["sessions"]["live"] == 1 and data["sessions"]["queued"] == 0

    live = node.spawn("top", "--interval", "0.2")
    assert live.stdout is not None
    frames = 0
    while frames < 2:
        line = live.stdout.readline()
        assert line, "top ended early"
        frames += line.startswith("genagent top ")
    live.send_signal(signal.SIGINT)
    assert live.wait(10) == 0


def test_demo_runs_end_to_end_without_a_node(tmp_path: Path) -> None:
    env = {"GENAGENT_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [*CLI, "demo", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is True
    assert sum(" done: " in line for line in document["output"]) == 3
    assert "  workers stopped: 3/3" in document["output"]
    missing = subprocess.run(
        [*CLI, "demo", "--backend", "nosuch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("genagent: error: InvalidOption: unknown backend 'nosuch'")


def test_parse_options_reads_json_or_keeps_strings() -> None:
    assert parse_options(["n=3", "s=text", 'l=["a", 1]', "b=true", "e="]) == {
        "n": 3,
        "s": "text",
        "l": ["a", 1],
        "b": True,
        "e": "",
    }


def test_usage_errors_exit_2_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["start", "nocolon", "--name", "x", "--port", str(free_port())]) == 3
    assert main(["ask"]) == 2
    assert "usage: genagent ask" in capsys.readouterr().err


def test_node_in_the_foreground_ends_on_sigterm(tmp_path: Path) -> None:
    node = Node(tmp_path / "state")
    process = node.spawn("node", "start", "--foreground", "--port", str(node.port), "--json")
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    node.state = ready["node"]
    assert node.state["pid"] == process.pid
    try:
        listing = subprocess.run(
            [*CLI, "ls", "--port", str(node.port), "--json"],
            env=node.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert json.loads(listing.stdout) == {"ok": True, "agents": []}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    wait_until(lambda: not node.processes(), timeout=15.0, message="node processes left")
    assert not (tmp_path / "state" / "node.json").exists()
    node.children.clear()
    node.state = {}
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


_CLIENT_OF_A_NODE = """
import sys
import genagent_thespian as g

system = g.attach_system(int(sys.argv[1]))
print(g.list_agents(system=system), flush=True)
sys.stdin.readline()  # the test stops the node, then says go
for call in (lambda: g.list_agents(system=system), lambda: g.status("a", system=system)):
    try:
        call()
        print("answered", flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
"""


def test_a_client_of_a_node_that_stopped_gets_system_not_running(node: Node) -> None:
    """Not Thespian's ``ActorSystemFailure``: the look-up of the node's service directory,
    made by a call that waits, used to let it through untyped (and the console answered
    its fleet request with HTTP 500 instead of "node unreachable")."""
    node.start_agent("a")
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT_OF_A_NODE, str(node.port)],
        env=node.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "['a']"
        assert node.run("node", "stop").returncode == 0
        out, err = client.communicate("go\n", timeout=60)
        assert out.split() == ["SystemNotRunning", "SystemNotRunning"], err
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
