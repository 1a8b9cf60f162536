"""Supervisor: a coordinator that plans, fans out to one-shot workers, and synthesizes.

Topology: a :class:`CoordinatorAgent`; its planning turn lists sub-tasks, one per line. It
starts one :class:`WorkerAgent` per sub-task **from inside its callbacks**
(``self.start_agent``), gives each its task with ``self.tell`` and collects the outcomes
(``TellCompleted``) as they arrive. When every worker has answered, it synthesizes the
results in one more turn::

    planning -> collecting (workers run in parallel) -> synthesizing -> done
    no sub-tasks / every worker failed / a coordinator turn failed -> failed

Corrected behaviour (gen_agent #236):

* workers are **stopped** once they answered (or timed out), and every run uses fresh
  worker names, so a second run never collides with the first;
* the worker backend is a parameter (defaults to the coordinator's), never hard-coded;
* a worker that **dies** is noticed at once (``watch_agent`` -> ``AgentDown``) and one that
  hangs is given up after ``worker_timeout`` seconds (a ``send_after`` timer): both count
  as failures, so the coordinator never waits forever;
* the synthesis turn is recognised by its ref, so a user prompt queued at the coordinator
  is never mistaken for the synthesis; prompts outside the plan are recorded as
  ``other_turns``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import (
    AgentDown,
    AgentSystem,
    GenAgent,
    Halt,
    Prompt,
    Response,
    TellCompleted,
)
from genagent_thespian.messages import AgentStarted, Failure, Stopped

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["CoordinatorAgent", "Supervisor", "SupervisorResult", "WorkerAgent"]

_OWN_OPTIONS = frozenset(
    {
        "topic",
        "max_workers",
        "worker_backend",
        "worker_impl",
        "worker_options",
        "worker_timeout",
    }
)
_FINISHED = ("done", "failed")


def plan_prompt(topic: str, max_workers: int) -> str:
    """The planning prompt: at most ``max_workers`` sub-tasks, one per line."""
    return (
        f"Break this task into at most {max_workers} independent sub-tasks, one per line, "
        f"nothing else: {topic}"
    )


def synthesis_prompt(topic: str, results: list[tuple[str, str]]) -> str:
    """The synthesis prompt over every successful ``(task, result)``."""
    lines = "\n".join(f"- {task}: {text}" for task, text in results)
    return f"Combine these results into one answer about: {topic}\n\n{lines}"


class WorkerAgent(GenAgent):
    """A one-shot worker: runs the task it is told; the coordinator reads the outcome."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option goes to the backend."""
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        """Nothing to decide: the coordinator receives the response as ``TellCompleted``."""
        return None


@dataclass
class _Job:
    """One sub-task given to a worker: its place in the plan, its text, and the tell's ref."""

    index: int
    task: str
    ref: str | None = None


class CoordinatorAgent(SnapshotAgent):
    """Plans, fans out to workers, collects, synthesizes (see the module docstring)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``topic``, ``max_workers`` (3), ``worker_backend``, ``worker_impl``,
        ``worker_options`` (for every worker's backend), ``worker_timeout`` (600 s)."""
        self.topic = str(options.get("topic", ""))
        self.max_workers = int(options.get("max_workers", 3))
        self.worker_backend = options["worker_backend"]
        self.worker_impl = options.get("worker_impl") or WorkerAgent
        self.worker_options = dict(options.get("worker_options") or {})
        self.worker_timeout = float(options.get("worker_timeout", 600.0))
        self.phase = "planning"
        self.run = 0
        self.sub_tasks: list[str] = []
        self.pending: dict[str, _Job] = {}
        self.results: dict[int, tuple[str, str]] = {}
        self.failures: dict[int, tuple[str, str]] = {}
        self.workers: list[str] = []
        self.final_output: str | None = None
        self.error: str | None = None
        self.synthesis_ref: str | None = None
        self.deadline: str | None = None
        self.other_turns: list[str] = []
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Phase, sub-tasks, workers, results and failures (by sub-task index), output."""
        return {
            "phase": self.phase,
            "sub_tasks": self.sub_tasks,
            "workers": self.workers,
            "pending": sorted(self.pending),
            "results": [[i, t, r] for i, (t, r) in sorted(self.results.items())],
            "failures": [[i, t, e] for i, (t, e) in sorted(self.failures.items())],
            "final_output": self.final_output,
            "error": self.error,
            "other_turns": self.other_turns,
        }

    # ----------------------------------------------------------------- turns

    def handle_response(self, ref: str, response: Response) -> Halt | None:
        """The plan starts the workers; the synthesis ends the run; anything else is noted."""
        text = response.text.strip()
        if self.phase == "planning":
            return self._fan_out(text)
        if ref == self.synthesis_ref:
            self.final_output = text
            self.phase = "done"
            return Halt()
        self.other_turns.append(text)
        return None

    def handle_error(self, ref: str, error: Exception) -> Halt | None:
        """A failed plan or synthesis fails the run."""
        if self.phase == "planning" or ref == self.synthesis_ref:
            self.phase = "failed"
            self.error = str(error)
            return Halt()
        return None

    def _fan_out(self, plan: str) -> Halt | None:
        """Start one worker agent per planned sub-task, with a deadline for the whole round.

        Worker names carry the run number, so workers of an earlier run that are still stopping
        never collide with the new ones. An empty plan fails the run at once.
        """
        lines = [line.strip() for line in plan.splitlines()]
        self.sub_tasks = [line for line in lines if line][: self.max_workers]
        if not self.sub_tasks:
            self.phase = "failed"
            self.error = "no_sub_tasks"
            return Halt()
        self.run += 1
        self.phase = "collecting"
        for index, task in enumerate(self.sub_tasks):
            worker = f"{self.name}-r{self.run}-w{index}"
            self.pending[worker] = _Job(index, task)
            self.workers.append(worker)
            self.start_agent(
                self.worker_impl, name=worker, backend=self.worker_backend, **self.worker_options
            )
        self.deadline = self.send_after(self.worker_timeout, ("worker_deadline", self.run))
        return None

    # ----------------------------------------------------------------- fan-in

    def handle_info(self, message: Any) -> Prompt | Halt | None:
        """Worker lifecycle and outcomes: started, completed, down, start failed, deadline.

        Every pending worker leaves ``pending`` exactly once, by whichever comes first: its
        ``TellCompleted``, its ``AgentDown`` (watched as soon as it started), the
        ``Failure`` of its start, or the round's deadline. Later news of a worker already
        accounted for is ignored, so a worker that answers after the deadline cannot
        count twice. The deadline carries the run number: one left from an earlier run
        does nothing.
        """
        if isinstance(message, AgentStarted) and message.name in self.pending:
            job = self.pending[message.name]
            self.watch_agent(message.name)
            job.ref = self.tell(message.name, job.task)
            return None
        if isinstance(message, TellCompleted) and message.agent in self.pending:
            job = self.pending.pop(message.agent)
            if message.error is None and message.response is not None:
                self.results[job.index] = (job.task, message.response.text.strip())
            else:
                self.failures[job.index] = (job.task, str(message.error))
            self.stop_agent(message.agent)
            return self._collected()
        if isinstance(message, AgentDown) and message.name in self.pending:
            job = self.pending.pop(message.name)
            self.failures[job.index] = (job.task, f"the worker exited ({message.reason})")
            return self._collected()
        if isinstance(message, Failure) and message.error.agent in self.pending:
            job = self.pending.pop(message.error.agent)
            self.failures[job.index] = (job.task, f"the worker did not start: {message.error}")
            return self._collected()
        if message == ("worker_deadline", self.run) and self.pending:
            for worker, job in self.pending.items():
                self.failures[job.index] = (
                    job.task,
                    f"the worker did not answer within {self.worker_timeout}s",
                )
                self.stop_agent(worker)
            self.pending.clear()
            return self._collected()
        if isinstance(message, AgentDown | TellCompleted | Stopped | tuple):
            return None  # late news of a worker already accounted for
        return super().handle_info(message)

    def _collected(self) -> Prompt | Halt | None:
        """Once every worker has answered or failed, synthesise the results (fail if none did).

        The synthesis is a self-chained ``Prompt`` whose ref is remembered, so its answer is
        told apart from a user's prompt queued at the coordinator meanwhile.
        """
        if self.pending or self.phase != "collecting":
            return None
        if self.deadline is not None:
            self.cancel_timer(self.deadline)
            self.deadline = None
        if not self.results:
            self.phase = "failed"
            self.error = "all_workers_failed"
            return Halt()
        self.phase = "synthesizing"
        prompt = Prompt(synthesis_prompt(self.topic, [r for _, r in sorted(self.results.items())]))
        self.synthesis_ref = prompt.ref
        return prompt

    def terminate_agent(self, reason: str) -> None:
        """Stop workers still running, so none outlives its coordinator."""
        for worker in list(self.pending):
            self.stop_agent(worker)


@dataclass(frozen=True, slots=True)
class SupervisorResult:
    """How a run ended. ``results``/``failures`` map each sub-task to its text or error."""

    phase: str
    final_output: str | None
    sub_tasks: list[str]
    results: dict[str, str]
    failures: dict[str, str]
    error: str | None
    workers: list[str]

    @property
    def ok(self) -> bool:
        """Whether the run produced a synthesis."""
        return self.phase == "done"


class Supervisor:
    """Start a coordinated fan-out run, wait for its result, stop it.

    Example:
        >>> run = Supervisor.start("compare web frameworks", backend="claude")  # doctest: +SKIP
        >>> print(run.result(timeout=900).final_output)
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
        name: str = "supervisor",
        max_workers: int = 3,
        worker_backend: Any = None,
        worker_impl: type[GenAgent] | None = None,
        worker_options: Mapping[str, Any] | None = None,
        worker_timeout: float = 600.0,
        impl: type[CoordinatorAgent] = CoordinatorAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Supervisor:
        """Start the coordinator and its planning turn; ``options`` go to its backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                topic=topic,
                max_workers=max_workers,
                worker_backend=backend if worker_backend is None else worker_backend,
                worker_impl=worker_impl,
                worker_options=dict(worker_options or {}),
                worker_timeout=worker_timeout,
                system=system,
                **options,
            )
            g.tell(name, plan_prompt(topic, max_workers), system=system)
        except BaseException:
            states.close()
            raise
        return cls(name, states, system)

    def state(self) -> dict[str, Any]:
        """The coordinator's latest published state."""
        return self._states.read(self.name) or {}

    def result(self, *, timeout: float | None = None) -> SupervisorResult:
        """Wait until the run is done or failed and return its outcome."""
        state = wait_for(
            lambda: (s := self.state()).get("phase") in _FINISHED and s,
            timeout=timeout,
            what="the supervisor run to finish",
            agent=self.name,
        )
        return SupervisorResult(
            phase=state["phase"],
            final_output=state["final_output"],
            sub_tasks=list(state["sub_tasks"]),
            results={task: text for _, task, text in state["results"]},
            failures={task: error for _, task, error in state["failures"]},
            error=state["error"],
            workers=list(state["workers"]),
        )

    def stop(self) -> None:
        """Stop the coordinator (and any worker still running); delete the run's state."""
        try:
            for worker in self.state().get("pending", []):
                try:
                    g.stop(worker, system=self._system)
                except g.AgentNotFound:
                    continue
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
