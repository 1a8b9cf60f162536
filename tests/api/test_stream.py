"""``stream`` and ``watch``: a turn's events as they happen, through the one client path.

Each test runs on both client APIs (``api``: sync and ``aio``) and, where it makes sense,
on both system bases.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from support_agents import Recorder
from support_api import Api, until

import genagent_thespian as g
from genagent_thespian import AgentSystem, aio
from genagent_thespian.messages import TurnEvent
from genagent_thespian.testing import Fail, Gate, open_gate, wait_until


def start(tmp_path: Path, name: str = "a", **options: Any) -> None:
    g.start_agent(Recorder, name=name, backend="scripted", log=str(tmp_path / "log"), **options)


def needs_concurrent_calls(api: Api) -> None:
    """Skip aio on simpleSystemBase, where the transport thread runs each call whole."""
    if api.kind == "aio" and g.current_system().base == "simpleSystemBase":
        pytest.skip("aio on simpleSystemBase runs one call at a time (documented)")


def first_delta_then_rest(tmp_path: Path) -> tuple[Path, Gate]:
    gate = tmp_path / "gate"
    return gate, Gate(str(gate), then="rest", before=(g.Event.text_delta("first "),))


@pytest.mark.usefixtures("any_agent_system")
def test_the_first_text_delta_arrives_while_the_turn_still_runs(api: Api, tmp_path: Path) -> None:
    needs_concurrent_calls(api)
    gate, item = first_delta_then_rest(tmp_path)
    start(tmp_path, script=[item])
    items = api.stream("a", "q")
    first = next(items)
    while first.kind != g.EventKind.TEXT_DELTA:
        first = next(items)
    assert first.data["text"] == "first "
    # The turn cannot end before the gate opens: the delta came first, by order.
    assert g.status("a").state == "processing"
    open_gate(gate)
    rest = list(items)
    response = rest[-1]
    assert isinstance(response, g.Response) and response.text == "rest"
    streamed = [first, *rest[:-1]]
    assert [e.kind for e in streamed] == [e.kind for e in response.events][-len(streamed) :]
    assert streamed[-1].kind == g.EventKind.RESULT
    wait_until(lambda: g.status("a").watchers == 0)  # unsubscribed without waiting


@pytest.mark.usefixtures("any_agent_system")
def test_a_failed_turn_raises_its_typed_error_at_the_end_of_the_stream(
    api: Api, tmp_path: Path
) -> None:
    start(tmp_path, script=[Fail("rate_limited", "slow down", retry_after=1.0)])
    with pytest.raises(g.BackendError) as info:
        list(api.stream("a", "q"))
    assert info.value.kind == "rate_limited" and info.value.agent == "a"


@pytest.mark.usefixtures("any_agent_system")
def test_stream_checks_its_arguments_like_ask(api: Api, tmp_path: Path) -> None:
    start(tmp_path)
    with pytest.raises(g.InvalidPrompt):
        list(api.stream("a", ""))
    with pytest.raises(g.AgentNotFound):
        list(api.stream("nobody", "q"))


@pytest.mark.usefixtures("any_agent_system")
def test_leaving_a_stream_early_unsubscribes_and_the_turn_runs_on(api: Api, tmp_path: Path) -> None:
    needs_concurrent_calls(api)
    gate, item = first_delta_then_rest(tmp_path)
    start(tmp_path, script=[item, "next"])
    items = api.stream("a", "q")
    next(items)
    assert g.status("a").watchers == 1
    items.close()
    wait_until(lambda: g.status("a").watchers == 0)
    open_gate(gate)
    wait_until(lambda: g.status("a").state == "idle" and g.status("a").turns == 1)
    assert api.ask("a", "again").text == "next"


@pytest.mark.usefixtures("any_agent_system")
def test_watch_follows_every_turn_the_agent_runs(api: Api, tmp_path: Path) -> None:
    needs_concurrent_calls(api)
    start(tmp_path, script=["one", "two"])
    events = api.watch("a")
    refs = [api.tell("a", "first"), api.tell("a", "second")]
    seen: list[TurnEvent] = []
    for turn_event in events:
        seen.append(turn_event)
        if sum(e.event.kind == g.EventKind.RESULT for e in seen) == 2:
            break
    events.close()
    assert [e.ref for e in seen if e.event.kind == g.EventKind.RESULT] == refs
    for ref in refs:  # each turn's events, complete and in order
        seqs = [e.seq for e in seen if e.ref == ref]
        assert seqs == list(range(1, len(seqs) + 1))
    wait_until(lambda: g.status("a").watchers == 0)


@pytest.mark.usefixtures("any_agent_system")
def test_watch_ends_when_the_agent_is_stopped(api: Api, tmp_path: Path) -> None:
    needs_concurrent_calls(api)
    start(tmp_path)
    events = api.watch("a")
    api.stop("a")
    assert list(events) == []
    events.close()


_SUBSCRIBER = textwrap.dedent(
    """
    import sys
    import genagent_thespian as g

    g.attach_system(int(sys.argv[1]))
    events = g.watch("a")
    print("subscribed", flush=True)
    for _ in events:
        pass
    """
)


def test_a_killed_subscriber_is_dropped_by_the_agent(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    start(tmp_path, script=["one"])
    subscriber = subprocess.Popen(
        [sys.executable, "-c", _SUBSCRIBER, str(agent_system.admin_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscriber.stdout is not None
        assert subscriber.stdout.readline().strip() == "subscribed"
        assert g.status("a").watchers == 1
        os.kill(subscriber.pid, signal.SIGKILL)
        subscriber.wait(timeout=10)
        assert g.ask("a", "q").text == "one"  # its events go to the dead subscriber
        wait_until(lambda: g.status("a").watchers == 0, timeout=20.0)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(timeout=10)


@pytest.mark.usefixtures("any_agent_system")
def test_a_stream_that_ends_does_not_cut_off_another_on_the_same_endpoint(
    api: Api, tmp_path: Path
) -> None:
    needs_concurrent_calls(api)
    gate, item = first_delta_then_rest(tmp_path)
    start(tmp_path, script=["one", item])
    first = api.stream("a", "first")
    next(first)  # the first turn's stream is subscribed
    second = api.stream("a", "second")
    assert next(second).kind  # the second turn runs (held at its gate)
    assert list(first)[-1].text == "one"  # the first stream ends and leaves
    # Sent after its unsubscription, on the same endpoint: the agent has seen that first.
    assert api.status("a").watchers == 1
    open_gate(gate)
    rest = list(second)
    assert rest[-1].text == "rest"
    assert g.EventKind.RESULT in [e.kind for e in rest[:-1]]  # still subscribed after
    wait_until(lambda: g.status("a").watchers == 0)


def test_watch_follows_the_agent_through_a_restart(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    start(tmp_path, script=["before", "after"], restart="permanent")
    seen: queue.Queue[TurnEvent] = queue.Queue()

    def follow() -> None:  # a sync watch is iterated on the thread that made it
        for turn_event in g.watch("a"):
            seen.put(turn_event)

    follower = threading.Thread(target=follow)
    follower.start()
    wait_until(lambda: g.status("a").watchers == 1)
    first = g.tell("a", "one")
    _until_result(seen, first)
    old_pid = g.status("a").pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: _restarted(old_pid), timeout=20.0)
    wait_until(lambda: g.status("a").watchers == 1, timeout=20.0)  # subscribed again
    second = g.tell("a", "two")
    _until_result(seen, second)
    g.stop("a")
    follower.join(timeout=20.0)
    assert not follower.is_alive()  # the watch ended with the agent


def test_aio_watch_follows_the_agent_through_a_restart(
    agent_system: AgentSystem, tmp_path: Path
) -> None:
    start(tmp_path, script=["before", "after"], restart="permanent")

    async def main() -> None:
        seen: asyncio.Queue[TurnEvent] = asyncio.Queue()

        async def until_result(ref: str) -> None:
            while (e := await seen.get()).ref != ref or e.event.kind != g.EventKind.RESULT:
                pass

        async with aio.watch("a") as events:

            async def follow() -> None:  # the watch moves while someone awaits its events
                async for turn_event in events:
                    seen.put_nowait(turn_event)

            follower = asyncio.create_task(follow())
            await until_result(await aio.tell("a", "one"))
            old_pid = (await aio.status("a")).pid
            os.kill(old_pid, signal.SIGKILL)

            async def restarted() -> bool:
                status = await _status_or_none()
                return status is not None and status.pid != old_pid

            async def subscribed_again() -> bool:
                return (await aio.status("a")).watchers == 1

            await until(restarted)
            await until(subscribed_again)
            await until_result(await aio.tell("a", "two"))
            await aio.stop("a")
            await asyncio.wait_for(follower, 20.0)  # the watch ended with the agent

    asyncio.run(asyncio.wait_for(main(), 60.0))


def _until_result(seen: queue.Queue[TurnEvent], ref: str) -> None:
    while True:
        turn_event = seen.get(timeout=30.0)
        if turn_event.ref == ref and turn_event.event.kind == g.EventKind.RESULT:
            return


async def _status_or_none() -> g.AgentStatus | None:
    try:
        return await aio.status("a")
    except g.GenAgentError:
        return None  # between incarnations


def _restarted(old_pid: int) -> bool:
    try:
        return g.status("a").pid != old_pid
    except g.GenAgentError:
        return False  # between incarnations
