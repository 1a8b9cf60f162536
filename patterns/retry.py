"""Retry: transient failures retried with back-off, without ever blocking the agent.

Topology: one :class:`RetryAgent` running jobs. A job's turn that fails with a transient
error (a retryable ``BackendError``, or a crashed turn) is retried after a back-off delay
on a ``send_after`` timer, so while it waits the agent still answers status, poll, notify,
interrupt and stop at once. ``BackendError.retry_after`` (a provider's "wait N seconds")
is honoured as the minimum delay. Delays are injectable (``delays=[...]`` or
``base_delay``/``factor``/``max_delay``), so tests and demos run fast.

The **caller of** :meth:`RetryRunner.run` (or :meth:`RetryRunner.result`) gets the final
outcome: the result of the attempt that succeeded, or every attempt's error.

Corrected behaviour (gen_agent #241):

* no ``sleep`` inside a callback (it froze status/poll/stop for the whole back-off);
* interrupts, watchdog timeouts, stops and non-retryable provider errors (authentication,
  invalid request) are **not** retried;
* a waiting retry can be cancelled (``cancel``), by job id.

Core gap: the core retries under the caller's ref only when ``handle_error`` returns a
``Prompt`` at once; a retry after a timer is a new turn, so a plain ``ask`` caller gets
the first error. With ``delays=[0, ...]`` (no back-off) this agent uses the core's same-ref
retry, so an ``ask``/``tell`` caller keeps waiting for the final outcome; with real delays,
use :class:`RetryRunner`, which reports the final outcome itself
(``tests/patterns/test_core_gaps_patterns.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, BackendError, Prompt, Response, TurnCrashed

from ._common import backend_options, wait_for
from ._state import PatternStates, SnapshotAgent

__all__ = ["RetryAgent", "RetryOutcome", "RetryRunner", "is_transient"]

_OWN_OPTIONS = frozenset({"max_attempts", "delays", "base_delay", "factor", "max_delay"})
_FINISHED = ("succeeded", "failed", "cancelled")


def is_transient(error: Exception) -> bool:
    """Whether a failed turn is worth retrying: a retryable provider error or a crash."""
    if isinstance(error, BackendError):
        return bool(error.retryable)
    return isinstance(error, TurnCrashed)


def retry_prompt(task: str) -> str:
    """The prompt of a retry attempt."""
    return f"The previous attempt failed. Retry the task: {task}"


class RetryAgent(SnapshotAgent):
    """Runs jobs and retries their transient failures on a back-off timer."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options: ``max_attempts`` (3), ``delays`` or ``base_delay`` (1 s) x ``factor`` (2)
        capped at ``max_delay`` (30 s); the rest go to the backend."""
        self.max_attempts = int(options.get("max_attempts", 3))
        delays = options.get("delays")
        self.delays: list[float] | None = None if delays is None else [float(d) for d in delays]
        self.base_delay = float(options.get("base_delay", 1.0))
        self.factor = float(options.get("factor", 2.0))
        self.max_delay = float(options.get("max_delay", 30.0))
        if self.max_attempts < 1 or min(self.delays or [0.0]) < 0 or self.base_delay < 0:
            raise g.InvalidOption("max_attempts must be >= 1 and delays >= 0")
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_ref: dict[str, str] = {}
        self.dispatched = ""  # the prompt of the running turn (turns are serial)
        self.timers: dict[str, tuple[str, str]] = {}  # job id -> (timer id, token)
        return backend_options(options, _OWN_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        """Every job: phase, attempts, errors, scheduled delays, result."""
        return {"jobs": self.jobs}

    def delay_for(self, attempt: int, error: Exception) -> float:
        """The pause before retry number ``attempt`` (1 = the first retry).

        A ``retry_after`` the provider sent wins when it is longer: retrying sooner than the
        provider asked would only fail again and use up an attempt.
        """
        if self.delays is not None:
            delay = self.delays[min(attempt, len(self.delays)) - 1] if self.delays else 0.0
        else:
            delay = min(self.max_delay, self.base_delay * self.factor ** (attempt - 1))
        retry_after = getattr(error, "retry_after", None)
        return max(delay, float(retry_after)) if retry_after else delay

    # ----------------------------------------------------------------- jobs

    def handle_event(self, event: Any) -> Prompt | None:
        """``("run", job_id, task)`` starts a job; ``("cancel", job_id)`` cancels its retry.

        A job waiting on its back-off timer is cancelled at once (the timer is dropped); a
        job whose attempt is running is marked ``cancelling`` and ends ``cancelled`` when
        that attempt ends, since a turn in flight is not cut short by this pattern.
        """
        if isinstance(event, tuple) and len(event) == 3 and event[0] == "run":
            _, job_id, task = event
            self.jobs[job_id] = {
                "task": task,
                "phase": "running",
                "attempts": 0,
                "errors": [],
                "delays": [],
                "result": None,
                "started_at": time.time(),
            }
            return self._attempt(job_id, str(task))
        if isinstance(event, tuple) and len(event) == 2 and event[0] == "cancel":
            job = self.jobs.get(event[1])
            if job is not None and job["phase"] in ("running", "waiting"):
                timer = self.timers.pop(event[1], None)
                if timer is not None:
                    self.cancel_timer(timer[0])
                job["phase"] = "cancelled" if job["phase"] == "waiting" else "cancelling"
        return None

    def pre_turn(self, prompt: str) -> str:
        """Remember the prompt being sent, so a same-ref retry can send it again."""
        self.dispatched = prompt
        return prompt

    def _attempt(self, job_id: str, text: str) -> Prompt:
        """Send one attempt at a job, mapping its prompt ref back to the job for the answer."""
        prompt = Prompt(text)
        self.by_ref[prompt.ref] = job_id
        self.jobs[job_id]["phase"] = "running"
        return prompt

    def handle_response(self, ref: str, response: Response) -> None:
        """The job succeeded."""
        job_id = self.by_ref.pop(ref, None)
        if job_id is None:
            return
        job = self.jobs[job_id]
        job["attempts"] += 1
        job["result"] = response.text.strip()
        job["phase"] = "succeeded"

    def handle_error(self, ref: str, error: Exception) -> Prompt | None:
        """Schedule a retry of a transient failure, or give up.

        The wait is a timer, not a sleep, so the agent keeps answering (status, cancel, other
        jobs) while a job waits. Each timer carries a fresh token, so the timer of a job that
        was cancelled and started again cannot fire the new attempt early.
        """
        job_id = self.by_ref.pop(ref, None)
        if job_id is None:
            return self._same_ref_retry(ref, error)
        job = self.jobs[job_id]
        job["attempts"] += 1
        job["errors"].append(f"{type(error).__name__}: {error}")
        if job["phase"] == "cancelling":
            job["phase"] = "cancelled"
        elif not is_transient(error) or job["attempts"] >= self.max_attempts:
            job["phase"] = "failed"
        else:
            delay = self.delay_for(job["attempts"], error)
            job["delays"].append(delay)
            job["phase"] = "waiting"
            token = uuid.uuid4().hex
            timer = self.send_after(delay, ("retry_due", job_id, token))
            self.timers[job_id] = (timer, token)
        return None

    def _same_ref_retry(self, ref: str, error: Exception) -> Prompt | None:
        """An ask/tell outside a job: retry at once under its ref when no delay is due.

        Returning ``Prompt`` from ``handle_error`` retries an ask or tell under the caller's
        own ref, so the caller waits for the final outcome. This pattern does so only when no
        back-off is due; a job (``("run", ...)``) is the way to get retries on a timer.
        """
        attempts = self.jobs.setdefault(ref, {"phase": "direct", "attempts": 0, "errors": []})
        attempts["attempts"] += 1
        attempts["errors"].append(f"{type(error).__name__}: {error}")
        if (
            is_transient(error)
            and attempts["attempts"] < self.max_attempts
            and self.delay_for(attempts["attempts"], error) == 0
        ):
            return Prompt(self.dispatched)
        return None

    def handle_info(self, message: Any) -> Any:
        """A back-off timer ran out: retry the job (unless cancelled since)."""
        if isinstance(message, tuple) and len(message) == 3 and message[0] == "retry_due":
            _, job_id, token = message
            timer = self.timers.get(job_id)
            job = self.jobs.get(job_id)
            if timer is None or timer[1] != token or job is None or job["phase"] != "waiting":
                return None
            del self.timers[job_id]
            return self._attempt(job_id, retry_prompt(str(job["task"])))
        return super().handle_info(message)


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    """The final outcome of a job: ``phase`` succeeded, failed or cancelled."""

    job_id: str
    phase: str
    result: str | None
    attempts: int
    errors: list[str]
    delays: list[float]

    @property
    def ok(self) -> bool:
        """Whether an attempt succeeded."""
        return self.phase == "succeeded"


class RetryRunner:
    """Run tasks with retries and back-off; the caller gets each job's final outcome.

    Example:
        >>> runner = RetryRunner.start(backend="anthropic", max_attempts=4)  # doctest: +SKIP
        >>> outcome = runner.run("Summarize RFC 9110 in one line", timeout=300)
        >>> outcome.result if outcome.ok else outcome.errors
    """

    def __init__(self, name: Any, states: PatternStates, system: AgentSystem | None) -> None:
        self.name = name
        self._states = states
        self._system = system

    @classmethod
    def start(
        cls,
        name: Any = "retry",
        *,
        backend: Any,
        max_attempts: int = 3,
        delays: Sequence[float] | None = None,
        base_delay: float = 1.0,
        factor: float = 2.0,
        max_delay: float = 30.0,
        impl: type[RetryAgent] = RetryAgent,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> RetryRunner:
        """Start the agent; ``options`` go to the backend."""
        states = PatternStates(system)
        try:
            g.start_agent(
                impl,
                name=name,
                backend=backend,
                max_attempts=max_attempts,
                delays=None if delays is None else list(delays),
                base_delay=base_delay,
                factor=factor,
                max_delay=max_delay,
                system=system,
                **options,
            )
        except BaseException:
            states.close()
            raise
        return cls(name, states, system)

    def submit(self, task: str) -> str:
        """Start ``task`` as a job and return its id."""
        if not isinstance(task, str) or not task:
            raise g.InvalidPrompt("a task must be a non-empty str", agent=self.name)
        job_id = uuid.uuid4().hex
        g.notify(self.name, ("run", job_id, task), system=self._system)
        return job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's latest published state, or ``None`` before it is known."""
        return ((self._states.read(self.name) or {}).get("jobs") or {}).get(job_id)

    def result(self, job_id: str, *, timeout: float | None = None) -> RetryOutcome:
        """Wait for the job's final outcome."""
        job = wait_for(
            lambda: (j := self.job(job_id)) is not None and j["phase"] in _FINISHED and j,
            timeout=timeout,
            what=f"job {job_id} to finish",
            agent=self.name,
        )
        return RetryOutcome(
            job_id, job["phase"], job["result"], job["attempts"], job["errors"], job["delays"]
        )

    def run(self, task: str, *, timeout: float | None = None) -> RetryOutcome:
        """Submit ``task`` and wait for its final outcome."""
        return self.result(self.submit(task), timeout=timeout)

    def cancel(self, job_id: str) -> None:
        """Cancel the job's pending retry (a running attempt finishes, then no retry)."""
        g.notify(self.name, ("cancel", job_id), system=self._system)

    def stop(self) -> None:
        """Stop the agent (pending retry timers end with it) and delete its state."""
        try:
            g.stop(self.name, system=self._system)
        finally:
            self._states.close()
