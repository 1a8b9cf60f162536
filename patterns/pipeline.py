"""Pipeline: a fixed chain of distinct single-turn stage agents, one-way notify.

Topology: stages ``<name>-<i>-<stage>``; each takes its input as an event, runs one turn,
hands its output to the next stage and halts. The last stage's output is the result.

Corrected behaviour: a failure **propagates and names its stage**. A failing stage tells
every later stage (``upstream_failed`` with the stage name and error); a stage whose
upstream exits before handing over its output (stopped, crashed) learns it from
``AgentDown`` and fails the same way; the caller gets a :class:`PipelineResult` with
``failed_stage`` and ``error`` instead of waiting forever. Later stages are never prompted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentDown, AgentSystem, Halt, Prompt, Response

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["Pipeline", "PipelineResult", "StageAgent", "stage_prompt"]

_OWN_OPTIONS = frozenset(
    {"stage", "next_stage", "upstream", "upstream_stage", "role", "instruction"}
)
_FINISHED = ("done", "failed", "upstream_failed")


def stage_prompt(role: str | None, instruction: str | None, text: str) -> str:
    """The prompt a stage sends: its role and instruction (when given), then its input."""
    head = " ".join(
        part for part in (f"You are {role}." if role else "", instruction or "") if part
    )
    return f"{head}\n\n{text}" if head else text


class StageAgent(SnapshotAgent):
    """One stage: one input, one turn, hand over, halt."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``stage``, ``next_stage``, ``upstream`` (names), ``role``, ``instruction``."""
        self.stage = str(options.get("stage", ""))
        self.next_stage = options.get("next_stage")
        self.upstream = options.get("upstream")
        self.upstream_stage = str(options.get("upstream_stage", self.upstream))
        self.role = options.get("role")
        self.instruction = options.get("instruction")
        self.phase = "waiting"
        self.input: str | None = None
        self.output: str | None = None
        self.failed_stage: str | None = None
        self.error: str | None = None
        return backend_options(options, _OWN_OPTIONS)

    def pre_run(self) -> None:
        """Watch the upstream stage, so its exit before handing over is noticed."""
        if self.upstream is not None:
            self.watch_agent(self.upstream)

    def snapshot(self) -> dict[str, Any]:
        """Phase, input, output and failure."""
        return {
            "stage": self.stage,
            "phase": self.phase,
            "input": self.input,
            "output": self.output,
            "failed_stage": self.failed_stage,
            "error": self.error,
        }

    def handle_event(self, event: Any) -> Prompt | Halt | None:
        """``("pipeline_input", text)`` runs the turn; ``("pipeline_failed", ...)`` propagates."""
        if not isinstance(event, tuple) or not event or self.phase != "waiting":
            return None
        if event[0] == "pipeline_input" and len(event) == 2:
            self.input = str(event[1])
            self.phase = "running"
            return Prompt(stage_prompt(self.role, self.instruction, self.input))
        if event[0] == "pipeline_failed" and len(event) == 3:
            return self._upstream_failed(str(event[1]), str(event[2]))
        return None

    def handle_info(self, message: Any) -> Prompt | Halt | None:
        """An upstream stage that exits before handing over fails the pipeline."""
        if isinstance(message, AgentDown) and message.name == self.upstream:
            if self.phase == "waiting":
                return self._upstream_failed(
                    self.upstream_stage, f"the stage exited before its output ({message.reason})"
                )
            return None
        return super().handle_info(message)

    def _upstream_failed(self, stage: str, error: str) -> Halt:
        """Halt this stage and pass the failure on, so every stage after it halts too.

        Without passing it on, later stages would wait forever for input that will never come.
        """
        self.phase = "upstream_failed"
        self.failed_stage = stage
        self.error = error
        if self.next_stage is not None:
            self.notify(self.next_stage, ("pipeline_failed", stage, error))
        return Halt()

    def handle_response(self, ref: str, response: Response) -> Halt:
        """Hand the output on (or keep it, as the last stage) and halt."""
        self.output = response.text.strip()
        self.phase = "done"
        if self.next_stage is not None:
            self.notify(self.next_stage, ("pipeline_input", self.output))
        return Halt()

    def handle_error(self, ref: str, error: Exception) -> Halt:
        """Fail this stage and every later one."""
        self.phase = "failed"
        self.failed_stage = self.stage
        self.error = str(error)
        if self.next_stage is not None:
            self.notify(self.next_stage, ("pipeline_failed", self.stage, self.error))
        return Halt()


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The outcome: ``output`` of the last stage, or the ``failed_stage`` and its ``error``."""

    output: str | None
    failed_stage: str | None
    error: str | None
    stages: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        """Whether every stage succeeded."""
        return self.failed_stage is None


class Pipeline:
    """Run an input through a chain of stages.

    Each stage config is a mapping with ``name`` and optionally ``role``, ``instruction``
    and backend options (``script``, ``model``...).

    Example:
        >>> run = Pipeline.run("raw notes", [{"name": "outline"}, {"name": "draft"}],
        ...                    backend="claude")                    # doctest: +SKIP
        >>> run.result(timeout=600).output
    """

    def __init__(self, names: list[Any], states: PatternStates, system: AgentSystem | None) -> None:
        self.names = names
        self._states = states
        self._system = system

    @classmethod
    def run(
        cls,
        text: str,
        stages: Sequence[Mapping[str, Any]],
        *,
        backend: Any,
        name: str = "pipe",
        impl: type[StageAgent] = StageAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Pipeline:
        """Start every stage, then feed ``text`` to the first one."""
        if not stages:
            raise g.InvalidOption("a pipeline needs at least one stage")
        configs = [dict(stage) for stage in stages]
        names = [f"{name}-{i}-{config.get('name', i)}" for i, config in enumerate(configs)]

        states = PatternStates(system)
        pipeline = cls([], states, system)
        try:
            for i, stage in enumerate(stages):
                config = dict(stage)
                stage_name = str(config.pop("name", i))
                g.start_agent(
                    impl,
                    name=names[i],
                    backend=config.pop("backend", backend),
                    stage=stage_name,
                    next_stage=names[i + 1] if i + 1 < len(names) else None,
                    upstream=names[i - 1] if i > 0 else None,
                    upstream_stage=str(configs[i - 1].get("name", i - 1)) if i > 0 else None,
                    system=system,
                    **{**options, **config},
                )
                pipeline.names.append(names[i])
            g.notify(names[0], ("pipeline_input", text), system=system)
        except BaseException:
            pipeline.stop()
            raise
        return pipeline

    def stages(self) -> list[dict[str, Any]]:
        """Every stage's latest state, in order."""
        return [self._states.read(n) or {} for n in self.names]

    def result(self, *, timeout: float | None = None) -> PipelineResult:
        """Wait until the last stage finished either way and return the outcome."""
        wait_for(
            lambda: (self._states.read(self.names[-1]) or {}).get("phase") in _FINISHED,
            timeout=timeout,
            what="the pipeline's last stage",
            agent=self.names[-1],
        )
        stages = self.stages()
        last = stages[-1]
        return PipelineResult(
            output=last["output"] if last["phase"] == "done" else None,
            failed_stage=last["failed_stage"],
            error=last["error"],
            stages=stages,
        )

    def stop(self) -> None:
        """Stop every stage still running and delete the run's state."""
        try:
            for stage in reversed(self.names):
                try:
                    g.stop(stage, system=self._system)
                except g.AgentNotFound:
                    continue
        finally:
            self._states.close()
