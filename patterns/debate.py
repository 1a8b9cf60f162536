"""Debate: two agents push each other by cross-notify, with no orchestrator.

Topology: agents ``<name>-a`` and ``<name>-b`` of one class. A opens; every statement is
notified to the opponent, who answers it. A round is one statement from each side, so with
``max_rounds=3`` the turn order is A, B, A, B, A, B.

Corrected behaviour (gen_agent #238):

* both sides speak ``max_rounds`` times and **both see every statement**: B's closing
  statement is delivered to A too, and each agent keeps the same interleaved transcript;
* a failed turn ends the debate on both sides (``phase == "failed"``, the error kept),
  instead of leaving both agents waiting un-halted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, Halt, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Debate", "DebateAgent", "DebateResult"]

_OWN_OPTIONS = frozenset({"topic", "role", "opponent", "max_rounds", "opens"})

DEFAULT_ROLES = ("an optimist arguing in favor", "a skeptic arguing against")


def opening_prompt(topic: str, role: str) -> str:
    """The prompt of A's opening statement."""
    return f"You are {role}. Make your opening statement about: {topic}. 2-3 sentences."


def reply_prompt(role: str, text: str) -> str:
    """The prompt answering the opponent's statement ``text``."""
    return f'You are {role}. Your opponent just said: "{text}"\n\nRespond briefly, in your role.'


class DebateAgent(SnapshotAgent):
    """One side of a debate (see the module docstring)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``topic``, ``role``, ``opponent``, ``max_rounds`` (3), ``opens``."""
        self.topic = str(options.get("topic", ""))
        self.role = str(options.get("role", DEFAULT_ROLES[0]))
        self.opponent = options["opponent"]
        self.max_rounds = int(options.get("max_rounds", 3))
        self.opens = bool(options.get("opens", False))
        self.spoken = 0
        self.transcript: list[tuple[str, str]] = []
        self.phase = "debating"
        self.error: str | None = None
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Phase, interleaved transcript and error."""
        return {
            "phase": self.phase,
            "spoken": self.spoken,
            "transcript": self.transcript,
            "error": self.error,
        }

    def handle_response(self, ref: str, response: Response) -> Halt | None:
        """Record my statement and pass it on; the closer (B's last) ends the debate."""
        text = response.text.strip()
        self.spoken += 1
        self.transcript.append((str(self.name), text))
        closing = not self.opens and self.spoken >= self.max_rounds
        self.notify(self.opponent, ("closing" if closing else "statement", text))
        if closing:
            self.phase = "done"
        return Halt() if closing else None

    def handle_error(self, ref: str, error: Exception) -> Halt:
        """End the debate on both sides."""
        self.phase = "failed"
        self.error = str(error)
        self.notify(self.opponent, ("failed", self.error))
        return Halt()

    def handle_event(self, event: Any) -> Prompt | Halt | None:
        """``statement`` -> answer it; ``closing`` -> record it and stop; ``failed`` -> stop."""
        if not (isinstance(event, tuple) and len(event) == 2) or self.phase != "debating":
            return None
        kind, text = event
        if kind == "failed":
            self.phase = "failed"
            self.error = f"opponent failed: {text}"
            return Halt()
        self.transcript.append((str(self.opponent), str(text)))
        if kind == "closing":
            self.phase = "done"
            return Halt()
        return Prompt(reply_prompt(self.role, str(text)))


@dataclass(frozen=True, slots=True)
class DebateResult:
    """How a debate ended: ``phase`` ``"done"`` or ``"failed"``, with both transcripts."""

    phase: str
    transcript: list[tuple[str, str]]
    transcript_b: list[tuple[str, str]]
    error: str | None


class Debate:
    """Start a debate, wait for its result, stop it.

    Example:
        >>> debate = Debate.start("remote work", backend="claude")  # doctest: +SKIP
        >>> for speaker, text in debate.result(timeout=600).transcript:
        ...     print(speaker, text)
        >>> debate.stop()
    """

    def __init__(self, names: tuple[Any, Any], states: PatternStates, system: AgentSystem | None):
        self.names = names
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        topic: str,
        *,
        backend: Any,
        name: str = "debate",
        max_rounds: int = 3,
        roles: tuple[str, str] = DEFAULT_ROLES,
        a_options: Mapping[str, Any] | None = None,
        b_options: Mapping[str, Any] | None = None,
        impl: type[DebateAgent] = DebateAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Debate:
        """Start both sides and A's opening; ``options`` (and per-side ones) go to the backend."""
        names = (f"{name}-a", f"{name}-b")
        states = PatternStates(system)
        debate = cls(names, states, system)
        sides = (
            (names[0], names[1], roles[0], a_options),
            (names[1], names[0], roles[1], b_options),
        )
        try:
            for index, (me, opponent, role, side_options) in enumerate(sides):
                g.start_agent(
                    impl,
                    name=me,
                    backend=backend,
                    topic=topic,
                    role=role,
                    opponent=opponent,
                    max_rounds=max_rounds,
                    opens=index == 0,
                    system=system,
                    **{**options, **(side_options or {})},
                )
            g.tell(names[0], opening_prompt(topic, roles[0]), system=system)
        except BaseException:
            debate.stop()
            raise
        return debate

    def result(self, *, timeout: float | None = None) -> DebateResult:
        """Wait until both sides have finished (done or failed) and return the outcome."""

        def finished() -> tuple[dict[str, Any], dict[str, Any]] | None:
            """Both debaters' states once neither is still debating, else ``None``."""
            a, b = self._states.read(self.names[0]), self._states.read(self.names[1])
            if a and b and a["phase"] != "debating" and b["phase"] != "debating":
                return a, b
            return None

        a, b = wait_for(finished, timeout=timeout, what="the debate to end", agent=self.names)
        failed = "failed" in (a["phase"], b["phase"])
        return DebateResult(
            phase="failed" if failed else "done",
            transcript=[(s, t) for s, t in a["transcript"]],
            transcript_b=[(s, t) for s, t in b["transcript"]],
            error=a["error"] or b["error"],
        )

    def stop(self) -> None:
        """Stop both agents (those still running) and delete the debate's state."""
        try:
            for name in self.names:
                try:
                    g.stop(name, system=self._system)
                except g.AgentNotFound:
                    continue
        finally:
            self._states.close()
