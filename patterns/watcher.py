"""Watcher: a reactive agent, idle until an external event makes a turn worth running.

Topology: one :class:`WatcherAgent`; all input arrives by ``notify``. Its
:meth:`~WatcherAgent.prompt_for` maps each event to a prompt or to ``None`` (ignore).
Override it in a subclass (in an importable module) for your own events; the default
knows CI results and pull requests::

    ("ci_result", "passed")                 -> ignored
    ("ci_result", "failed", details)        -> a diagnosis turn
    ("pr_opened", author, title)            -> a welcome turn
    anything else                           -> ignored

Nothing is lost while busy: events that arrive during a turn are buffered by the core and
their prompts run afterwards, in arrival order. Each action records the event it answered.

Corrected behaviour (gen_agent #244): a failed turn is recorded as an action with
``status == "failed"`` and its error, instead of leaving no trace.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Watcher", "WatcherAgent"]

_OWN_OPTIONS: frozenset[str] = frozenset()


class WatcherAgent(SnapshotAgent):
    """Turns interesting events into turns; records every action (see the module doc)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option goes to the backend."""
        self.actions: list[dict[str, Any]] = []
        self.ignored = 0
        self.in_flight: dict[str, str] = {}  # prompt ref -> repr of the event
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Actions (in order) and the count of ignored events."""
        return {"actions": self.actions, "ignored": self.ignored}

    def prompt_for(self, event: Any) -> str | None:
        """Return the prompt for ``event``, or ``None`` to ignore it. Override for your events."""
        if not isinstance(event, tuple) or not event:
            return None
        if event[0] == "ci_result" and len(event) == 3 and event[1] == "failed":
            return f"CI failed with:\n{event[2]}\n\nDiagnose the most likely cause in 2 sentences."
        if event[0] == "pr_opened" and len(event) == 3:
            return (
                f'{event[1]} just opened a PR titled: "{event[2]}". Welcome them in one sentence.'
            )
        return None

    def handle_event(self, event: Any) -> Prompt | None:
        """Dispatch interesting events as turns; count the rest."""
        text = self.prompt_for(event)
        if text is None:
            self.ignored += 1
            return None
        prompt = Prompt(text)
        self.in_flight[prompt.ref] = repr(event)
        return prompt

    def handle_response(self, ref: str, response: Response) -> None:
        """Record the action and the event it answered."""
        self.actions.append(
            {
                "status": "ok",
                "event": self.in_flight.pop(ref, None),
                "text": response.text.strip(),
                "at": time.time(),
            }
        )

    def handle_error(self, ref: str, error: Exception) -> None:
        """Record the failed action with its error."""
        self.actions.append(
            {
                "status": "failed",
                "event": self.in_flight.pop(ref, None),
                "error": str(error),
                "at": time.time(),
            }
        )


class Watcher:
    """Start a watcher, feed it events, read its actions, stop it.

    Example:
        >>> watcher = Watcher.start("ci-watch", backend="claude")    # doctest: +SKIP
        >>> watcher.feed(("ci_result", "failed", "test_auth timed out"))
        >>> print(watcher.wait_for_actions(1, timeout=300))
        >>> watcher.stop()
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        self.name = name
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        name: Any = "watcher",
        *,
        backend: Any,
        impl: type[WatcherAgent] = WatcherAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Watcher:
        """Start the watcher agent; ``options`` go to the backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                system=system,
                **options,
            )
        except BaseException:
            states.close()
            raise
        return cls(name, states, system)

    def feed(self, event: Any) -> None:
        """Deliver ``event`` (buffered while a turn runs, never dropped)."""
        g.notify(self.name, event, system=self._system)

    def state(self) -> dict[str, Any]:
        """The agent's latest published state (``actions``, ``ignored``)."""
        return self._states.read(self.name) or {"actions": [], "ignored": 0}

    def actions(self) -> list[dict[str, Any]]:
        """Every action so far, in order."""
        return list(self.state()["actions"])

    def wait_for_actions(self, count: int, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait until at least ``count`` actions are recorded and return them."""
        return list(
            wait_for(
                lambda: len(a := self.actions()) >= count and a,
                timeout=timeout,
                what=f"{count} watcher action(s)",
                agent=self.name,
            )
        )

    def stop(self) -> None:
        """Stop the agent and delete its state."""
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
