"""``AgentRecord`` seen from an agent's process: what a start, a restart and a wake-up write.

A wake-up of an idle hibernated agent is on its caller's critical path, and each write to
the store is a sync of the file: the takeover is one write, and the snapshot the agent
woke from is not written back unchanged.
"""

from __future__ import annotations

import os

import pytest
from support_agents import Recorder

from genagent_thespian._core.machine import AgentMachine
from genagent_thespian._durable.record import AgentRecord
from genagent_thespian._durable.store import MemoryAgentStore, ProcessRecord, TakeOver
from genagent_thespian.messages import AgentSpec

SPEC = AgentSpec(name="keeper", impl=Recorder, backend="scripted", durable=True)


class CountingStore(MemoryAgentStore):
    """The memory store, counting the writes a record makes (a seam of ours)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def take_over(
        self, key: str, *, owner: str, seconds: float, process: ProcessRecord | None = None
    ) -> TakeOver:
        self.writes.append("take_over")
        return super().take_over(key, owner=owner, seconds=seconds, process=process)

    def save_state(self, key: str, blob: bytes, *, incarnation: int | None = None) -> None:
        self.writes.append("save_state")
        super().save_state(key, blob, incarnation=incarnation)


def _machine() -> AgentMachine:
    machine = AgentMachine(name="keeper", impl=Recorder())
    machine.impl.init_agent({})
    return machine


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def test_a_restart_is_one_write_that_records_the_agents_process(store: CountingStore) -> None:
    first = AgentRecord(store, SPEC)
    assert first.begin(os.getpid()) is None  # a new record: nothing to resume
    first.save(_machine(), {"turns": 1}, {})
    first.release_lease()  # as an agent going to sleep does
    store.writes.clear()

    again = AgentRecord(store, SPEC)
    restored = again.begin(os.getpid())

    assert store.writes == ["take_over"]
    assert restored is not None and restored.session == {"turns": 1}
    assert again.incarnation == 1
    lease = store.lease(again.key)
    assert lease is not None and lease.epoch == 1 and lease.expires_in > 0
    assert {(r.pid, r.role, r.agent_key) for r in store.recorded_processes()} == {
        (os.getpid(), "agent", again.key)
    }


def test_the_snapshot_a_wake_up_resumes_is_not_written_back(store: CountingStore) -> None:
    machine = _machine()
    first = AgentRecord(store, SPEC)
    first.begin(os.getpid())
    first.save(machine, {"turns": 1}, {})
    first.release_lease()

    woken = AgentRecord(store, SPEC)
    restored = woken.begin(os.getpid())
    assert restored is not None
    resumed = _machine()
    resumed.restore(restored.machine, restored.results, callers_gone=False)

    # The session as stored, not as the backend resumed it: resuming is repeatable.
    assert woken.holds(resumed, restored.session, {})
    assert not woken.holds(resumed, {"turns": 2}, {}), "a changed session must be saved"
    assert not woken.holds(resumed, restored.session, {"notes": 1}), "so must the user's state"
    resumed.ask("r1", "hello", "caller")  # a request arrived: the snapshot is another one
    assert not woken.holds(resumed, restored.session, {})
