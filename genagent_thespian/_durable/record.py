"""``AgentRecord``: one durable agent's record in the store, seen from its own process.

What is saved, and when (the agent actor calls :meth:`AgentRecord.save` before any reply or
turn start leaves its handler, so a tell is acknowledged only once it is durable and a
prompt is recorded as in flight before the backend sees it):

* the start spec (once, at creation), options named like secrets redacted;
* a state snapshot: the backend session (secrets redacted, see :mod:`.redaction`), the
  implementation's ``snapshot_state()``, and the machine's ``snapshot()`` (halted flags,
  mailbox, self-chain slot, buffered notifications, the in-flight request, recently
  answered refs, counters);
* tell results, one row each, bounded by ``max_tell_results``;
* the agent's processes (agent, worker, CLI groups), so a later run can end leftovers.

A restart reads it back with :meth:`AgentRecord.begin`, which also moves the record to the
new incarnation: a zombie of the old incarnation can no longer write.

**One owner per session.** The owning incarnation holds a lease in the store (its epoch is
the incarnation, the fencing token every write names) and renews it every third of
:func:`lease_seconds`. A new incarnation first fences the old one (the epoch moves on, so
the old one's next write or renewal is refused), then waits out the old lease unless its
holder is provably dead (a process of this boot that is gone), so a holder cut off from the
store -- a partitioned host -- has stopped by itself (it could not renew) before the new
one runs a turn. Never two live owners.

A takeover, step by step (incarnation ``n`` on host A, ``n + 1`` starting on host B)::

    B: take_over(key) -> n + 1                one write: A's lease (epoch n, owner A, 5.2 s
                                              left) read, the epoch moved on (A's next save
                                              or renewal: StaleIncarnation), B's lease taken
    B: _wait_out: 5.2 s + lease / 6           (skipped if A's process is provably gone)
    A: (cut off) renewal fails for 2/3 lease  A stands down: no turn, no reply, exit
    B: renew_lease(epoch n + 1), resume       (renewed only if it waited) the snapshot,
                                              results and session files

The lease protects what the fence cannot: a turn A already started runs on the provider
until A notices, and two provider processes must never write one session's transcript.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .._core.errors import AgentNotFound, AgentStopped, InvalidOption
from .._core.log import get_logger
from .._core.machine import AgentMachine, MachineSnapshot, Origin
from .._core.types import ActorAddress, Session, UserTerm
from .._os import procfs
from ..messages import AgentSpec, Failure, PollResult
from . import pickling
from .location import open_store
from .redaction import dumps_redacted
from .store import AgentStore, Lease, StoredAgent, StoreError, agent_key, describe_process

__all__ = [
    "LEASE_ENV",
    "AgentRecord",
    "AgentSnapshot",
    "Restored",
    "answer_stored_callers",
    "delete_stored_agent",
    "lease_seconds",
]

#: Environment variable overriding the lease duration (seconds) of durable agents.
LEASE_ENV = "GENAGENT_LEASE_SECONDS"
#: Default lease duration: shorter than the default node-loss detection (5 s x 2), so a cut-off
#: owner has stopped by the time its agent is restarted elsewhere.
_DEFAULT_LEASE = 8.0


def lease_seconds() -> float:
    """How long a durable agent's lease lasts without renewal (``GENAGENT_LEASE_SECONDS``)."""
    try:
        value = float(os.environ.get(LEASE_ENV, _DEFAULT_LEASE))
    except ValueError:
        return _DEFAULT_LEASE
    return value if value > 0 else _DEFAULT_LEASE


def _own_identity() -> str:
    """This process as a lease owner: boot id, pid and start time (never reused together).

    Written into the lease so that a successor on the same host can tell a dead holder
    (whose lease it need not wait out) from a live one.
    """
    stat = procfs.process_stat(os.getpid())
    return f"{procfs.boot_id()}:{os.getpid()}:{stat.start_ticks if stat else 0}"


def _holder_is_gone(owner: str) -> bool:
    """Whether a lease holder is provably dead: a process of this boot that no longer runs."""
    boot, _, rest = owner.partition(":")
    pid, _, ticks = rest.partition(":")
    if boot != procfs.boot_id() or not pid.isdigit() or not ticks.isdigit():
        return False  # another host (or unknown): only the lease's expiry tells
    return not procfs.ProcessIdentity(int(pid), int(ticks), boot).is_running()


_log = get_logger("genagent_thespian.durable")


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """One durable agent's state blob: what :meth:`AgentRecord.save` writes at a boundary.

    One blob rather than separate rows: the machine's state, the implementation's state and
    the session must be restored as one consistent boundary, and ``bench/store_cost.py``
    measured the single write as cheap as an incremental one up to a hundred queued prompts.
    """

    session: Session  # the backend's own picklable session data (Backend.start_session)
    impl: dict[str, UserTerm]  # the implementation's snapshot_state(), user data
    machine: MachineSnapshot
    # The boot of the system that wrote it: a snapshot of another boot holds asks whose
    # callers went with that system (``AgentMachine.restore(callers_gone=...)``).
    run: str = ""

    @classmethod
    def load(cls, blob: bytes) -> AgentSnapshot:
        """Unpickle a state blob, including the plain ``dict`` of older stores."""
        state = pickling.loads(blob)
        if isinstance(state, cls):
            return state
        return cls(
            session=state["session"],
            impl=state["impl"],
            machine=MachineSnapshot.from_dict(state["machine"]),
            run=state.get("run", ""),
        )


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restarted agent resumes from."""

    session: Session  # the backend's session data, as in AgentSnapshot
    impl_state: dict[str, UserTerm]
    machine: MachineSnapshot
    results: list[PollResult]
    incarnation: int
    run: str = ""  # the system boot that wrote it ("" for records of older builds)


class AgentRecord:
    """Read and write one agent's durable record (see the module docstring)."""

    def __init__(self, store: AgentStore, spec: AgentSpec) -> None:
        """Bind a store to one agent's key and spec; :meth:`open` is the usual way in."""
        self._store = store
        self._spec = spec
        self.key = agent_key(spec.name)
        self.incarnation: int | None = None
        self._owner = _own_identity()
        self.run = ""  # the system boot this process belongs to (recorded with each save)
        self._resumed_from: AgentSnapshot | None = None  # what begin() read, until a save

    @classmethod
    def open(cls, path: str | None, spec: AgentSpec) -> AgentRecord:
        """Open the store at ``path`` (a SQLite file or a PostgreSQL URL) for ``spec``."""
        if not path:
            raise InvalidOption(
                "durable=True needs a store: start the system with store_path=...", agent=spec.name
            )
        return cls(open_store(path), spec)

    def begin(self, pid: int | None = None) -> Restored | None:
        """Create the record, or take over an existing one and return what to resume from.

        ``pid`` is the process that runs this incarnation (the agent's own): it is recorded
        with the takeover, so a later run can end it should it outlive its system. A
        restart or a wake-up is one write to the store (:meth:`AgentStore.take_over`).

        Returns ``None`` when there is nothing to resume (a new record, or one whose first
        snapshot was never written).
        """
        process = None if pid is None else describe_process(pid, "agent", None, self.key)
        try:
            taken = self._store.take_over(
                self.key, owner=self._owner, seconds=lease_seconds(), process=process
            )
        except AgentNotFound:
            self._store.create_agent(
                self.key, pickle.dumps(self._spec.name), dumps_redacted(self._spec)
            )
            self.incarnation = 0
            self.renew_lease()
            if pid is not None:
                self.record_process(pid, "agent")
            return None
        self.incarnation = taken.agent.incarnation
        if self._wait_out(taken.previous_lease):
            self.renew_lease()  # the lease taken with the record may have run out meanwhile
        return self._restored(taken.agent)

    def _wait_out(self, previous: Lease | None) -> bool:
        """Let a previous owner's lease run out unless that owner is provably dead.

        Returns whether it waited."""
        if previous is None or previous.expires_in <= 0 or _holder_is_gone(previous.owner):
            return False
        # A sixth of a lease on top: the holder stands down with a third of it left, and
        # the margin covers the time its stand-down takes.
        wait = min(previous.expires_in, lease_seconds()) + lease_seconds() / 6
        _log.warning(
            "agent %r: waiting %.1fs for the previous incarnation's lease to run out",
            self._spec.name,
            wait,
        )
        # Not polling: the old owner stops by itself when it cannot renew; this is its bound.
        time.sleep(wait)
        return True

    def renew_lease(self) -> None:
        """Take or extend this incarnation's lease.

        Raises:
            StaleIncarnation: a newer incarnation owns the agent (this one is fenced).
            StoreError: the store could not be reached.
        """
        assert self.incarnation is not None
        self._store.renew_lease(
            self.key, epoch=self.incarnation, owner=self._owner, seconds=lease_seconds()
        )

    def release_lease(self) -> None:
        """End this incarnation's lease now (a clean exit: a successor need not wait)."""
        if self.incarnation is None:
            return
        try:
            self._store.release_lease(self.key, epoch=self.incarnation)
        except StoreError:
            _log.warning("agent %r: could not release its lease", self._spec.name)

    def _restored(self, stored: StoredAgent) -> Restored | None:
        """Unpickle a stored record into what the agent restores; ``None`` before any snapshot."""
        if stored.state_blob is None:
            return None
        state = self._resumed_from = AgentSnapshot.load(stored.state_blob)
        results = [pickling.loads(r.blob) for r in stored.results]
        return Restored(
            session=state.session,
            impl_state=state.impl,
            machine=state.machine,
            results=results,
            incarnation=stored.incarnation,
            run=getattr(state, "run", ""),  # snapshots pickled before it had the field
        )

    def holds(
        self, machine: AgentMachine, stored_session: Session, impl_state: dict[str, UserTerm]
    ) -> bool:
        """Whether the store already holds this snapshot, with the session as it was stored.

        A resumed incarnation asks before its first save: an agent that went to sleep idle
        wakes into the very snapshot it wrote, and need not write it again. The session is
        compared as stored, before the backend's ``resume_session``: resuming is done again
        from the same stored session should this incarnation die before its next save.
        """
        if machine.new_results or self._resumed_from is None:
            return False
        state = AgentSnapshot(
            session=stored_session, impl=impl_state, machine=machine.snapshot(), run=self.run
        )
        try:  # by value: equal snapshots need not pickle to the same bytes
            return bool(state == self._resumed_from)
        except Exception:
            return False  # a user term that cannot be compared: save it

    def save(
        self, machine: AgentMachine, session: Session, impl_state: dict[str, UserTerm]
    ) -> None:
        """Persist new tell results and the state snapshot (one boundary).

        Raises:
            InvalidOption: the implementation's state or the session cannot be pickled.
            StoreError: the store refused (for example a newer incarnation owns it).
        """
        for result in machine.new_results:
            self._store.put_result(
                self.key,
                result.ref,
                pickle.dumps(result),
                max_results=max(1, self._spec.max_tell_results),
            )
        machine.new_results.clear()
        state = AgentSnapshot(
            session=session, impl=impl_state, machine=machine.snapshot(), run=self.run
        )
        try:
            blob = dumps_redacted(state)  # secrets stay out of the store
        except Exception as exc:
            raise InvalidOption(
                f"a durable agent's state must pickle: {type(exc).__name__}: {exc}; "
                "override snapshot_state() to leave live resources out",
                agent=self._spec.name,
            ) from None
        self._store.save_state(self.key, blob, incarnation=self.incarnation)
        self._resumed_from = None

    def save_session_files(self, files: Mapping[str, bytes]) -> None:
        """Store the provider's session files (a CLI transcript) for a restart elsewhere.

        Raises:
            StaleIncarnation: a newer incarnation owns the agent.
            StoreError: the store refused.
        """
        self._store.put_session_files(self.key, files, incarnation=self.incarnation)

    def session_files(self) -> dict[str, bytes]:
        """The provider's session files saved by earlier incarnations, by name."""
        return self._store.session_files(self.key)

    def record_process(self, pid: int, role: str, pgid: int | None = None) -> None:
        """Remember a process of this agent so a later run can end it if it survives.

        A failure to record is logged, not raised: the agent must run even when the store
        hiccups, and the process table is a safety net (the supervisor ends leftovers first).
        """
        try:
            self._store.record_process(pid, role=role, pgid=pgid, agent_key=self.key)
        except StoreError:
            _log.warning("agent %r: could not record its %s process", self._spec.name, role)

    def delete(self) -> None:
        """Remove the record and everything under it (``stop()``)."""
        self._store.delete_agent(self.key)

    def close(self) -> None:
        """Close this process's connection to the store."""
        self._store.close()


def answer_stored_callers(
    path: str, spec: AgentSpec, reason: str, send: Callable[[ActorAddress, object], None]
) -> int:
    """Answer the ask callers a dead durable agent's record still holds; return how many.

    Used by the supervisor when it gives up on an agent (or stops one that is between
    incarnations): its in-flight, self-chained and queued asks get ``AgentStopped``, so no
    caller waits for an agent that will not come back.
    """
    store = open_store(path)
    try:
        stored = store.load(agent_key(spec.name))
    finally:
        store.close()
    if stored is None or stored.state_blob is None:
        return 0
    snapshot = AgentSnapshot.load(stored.state_blob).machine
    requests = list(snapshot.mailbox)
    if snapshot.self_chain is not None:
        requests.append(snapshot.self_chain)
    if snapshot.in_flight is not None:
        requests.append(snapshot.in_flight[0])
    answered = 0
    for request in requests:
        if request.origin is Origin.ASK and request.reply_to is not None:
            error = AgentStopped(
                f"the agent ended for good ({reason}) before this request finished",
                agent=spec.name,
                ref=request.ref,
            )
            send(request.reply_to, Failure(error, request.ref))
            answered += 1
    return answered


def delete_stored_agent(path: str, spec: AgentSpec) -> None:
    """Remove a durable agent's record (the supervisor, for an agent with no process)."""
    store = open_store(path)
    try:
        store.delete_agent(agent_key(spec.name))
    finally:
        store.close()
