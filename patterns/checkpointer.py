"""Checkpointer: multi-step work that pauses for a human review after every step.

Topology: one :class:`CheckpointAgent`. After each drafting turn it waits **idle** (not
halted: halt is terminal, idle is resumable) in ``awaiting_review`` with the draft and a
``draft_id``. A review is an event ``("review", draft_id, decision, feedback)``:

* ``approve``: next step (or ``done`` after the last one);
* ``revise``: redraft the same step with the feedback;
* ``finish``: stop early, ``done``;
* ``retry``: run a failed step again.

Corrected behaviour (gen_agent #243):

* every review names the draft it reviews; one that does not match the draft now awaiting
  review (late, duplicate, or sent while a turn runs) is **rejected and recorded**, never
  applied to a different draft, so a double approve cannot skip a step;
* a failed turn is not a dead end: the agent waits for review with the error (no draft),
  and ``retry``/``revise``/``finish`` continue from there;
* one protocol, the one documented here and tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, Halt, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["CheckpointAgent", "CheckpointResult", "Checkpointer", "Review"]

_OWN_OPTIONS = frozenset({"task", "total_steps"})
DECISIONS = ("approve", "revise", "finish", "retry")


def step_prompt(task: str, step: int, total: int, previous: str | None) -> str:
    """The prompt drafting ``step`` of ``total``."""
    context = f"\n\nPrevious step's approved draft:\n{previous}" if previous else ""
    return f"Task: {task}\n\nWrite step {step} of {total}.{context}"


def revise_prompt(draft: str | None, feedback: str) -> str:
    """The prompt revising the current draft with the reviewer's feedback."""
    current = f"Current draft:\n{draft}\n\n" if draft else ""
    return f"{current}Revise the current draft based on this feedback: {feedback}"


class CheckpointAgent(SnapshotAgent):
    """Drafts a step, waits for a review naming that draft, continues (see the module doc)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``task``, ``total_steps`` (3); the rest go to the backend."""
        self.task = str(options.get("task", ""))
        self.total_steps = int(options.get("total_steps", 3))
        self.phase = "ready"
        self.current_step = 1
        self.revision = 0
        self.draft: str | None = None
        self.draft_id: str | None = None
        self.error: str | None = None
        self.drafts: list[dict[str, Any]] = []
        self.rejected_reviews: list[dict[str, Any]] = []
        self.finished_early = False
        self.seq = 0
        self.expected_ref: str | None = None
        self.last_prompt: str | None = None
        self.approved: str | None = None
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Phase, the draft awaiting review and its id, every draft, rejected reviews."""
        return {
            "phase": self.phase,
            "current_step": self.current_step,
            "revision": self.revision,
            "draft": self.draft,
            "draft_id": self.draft_id,
            "error": self.error,
            "drafts": self.drafts,
            "rejected_reviews": self.rejected_reviews,
            "finished_early": self.finished_early,
        }

    def _draft(self, text: str) -> Prompt:
        """Ask for a draft, remembering its ref so only this prompt's answer counts as the draft.

        Other prompts (a notification's turn, a stray tell) may end turns too; comparing refs keeps
        them from being taken for the draft under review.
        """
        prompt = Prompt(text)
        self.expected_ref = prompt.ref
        self.last_prompt = text
        self.phase = "drafting"
        self.draft_id = None
        return prompt

    def handle_event(self, event: Any) -> Prompt | Halt | None:
        """``("start",)`` begins step 1; ``("review", draft_id, decision, feedback)`` reviews."""
        if event == ("start",) and self.phase == "ready":
            return self._draft(step_prompt(self.task, 1, self.total_steps, None))
        if not (isinstance(event, tuple) and len(event) == 4 and event[0] == "review"):
            return None
        _, draft_id, decision, feedback = event
        reason = self._rejection(draft_id, decision)
        if reason is not None:
            self.rejected_reviews.append(
                {"draft_id": draft_id, "decision": decision, "reason": reason}
            )
            return None
        if decision == "finish":
            self.phase = "done"
            self.finished_early = self.current_step < self.total_steps or self.draft is None
            return Halt()
        if decision == "approve":
            self.approved = self.draft
            if self.current_step >= self.total_steps:
                self.phase = "done"
                return Halt()
            self.current_step += 1
            self.revision = 0
            return self._draft(
                step_prompt(self.task, self.current_step, self.total_steps, self.approved)
            )
        if decision == "revise":
            self.revision += 1
            return self._draft(revise_prompt(self.draft, str(feedback or "")))
        return self._draft(self.last_prompt or step_prompt(self.task, 1, self.total_steps, None))

    def _rejection(self, draft_id: Any, decision: Any) -> str | None:
        """Why a review cannot be applied now, or ``None`` when it can.

        Reviews come from people and other programs at any time, so a late, duplicate or mismatched
        one is refused with a reason (kept in ``rejected_reviews``) instead of moving the work on
        from the wrong draft.
        """
        if decision not in DECISIONS:
            return f"unknown decision {decision!r}"
        if self.phase != "awaiting_review":
            return f"no draft is awaiting review (phase {self.phase})"
        if draft_id != self.draft_id:
            return f"stale review: the draft awaiting review is {self.draft_id}"
        if decision == "approve" and self.draft is None:
            return "the last turn failed; there is no draft to approve"
        if decision == "retry" and self.draft is not None:
            return "retry is for a failed turn; use revise"
        return None

    def _await_review(self, draft: str | None, error: str | None) -> None:
        """Record a draft (or a failed turn) and wait, idle, for its review under a new draft id.

        Every draft gets its own id, so a review names exactly the draft it saw.
        """
        self.seq += 1
        self.draft = draft
        self.error = error
        self.draft_id = f"d{self.seq}"
        self.phase = "awaiting_review"
        self.drafts.append(
            {
                "draft_id": self.draft_id,
                "step": self.current_step,
                "revision": self.revision,
                "text": draft,
                "error": error,
            }
        )

    def handle_response(self, ref: str, response: Response) -> None:
        """Keep the draft and wait, idle, for its review."""
        if ref == self.expected_ref:
            self._await_review(response.text.strip(), None)

    def handle_error(self, ref: str, error: Exception) -> None:
        """Wait for a review of the failure (retry, revise or finish)."""
        if ref == self.expected_ref:
            self._await_review(None, str(error))


@dataclass(frozen=True, slots=True)
class Review:
    """A draft awaiting review: pass ``draft_id`` back with the decision."""

    draft_id: str
    step: int
    text: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """How the work ended: every draft, the last one, whether it finished early."""

    drafts: list[dict[str, Any]]
    final_draft: str | None
    finished_early: bool
    rejected_reviews: list[dict[str, Any]]


class Checkpointer:
    """Start checkpointed work, review each draft, read the result, stop it.

    Example:
        >>> work = Checkpointer.start("write a migration plan", backend="claude")  # doctest: +SKIP
        >>> review = work.wait_for_review(timeout=600)
        >>> work.approve(review.draft_id)
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        self.name = name
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        task: str,
        *,
        backend: Any,
        name: Any = "checkpointer",
        total_steps: int = 3,
        impl: type[CheckpointAgent] = CheckpointAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Checkpointer:
        """Start the agent and its first step; ``options`` go to the backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                task=task,
                total_steps=total_steps,
                system=system,
                **options,
            )
            g.notify(name, ("start",), system=system)
        except BaseException:
            states.close()
            raise
        return cls(name, states, system)

    def state(self) -> dict[str, Any]:
        """The agent's latest published state."""
        return self._states.read(self.name) or {}

    def wait_for_review(self, *, after: str | None = None, timeout: float | None = None) -> Review:
        """Wait for a draft awaiting review (other than ``after``) and return it."""
        state = wait_for(
            lambda: (
                (s := self.state()).get("phase") == "awaiting_review"
                and s.get("draft_id") != after
                and s
            ),
            timeout=timeout,
            what="a draft awaiting review",
            agent=self.name,
        )
        return Review(state["draft_id"], state["current_step"], state["draft"], state["error"])

    def review(self, draft_id: str, decision: str, feedback: str | None = None) -> None:
        """Send a review of ``draft_id`` (one of approve, revise, finish, retry)."""
        if decision not in DECISIONS:
            raise g.InvalidOption(f"decision must be one of {DECISIONS}, got {decision!r}")
        g.notify(self.name, ("review", draft_id, decision, feedback), system=self._system)

    def approve(self, draft_id: str) -> None:
        """Approve ``draft_id``: next step, or done after the last."""
        self.review(draft_id, "approve")

    def revise(self, draft_id: str, feedback: str) -> None:
        """Redraft the step of ``draft_id`` with ``feedback``."""
        self.review(draft_id, "revise", feedback)

    def finish(self, draft_id: str) -> None:
        """Stop after ``draft_id``."""
        self.review(draft_id, "finish")

    def retry(self, draft_id: str) -> None:
        """Run the failed turn reported as ``draft_id`` again."""
        self.review(draft_id, "retry")

    def result(self, *, timeout: float | None = None) -> CheckpointResult:
        """Wait until the work is done and return it."""
        state = wait_for(
            lambda: (s := self.state()).get("phase") == "done" and s,
            timeout=timeout,
            what="the checkpointed work to finish",
            agent=self.name,
        )
        texts = [d["text"] for d in state["drafts"] if d["text"] is not None]
        return CheckpointResult(
            drafts=state["drafts"],
            final_draft=texts[-1] if texts else None,
            finished_early=state["finished_early"],
            rejected_reviews=state["rejected_reviews"],
        )

    def stop(self) -> None:
        """Stop the agent and delete its state."""
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
