"""Hibernation on multiprocTCPBase: an idle durable agent ends its process and keeps its name.

Only multiprocTCPBase: the point is that the agent's process is gone while it sleeps, and
that every call wakes it transparently (answers as if it had kept running).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support_agents import Counter, Recorder, calls
from support_backends import ProcessFacts

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian._core.validate import DEFAULT_HIBERNATE_AFTER, build_spec
from genagent_thespian.messages import PollState
from genagent_thespian.testing import TelemetryCapture, read_history, system_processes, wait_until

#: Idle seconds before the test agents hibernate: short, so the tests are quick.
NAP = 0.5


@pytest.fixture
def system(tmp_path: Path) -> Iterator[AgentSystem]:
    system = g.start_system(store_path=str(tmp_path / "store.sqlite3"))
    try:
        yield system
    finally:
        g.shutdown_system(system)
        wait_until(lambda: not system_processes(system), message="processes survived shutdown")


def start_sleeper(name: str, tmp_path: Path, **settings: Any) -> tuple[Path, Path]:
    """Start a durable ``Counter`` that hibernates after ``NAP`` idle seconds."""
    log, history = tmp_path / f"{name}.log", tmp_path / f"{name}.jsonl"
    g.start_agent(
        Counter,
        name=name,
        backend="scripted",
        log=str(log),
        script=["one", "two", "three", "four"],
        backend_options={"record_to": str(history)},
        durable=True,
        hibernate_after=NAP,
        worker_idle_timeout=0.2,
        **settings,
    )
    return log, history


def asleep(name: str) -> bool:
    return g.status(name).hibernated


def wait_asleep(name: str, pid: int) -> None:
    """Wait until ``name`` hibernated and its process ``pid`` is gone."""
    wait_until(functools.partial(asleep, name), timeout=20, message=f"{name} did not hibernate")
    wait_until(lambda: not psutil.pid_exists(pid), timeout=20, message="its process survived")


def test_an_idle_durable_agent_hibernates_and_an_ask_wakes_it_where_it_left_off(
    system: AgentSystem, tmp_path: Path
) -> None:
    log, history = start_sleeper("d", tmp_path)
    with TelemetryCapture(["agent.hibernated", "agent.woken"]) as capture:
        assert g.ask("d", "first").text == "one"
        pid = g.status("d").pid
        wait_asleep("d", pid)
        capture.wait_for("agent.hibernated")
        assert g.list_agents() == ["d"]  # still registered by name

        assert g.ask("d", "second").text == "two"  # the cached address is dead: woken
        capture.wait_for("agent.woken")
    status = g.status("d")
    assert not status.hibernated and status.pid not in (0, pid)
    assert status.turns == 2 and status.restarts == 0  # a wake-up is not a restart
    assert read_history(history) == ["first", "second"]
    session = g.backend_session("d")
    assert session.resumed and session.position == 2  # the conversation continued
    assert [r["value"] for r in calls(log, "count")] == [1, 2]  # its state survived
    assert calls(log, "init_agent") == calls(log, "init_agent")[:1]  # resumed, not re-inited


def test_status_and_list_agents_answer_for_a_sleeping_agent_without_waking_it(
    system: AgentSystem, tmp_path: Path
) -> None:
    start_sleeper("s", tmp_path)
    g.ask("s", "first")
    g.halt("s")
    pid = g.status("s").pid
    wait_asleep("s", pid)
    with TelemetryCapture(["agent.woken"]) as capture:
        for _ in range(5):
            status = g.status("s")
            assert status.hibernated and status.pid == 0
            assert status.halted and status.turns == 1 and status.durable
            assert g.list_agents() == ["s"]
        assert g.whereis("s") is None  # no process to address
        assert capture.named("agent.woken") == []
    assert g.status("s").hibernated


def test_every_call_gets_the_same_answer_after_hibernation(
    system: AgentSystem, tmp_path: Path
) -> None:
    log, history = start_sleeper("c", tmp_path)
    told = g.tell("c", "first")
    done = wait_until(lambda: _finished("c", told), timeout=20)
    assert done.response is not None and done.response.text == "one"

    def nap() -> None:
        wait_asleep("c", g.status("c").pid)

    nap()
    again = g.poll("c", told)  # the tell's result survives in the record
    assert again.state is PollState.COMPLETED and again.response is not None
    assert again.response.text == "one"
    nap()
    g.notify("c", "ping")
    assert calls(log, "handle_event")[-1]["event"] == "ping"
    nap()
    with pytest.raises(g.RequestNotFound):
        g.interrupt("c")  # nothing runs: the same answer as when awake
    nap()
    second = g.tell("c", "second")
    assert wait_until(lambda: _finished("c", second), timeout=20).state is PollState.COMPLETED
    nap()
    g.halt("c")
    nap()
    assert g.status("c").halted
    g.resume("c")
    assert g.ask("c", "third").text == "three"
    assert read_history(history) == ["first", "second", "third"]  # nothing ran twice


def test_a_send_after_timer_wakes_a_sleeping_agent_when_due(
    system: AgentSystem, tmp_path: Path
) -> None:
    log, _ = start_sleeper("t", tmp_path)
    g.notify("t", {"do": "after", "seconds": 4.0, "message": "then:woken by its timer"})
    pid = g.status("t").pid
    with TelemetryCapture(["agent.hibernated", "agent.woken"]) as capture:
        wait_asleep("t", pid)  # slept with its timer pending
        capture.wait_for("agent.woken", timeout=20)
    wait_until(
        lambda: [r["message"] for r in calls(log, "handle_info")] == ["then:woken by its timer"],
        timeout=20,
        message="the timer did not fire after waking",
    )
    wait_until(lambda: g.status("t").turns == 1, timeout=20)  # its follow-up prompt ran


def test_a_stopped_sleeping_agent_is_gone_for_good(system: AgentSystem, tmp_path: Path) -> None:
    start_sleeper("x", tmp_path)
    g.ask("x", "first")
    wait_asleep("x", g.status("x").pid)
    g.stop("x")
    assert g.list_agents() == []
    with pytest.raises(g.AgentStopped):
        g.ask("x", "second")


def test_hibernation_is_on_by_default_for_durable_agents_only() -> None:
    durable = build_spec(Recorder, name="a", backend="scripted", durable=True)
    plain = build_spec(Recorder, name="b", backend="scripted")
    assert durable.hibernate_after == DEFAULT_HIBERNATE_AFTER
    assert plain.hibernate_after == 0.0
    off = build_spec(Recorder, name="c", backend="scripted", durable=True, hibernate_after=0)
    assert off.hibernate_after == 0.0


@pytest.mark.parametrize("value", [-1, "soon", True])
def test_a_bad_hibernate_after_is_refused(value: Any) -> None:
    with pytest.raises(g.InvalidOption, match="hibernate_after"):
        build_spec(Recorder, name="a", backend="scripted", durable=True, hibernate_after=value)


def test_a_plain_agent_cannot_hibernate() -> None:
    with pytest.raises(g.InvalidOption, match="durable=True"):
        build_spec(Recorder, name="a", backend="scripted", hibernate_after=5)


def _finished(name: str, ref: str) -> g.PollResult | None:
    result = g.poll(name, ref)
    return result if result.state is not PollState.PENDING else None


def test_the_asyncio_api_wakes_a_sleeping_agent_too(system: AgentSystem, tmp_path: Path) -> None:
    import asyncio

    from genagent_thespian import aio

    _, history = start_sleeper("a", tmp_path)
    assert g.ask("a", "first").text == "one"
    wait_asleep("a", g.status("a").pid)

    async def go() -> tuple[str, bool]:
        status = await aio.status("a")
        response = await aio.ask("a", "second")
        return response.text, status.hibernated

    assert asyncio.run(go()) == ("two", True)
    assert read_history(history) == ["first", "second"]


def test_another_agent_wakes_a_sleeping_agent_with_a_tell(
    system: AgentSystem, tmp_path: Path
) -> None:
    teller_log = tmp_path / "teller.log"
    g.start_agent(Recorder, name="teller", backend="scripted", log=str(teller_log))
    _, history = start_sleeper("b", tmp_path)
    wait_asleep("b", g.status("b").pid)

    def completions() -> list[Any]:
        return [r for r in calls(teller_log, "handle_info") if r["type"] == "TellCompleted"]

    g.notify("teller", {"do": "tell", "to": "b", "prompt": "first"})
    wait_until(lambda: len(completions()) == 1, timeout=30, message="no TellCompleted")
    assert completions()[0]["text"] == "one" and completions()[0]["error"] is None
    wait_asleep("b", g.status("b").pid)  # asleep again; the teller has its old address
    g.notify("teller", {"do": "tell", "to": "b", "prompt": "second"})
    wait_until(lambda: len(completions()) == 2, timeout=30, message="no second TellCompleted")
    assert completions()[1]["text"] == "two" and completions()[1]["error"] is None
    assert read_history(history) == ["first", "second"]


def test_an_agent_woken_for_a_caller_starts_its_worker_before_any_turn(
    system: AgentSystem, tmp_path: Path
) -> None:
    history = tmp_path / "w.jsonl"
    g.start_agent(
        Counter,
        name="w",
        backend="scripted",
        script=["one", "two"],
        backend_options={"record_to": str(history)},
        durable=True,
        hibernate_after=2.0,  # awake for 6 s after a wake-up: the ask below finds it up
    )
    ref = g.tell("w", "first")
    assert wait_until(lambda: g.poll("w", ref).done, timeout=20)
    wait_asleep("w", g.status("w").pid)

    polled = g.poll("w", ref).response  # woken by a poll: no turn to run
    assert polled is not None and polled.text == "one"
    agent = psutil.Process(g.status("w").pid)
    # Its worker process comes up anyway, forked while the agent loaded its record...
    workers = wait_until(agent.children, timeout=20, message="no worker was started")
    assert g.ask("w", "second").text == "two"
    # ...and the first turn after the wake-up runs on it (the backend records its pid).
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [line["prompt"] for line in lines] == ["first", "second"]
    assert lines[-1]["pid"] == workers[0].pid


def test_a_woken_agents_worker_carries_its_marker(system: AgentSystem) -> None:
    """The worker made ahead of a woken agent's turn inherits what every worker does from
    its agent: the marker that the CLIs it starts carry, so they are found and ended with
    the agent (and, set at the same place, the signal that ends it with the agent)."""
    g.start_agent(
        ProcessFacts,
        name="f",
        backend="support_backends:ProcessFactsBackend",
        durable=True,
        hibernate_after=NAP,
        worker_idle_timeout=0.2,
    )
    first = json.loads(g.ask("f", "facts").text)
    wait_asleep("f", first["agent_pid"])

    woken = json.loads(g.ask("f", "facts").text)  # woken by the ask: its worker made ahead

    assert woken["agent_pid"] != first["agent_pid"]
    for facts in (first, woken):
        assert facts["agent_marker"] and facts["worker_marker"] == facts["agent_marker"]


def test_a_wake_up_runs_in_the_agent_process_made_ahead_for_it(
    system: AgentSystem, tmp_path: Path
) -> None:
    """Once an agent sleeps, the supervisor keeps one agent process started ahead: a
    wake-up sends its spec there instead of waiting for a new process to start, and a new
    one is made for the next wake-up. The fixture checks that none outlives the system."""
    start_sleeper("d", tmp_path)
    assert g.ask("d", "first").text == "one"
    awake = g.status("d").pid
    before = set(system_processes(system))
    wait_asleep("d", awake)
    spares = wait_until(
        lambda: set(system_processes(system)) - before,
        timeout=20,
        message="no agent process was made ahead",
    )

    assert g.ask("d", "second").text == "two"

    [spare] = spares
    assert g.status("d").pid == spare
    worker = {p.pid for p in psutil.Process(spare).children()}
    wait_until(
        lambda: set(system_processes(system)) - before - {spare} - worker,
        timeout=20,
        message="no process was made ahead for the next wake-up",
    )
