"""Stateful interleavings of start, stop, kill, ask and restart on ``multiprocTCPBase``.

Hypothesis drives two agent names through random sequences; asks also run in background
threads so they interleave with stops, kills and restarts. Checked: every call is
answered (a result or one of the typed errors the docs promise, never a timeout or a
Thespian error), no name is left stuck (every running agent answers again), and nothing of
the system is left after shutdown.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
from support_agents import Recorder

import genagent_thespian as g
from genagent_thespian.testing import system_processes, wait_until

NAMES = st.sampled_from(["a", "b"])
#: What an ask may legitimately end with while its agent is stopped, killed or restarted.
ASK_OUTCOMES = (g.Response, g.AgentStopped, g.AgentRestarted, g.AgentNotFound, g.TurnCrashed)
CALL_TIMEOUT = 60.0


class StartStopKillAsk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.system = g.AgentSystem.start()
        self.running: set[str] = set()
        self.callers: list[tuple[threading.Thread, list[Any]]] = []

    def _start(self, name: str) -> None:
        g.start_agent(
            Recorder,
            name=name,
            backend="scripted",
            default="ok",
            restart="permanent",
            max_restarts=1000,
            system=self.system,
        )
        self.running.add(name)

    @rule(name=NAMES)
    def start(self, name: str) -> None:
        if name in self.running:
            try:
                self._start(name)
            except g.AgentAlreadyExists:
                return
            raise AssertionError(f"a second {name!r} was started")
        self._start(name)

    @rule(name=NAMES)
    def stop(self, name: str) -> None:
        try:
            g.stop(name, timeout=CALL_TIMEOUT, system=self.system)
        except g.AgentNotFound:
            assert name not in self.running, f"running {name!r} was not found by stop"
        self.running.discard(name)

    @rule(name=NAMES)
    def restart(self, name: str) -> None:
        self.stop(name)
        self._start(name)

    @rule(name=NAMES)
    def kill(self, name: str) -> None:
        if name not in self.running:
            return
        try:
            pid = g.status(name, system=self.system).pid
        except (g.AgentNotFound, g.AgentStopped):
            return  # between incarnations: nothing to kill right now
        os.kill(pid, signal.SIGKILL)

    @rule(name=NAMES)
    def ask(self, name: str) -> None:
        outcome = self._ask(name)
        assert isinstance(outcome, ASK_OUTCOMES), repr(outcome)

    @rule(name=NAMES)
    def ask_in_background(self, name: str) -> None:
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(self._ask(name)), daemon=True)
        thread.start()
        self.callers.append((thread, outcome))

    def _ask(self, name: str) -> Any:
        try:
            return g.ask(name, "hi", timeout=CALL_TIMEOUT, system=self.system)
        except g.GenAgentError as exc:
            return exc

    def _answers(self, name: str) -> bool:
        return isinstance(self._ask(name), g.Response)

    def teardown(self) -> None:
        try:
            for thread, outcome in self.callers:
                thread.join(timeout=CALL_TIMEOUT + 10)
                assert outcome, "a caller got no answer"
                assert isinstance(outcome[0], ASK_OUTCOMES), repr(outcome[0])
            for name in sorted(self.running):  # never stuck: each running agent answers
                wait_until(
                    functools.partial(self._answers, name),
                    timeout=CALL_TIMEOUT,
                    interval=0.1,
                    message=f"agent {name!r} never answered again",
                )
            assert sorted(map(str, g.list_agents(system=self.system))) == sorted(self.running)
        finally:
            self.system.shutdown()
            wait_until(lambda: not system_processes(self.system), timeout=30.0)


TestStartStopKillAsk = StartStopKillAsk.TestCase
TestStartStopKillAsk.settings = settings(
    max_examples=int(os.environ.get("GENAGENT_STATEFUL_EXAMPLES", "6")),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
