"""Chaos with the real ``claude``: durable agents whose processes (agents, and workers where
turns run in a worker process) are SIGKILLed at random while they work through their tells
(multiprocTCPBase, FakeLLMServer).

What must hold after the storm: no prompt lost (every tell has an outcome) or run twice
(counted at the fake server), every agent answers and continues its conversation, and no
process is left behind. ``GENAGENT_CHAOS_SEEDS`` (comma-separated) picks other seeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from support_agents import Passthrough
from support_cli import quiet_env, require_cli

import genagent_thespian as g
from genagent_thespian.testing import (
    ChaosMonkey,
    FakeLLMServer,
    Text,
    system_processes,
    wait_until,
)

AGENTS = 10
TELLS = 5
SEEDS = [int(s) for s in os.environ.get("GENAGENT_CHAOS_SEEDS", "1,2,3").split(",") if s]

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def user_text(request: Any) -> str:
    """The text of the last user message of a model request (the prompt of its turn)."""
    messages = request.body.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def agent_and_worker_pids(store: Path, system: Any) -> list[int]:
    """Live agent and worker processes of ``system``, as the durable records list them."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1.0) as db:
            rows = db.execute(
                "SELECT pid FROM processes WHERE role IN ('agent', 'worker')"
            ).fetchall()
    except sqlite3.Error:
        return []
    live = set(system_processes(system))  # never a reused pid outside the system
    return sorted({pid for (pid,) in rows} & live)


def processes_in(directories: list[Path]) -> list[int]:
    wanted = {str(d) for d in directories}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") in wanted:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def bounded(call: Any, *args: Any, timeout: float = 5.0) -> Any:
    """``call(*args)`` in a thread; ``None`` if it raised or did not answer in time.

    A call to an agent whose process died unseen waits for ever; the storm must not hang
    the test run, it must report that agent as broken.
    """
    answer: list[Any] = []

    def run() -> None:
        # A call left waiting on a lost agent fails when the system shuts down under it.
        with contextlib.suppress(Exception):
            answer.append(call(*args))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else None


def poll_outcome(name: str, ref: str) -> Any:
    result = bounded(g.poll, name, ref)
    return result if result is not None and result.done else None


def all_outcomes(
    prompts: dict[tuple[str, str], str], settled: dict[tuple[str, str], Any]
) -> dict[tuple[str, str], Any] | None:
    """Every tell's outcome, or ``None`` while one is still pending (``settled`` caches)."""
    for key in prompts:
        if key not in settled:
            outcome = poll_outcome(*key)
            if outcome is None:
                return None
            settled[key] = outcome
    return dict(settled)


#: (seed, turn_worker): every seed with the default (turns in the agent's process: the kills
#: land on agents), and the first one with worker processes too (kills of agents and workers).
RUNS = [(seed, "auto") for seed in SEEDS] + [(SEEDS[0], "process")]


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("seed", "turn_worker"), RUNS)
def test_durable_claude_agents_survive_a_storm_of_kills(
    tmp_path: Path, seed: int, turn_worker: str
) -> None:
    store = tmp_path / "store.sqlite3"
    home = tmp_path / "home"
    workdirs = [tmp_path / f"agent-{i}" for i in range(AGENTS)]
    for workdir in workdirs:
        workdir.mkdir()
    with FakeLLMServer(default=Text("ok")) as server:
        env = {
            **quiet_env(home),
            "ANTHROPIC_API_KEY": "sk-test-chaos",
            "ANTHROPIC_BASE_URL": server.url,
        }
        system = g.start_system(store_path=str(store))
        try:
            names = [f"chaos-{i}" for i in range(AGENTS)]
            for name, workdir in zip(names, workdirs, strict=True):
                options = {"binary": require_cli("claude"), "cwd": str(workdir), "env": env}
                g.start_agent(
                    Passthrough,
                    name=name,
                    backend="claude",
                    backend_options=options,
                    durable=True,
                    restart="permanent",
                    max_restarts=1000,
                    watchdog=60.0,
                    turn_worker=turn_worker,
                )
            prompts = {
                (name, g.tell(name, f"{name}-prompt-{j}")): f"{name}-prompt-{j}"
                for j in range(TELLS)
                for name in names
            }
            # A kill every 300 ms, 16 of them: 5 s on a quiet machine. Counted, not timed:
            # on a busy one a tick can find no live target (all restarting, the store busy),
            # and a 5 s storm had only 7 kills; the long duration is only its upper bound.
            monkey = ChaosMonkey(
                lambda: agent_and_worker_pids(store, system),
                interval=0.3,
                duration=60.0,
                max_kills=16,
                seed=seed,
            )
            with monkey:
                monkey.wait(timeout=90)
            assert not monkey.errors, monkey.errors
            assert len(monkey.kills) >= 10, monkey.kills

            settled: dict[tuple[str, str], Any] = {}
            try:
                outcomes = wait_until(
                    lambda: all_outcomes(prompts, settled),
                    timeout=90,
                    interval=0.2,
                    message="every tell to have an outcome",
                )
            except AssertionError:
                pending = next(k for k in prompts if k not in settled)
                silent = [n for n in names if bounded(g.status, n, timeout=2.0) is None]
                raise AssertionError(
                    f"seed {seed}: tell {pending} has no outcome after 90 s; agents that do "
                    f"not answer status: {silent}"
                ) from None
            sent: dict[str, int] = {}
            for request in server.model_requests:
                text = user_text(request)
                for prompt in prompts.values():
                    if prompt in text:
                        sent[prompt] = sent.get(prompt, 0) + 1
            assert all(count == 1 for count in sent.values()), {
                p: c for p, c in sent.items() if c > 1
            }
            succeeded = {k: prompts[k] for k, o in outcomes.items() if o.error is None}
            assert all(sent.get(p) == 1 for p in succeeded.values())

            failures = sorted(type(o.error).__name__ for o in outcomes.values() if o.error)
            print(  # the numbers a chaos run reports (pytest -s)
                f"seed {seed} ({turn_worker}): {len(monkey.kills)} kills, "
                f"{len(succeeded)}/{len(prompts)} tells succeeded, failures {failures}, "
                f"{len(server.model_requests)} model requests"
            )
            for name in names:
                answer = g.ask(name, f"{name}-after-the-storm", timeout=120)
                assert answer.text == "ok"
                history = json.dumps(server.model_requests[-1].body)
                earlier = [p for (n, _), p in succeeded.items() if n == name]
                assert all(p in history for p in earlier), (name, earlier)
            for name in names:
                g.stop(name)
            wait_until(lambda: not processes_in(workdirs), timeout=30, message="claude left behind")
        finally:
            g.shutdown_system(system)
            wait_until(
                lambda: not system_processes(system), timeout=30, message="processes survived"
            )
        assert not processes_in(workdirs)
