"""Acceptance tests of the Pool pattern (reference §5.6), scripted, multiprocTCPBase."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from genagent_thespian.patterns.pool import Pool
from support_patterns import echo_task, fail_task_4

import genagent_thespian as g
from genagent_thespian.testing import Gate, open_gate

pytestmark = pytest.mark.usefixtures("any_agent_system")


def test_round_robin_and_results_in_submission_order() -> None:
    pool = Pool.start(3, backend="scripted", default=echo_task)
    jobs = pool.submit_many([f"task {i}" for i in range(9)])
    assert [job.worker for job in jobs] == [f"pool-{i % 3}" for i in range(9)]
    pool.wait_for_all(timeout=30)
    results = pool.results()
    assert [r.text for r in results] == [f"R[task {i}]" for i in range(9)]
    for w in range(3):
        assert g.backend_session(f"pool-{w}").history == tuple(f"task {i}" for i in range(w, 9, 3))
    pool.stop()


def test_failed_tasks_are_reported_not_missing() -> None:
    pool = Pool.start(2, backend="scripted", default=fail_task_4)
    pool.submit_many([f"task {i}" for i in range(6)])
    pool.wait_for_all(timeout=30)
    results = pool.results()
    assert len(results) == 6
    [failed] = [r for r in results if not r.ok]
    assert failed.job.index == 4 and "task 4 broke" in str(failed.error)
    pool.stop()


def test_overload_is_surfaced(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    pool = Pool.start(
        1, backend="scripted", max_queued_per_worker=1, script=[Gate(str(gate), "a"), "b"]
    )
    pool.submit("first")  # runs, held by the gate
    pool.submit("second")  # queued
    with pytest.raises(g.AgentOverloaded) as raised:
        pool.submit("third")
    assert raised.value.agent == "pool-0"
    open_gate(gate)
    pool.wait_for_all(timeout=30)
    assert [r.text for r in pool.results()] == ["a", "b"]
    pool.stop()


def test_concurrent_submits_take_distinct_slots() -> None:
    pool = Pool.start(3, backend="scripted", default=echo_task)
    threads = [
        threading.Thread(target=lambda k=k: [pool.submit(f"t{k}-{i}") for i in range(4)])
        for k in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(job.index for job in pool.jobs) == list(range(12))
    assert [sum(job.worker == f"pool-{w}" for job in pool.jobs) for w in range(3)] == [4, 4, 4]
    pool.wait_for_all(timeout=30)
    assert all(r.ok for r in pool.results())
    pool.stop()


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(g.InvalidOption):
        Pool.start(0, backend="scripted")
    with pytest.raises(g.InvalidOption):
        Pool.start(1, backend="no-such-backend")
