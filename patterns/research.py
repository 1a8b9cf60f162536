"""Research: one agent walks itself through phases by self-chaining.

Topology: a single :class:`ResearchAgent`. The kick-off prompt asks for sub-questions; the
agent then answers each one and finally writes a synthesis, each step a ``Prompt``
returned from ``handle_response`` (a self-chain, ahead of anything queued)::

    listing -> answering (one turn per sub-question) -> synthesizing -> done
                                                   any failure -> failed

Corrected behaviour (gen_agent #236): once ``done`` or ``failed``, further turns (after a
``resume`` and another prompt) are recorded as ``extra_turns`` instead of crashing the
agent; a failure keeps the phase it happened in (``failed_phase``) and the error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, Halt, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Research", "ResearchAgent", "ResearchResult"]

_OWN_OPTIONS = frozenset({"topic", "max_sub_questions"})


def kickoff_prompt(topic: str, count: int) -> str:
    """The first prompt: ask for ``count`` sub-questions, one per line."""
    return f"List {count} sub-questions about: {topic}. One per line, nothing else."


def answer_prompt(question: str) -> str:
    """The prompt of one answering turn."""
    return f"Answer this sub-question in 2-3 concise sentences: {question}"


def synthesis_prompt(topic: str, answered: list[tuple[str, str]]) -> str:
    """The prompt of the synthesis turn, listing every question and answer."""
    pairs = "\n\n".join(f"Q: {q}\nA: {a}" for q, a in answered)
    return (
        f"Topic: {topic}\n\n{pairs}\n\nWrite a 3-paragraph report that synthesizes these answers."
    )


class ResearchAgent(SnapshotAgent):
    """Self-chains listing -> answering -> synthesizing -> done (or failed)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``topic``, ``max_sub_questions`` (3); the rest go to the backend."""
        self.topic = str(options.get("topic", ""))
        self.max_sub_questions = int(options.get("max_sub_questions", 3))
        self.phase = "listing"
        self.sub_questions: list[str] = []
        self.answered: list[tuple[str, str]] = []
        self.final_report: str | None = None
        self.last_error: str | None = None
        self.failed_phase: str | None = None
        self.turns = 0
        self.extra_turns: list[str] = []
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Phase, questions, answers, report, error and turn count."""
        return {
            "topic": self.topic,
            "phase": self.phase,
            "sub_questions": self.sub_questions,
            "answered": self.answered,
            "final_report": self.final_report,
            "last_error": self.last_error,
            "failed_phase": self.failed_phase,
            "turns": self.turns,
            "extra_turns": self.extra_turns,
        }

    def handle_response(self, ref: str, response: Response) -> Prompt | Halt | None:
        """Advance one phase."""
        self.turns += 1
        text = response.text.strip()
        return self._advance(text)

    def _advance(self, text: str) -> Prompt | Halt | None:
        """Move the research on by one answer: list, answer each sub-question, synthesise, done.

        The whole plan runs as self-chained prompts from ``handle_response``, so it survives a
        restart with the agent's state and needs no outside driver.
        """
        if self.phase == "listing":
            lines = [line.strip() for line in text.splitlines()]
            self.sub_questions = [line for line in lines if line][: self.max_sub_questions]
            if not self.sub_questions:
                self.phase = "done"
                return Halt()
            self.phase = "answering"
            return Prompt(answer_prompt(self.sub_questions[0]))
        if self.phase == "answering":
            self.answered.append((self.sub_questions[len(self.answered)], text))
            if len(self.answered) < len(self.sub_questions):
                return Prompt(answer_prompt(self.sub_questions[len(self.answered)]))
            self.phase = "synthesizing"
            return Prompt(synthesis_prompt(self.topic, self.answered))
        if self.phase == "synthesizing":
            self.final_report = text
            self.phase = "done"
            return Halt()
        self.extra_turns.append(text)  # done/failed: a later prompt after resume
        return None

    def handle_error(self, ref: str, error: Exception) -> Halt:
        """Stop in ``failed``, keeping the phase the failure happened in."""
        self.turns += 1
        if self.phase not in ("done", "failed"):
            self.failed_phase = self.phase
            self.phase = "failed"
        self.last_error = str(error)
        return Halt()


@dataclass(frozen=True, slots=True)
class ResearchResult:
    """Where a research run ended: ``phase`` is ``"done"`` or ``"failed"``."""

    phase: str
    sub_questions: list[str]
    answered: list[tuple[str, str]]
    final_report: str | None
    last_error: str | None
    failed_phase: str | None
    turns: int

    @property
    def ok(self) -> bool:
        """Whether the run finished without a failure."""
        return self.phase == "done"


class Research:
    """Start a research run, wait for its result, stop it.

    Example:
        >>> run = Research.start("rust error handling", backend="claude")  # doctest: +SKIP
        >>> print(run.result(timeout=600).final_report)
        >>> run.stop()
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        self.name = name
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        topic: str,
        *,
        backend: Any,
        name: Any = "research",
        max_sub_questions: int = 3,
        impl: type[ResearchAgent] = ResearchAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Research:
        """Start the agent and send the kick-off prompt; ``options`` go to the backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                topic=topic,
                max_sub_questions=max_sub_questions,
                system=system,
                **options,
            )
        except BaseException:
            states.close()
            raise
        run = cls(name, states, system)
        g.tell(name, kickoff_prompt(topic, max_sub_questions), system=system)
        return run

    def state(self) -> dict[str, Any]:
        """The agent's latest published state."""
        return self._states.read(self.name) or {}

    def result(self, *, timeout: float | None = None) -> ResearchResult:
        """Wait until the run is ``done`` or ``failed`` and return how it ended."""
        state = wait_for(
            lambda: (s := self.state()).get("phase") in ("done", "failed") and s,
            timeout=timeout,
            what="the research run to finish",
            agent=self.name,
        )
        return ResearchResult(
            phase=state["phase"],
            sub_questions=list(state["sub_questions"]),
            answered=[(q, a) for q, a in state["answered"]],
            final_report=state["final_report"],
            last_error=state["last_error"],
            failed_phase=state["failed_phase"],
            turns=state["turns"],
        )

    def stop(self) -> None:
        """Stop the agent and delete the run's state."""
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
