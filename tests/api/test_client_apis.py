"""The client calls behave the same on the sync API and on ``aio`` (one parametrized suite).

Every test runs with ``api`` = ``genagent_thespian`` and ``api`` = ``genagent_thespian.aio``,
on both system bases; the asyncio-only guarantees (cancellation, many tasks on one
thread) follow at the end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support_agents import Recorder, calls
from support_api import Api, until

import genagent_thespian as g
from genagent_thespian import AgentSystem, aio
from genagent_thespian.messages import PollState
from genagent_thespian.testing import Fail, Slow, wait_until


def start(api: Api, tmp_path: Path, name: str = "a", **options: Any) -> Path:
    log = tmp_path / f"{name}.log"
    api.start_agent(Recorder, name=name, backend="scripted", log=str(log), **options)
    return log


def wait_done(api: Api, name: str, ref: str) -> Any:
    return wait_until(lambda: (r := api.poll(name, ref)).done and r)


@pytest.mark.usefixtures("any_agent_system")
class TestBothApis:
    def test_ask_returns_the_response_and_failures_are_typed(
        self, api: Api, tmp_path: Path
    ) -> None:
        start(api, tmp_path, script=["hello there", Fail("rate_limited", "slow down")])
        response = api.ask("a", "what?")
        assert (response.text, response.prompt) == ("hello there", "what?")
        with pytest.raises(g.BackendError) as info:
            api.ask("a", "again")
        assert (info.value.kind, info.value.agent) == ("rate_limited", "a")

    def test_start_rejects_bad_options_and_duplicates(self, api: Api, tmp_path: Path) -> None:
        start(api, tmp_path)
        with pytest.raises(g.AgentAlreadyExists):
            start(api, tmp_path)
        with pytest.raises(g.InvalidOption, match="restart"):
            api.start_agent(Recorder, name="b", backend="scripted", restart="sometimes")
        assert api.list_agents() == ["a"]
        assert api.whereis("a") is not None and api.whereis("b") is None

    def test_tell_poll_and_cancel(self, api: Api, tmp_path: Path) -> None:
        start(api, tmp_path, script=[Slow("a b", 30.0), "never"])
        running = api.tell("a", "long")
        queued = api.tell("a", "next")
        api.cancel("a", queued)
        assert isinstance(api.poll("a", queued).error, g.TurnCancelled)
        with pytest.raises(g.RequestNotFound):
            api.cancel("a", running)
        assert api.interrupt("a", running) == running
        assert isinstance(wait_done(api, "a", running).error, g.TurnInterrupted)
        assert api.poll("a", "0" * 32).state is PollState.FAILED

    def test_halt_resume_notify_and_status(self, api: Api, tmp_path: Path) -> None:
        log = start(api, tmp_path, script=["one"], events={"ping": "noreply"})
        api.halt("a")
        ref = api.tell("a", "q")
        assert api.status("a").halted and api.status("a").queued == 1
        api.notify("a", "ping")
        assert calls(log, "handle_event")[0]["event"] == "ping"
        api.resume("a")
        assert wait_done(api, "a", ref).response.text == "one"
        if g.current_system().base != "simpleSystemBase":  # in-process: nothing is pickled
            with pytest.raises(g.InvalidEvent):
                api.notify("a", threading.Lock())

    def test_unknown_names_and_bad_prompts(self, api: Api, tmp_path: Path) -> None:
        start(api, tmp_path)
        calls: tuple[Callable[[], Any], ...] = (
            lambda: api.ask("nobody", "q"),
            lambda: api.tell("nobody", "q"),
            lambda: api.status("nobody"),
            lambda: api.halt("nobody"),
            lambda: api.stop("nobody"),
        )
        for call in calls:
            with pytest.raises(g.AgentNotFound):
                call()
        with pytest.raises(g.InvalidPrompt):
            api.ask("a", "")

    def test_sessions_counts_the_live_session_of_an_idle_agent(
        self, api: Api, tmp_path: Path
    ) -> None:
        start(api, tmp_path, script=["x"])
        assert api.ask("a", "q").text == "x"
        figures = api.sessions()  # the default system caps live sessions ("auto")
        assert isinstance(figures, g.GovernorStatus)
        # busy: not counted while no turn waits for a session (agents do not report turns)
        assert (figures.live, figures.busy, figures.queued, figures.oldest_wait) == (
            1,
            None,
            0,
            None,
        )

    def test_stop_answers_and_forgets_the_agent(self, api: Api, tmp_path: Path) -> None:
        start(api, tmp_path, script=["x"])
        assert api.backend_session("a").session_id.startswith("scripted-")
        api.stop("a")
        assert api.list_agents() == []

    def test_an_ask_timeout_leaves_the_turn_running(self, api: Api, tmp_path: Path) -> None:
        if api.kind == "aio" and g.current_system().base == "simpleSystemBase":
            pytest.skip("aio on simpleSystemBase runs one call at a time (documented)")
        start(api, tmp_path, script=[Slow("a b c", 30.0)])
        with pytest.raises(g.AskTimeout) as info:
            api.ask("a", "q", 0.3)
        assert info.value.agent == "a" and info.value.ref
        assert api.status("a").current_ref == info.value.ref
        api.interrupt("a")


# =============================================================================== asyncio only


def test_many_tasks_share_one_transport_thread(agent_system: AgentSystem, tmp_path: Path) -> None:
    names = [f"agent-{i}" for i in range(10)]
    for name in names:
        g.start_agent(Recorder, name=name, backend="scripted", default="ok")

    async def main() -> list[g.Response]:
        return await asyncio.gather(*(aio.ask(names[i % 10], f"q{i}") for i in range(200)))

    before = {t.ident for t in threading.enumerate()}
    responses = asyncio.run(main())
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert [r.text for r in responses] == ["ok"] * 200
    assert len({r.ref for r in responses}) == 200
    assert [t.name for t in new] == [aio.transport().thread.name]


def test_cancelling_an_ask_stops_waiting_and_the_turn_runs_on(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    g.start_agent(Recorder, name="a", backend="scripted", script=[Slow("a b c d", 1.0), "next"])

    async def main() -> None:
        task = asyncio.create_task(aio.ask("a", "long"))
        await until(lambda: _has_current_ref("a"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await aio.status("a")).state == "processing"

    asyncio.run(main())
    status = wait_until(lambda: (s := g.status("a")).turns == 1 and s)
    assert status.failures == 0  # the turn finished; its answer went nowhere
    assert g.ask("a", "q").text == "next"


async def _has_current_ref(name: str) -> bool:
    return (await aio.status(name)).current_ref is not None


def test_cancelling_with_interrupt_on_cancel_ends_the_turn(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    log = tmp_path / "a.log"
    g.start_agent(
        Recorder, name="a", backend="scripted", log=str(log), script=[Slow("a b", 30.0), "next"]
    )

    async def main() -> None:
        task = asyncio.create_task(aio.ask("a", "long", interrupt_on_cancel=True))
        await until(lambda: _has_current_ref("a"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: calls(log, "handle_error"))
    assert calls(log, "handle_error")[0]["error"] == "TurnInterrupted"
    assert g.ask("a", "q").text == "next"


def test_the_transport_ends_with_its_system(tmp_path: Path) -> None:
    system = g.start_system(make_default=False)
    try:
        g.start_agent(Recorder, name="a", backend="scripted", default="ok", system=system)
        assert asyncio.run(aio.ask("a", "q", system=system)).text == "ok"
        thread = aio.transport(system).thread
    finally:
        g.shutdown_system(system)
    thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(g.SystemNotRunning):
        asyncio.run(aio.ask("a", "q", system=system))
