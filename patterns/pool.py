"""Pool: a fixed set of long-lived workers reused across tasks, round-robin dispatch.

Topology: ``size`` :class:`PoolWorker` agents ``<name>-<i>``, started once. ``submit``
sends task *k* to worker ``k mod size`` with ``tell`` and returns a :class:`Job`; each
worker's mailbox is the back-pressure. ``wait_for_all`` waits for every submitted job and
``results`` returns every outcome in submission order.

Corrected behaviour (gen_agent #239):

* **overload is surfaced**: a worker's mailbox is bounded (``max_queued_per_worker``) and
  a full one makes ``submit`` raise ``AgentOverloaded`` naming the worker, instead of
  crashing on an unexpected return;
* **failures are surfaced**: a failed task is a :class:`JobResult` with ``ok == False``
  and its error, never silently missing;
* the round-robin counter is taken under a lock, so concurrent ``submit`` calls never send
  two tasks to the same slot;
* waiting polls each outstanding job's ref (the result of one task), not every worker's
  whole growing state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentSystem, GenAgent, PollResult, Response

from ._common import wait_for

__all__ = ["Job", "JobResult", "Pool", "PoolWorker"]


class PoolWorker(GenAgent):
    """A reusable worker: every option goes to the backend; outcomes are read by poll."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option goes to the backend."""
        return dict(options)

    def handle_response(self, ref: str, response: Response) -> None:
        """Nothing to decide: the pool polls each task's ref."""
        return None


@dataclass(frozen=True, slots=True)
class Job:
    """One submitted task: its submission ``index``, the ``worker`` and the tell ``ref``."""

    index: int
    worker: str
    ref: str
    task: str


@dataclass(frozen=True, slots=True)
class JobResult:
    """The outcome of one job: ``text`` when ``ok``, else ``error``."""

    job: Job
    ok: bool
    text: str | None = None
    error: Exception | None = None


class Pool:
    """A round-robin pool of reusable workers.

    Example:
        >>> pool = Pool.start(3, backend="claude")                 # doctest: +SKIP
        >>> jobs = pool.submit_many(["task a", "task b", "task c"])
        >>> pool.wait_for_all(timeout=600)
        >>> [r.text for r in pool.results()]
        >>> pool.stop()
    """

    def __init__(self, workers: list[str], system: AgentSystem | None) -> None:
        """A handle on the pool's workers; jobs go round-robin and outcomes are cached once done."""
        self.workers = workers
        self._system = system
        self._lock = threading.Lock()
        self._next = 0
        self._jobs: list[Job] = []
        self._outcomes: dict[str, PollResult] = {}

    @classmethod
    def start(
        cls,
        size: int,
        *,
        backend: Any,
        name: str = "pool",
        max_queued_per_worker: int = 100,
        per_worker_options: Sequence[Mapping[str, Any]] | None = None,
        impl: type[GenAgent] = PoolWorker,
        system: AgentSystem | None = None,
        **options: Any,
    ) -> Pool:
        """Start ``size`` workers; ``options`` (and ``per_worker_options[i]``) go to backends."""
        if size < 1:
            raise g.InvalidOption(f"a pool needs at least one worker, got size={size}")
        pool = cls([], system)
        try:
            for index in range(size):
                worker = f"{name}-{index}"
                extra = dict(per_worker_options[index]) if per_worker_options else {}
                g.start_agent(
                    impl,
                    name=worker,
                    backend=backend,
                    max_queued=max_queued_per_worker,
                    max_tell_results=max(100, 2 * max_queued_per_worker + 2),
                    system=system,
                    **{**options, **extra},
                )
                pool.workers.append(worker)
        except BaseException:
            pool.stop()
            raise
        return pool

    def submit(self, task: str) -> Job:
        """Send ``task`` to the next worker in turn and return its :class:`Job`.

        Raises:
            AgentOverloaded: that worker's mailbox is full (the slot is used up anyway).
        """
        with self._lock:
            index = self._next
            self._next += 1
        worker = self.workers[index % len(self.workers)]
        ref = g.tell(worker, task, system=self._system)
        job = Job(index, worker, ref, task)
        with self._lock:
            self._jobs.append(job)
        return job

    def submit_many(self, tasks: Iterable[str]) -> list[Job]:
        """Submit each task in order; stops at (and raises) the first overload."""
        return [self.submit(task) for task in tasks]

    @property
    def jobs(self) -> list[Job]:
        """Every accepted job, in submission order."""
        with self._lock:
            return sorted(self._jobs, key=lambda job: job.index)

    def _refresh(self) -> bool:
        """Poll every unfinished job once; ``True`` when all jobs are done.

        Finished outcomes are cached, so a job that is done is never polled again (and an agent's
        bounded result cache cannot drop it from under the pool).
        """
        done = True
        for job in self.jobs:
            if job.ref in self._outcomes:
                continue
            result = g.poll(job.worker, job.ref, system=self._system)
            if result.done:
                self._outcomes[job.ref] = result
            else:
                done = False
        return done

    def wait_for_all(self, *, timeout: float | None = None) -> None:
        """Wait until every accepted job finished (either way).

        Raises:
            AskTimeout: some job was still pending after ``timeout`` seconds.
        """
        wait_for(self._refresh, timeout=timeout, what="every pool job", agent=self.workers)

    def results(self) -> list[JobResult]:
        """Outcomes of the finished jobs, in submission order (failures included)."""
        self._refresh()
        out = []
        for job in self.jobs:
            result = self._outcomes.get(job.ref)
            if result is None:
                continue
            if result.response is not None:
                out.append(JobResult(job, True, text=result.response.text))
            else:
                out.append(JobResult(job, False, error=result.error))
        return out

    def stop(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            try:
                g.stop(worker, system=self._system)
            except g.AgentNotFound:
                continue
