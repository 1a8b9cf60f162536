"""Runtime guarantees on ``multiprocTCPBase``: responsiveness, processes, protocol, threads.

Only multiprocTCPBase: these guarantees are about separate actor processes (a SIGKILLed agent,
worker processes, control calls answered while another process runs a ten-minute turn, the
TCP listeners); simpleSystemBase runs every actor in the test's own thread.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support_agents import Recorder, calls
from thespian.actors import ActorSystem

import genagent_thespian as g
from genagent_thespian import AgentSystem
from genagent_thespian.messages import Failure, Prompt, Status
from genagent_thespian.testing import Exit, Fail, Slow, system_processes, wait_until

TEN_MINUTES = 600.0


_T = TypeVar("_T")


def _timed(call: Callable[[], _T]) -> tuple[_T, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000.0


def test_a_ten_minute_turn_leaves_every_control_call_under_50_ms(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(
        Recorder,
        name="busy",
        backend="scripted",
        log=str(tmp_path / "log"),
        script=[Slow("one two three", TEN_MINUTES)],
        watchdog=TEN_MINUTES + 60,
    )
    ref = g.tell("busy", "work for ten minutes")
    wait_until(lambda: g.status("busy").current_ref == ref)
    timings: dict[str, list[float]] = {"status": [], "poll": [], "notify": []}
    for round_ in range(20):
        status, ms = _timed(lambda: g.status("busy"))
        assert status.state == "processing"
        timings["status"].append(ms)
        result, ms = _timed(lambda: g.poll("busy", ref))
        assert not result.done
        timings["poll"].append(ms)
        _, ms = _timed(functools.partial(g.notify, "busy", f"n{round_}"))
        timings["notify"].append(ms)
    _, interrupt_ms = _timed(lambda: g.interrupt("busy", ref=ref))
    worst = {name: max(values) for name, values in timings.items()}
    assert all(ms < 50 for ms in worst.values()), worst
    assert interrupt_ms < 50, interrupt_ms
    assert isinstance(wait_until(lambda: g.poll("busy", ref).error), g.TurnInterrupted)


def test_shutdown_leaves_no_process_of_the_system(tmp_path: Path) -> None:
    system = g.start_system(make_default=False)
    try:
        for index in range(3):
            g.start_agent(
                Recorder, name=f"p{index}", backend="scripted", default="x", system=system
            )
            g.ask(f"p{index}", "q", system=system)
        g.start_agent(
            Recorder, name="slow", backend="scripted", script=[Slow("a b", 60.0)], system=system
        )
        g.tell("slow", "long", system=system)
        assert (
            len(system_processes(system)) >= 1 + 3 * 2
        )  # admin, logger, services, agents, workers
    finally:
        system.shutdown()
    wait_until(
        lambda: not system_processes(system), timeout=10.0, message="processes survived shutdown"
    )


def test_the_worker_of_an_agent_killed_with_sigkill_does_not_outlive_it(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="o", backend="scripted", script=[Slow("a b", 60.0)])
    ref = g.tell("o", "long")
    wait_until(lambda: g.status("o").current_ref == ref)
    agent_pid = g.status("o").pid
    worker_pid = wait_until(
        lambda: next((p for p in system_processes(agent_system) if _parent(p) == agent_pid), None)
    )
    os.kill(agent_pid, 9)  # Thespian itself would leave the worker running as an orphan
    wait_until(lambda: not _alive(worker_pid), message="the orphaned worker kept running")
    wait_until(lambda: g.whereis("o") is None, message="the dead agent stayed registered")


def test_shutdown_sweeps_processes_that_escaped_the_supervisor(tmp_path: Path) -> None:
    system = g.start_system(make_default=False)
    try:
        g.start_agent(Recorder, name="e", backend="scripted", default="x", system=system)
        g.ask("e", "q", system=system)
        survivor = _spawn_like_a_cli(system)
    finally:
        system.shutdown()
    wait_until(lambda: not system_processes(system), timeout=10.0, message="processes survived")
    assert not _alive(survivor)


def test_a_worker_that_exits_is_replaced_and_leaves_no_process(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="w", backend="scripted", script=[Exit(9), "again", "again"])
    agent_pid = g.status("w").pid
    with pytest.raises(g.TurnCrashed):
        g.ask("w", "die")
    assert g.ask("w", "q").text == "again"
    workers = [p for p in system_processes(agent_system) if _parent(p) == agent_pid]
    assert len(workers) == 1


def test_raw_thespian_ask_gets_the_same_replies_as_the_api(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="raw", backend="scripted", script=["raw reply"])
    address = g.whereis("raw")
    asys = ActorSystem(
        "multiprocTCPBase", {"Admin Port": agent_system.admin_port}, transientUnique=True
    )
    response = asys.ask(address, Prompt("hello"), 30)
    assert isinstance(response, g.Response) and response.text == "raw reply"
    failure = asys.ask(address, Prompt(""), 30)
    assert isinstance(failure, Failure) and isinstance(failure.error, g.InvalidPrompt)
    status = asys.ask(address, Status(), 30)
    assert status.name == "raw" and status.turns == 1


def test_several_threads_ask_at_once_and_each_gets_its_own_answer(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    for index in range(4):
        g.start_agent(Recorder, name=f"t{index}", backend="scripted", default="echo")
    results: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for call in range(10):
                response = g.ask(f"t{(thread + call) % 4}", f"{thread}-{call}")
                results[(thread, call)] = response.prompt or ""
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert results == {(t, c): f"{t}-{c}" for t in range(6) for c in range(10)}


def test_stop_answers_the_running_and_every_queued_caller(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    g.start_agent(
        Recorder, name="s", backend="scripted", log=str(log), script=[Slow("a b c", 60.0)]
    )
    outcomes: list[BaseException | g.Response] = []

    def caller(index: int) -> None:
        try:
            outcomes.append(g.ask("s", f"q{index}"))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: g.status("s").queued == 2)
    told = g.tell("s", "told")
    g.stop("s")
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == 3
    assert all(isinstance(o, g.AgentStopped) for o in outcomes), outcomes
    assert calls(log, "terminate_agent") == [{"cb": "terminate_agent", "reason": "stop"}]
    with pytest.raises(g.AgentNotFound):
        g.poll("s", told)


def test_an_ask_to_an_agent_killed_mid_turn_ends_with_agent_stopped(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="k", backend="scripted", script=[Slow("a b", 60.0)])
    pid = g.status("k").pid
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            g.ask("k", "long")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    wait_until(lambda: g.status("k").state == "processing")
    os.kill(pid, 9)
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentStopped)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _spawn_like_a_cli(system: g.AgentSystem) -> int:
    """Start a program as a backend starts a CLI: its own session, the system's marker."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        start_new_session=True,
        env={**os.environ, "GENAGENT_SYSTEM_ID": system.system_id},
    )
    return child.pid


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_default_node_listens_on_loopback_only_and_runs_no_unauthenticated_payload(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    from security_support import attack_all, listening_sockets

    g.start_agent(Recorder, name="n", backend="scripted", default="still serving")
    g.ask("n", "warm up the worker")
    listeners = listening_sockets(system_processes(agent_system))
    assert listeners and {host for _, host, _ in listeners} == {"127.0.0.1"}
    attack_all("127.0.0.1", [port for _, _, port in listeners], tmp_path)
    assert not list(tmp_path.iterdir()), "an unauthenticated payload ran"
    assert g.ask("n", "q").text == "still serving"


def test_an_unpicklable_event_is_invalid_event_and_the_agent_keeps_serving(
    agent_system: AgentSystem,
) -> None:
    g.start_agent(Recorder, name="u", backend="scripted", default="fine")
    with pytest.raises(g.InvalidEvent) as info:
        g.notify("u", lambda: "closures do not pickle")
    assert info.value.agent == "u"
    assert g.ask("u", "q").text == "fine"


def test_a_durable_agent_whose_state_cannot_pickle_is_refused_at_start(tmp_path: Path) -> None:
    from support_agents import HoldsALock

    system = g.start_system(store_path=str(tmp_path / "s.sqlite3"), make_default=False)
    try:
        with pytest.raises(g.InvalidOption) as info:
            g.start_agent(HoldsALock, name="l", backend="scripted", durable=True, system=system)
        assert "pickle" in str(info.value) and info.value.agent == "l"
        assert g.whereis("l", system=system) is None
    finally:
        system.shutdown()


def test_a_delayed_retry_keeps_the_ask_waiting_while_the_agent_serves_others(
    agent_system: AgentSystem,
) -> None:
    g.start_agent(
        Recorder,
        name="r",
        backend="scripted",
        script=[Fail("rate_limited", "slow down"), "other work", "retried"],
        errors=["after:0.6:try again"],
    )
    outcome: list[g.Response] = []
    caller = threading.Thread(target=lambda: outcome.append(g.ask("r", "first try")))
    caller.start()
    wait_until(lambda: g.status("r").failures == 1)
    status = g.status("r")
    assert (status.state, status.current_ref) == ("idle", None)
    assert g.ask("r", "meanwhile").text == "other work"  # the back-off blocks nothing
    caller.join(30)
    assert outcome[0].text == "retried" and outcome[0].prompt == "try again"


def test_stop_answers_an_ask_whose_retry_waits_on_its_back_off(agent_system: AgentSystem) -> None:
    g.start_agent(
        Recorder, name="s", backend="scripted", script=[Fail("overloaded")], errors=["after:60:x"]
    )
    outcome: list[object] = []

    def caller() -> None:
        try:
            g.ask("s", "q")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    wait_until(lambda: g.status("s").failures == 1)
    g.stop("s")
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], g.AgentStopped)
