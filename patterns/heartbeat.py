"""Heartbeat: an agent woken by a clock, "a Watcher with the clock as the event source".

Topology: one :class:`HeartbeatAgent`. Observations arrive by ``notify``; a ticker built on
``send_after`` wakes the agent every ``interval`` seconds. On each tick it decides on its
own **state**, not on the tick: fewer than ``min_batch`` observations -> skip; otherwise
one turn summarizes the batch.

Corrected behaviour (gen_agent #244):

* the ticker is a timer of the agent itself (``send_after``), so it **ends with the agent**:
  it can never outlive it or tick a restarted agent of the same name;
* a halted agent's ticker stops (``post_run``), so ticks never pile up prompts behind a
  halt; ``pause``/``resume`` events stop and restart it explicitly (the facade's
  ``resume()`` also unhalts the agent);
* a failed summary turn **keeps its batch**: the observations go back in front of newer
  ones and are summarized on a later tick;
* a tick during a turn is buffered by the core and decided against the state the turn
  left, so nothing is lost and nothing is decided on stale state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, Halt, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Heartbeat", "HeartbeatAgent", "summary_prompt"]

_OWN_OPTIONS = frozenset({"interval", "min_batch"})


def summary_prompt(observations: list[str]) -> str:
    """The prompt of one summary turn."""
    lines = "\n".join(f"- {o}" for o in observations)
    return f"Recent observations ({len(observations)}):\n{lines}\n\nSummarize them in one sentence."


class HeartbeatAgent(SnapshotAgent):
    """Collects observations; every tick, summarizes them once there are enough."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``interval`` seconds (60), ``min_batch`` (3); the rest go to the backend."""
        self.interval = float(options.get("interval", 60.0))
        if self.interval <= 0:
            raise g.InvalidOption(f"interval must be > 0 seconds, got {self.interval}")
        self.min_batch = int(options.get("min_batch", 3))
        self.observations: list[str] = []
        self.in_flight: dict[str, list[str]] = {}  # summary prompt ref -> its batch
        self.summaries: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.ticks = 0
        self.skipped = 0
        self.dispatched = 0
        self.ticking = False
        self.timer: str | None = None
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Counters, pending observations, summaries and failures."""
        return {
            "observations": self.observations,
            "summaries": self.summaries,
            "failures": self.failures,
            "ticks": self.ticks,
            "skipped": self.skipped,
            "dispatched": self.dispatched,
            "ticking": self.ticking,
        }

    # ----------------------------------------------------------------- the ticker

    def pre_run(self) -> None:
        """Start ticking."""
        self._start_ticker()

    def _start_ticker(self) -> None:
        """Start ticking unless already ticking: a second start must not double the beat."""
        if not self.ticking:
            self.ticking = True
            self.timer = self.send_after(self.interval, ("tick",))

    def _stop_ticker(self) -> None:
        """Stop ticking and cancel the pending tick, so a halted agent receives no stale beat."""
        self.ticking = False
        if self.timer is not None:
            self.cancel_timer(self.timer)
            self.timer = None

    def post_run(self) -> None:
        """A halted agent stops ticking (``resume`` event restarts it)."""
        self._stop_ticker()

    # ----------------------------------------------------------------- inputs

    def handle_event(self, event: Any) -> None:
        """``("observation", text)``, ``("pause",)``, ``("resume",)``."""
        if isinstance(event, tuple) and event:
            if event[0] == "observation" and len(event) == 2:
                self.observations.append(str(event[1]))
            elif event == ("pause",):
                self._stop_ticker()
            elif event == ("resume",):
                self._start_ticker()

    def handle_info(self, message: Any) -> Prompt | Halt | None:
        """A tick: re-arm, then skip or summarize the batch."""
        if message != ("tick",):
            return super().handle_info(message)
        if not self.ticking:
            return None
        self.timer = self.send_after(self.interval, ("tick",))
        self.ticks += 1
        if len(self.observations) < self.min_batch:
            self.skipped += 1
            return None
        batch, self.observations = self.observations, []
        prompt = Prompt(summary_prompt(batch))
        self.in_flight[prompt.ref] = batch
        self.dispatched += 1
        return prompt

    def handle_response(self, ref: str, response: Response) -> None:
        """Keep the summary with the batch it covers."""
        batch = self.in_flight.pop(ref, [])
        self.summaries.append(
            {"text": response.text.strip(), "count": len(batch), "at": time.time()}
        )

    def handle_error(self, ref: str, error: Exception) -> None:
        """Put the batch back in front of newer observations; record the failure."""
        batch = self.in_flight.pop(ref, [])
        self.observations = batch + self.observations
        self.failures.append(str(error))

    def terminate_agent(self, reason: str) -> None:
        """The ticker ends with the agent (its timers die with it; cancel for clarity)."""
        self._stop_ticker()


class Heartbeat:
    """Start a heartbeat agent, feed it observations, read its summaries, stop it.

    Example:
        >>> beat = Heartbeat.start("ops", backend="claude", interval=300)  # doctest: +SKIP
        >>> beat.observe("disk 91% on db-2")
        >>> beat.state()["summaries"]
        >>> beat.stop()
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        self.name = name
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        name: Any = "heartbeat",
        *,
        backend: Any,
        interval: float = 60.0,
        min_batch: int = 3,
        impl: type[HeartbeatAgent] = HeartbeatAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Heartbeat:
        """Start the agent and its ticker; ``options`` go to the backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                interval=interval,
                min_batch=min_batch,
                system=system,
                **options,
            )
        except BaseException:
            states.close()
            raise
        return cls(name, states, system)

    def observe(self, text: str) -> None:
        """Add one observation."""
        g.notify(self.name, ("observation", text), system=self._system)

    def pause(self) -> None:
        """Stop the ticker (observations still accumulate)."""
        g.notify(self.name, ("pause",), system=self._system)

    def resume(self) -> None:
        """Unhalt the agent if it was halted, and restart the ticker."""
        g.resume(self.name, system=self._system)
        g.notify(self.name, ("resume",), system=self._system)

    def state(self) -> dict[str, Any]:
        """The agent's latest published state."""
        return self._states.read(self.name) or {}

    def wait_for(self, predicate: Any, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait until ``predicate(state)`` holds and return that state."""
        return dict(
            wait_for(
                lambda: predicate(s := self.state()) and s,
                timeout=timeout,
                what="the heartbeat state",
                agent=self.name,
            )
        )

    def stop(self) -> None:
        """Stop the agent (its ticker ends with it) and delete its state."""
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
