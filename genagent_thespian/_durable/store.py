"""The durable agent store: what a durable agent needs to come back after its process dies.

The runtime hands the store opaque ``bytes`` (already pickled) and gets exactly those bytes
back; the store never unpickles anything. Per agent it keeps:

* the **start spec** (written once, by :meth:`AgentStore.create_agent`);
* the **state snapshot**: the agent machine's whole state (its mailbox, the in-flight
  request, halted flag, self-chain slot, buffered notifications), the backend session and
  the implementation's state, as one blob, rewritten by :meth:`AgentStore.save_state` before
  any reply or turn start leaves the agent (so an acknowledged tell is in it);
* the **tell results**, one row each (:meth:`AgentStore.put_result`), the newest
  ``max_results`` by insertion order;
* an **incarnation** counter, bumped at each restart (a restarted agent can fence off
  writes from an older incarnation);
* a **lease**: which incarnation (its epoch, the fencing token) owns the agent, which
  process holds it, and until when. The owner renews it; an incarnation that cannot renew
  in time stops by itself, and a new one waits out the old lease unless its holder is
  provably dead (see ``_durable/record.py``).

It also keeps **process records** (pid, process group, role, start time and boot id) so that
at system start the processes of a previous run that are still alive can be ended
(:func:`end_recorded_processes`) without ever signalling a later process that reused a pid.

Keys: agent names are arbitrary picklable terms, but pickles are not canonical (a
``frozenset`` pickles in hash order, which changes between processes). :func:`agent_key`
therefore encodes common name types (``str``, ``int``, ``float``, ``bool``, ``None``,
``bytes``, and tuples and frozensets of them) canonically and falls back to pickle only for
other types, then takes the SHA-256 of that. The pickled name is stored alongside, so
:meth:`AgentStore.list_agents` can give the names back at system start.

Every blob is stored with its CRC-32, so a damaged record is reported as
:class:`StoreCorrupted` naming the agent key and the part, instead of handing the runtime
bytes that fail somewhere else later.

Why the mailbox is in the snapshot and not a row per request: one write per boundary is a
single path with nothing to reconcile after a crash, and ``bench/store_cost.py`` measures
what it costs against one row insert in the same file (what a per-request mailbox would pay
per tell), by mailbox depth. When it was chosen, with ``synchronous=FULL`` the ``fsync``
dominated both (0.8-1.05x a row insert up to 100 queued prompts, 4.7x near the default
bound of 1000); rerun it before changing the design (``bench/results/store_cost.json`` has
the last run). The ``mailbox`` table and the ``in_flight`` columns of schema version 1 are
from the per-request design and stay empty; they remain so every existing file opens.

:class:`SQLiteAgentStore` is the default implementation; :class:`MemoryAgentStore` keeps the
same contract in memory (not durable; a baseline and a reference for other stores).
"""

from __future__ import annotations

import abc
import hashlib
import os
import pickle
import signal
import sqlite3
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Self

from .._core.errors import AgentAlreadyExists, AgentNotFound, GenAgentError, InvalidOption
from .._core.types import AgentName, DbRow, UserTerm
from .._os import processes as _processes
from .._os import procfs as _procfs
from .._os.private import narrow, private_file
from .writers import WriterQueue, WriterQueueTimeout

__all__ = [
    "SCHEMA_VERSION",
    "AgentStore",
    "Leadership",
    "Lease",
    "MemoryAgentStore",
    "ProcessRecord",
    "SQLiteAgentStore",
    "StaleIncarnation",
    "StoreCorrupted",
    "StoreError",
    "StoreSchemaMismatch",
    "StoredAgent",
    "StoredAgentEntry",
    "StoredRequest",
    "TakeOver",
    "agent_key",
    "describe_process",
    "end_recorded_processes",
]

#: Version of the SQLite schema, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a genagent-thespian store ("GAgT").
APPLICATION_ID = 0x47416754


# --- errors ---------------------------------------------------------------------------------


class StoreError(GenAgentError):
    """The agent store failed: closed, locked for too long, or an operation was refused."""

    reason_kind = "store_error"


class StoreCorrupted(StoreError):
    """The store file, or one agent's record in it, is damaged and cannot be read."""

    reason_kind = "store_corrupted"


class StoreSchemaMismatch(StoreError):
    """The file is not a genagent-thespian store, or was written by another schema version."""

    reason_kind = "store_schema_mismatch"


class StaleIncarnation(StoreError):
    """A write named an incarnation that is no longer the agent's current one."""

    reason_kind = "stale_incarnation"


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """One request as the runtime stored it: its ref and its pickled blob."""

    ref: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class StoredAgent:
    """Everything the store holds about one agent, as read in one consistent snapshot.

    Attributes:
        key: The agent's store key (see :func:`agent_key`).
        name_blob: The pickled agent name.
        spec_blob: The start spec.
        state_blob: The latest state snapshot, or ``None`` before the first one.
        results: Tell results, oldest first (at most the last ``max_results``).
        incarnation: ``0`` for the first start, incremented by each restart.
    """

    key: str
    name_blob: bytes
    spec_blob: bytes
    state_blob: bytes | None
    results: tuple[StoredRequest, ...]
    incarnation: int


@dataclass(frozen=True, slots=True)
class Lease:
    """Who owns a durable agent: the incarnation (epoch), its process, and for how long.

    Attributes:
        epoch: The owning incarnation (the fencing token every write names).
        owner: The holder's process identity, ``"<boot id>:<pid>:<start ticks>"``.
        expires_in: Seconds until the lease expires, by the store's clock (``<= 0``: expired).
    """

    epoch: int
    owner: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class TakeOver:
    """What :meth:`AgentStore.take_over` found and did.

    Attributes:
        agent: The record, read in the step that began the new incarnation
            (``agent.incarnation`` is the new one).
        previous_lease: The lease as it stood before (``None``: never taken), so the new
            incarnation knows how long the old owner may still be running a turn.
    """

    agent: StoredAgent
    previous_lease: Lease | None


@dataclass(frozen=True, slots=True)
class Leadership:
    """Who leads a convention: the leader's epoch (fencing token), holder and lease.

    Attributes:
        epoch: Moves on each time another holder (or the same one after an expiry) takes
            the lead, so a deposed leader's epoch is always older than the current one.
        holder: The leading node's identity (``"<address>:<admin port>/<system id>"``).
        expires_in: Seconds until the lease expires, by the store's clock (``<= 0``: expired).
        acquired: Whether the claim that returned this made (or kept) the caller the leader.
    """

    epoch: int
    holder: str
    expires_in: float
    acquired: bool = False


@dataclass(frozen=True, slots=True)
class StoredAgentEntry:
    """One line of :meth:`AgentStore.list_agents` (not the registry's ``messages.AgentEntry``)."""

    key: str
    name_blob: bytes
    incarnation: int


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """An OS process the runtime started, as recorded in the store.

    Attributes:
        pid: The process id.
        start_ticks: Its start time in clock ticks since boot (``/proc/<pid>/stat``).
        boot: The kernel boot id when it was recorded.
        pgid: Its process group, when known.
        role: What it is: ``"agent"``, ``"worker"``, ``"cli"``, ...
        agent_key: The agent it belongs to, when there is one.
        recorded_at: Wall-clock time of the record.
    """

    pid: int
    start_ticks: int
    boot: str
    pgid: int | None
    role: str
    agent_key: str | None = None
    recorded_at: float = field(default_factory=time.time)

    @property
    def identity(self) -> _procfs.ProcessIdentity:
        """The (pid, start time, boot) triple that no later process can share."""
        return _procfs.ProcessIdentity(self.pid, self.start_ticks, self.boot)

    def is_running(self) -> bool:
        """Whether this very process is still alive (a reused pid does not count)."""
        return self.identity.is_running()


# --- keys and checks ------------------------------------------------------------------------


def _encode_name(
    value: UserTerm, out: bytearray
) -> None:  # a name or part: dispatched by exact type
    """Append the canonical encoding of ``value`` to ``out`` (see :func:`agent_key`).

    Each value is tagged with its type and delimited (a length prefix or a terminator), so no two
    different names encode to the same bytes; frozenset members are sorted by their encoding, since
    iteration order is not stable across processes.
    """
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int:
        out += b"i%d;" % value
    elif kind is float:
        out += b"f" + value.hex().encode("ascii") + b";"
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out += b"s%d:" % len(data) + data
    elif kind is bytes:
        out += b"b%d:" % len(value) + value
    elif kind is tuple:
        out += b"("
        for item in value:
            _encode_name(item, out)
        out += b")"
    elif kind is frozenset:
        parts = []
        for item in value:
            part = bytearray()
            _encode_name(item, part)
            parts.append(bytes(part))
        out += b"{" + b"".join(b"%d:" % len(p) + p for p in sorted(parts)) + b"}"
    else:
        try:
            data = pickle.dumps(value, protocol=4)
        except Exception as exc:
            raise InvalidOption(
                f"agent name of type {kind.__qualname__} cannot be pickled: {exc}"
            ) from exc
        out += b"p%d:" % len(data) + data


def agent_key(name: AgentName) -> str:
    """Return the stable store key of an agent name: a SHA-256 hex digest.

    ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes`` and tuples and frozensets of
    them are encoded canonically, so the key is the same in every process and Python run.
    Other types are pickled (protocol 4); they must pickle the same way each time (enums and
    dataclasses of the above do). Types are part of the key: ``1``, ``1.0`` and ``True`` are
    three different keys although they compare equal.

    Raises:
        InvalidOption: The name cannot be pickled.

    Example:
        >>> agent_key(("team", 3)) == agent_key(("team", 3))
        True
        >>> len(agent_key("coder"))
        64
    """
    out = bytearray(b"genagent-name-v1:")
    _encode_name(name, out)
    return hashlib.sha256(out).hexdigest()


def _crc(blob: bytes) -> int:
    """The checksum stored beside every blob, so damage is named instead of unpickled."""
    return zlib.crc32(blob)


def _as_blob(value: object, what: str) -> bytes:
    """Accept only pickled bytes: the store never pickles, so a live object here is a bug.

    ``bytearray`` and ``memoryview`` are copied to ``bytes`` so the stored value cannot change
    under the store after the call.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidOption(f"{what} must be bytes (already pickled), not {type(value).__name__}")


def _check_key(key: object) -> str:
    """Refuse a key that is not one :func:`agent_key` could have made, before any SQL runs."""
    if not isinstance(key, str) or not key:
        raise InvalidOption(f"invalid agent key {key!r}: expected a non-empty str")
    return key


def _check_ref(ref: object) -> str:
    """Refuse an empty or non-string ref: it is half of the results primary key."""
    if not isinstance(ref, str) or not ref:
        raise InvalidOption(f"invalid request ref {ref!r}: expected a non-empty str")
    return ref


def _check_max_results(max_results: object) -> int:
    """Refuse a bound that would make the eviction query keep everything or nothing by accident.

    ``bool`` is an ``int`` to Python, but ``max_results=True`` is always a caller's mistake.
    """
    if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 0:
        raise InvalidOption(f"invalid max_results {max_results!r}: expected an int >= 0")
    return max_results


def _check_file_name(name: object) -> str:
    """A session file's name: a relative path without ``..`` (it is joined to a folder).

    The name comes back from the store on another host and is joined to the provider's
    session folder there: an absolute path or a ``..`` would let a damaged or hostile
    record write anywhere the agent's user can.
    """
    if (
        not isinstance(name, str)
        or not name
        or name.startswith("/")
        or ".." in name.split("/")
        or "\x00" in name
    ):
        raise InvalidOption(f"invalid session file name {name!r}: expected a relative path")
    return name


def _check_epoch(key: str, row: DbRow | None, epoch: int) -> None:
    """Refuse a lease write for an unknown agent or an incarnation that is not current."""
    if row is None:
        raise AgentNotFound(f"no stored agent with key {_short(key)}")
    if int(row[0]) != epoch:
        raise StaleIncarnation(
            f"agent key {_short(key)} is at incarnation {row[0]}, the lease was for {epoch}"
        )


def _leadership_claim(row: DbRow | None, holder: str, now: float) -> int | None:
    """The epoch a leadership claim gets from the current ``(epoch, holder, expires)`` row.

    ``None``: another holder's lease is still running, the claim fails.
    """
    if row is None:
        return 1
    epoch, current, expires = int(row[0]), row[1], float(row[2])
    if expires > now:
        return epoch if current == holder else None
    return epoch + 1  # expired: whoever claims first leads, under a new epoch


def _short(key: str) -> str:
    """Enough of a key to name the agent in an error without a 64-character digest."""
    return key[:12]


# --- the interface --------------------------------------------------------------------------


class AgentStore(abc.ABC):
    """Where durable agents keep what they need to survive their process.

    Every write is durable when the method returns (for :class:`SQLiteAgentStore`: committed
    to the file). The runtime acknowledges a ``tell`` only after the write that holds it
    returns (the :meth:`save_state` whose snapshot has it in the mailbox).
    Methods raise :class:`~genagent_thespian.AgentNotFound` for an unknown key,
    :class:`StoreCorrupted` for damaged data and :class:`StoreError` for other failures.
    Implementations must be safe to call from several threads.

    The interface is what the runtime calls (``_durable/record.py``), nothing more, so a new
    store implements only what is used. :meth:`bump_incarnation` is the
    building block of the default :meth:`begin_incarnation` (which :class:`MemoryAgentStore`
    uses) and :meth:`forget_process` that of :func:`end_recorded_processes`.
    """

    # agents ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_agent(self, key: str, name_blob: bytes, spec_blob: bytes) -> None:
        """Create the record of a new durable agent (incarnation 0, no state, no results).

        Raises:
            AgentAlreadyExists: There is already a record under ``key``.
        """

    @abc.abstractmethod
    def delete_agent(self, key: str) -> bool:
        """Remove the agent and everything under it (``stop()``); ``False`` if absent."""

    @abc.abstractmethod
    def list_agents(self) -> list[StoredAgentEntry]:
        """Return every stored agent (key, pickled name, incarnation), oldest first."""

    @abc.abstractmethod
    def load(self, key: str) -> StoredAgent | None:
        """Read the agent's whole record in one consistent snapshot; ``None`` if absent."""

    @abc.abstractmethod
    def bump_incarnation(self, key: str) -> int:
        """Increment and return the agent's incarnation."""

    def begin_incarnation(self, key: str) -> StoredAgent:
        """Start a restart: increment the incarnation and load the record, atomically.

        The restarted agent calls this once; from then on writes naming an older
        incarnation are refused with :class:`StaleIncarnation`. The default implementation
        is not atomic; stores that can, override it.

        Raises:
            AgentNotFound: There is no record under ``key``.
        """
        self.bump_incarnation(key)
        loaded = self.load(key)
        if loaded is None:
            raise AgentNotFound(f"no stored agent with key {_short(key)}")
        return loaded

    def take_over(
        self, key: str, *, owner: str, seconds: float, process: ProcessRecord | None = None
    ) -> TakeOver:
        """Begin the next incarnation, take its lease and record its process: one write.

        What a restarting or waking agent does first: read the old lease (to wait it out
        if its holder may still run), fence the old incarnation, take the lease for the new
        one as ``owner`` for ``seconds``, and record ``process`` (the agent's own, see
        :func:`describe_process`) so that a later run can end it should it outlive its
        system. The SQLite and PostgreSQL stores do it in one transaction, so one sync
        instead of four; this default runs the four steps in turn.

        Raises:
            AgentNotFound: There is no record under ``key`` (nothing was written).
        """
        previous = self.lease(key)
        agent = self.begin_incarnation(key)
        self.renew_lease(key, epoch=agent.incarnation, owner=owner, seconds=seconds)
        if process is not None:
            self.record_process(
                process.pid, role=process.role, pgid=process.pgid, agent_key=process.agent_key
            )
        return TakeOver(agent, previous)

    # leases ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def lease(self, key: str) -> Lease | None:
        """The agent's lease (``None``: never taken, or the agent is not stored).

        Read by a starting incarnation before it fences the old one, to know how long the
        old owner may still be running a turn (see ``_durable/record.py``).
        """

    @abc.abstractmethod
    def renew_lease(self, key: str, *, epoch: int, owner: str, seconds: float) -> None:
        """Take or extend the lease for ``seconds`` from now, for incarnation ``epoch``.

        Raises:
            AgentNotFound: There is no record under ``key``.
            StaleIncarnation: ``epoch`` is not the current incarnation (fenced); nothing
                was written.
        """

    @abc.abstractmethod
    def release_lease(self, key: str, *, epoch: int) -> None:
        """End incarnation ``epoch``'s lease now (a clean exit); nothing if it is not its."""

    # convention leadership ------------------------------------------------------------------

    @abc.abstractmethod
    def claim_leadership(self, convention: str, holder: str, seconds: float) -> Leadership:
        """Take or extend the lead of ``convention`` for ``seconds``, atomically.

        The claim succeeds when nobody leads, when the current lease has expired (the epoch
        moves on), or when ``holder`` already leads (its lease is extended, same epoch);
        otherwise nothing is written and the current leadership is returned with
        ``acquired=False``.
        """

    @abc.abstractmethod
    def leadership(self, convention: str) -> Leadership | None:
        """The current leadership of ``convention`` (``None``: never claimed)."""

    @abc.abstractmethod
    def release_leadership(self, convention: str, holder: str) -> None:
        """End ``holder``'s lead now (a clean stop: a standby need not wait); nothing if it
        does not lead."""

    # provider session files -----------------------------------------------------------------

    @abc.abstractmethod
    def put_session_files(
        self, key: str, files: Mapping[str, bytes], *, incarnation: int | None = None
    ) -> None:
        """Store (replace) provider session files by name: a CLI's transcript, for instance.

        A durable CLI agent restarted on another host restores them before resuming, so
        the provider finds its conversation there too.

        Raises:
            AgentNotFound: There is no record under ``key``.
            StaleIncarnation: ``incarnation`` is given and is not the current one.
        """

    @abc.abstractmethod
    def session_files(self, key: str) -> dict[str, bytes]:
        """The stored provider session files of the agent, by name (empty if none)."""

    # turn-boundary writes -------------------------------------------------------------------

    @abc.abstractmethod
    def save_state(self, key: str, blob: bytes, *, incarnation: int | None = None) -> None:
        """Replace the state snapshot. ``incarnation``, if given, must be the current one.

        The runtime's main write: an agent calls it before any reply or turn start of a
        handled message leaves its process, so what it acknowledged survives its death.
        A write for an older incarnation raises ``StaleIncarnation`` and changes nothing:
        that is how a zombie of a restarted agent learns to stand down.
        """

    @abc.abstractmethod
    def put_result(self, key: str, ref: str, blob: bytes, *, max_results: int) -> None:
        """Store a tell result, keeping only the newest ``max_results`` of the agent.

        Results are rows of their own, not part of the snapshot: a thousand cached results
        are not rewritten at every boundary, only the new ones are added.
        """

    # processes ------------------------------------------------------------------------------

    @abc.abstractmethod
    def record_process(
        self,
        pid: int,
        *,
        role: str,
        pgid: int | None = None,
        agent_key: str | None = None,
    ) -> ProcessRecord | None:
        """Record a running process; ``None`` (nothing recorded) if it has already exited.

        ``pgid`` defaults to the process's current group. The start time and boot id are
        read from ``/proc`` here, so a later process with the same pid is never mistaken
        for this one.
        """

    @abc.abstractmethod
    def forget_process(self, pid: int, start_ticks: int | None = None) -> int:
        """Drop the records of ``pid`` (only the one started at ``start_ticks``, if given)."""

    def forget_processes(self, processes: Sequence[tuple[int, int]]) -> int:
        """Drop the records of ``(pid, start_ticks)`` pairs; return how many were dropped.

        The reaper forgets every gone process of a pass at once: with thousands of
        hibernated agents that is thousands of records, and one write (and sync) each held
        the store's write lock for seconds while agents woke. Stores override this with
        one transaction per batch; this default forgets them one by one.
        """
        return sum(self.forget_process(pid, start_ticks) for pid, start_ticks in processes)

    @abc.abstractmethod
    def recorded_processes(self) -> list[ProcessRecord]:
        """Return every process record, oldest first."""

    # lifecycle ------------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; later calls raise :class:`StoreError`."""

    def __enter__(self) -> Self:
        """Use the store in a ``with`` block; it is closed at the end."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store however the block ended."""
        self.close()


def describe_process(
    pid: int, role: str, pgid: int | None = None, agent_key_: str | None = None
) -> ProcessRecord | None:
    """Validate and describe a running process from ``/proc``; ``None`` if it already exited.

    A zombie counts as exited: it has no start time worth recording, and ending it later would
    signal nothing.
    """
    if not isinstance(role, str) or not role:
        raise InvalidOption(f"invalid process role {role!r}: expected a non-empty str")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise InvalidOption(f"invalid pid {pid!r}: expected a positive int")
    stat = _procfs.process_stat(pid)
    if stat is None or stat.is_zombie:
        return None
    return ProcessRecord(
        pid=pid,
        start_ticks=stat.start_ticks,
        boot=_procfs.boot_id(),
        pgid=stat.pgid if pgid is None else pgid,
        role=role,
        agent_key=agent_key_,
    )


# --- SQLite ---------------------------------------------------------------------------------

# ``seq INTEGER PRIMARY KEY`` is the rowid: a new row gets max(seq) + 1, so ordering by seq is
# insertion order (FIFO) even across processes and after deletions, without AUTOINCREMENT's
# extra write per insert.
# The ``in_flight*`` columns and the ``mailbox`` table are never written (the snapshot holds
# the mailbox, see the module docstring); they stay so that the schema, and its version, is
# that of every file already written.
_SCHEMA = (
    """CREATE TABLE agents (
        key TEXT PRIMARY KEY,
        name BLOB NOT NULL, name_crc INTEGER NOT NULL,
        spec BLOB NOT NULL, spec_crc INTEGER NOT NULL,
        state BLOB, state_crc INTEGER,
        in_flight_ref TEXT, in_flight BLOB, in_flight_crc INTEGER,
        incarnation INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE mailbox (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        blob BLOB NOT NULL, crc INTEGER NOT NULL,
        UNIQUE (key, ref)
    )""",
    "CREATE INDEX mailbox_by_agent ON mailbox(key)",
    """CREATE TABLE results (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        blob BLOB NOT NULL, crc INTEGER NOT NULL,
        UNIQUE (key, ref)
    )""",
    "CREATE INDEX results_by_agent ON results(key)",
    """CREATE TABLE processes (
        pid INTEGER NOT NULL,
        start_ticks INTEGER NOT NULL,
        boot TEXT NOT NULL,
        pgid INTEGER,
        role TEXT NOT NULL,
        agent_key TEXT,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (pid, start_ticks, boot)
    )""",
)

#: Added after schema version 1 shipped: created on open when missing (additive, so older
#: files keep working and keep their version).
_LEASES_TABLE = """CREATE TABLE IF NOT EXISTS leases (
        key TEXT PRIMARY KEY REFERENCES agents(key) ON DELETE CASCADE,
        epoch INTEGER NOT NULL,
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    )"""
_LEADERSHIP_TABLE = """CREATE TABLE IF NOT EXISTS leadership (
        convention TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        holder TEXT NOT NULL,
        expires REAL NOT NULL
    )"""
_SESSION_FILES_TABLE = """CREATE TABLE IF NOT EXISTS session_files (
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        name TEXT NOT NULL,
        blob BLOB NOT NULL, crc INTEGER NOT NULL,
        PRIMARY KEY (key, name)
    )"""

#: Connections opened before a fork and inherited by the child. The child must neither use
#: nor close them (closing could checkpoint or unlock on the parent's behalf), so they are
#: kept referenced here for the life of the child process.
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []

#: Every open SQLite store of this process, so a forked child can reset their locks.
_OPEN_STORES: weakref.WeakSet[SQLiteAgentStore] = weakref.WeakSet()


def _reset_stores_after_fork() -> None:
    """Give every open store a fresh lock in a forked child (Thespian forks every actor).

    A thread of the parent may have held a store's lock at the moment of the fork; that thread does
    not exist in the child, so the inherited lock would never be released.
    """
    # Another thread of the parent may have held a store's lock at the moment of the fork;
    # that thread does not exist in the child, so the child starts with fresh locks.
    for store in list(_OPEN_STORES):
        store._lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_stores_after_fork)

#: Process records forgotten per transaction (``SQLiteAgentStore.forget_processes``).
_FORGET_BATCH = 500

_CORRUPTION_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_VTAB"})


class SQLiteAgentStore(AgentStore):
    """The default :class:`AgentStore`: one SQLite file in WAL mode, shared by processes.

    Each process (and each object) holds one connection, guarded by a lock so threads can
    share it; after a ``fork`` the child opens its own connection on first use. Writers of
    every process first queue on a kernel lock beside the file (``_durable/writers.py``),
    then use ``BEGIN IMMEDIATE``, so a write never fails on a lock upgrade and never starves
    behind a steady stream of others.

    Args:
        path: The database file (created with its schema if missing), or ``":memory:"``.
        synchronous: ``"FULL"`` (default) syncs the WAL at every commit, so a write that
            returned survives a power loss or OS crash. ``"NORMAL"`` syncs only at
            checkpoints: still safe against any process crash (including SIGKILL), but the
            last commits can be lost if the machine itself goes down. See
            ``bench/store_cost.py`` for the measured difference.
        busy_timeout: Seconds a write waits for another process's transaction to finish
            before :class:`StoreError` is raised.

    Raises:
        StoreSchemaMismatch: The file is another application's database or another schema
            version of this one.
        StoreCorrupted: The file is not a readable SQLite database.
        InvalidOption: ``synchronous`` or ``busy_timeout`` is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = 10.0,
    ) -> None:
        """Check the settings, then open (and if needed create) the file at once.

        Opening here means a wrong path, a damaged file or another application's database fails
        ``start_agent``, not the first turn boundary of a running agent.
        """
        sync = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if sync not in ("FULL", "NORMAL"):
            raise InvalidOption(f"invalid synchronous={synchronous!r}: expected 'FULL' or 'NORMAL'")
        if (
            not isinstance(busy_timeout, int | float)
            or isinstance(busy_timeout, bool)
            or not 0 <= busy_timeout < 1e6
        ):
            raise InvalidOption(f"invalid busy_timeout={busy_timeout!r}: expected seconds >= 0")
        self.path = os.fspath(path)
        self.synchronous: str = sync
        self.busy_timeout = float(busy_timeout)
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()
        in_memory = self.path in ("", ":memory:") or self.path.startswith("file:")
        self._writers = None if in_memory else WriterQueue(self.path)
        self._connection = self._open()
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        """The path only: a store is logged, and the connection says nothing useful."""
        return f"SQLiteAgentStore({self.path!r}, synchronous={self.synchronous!r})"

    # connection management ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Open a connection with the store's settings: WAL, ``synchronous``, foreign keys, timeout.

        The header is checked before any pragma writes to the file, so a file that is not SQLite is
        reported as such and left untouched.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.01
        with self._translate("open"):
            self._make_private()
            while True:
                try:
                    return self._connect()
                except sqlite3.OperationalError as exc:
                    # Opening reads the WAL index, which another process may be rebuilding
                    # or removing (the last connection closing): SQLite then answers "locked"
                    # at once, without its busy handler. Measured: thousands of durable
                    # agents starting and hibernating on one file hit it. Try again, within
                    # the busy timeout.
                    busy = getattr(exc, "sqlite_errorname", "").startswith(
                        ("SQLITE_BUSY", "SQLITE_LOCKED")
                    )
                    if not busy or time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(0.2, pause * 2)

    def _connect(self) -> sqlite3.Connection:
        """One attempt at :meth:`_open` (closed again if any setting fails)."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock instead
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._check_header(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _make_private(self) -> None:
        """Create the file ``0600`` in a ``0700`` folder before SQLite does (with the umask).

        SQLite creates ``-wal`` and ``-shm`` with the database file's mode, so they follow;
        ones left by an earlier, less careful version are narrowed too.
        """
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            return
        private_file(self.path)
        for suffix in ("-wal", "-shm", "-journal"):
            narrow(self.path + suffix)

    def _check_header(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not SQLite with a typed error naming the path."""
        # Reading the schema forces SQLite to parse the file header: a damaged or foreign
        # file fails here with SQLITE_NOTADB / SQLITE_CORRUPT, translated by the caller.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema in an empty file, or check that the file holds this store's schema.

        A file that already holds the whole schema is only read: every agent process opens
        the store when it starts or wakes, and a write lock with a sync on each open was the
        largest share of the store's writes in a fleet of thousands. Otherwise it runs under
        the write lock (``BEGIN IMMEDIATE``) so that processes opening a new file at the same
        time create the schema once. A file with tables but no application id belongs to
        someone else and is refused rather than written to. Tables added after version 1 are
        created when missing, which keeps older files readable without a version bump.
        """
        if self._schema_is_current(conn):
            return  # the usual case: no write lock, no sync, for every process that opens
        with self._writer_turn("open"):
            self._create_or_check_schema(conn)

    def _schema_is_current(self, conn: sqlite3.Connection) -> bool:
        """Whether the file already holds this store's schema with every table, read only."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if version != SCHEMA_VERSION or app_id != APPLICATION_ID:
            return False
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        return {"leases", "session_files", "leadership"} <= names

    def _create_or_check_schema(self, conn: sqlite3.Connection) -> None:
        """:meth:`_ensure_schema` for a new, older or foreign file, under the write lock."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if version == 0 and app_id == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise StoreSchemaMismatch(
                        f"{self.path} is an SQLite database of another application "
                        "(it has tables but no genagent-thespian schema version)"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif app_id != APPLICATION_ID:
                raise StoreSchemaMismatch(
                    f"{self.path} is not a genagent-thespian store "
                    f"(application_id {app_id:#x}, expected {APPLICATION_ID:#x})"
                )
            elif version != SCHEMA_VERSION:
                raise StoreSchemaMismatch(
                    f"{self.path} has store schema version {version}, this genagent-thespian "
                    f"reads version {SCHEMA_VERSION}; use a matching release or a new file"
                )
            conn.execute(_LEASES_TABLE)
            conn.execute(_SESSION_FILES_TABLE)
            conn.execute(_LEADERSHIP_TABLE)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        """This process's connection; a forked child opens its own and never uses the parent's.

        An SQLite connection must not be used across ``fork``; the inherited one is kept referenced
        and never closed in the child, where closing could act on files the parent still uses.
        """
        if self._closed:
            raise StoreError(f"the agent store {self.path} is closed")
        if self._pid != os.getpid():
            # We are a forked child: never touch the parent's connection; open our own.
            _INHERITED_CONNECTIONS.append(self._connection)
            self._pid = os.getpid()
            self._connection = self._open()
        return self._connection

    @contextmanager
    def _translate(self, operation: str, key: str | None = None) -> Iterator[None]:
        """Turn ``sqlite3`` errors into :class:`StoreError`, or :class:`StoreCorrupted` for damage.

        Callers catch our errors only; damage gets its own type because restarting will not fix it,
        while a busy or locked database may succeed on the next try.
        """
        where = f" (agent key {_short(key)})" if key else ""
        try:
            yield
        except GenAgentError:
            raise
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorname", "")
            text = str(exc)
            # A bare DatabaseError (not Operational/Integrity/...) is SQLite reporting damage.
            if code in _CORRUPTION_CODES or type(exc) is sqlite3.DatabaseError:
                raise StoreCorrupted(
                    f"agent store {self.path} is damaged: {operation}{where} failed: {text}"
                ) from exc
            raise StoreError(f"agent store {self.path}: {operation}{where} failed: {text}") from exc

    @contextmanager
    def _write(self, operation: str, key: str | None = None) -> Iterator[sqlite3.Cursor]:
        """A write transaction; ``BEGIN IMMEDIATE`` takes the write lock at the start.

        A deferred transaction that reads and then writes fails at once with ``SQLITE_BUSY`` when
        another process wrote meanwhile (the busy timeout cannot help there); taking the lock up
        front makes a second writer wait, up to ``busy_timeout``, instead.
        """
        with self._lock, self._translate(operation, key), self._writer_turn(operation, key):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn.cursor()
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _writer_turn(self, operation: str, key: str | None = None) -> Iterator[None]:
        """This process's turn in the writer queue of every process on the file.

        SQLite's own wait for its write lock polls with pauses up to 100 ms and lets steady
        writers starve a waiting one; the queue (``_durable/writers.py``) hands the lock on
        as soon as it is free. ``BEGIN IMMEDIATE`` then finds SQLite's lock free, except
        for writers outside this library (``sqlite3`` on the command line), which it still
        waits for on the busy timeout.
        """
        if self._writers is None:
            yield
            return
        try:
            with self._writers.turn(self.busy_timeout):
                yield
        except WriterQueueTimeout:
            where = f" (agent key {_short(key)})" if key else ""
            raise StoreError(
                f"agent store {self.path}: {operation}{where} failed: another process held "
                f"the write lock for {self.busy_timeout:g}s"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"agent store {self.path}: {operation} failed: the writer lock "
                f"{self._writers.path} could not be taken: {exc}"
            ) from exc

    @contextmanager
    def _read(self, operation: str, key: str | None = None) -> Iterator[sqlite3.Cursor]:
        """A read transaction, so the SELECTs of one call see one consistent snapshot."""
        with self._lock, self._translate(operation, key):
            conn = self._conn()
            conn.execute("BEGIN")  # one snapshot for all the SELECTs of this read
            try:
                yield conn.cursor()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connection; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pid == os.getpid():
                self._connection.close()
            else:
                _INHERITED_CONNECTIONS.append(self._connection)

    # helpers --------------------------------------------------------------------------------

    def _touch(
        self,
        cur: sqlite3.Cursor,
        key: str,
        assignments: str,
        params: Sequence[object],
        incarnation: int | None,
    ) -> None:
        """Run ``UPDATE agents SET <assignments>`` for ``key``, checking it and its incarnation.

        The fence of every state write: the incarnation is part of the ``WHERE`` clause, so
        the check and the write are one statement and no newer incarnation can begin
        between them. When no row changed, a second read says why: no such agent
        (``AgentNotFound``) or a newer incarnation owns it (``StaleIncarnation``).
        """
        cur.execute(
            f"UPDATE agents SET {assignments}, updated_at = ? "
            "WHERE key = ? AND (? IS NULL OR incarnation = ?)",
            (*params, time.time(), key, incarnation, incarnation),
        )
        if cur.rowcount == 1:
            return
        row = cur.execute("SELECT incarnation FROM agents WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise AgentNotFound(f"no stored agent with key {_short(key)}")
        raise StaleIncarnation(
            f"agent key {_short(key)} is at incarnation {row[0]}, the write was for {incarnation}"
        )

    @staticmethod
    def _evict_results(cur: sqlite3.Cursor, key: str, max_results: int) -> None:
        """Delete the agent's results older than the newest ``max_results``, in one statement."""
        cur.execute(
            "DELETE FROM results WHERE key = ? AND seq <= ("
            " SELECT seq FROM results WHERE key = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (key, key, max_results),
        )

    @staticmethod
    def _put_result(cur: sqlite3.Cursor, key: str, result: StoredRequest, max_results: int) -> None:
        """Store a tell result as the newest and evict beyond ``max_results``."""
        if max_results == 0:
            cur.execute("DELETE FROM results WHERE key = ?", (key,))
            return
        # REPLACE gives a re-stored ref a new seq: it becomes the newest result.
        cur.execute(
            "INSERT OR REPLACE INTO results (key, ref, blob, crc) VALUES (?, ?, ?, ?)",
            (key, result.ref, result.blob, _crc(result.blob)),
        )
        SQLiteAgentStore._evict_results(cur, key, max_results)

    def _verified(self, key: str, part: str, blob: bytes | None, crc: int | None) -> bytes | None:
        """Return a stored blob after checking its CRC; damage raises :class:`StoreCorrupted`.

        The check names the agent and the part, so one damaged record is reported precisely and the
        other agents in the file stay usable.
        """
        if blob is None:
            return None
        if not isinstance(blob, bytes) or crc is None or _crc(blob) != crc:
            raise StoreCorrupted(
                f"agent store {self.path}: the {part} of agent key {_short(key)} is damaged "
                "(checksum mismatch)"
            )
        return blob

    # agents ---------------------------------------------------------------------------------

    def create_agent(self, key: str, name_blob: bytes, spec_blob: bytes) -> None:
        """Insert the record; the primary key refuses a second one, reported as
        :class:`AgentAlreadyExists` (the name is taken by a stored agent).
        """
        key = _check_key(key)
        name_blob = _as_blob(name_blob, "name_blob")
        spec_blob = _as_blob(spec_blob, "spec_blob")
        now = time.time()
        with self._write("create_agent", key) as cur:
            try:
                cur.execute(
                    "INSERT INTO agents (key, name, name_crc, spec, spec_crc, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, name_blob, _crc(name_blob), spec_blob, _crc(spec_blob), now, now),
                )
            except sqlite3.IntegrityError:
                raise AgentAlreadyExists(
                    f"a durable agent with key {_short(key)} is already stored"
                ) from None

    def delete_agent(self, key: str) -> bool:
        """Delete the results and the record in one transaction: never half a record.

        Results left without their record would give a later agent of the same name
        another's tell outcomes.
        """
        key = _check_key(key)
        with self._write("delete_agent", key) as cur:
            cur.execute("DELETE FROM results WHERE key = ?", (key,))
            cur.execute("DELETE FROM agents WHERE key = ?", (key,))
            return cur.rowcount > 0

    def list_agents(self) -> list[StoredAgentEntry]:
        """The stored agents, oldest first, each name's CRC checked.

        Ordered by creation so that a system restart resumes agents in the order they were
        started (stable across runs, whatever the keys' hashes).
        """
        with self._read("list_agents") as cur:
            rows = cur.execute(
                "SELECT key, name, name_crc, incarnation FROM agents ORDER BY created_at, key"
            ).fetchall()
        entries = []
        for key, name, name_crc, incarnation in rows:
            name_blob = self._verified(key, "name", name, name_crc)
            assert name_blob is not None
            entries.append(StoredAgentEntry(key, name_blob, incarnation))
        return entries

    def load(self, key: str) -> StoredAgent | None:
        """Read the record and its results in one read transaction (a consistent view)."""
        key = _check_key(key)
        with self._read("load", key) as cur:
            rows = self._select_agent(cur, key)
        return None if rows is None else self._build_agent(key, *rows)

    def begin_incarnation(self, key: str) -> StoredAgent:
        """Increment and load in one write transaction, so no write of the old incarnation can
        land in between (the atomic version the interface asks stores to provide).
        """
        key = _check_key(key)
        with self._write("begin_incarnation", key) as cur:
            cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = ? WHERE key = ?",
                (time.time(), key),
            )
            rows = self._select_agent(cur, key)
            if rows is None:
                raise AgentNotFound(f"no stored agent with key {_short(key)}")
            # Built inside the transaction: a damaged record rolls the increment back.
            return self._build_agent(key, *rows)

    def take_over(
        self, key: str, *, owner: str, seconds: float, process: ProcessRecord | None = None
    ) -> TakeOver:
        """The four steps of a takeover in one write transaction (one sync of the WAL)."""
        key = _check_key(key)
        with self._write("take_over", key) as cur:
            now = time.time()
            row = cur.execute(
                "SELECT epoch, owner, expires FROM leases WHERE key = ?", (key,)
            ).fetchone()
            previous = None if row is None else Lease(int(row[0]), row[1], row[2] - now)
            cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = ? WHERE key = ?",
                (now, key),
            )
            rows = self._select_agent(cur, key)
            if rows is None:
                raise AgentNotFound(f"no stored agent with key {_short(key)}")
            agent = self._build_agent(key, *rows)
            self._upsert_lease(cur, key, agent.incarnation, owner, now + seconds)
            if process is not None:
                self._insert_process(cur, process)
        return TakeOver(agent, previous)

    @staticmethod
    def _select_agent(cur: sqlite3.Cursor, key: str) -> tuple[DbRow, list[DbRow]] | None:
        """The agent's row and result rows, read in the caller's transaction."""
        row = cur.execute(
            "SELECT name, name_crc, spec, spec_crc, state, state_crc, incarnation"
            " FROM agents WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        result_rows = cur.execute(
            "SELECT ref, blob, crc FROM results WHERE key = ? ORDER BY seq", (key,)
        ).fetchall()
        return tuple(row), result_rows

    def _build_agent(self, key: str, row: DbRow, result_rows: list[DbRow]) -> StoredAgent:
        """Build a :class:`StoredAgent` from rows, checking every blob's CRC on the way."""
        name, name_crc, spec, spec_crc, state, state_crc, incarnation = row
        name_blob = self._verified(key, "name", name, name_crc)
        spec_blob = self._verified(key, "start spec", spec, spec_crc)
        assert name_blob is not None and spec_blob is not None
        return StoredAgent(
            key=key,
            name_blob=name_blob,
            spec_blob=spec_blob,
            state_blob=self._verified(key, "state snapshot", state, state_crc),
            results=tuple(
                StoredRequest(ref, self._verified(key, f"result {ref}", b, c) or b"")
                for ref, b, c in result_rows
            ),
            incarnation=incarnation,
        )

    def bump_incarnation(self, key: str) -> int:
        """Increment with ``RETURNING`` in one statement, so two callers never get one number."""
        key = _check_key(key)
        with self._write("bump_incarnation", key) as cur:
            row = cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = ? WHERE key = ?"
                " RETURNING incarnation",
                (time.time(), key),
            ).fetchone()
            if row is None:
                raise AgentNotFound(f"no stored agent with key {_short(key)}")
            return int(row[0])

    # provider session files -----------------------------------------------------------------

    def put_session_files(
        self, key: str, files: Mapping[str, bytes], *, incarnation: int | None = None
    ) -> None:
        """Check the incarnation and replace the named files in one transaction.

        ``_touch`` with a no-op update is the fencing check: a stale incarnation's transcript
        must not overwrite the one its successor already saved.
        """
        key = _check_key(key)
        checked = {
            _check_file_name(name): _as_blob(blob, "session file") for name, blob in files.items()
        }
        with self._write("put_session_files", key) as cur:
            self._touch(cur, key, "incarnation = incarnation", (), incarnation)
            for name, blob in checked.items():
                cur.execute(
                    "INSERT OR REPLACE INTO session_files (key, name, blob, crc)"
                    " VALUES (?, ?, ?, ?)",
                    (key, name, blob, _crc(blob)),
                )

    def session_files(self, key: str) -> dict[str, bytes]:
        """Every stored session file by name, each CRC checked (empty when none was saved)."""
        key = _check_key(key)
        with self._read("session_files", key) as cur:
            rows = cur.execute(
                "SELECT name, blob, crc FROM session_files WHERE key = ? ORDER BY name", (key,)
            ).fetchall()
        return {
            name: self._verified(key, f"session file {name}", blob, crc) or b""
            for name, blob, crc in rows
        }

    # leases ---------------------------------------------------------------------------------

    def lease(self, key: str) -> Lease | None:
        """The lease row as seconds left (negative: expired), in this host's wall clock."""
        key = _check_key(key)
        with self._read("lease", key) as cur:
            row = cur.execute(
                "SELECT epoch, owner, expires FROM leases WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else Lease(int(row[0]), row[1], row[2] - time.time())

    def renew_lease(self, key: str, *, epoch: int, owner: str, seconds: float) -> None:
        """Check the epoch and write the lease in one transaction, so a fenced incarnation can
        never extend a lease after a newer one began.
        """
        key = _check_key(key)
        with self._write("renew_lease", key) as cur:
            _check_epoch(
                key,
                cur.execute("SELECT incarnation FROM agents WHERE key = ?", (key,)).fetchone(),
                epoch,
            )
            self._upsert_lease(cur, key, epoch, owner, time.time() + seconds)

    @staticmethod
    def _upsert_lease(
        cur: sqlite3.Cursor, key: str, epoch: int, owner: str, expires: float
    ) -> None:
        """Write the lease row of ``key`` in the caller's transaction."""
        cur.execute(
            "INSERT INTO leases (key, epoch, owner, expires) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET epoch = excluded.epoch,"
            " owner = excluded.owner, expires = excluded.expires",
            (key, epoch, owner, expires),
        )

    def release_lease(self, key: str, *, epoch: int) -> None:
        """Expire the lease now instead of deleting it: the row still says which epoch held it
        last, and a successor finds it expired and need not wait.
        """
        key = _check_key(key)
        with self._write("release_lease", key) as cur:
            cur.execute(
                "UPDATE leases SET expires = ? WHERE key = ? AND epoch = ?",
                (time.time(), key, epoch),
            )

    # convention leadership ------------------------------------------------------------------

    def claim_leadership(self, convention: str, holder: str, seconds: float) -> Leadership:
        """Read and (if ``_leadership_claim`` allows) take the lease in one write transaction.

        The write lock SQLite takes at the first statement of ``_write`` makes the read and the
        update one step: two candidates can never both see the lease free and both win.
        """
        with self._write("claim_leadership") as cur:
            now = time.time()
            row = cur.execute(
                "SELECT epoch, holder, expires FROM leadership WHERE convention = ?",
                (convention,),
            ).fetchone()
            decision = _leadership_claim(row, holder, now)
            if decision is None:
                return Leadership(int(row[0]), row[1], row[2] - now)
            cur.execute(
                "INSERT INTO leadership (convention, epoch, holder, expires) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (convention) DO UPDATE SET epoch = excluded.epoch,"
                " holder = excluded.holder, expires = excluded.expires",
                (convention, decision, holder, now + seconds),
            )
            return Leadership(decision, holder, seconds, acquired=True)

    def leadership(self, convention: str) -> Leadership | None:
        """Who leads ``convention`` and for how long still (``None``: never claimed)."""
        with self._read("leadership") as cur:
            row = cur.execute(
                "SELECT epoch, holder, expires FROM leadership WHERE convention = ?",
                (convention,),
            ).fetchone()
        return None if row is None else Leadership(int(row[0]), row[1], row[2] - time.time())

    def release_leadership(self, convention: str, holder: str) -> None:
        """Expire ``holder``'s lease now, keeping the epoch, so a standby takes over at once.

        The ``holder`` condition makes a deposed leader's late release a no-op.
        """
        with self._write("release_leadership") as cur:
            cur.execute(
                "UPDATE leadership SET expires = ? WHERE convention = ? AND holder = ?",
                (time.time(), convention, holder),
            )

    # turn-boundary writes -------------------------------------------------------------------

    def save_state(self, key: str, blob: bytes, *, incarnation: int | None = None) -> None:
        """Replace the snapshot; ``_touch`` refuses it if a newer incarnation began."""
        key = _check_key(key)
        blob = _as_blob(blob, "state blob")
        with self._write("save_state", key) as cur:
            self._touch(cur, key, "state = ?, state_crc = ?", (blob, _crc(blob)), incarnation)

    def put_result(self, key: str, ref: str, blob: bytes, *, max_results: int) -> None:
        """Store a tell's result and evict the oldest beyond ``max_results``, in one transaction."""
        key = _check_key(key)
        result = StoredRequest(_check_ref(ref), _as_blob(blob, "result blob"))
        max_results = _check_max_results(max_results)
        with self._write("put_result", key) as cur:
            if cur.execute("SELECT 1 FROM agents WHERE key = ?", (key,)).fetchone() is None:
                raise AgentNotFound(f"no stored agent with key {_short(key)}", ref=ref)
            self._put_result(cur, key, result, max_results)

    # processes ------------------------------------------------------------------------------

    def record_process(
        self,
        pid: int,
        *,
        role: str,
        pgid: int | None = None,
        agent_key: str | None = None,
    ) -> ProcessRecord | None:
        """Record the process with its start time and boot id; the primary key includes both, so
        a reused pid is a new row and never overwrites the record of the earlier process.
        """
        record = describe_process(pid, role, pgid, agent_key)
        if record is None:
            return None
        with self._write("record_process") as cur:
            self._insert_process(cur, record)
        return record

    @staticmethod
    def _insert_process(cur: sqlite3.Cursor, record: ProcessRecord) -> None:
        """Write ``record`` in the caller's transaction (replacing one of the same process)."""
        cur.execute(
            "INSERT OR REPLACE INTO processes"
            " (pid, start_ticks, boot, pgid, role, agent_key, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.pid,
                record.start_ticks,
                record.boot,
                record.pgid,
                record.role,
                record.agent_key,
                record.recorded_at,
            ),
        )

    def forget_process(self, pid: int, start_ticks: int | None = None) -> int:
        """Delete the records of ``pid`` (only the one started at ``start_ticks``, if given)."""
        with self._write("forget_process") as cur:
            cur.execute(
                "DELETE FROM processes WHERE pid = ? AND (? IS NULL OR start_ticks = ?)",
                (pid, start_ticks, start_ticks),
            )
            return cur.rowcount

    def forget_processes(self, processes: Sequence[tuple[int, int]]) -> int:
        """Drop the records of ``(pid, start_ticks)`` pairs, in batches of one transaction.

        A batch is short (a few milliseconds for 500 rows), so writers of waking agents
        queue behind one batch, never behind the whole pass."""
        dropped = 0
        for start in range(0, len(processes), _FORGET_BATCH):
            batch = processes[start : start + _FORGET_BATCH]
            with self._write("forget_processes") as cur:
                cur.executemany(
                    "DELETE FROM processes WHERE pid = ? AND start_ticks = ?", list(batch)
                )
                dropped += cur.rowcount
        return dropped

    def recorded_processes(self) -> list[ProcessRecord]:
        """Every process record, oldest first (the order the reaper ends them in)."""
        with self._read("recorded_processes") as cur:
            rows = cur.execute(
                "SELECT pid, start_ticks, boot, pgid, role, agent_key, recorded_at"
                " FROM processes ORDER BY recorded_at, pid"
            ).fetchall()
        return [ProcessRecord(*row) for row in rows]


# --- in memory ------------------------------------------------------------------------------


@dataclass
class _MemoryAgent:
    """One agent's record in :class:`MemoryAgentStore`, mirroring the SQLite tables."""

    name_blob: bytes
    spec_blob: bytes
    state_blob: bytes | None = None
    results: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    incarnation: int = 0
    lease: tuple[int, str, float] | None = None  # (epoch, owner, expires at)
    files: dict[str, bytes] = field(default_factory=dict)


class MemoryAgentStore(AgentStore):
    """An :class:`AgentStore` in this process's memory: the same contract, nothing durable.

    Useful as the baseline of the durability benchmark, for tests of the runtime that do not
    need a file, and as the reference a new store implementation can be compared with.

    How it keeps the contract, as a guide for another implementation: one re-entrant lock
    around every method stands for a transaction (nothing is seen half-done, and
    ``begin_incarnation`` holds it across its load and increment); ``_check_incarnation``
    is the fence every state write passes; results are ordered by insertion and evicted
    oldest first; and every failure raises the same type the SQLite store raises
    (``AgentNotFound``, ``AgentAlreadyExists``, ``StaleIncarnation``, ``StoreError``), so
    the runtime cannot tell the stores apart by their errors.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._agents: dict[str, _MemoryAgent] = {}
        self._processes: dict[tuple[int, int, str], ProcessRecord] = {}
        self._leaders: dict[str, tuple[int, str, float]] = {}
        self._closed = False

    def _agent(self, key: str, ref: str | None = None) -> _MemoryAgent:
        """The record under ``key``, or the same errors the SQLite store raises (closed,
        unknown).
        """
        if self._closed:
            raise StoreError("the in-memory agent store is closed")
        agent = self._agents.get(_check_key(key))
        if agent is None:
            raise AgentNotFound(f"no stored agent with key {_short(key)}", ref=ref)
        return agent

    def _check_open(self) -> None:
        """Raise ``StoreError`` after ``close``, as a closed SQLite connection would."""
        if self._closed:
            raise StoreError("the in-memory agent store is closed")

    @staticmethod
    def _check_incarnation(key: str, agent: _MemoryAgent, incarnation: int | None) -> None:
        """Refuse a write for an incarnation that is not the current one (fencing), as SQL does."""
        if incarnation is not None and incarnation != agent.incarnation:
            raise StaleIncarnation(
                f"agent key {_short(key)} is at incarnation {agent.incarnation},"
                f" the write was for {incarnation}"
            )

    @staticmethod
    def _put(agent: _MemoryAgent, result: StoredRequest, max_results: int) -> None:
        """Store ``result`` as the newest (a result stored again moves to the end), then evict."""
        agent.results.pop(result.ref, None)
        agent.results[result.ref] = result.blob
        while len(agent.results) > max_results:
            agent.results.popitem(last=False)

    def create_agent(self, key: str, name_blob: bytes, spec_blob: bytes) -> None:
        key = _check_key(key)
        name_blob = _as_blob(name_blob, "name_blob")
        spec_blob = _as_blob(spec_blob, "spec_blob")
        with self._lock:
            self._check_open()
            if key in self._agents:
                raise AgentAlreadyExists(
                    f"a durable agent with key {_short(key)} is already stored"
                )
            self._agents[key] = _MemoryAgent(name_blob, spec_blob)

    def delete_agent(self, key: str) -> bool:
        """Drop the whole record (its results, lease and files live inside it)."""
        with self._lock:
            self._check_open()
            return self._agents.pop(_check_key(key), None) is not None

    def list_agents(self) -> list[StoredAgentEntry]:
        with self._lock:
            self._check_open()
            return [
                StoredAgentEntry(k, a.name_blob, a.incarnation) for k, a in self._agents.items()
            ]

    def load(self, key: str) -> StoredAgent | None:
        with self._lock:
            self._check_open()
            agent = self._agents.get(_check_key(key))
            if agent is None:
                return None
            return StoredAgent(
                key=key,
                name_blob=agent.name_blob,
                spec_blob=agent.spec_blob,
                state_blob=agent.state_blob,
                results=tuple(StoredRequest(r, b) for r, b in agent.results.items()),
                incarnation=agent.incarnation,
            )

    def bump_incarnation(self, key: str) -> int:
        with self._lock:
            agent = self._agent(key)
            agent.incarnation += 1
            return agent.incarnation

    def begin_incarnation(self, key: str) -> StoredAgent:
        """The base class's load and increment, under the lock so that they are one step."""
        with self._lock:
            return super().begin_incarnation(key)

    def take_over(
        self, key: str, *, owner: str, seconds: float, process: ProcessRecord | None = None
    ) -> TakeOver:
        """The base class's four steps, under the lock so that they are one."""
        with self._lock:
            return super().take_over(key, owner=owner, seconds=seconds, process=process)

    def put_session_files(
        self, key: str, files: Mapping[str, bytes], *, incarnation: int | None = None
    ) -> None:
        checked = {
            _check_file_name(name): _as_blob(blob, "session file") for name, blob in files.items()
        }
        with self._lock:
            agent = self._agent(key)
            self._check_incarnation(key, agent, incarnation)
            agent.files.update(checked)

    def session_files(self, key: str) -> dict[str, bytes]:
        with self._lock:
            self._check_open()
            agent = self._agents.get(_check_key(key))
            return dict(sorted(agent.files.items())) if agent is not None else {}

    def lease(self, key: str) -> Lease | None:
        with self._lock:
            self._check_open()
            agent = self._agents.get(_check_key(key))
            if agent is None or agent.lease is None:
                return None
            epoch, owner, expires = agent.lease
            return Lease(epoch, owner, expires - time.time())

    def renew_lease(self, key: str, *, epoch: int, owner: str, seconds: float) -> None:
        with self._lock:
            agent = self._agent(key)
            _check_epoch(key, (agent.incarnation,), epoch)
            agent.lease = (epoch, owner, time.time() + seconds)

    def release_lease(self, key: str, *, epoch: int) -> None:
        with self._lock:
            agent = self._agent(key)
            if agent.lease is not None and agent.lease[0] == epoch:
                agent.lease = (epoch, agent.lease[1], time.time())

    def claim_leadership(self, convention: str, holder: str, seconds: float) -> Leadership:
        with self._lock:
            self._check_open()
            now = time.time()
            row = self._leaders.get(convention)
            decision = _leadership_claim(row, holder, now)
            if decision is None:
                assert row is not None
                return Leadership(row[0], row[1], row[2] - now)
            self._leaders[convention] = (decision, holder, now + seconds)
            return Leadership(decision, holder, seconds, acquired=True)

    def leadership(self, convention: str) -> Leadership | None:
        with self._lock:
            self._check_open()
            row = self._leaders.get(convention)
            return None if row is None else Leadership(row[0], row[1], row[2] - time.time())

    def release_leadership(self, convention: str, holder: str) -> None:
        with self._lock:
            self._check_open()
            row = self._leaders.get(convention)
            if row is not None and row[1] == holder:
                self._leaders[convention] = (row[0], holder, time.time())

    def save_state(self, key: str, blob: bytes, *, incarnation: int | None = None) -> None:
        blob = _as_blob(blob, "state blob")
        with self._lock:
            agent = self._agent(key)
            self._check_incarnation(key, agent, incarnation)
            agent.state_blob = blob

    def put_result(self, key: str, ref: str, blob: bytes, *, max_results: int) -> None:
        result = StoredRequest(_check_ref(ref), _as_blob(blob, "result blob"))
        max_results = _check_max_results(max_results)
        with self._lock:
            self._put(self._agent(key, ref), result, max_results)

    def record_process(
        self,
        pid: int,
        *,
        role: str,
        pgid: int | None = None,
        agent_key: str | None = None,
    ) -> ProcessRecord | None:
        """Key the record by pid, start time and boot, as the SQL primary key does."""
        record = describe_process(pid, role, pgid, agent_key)
        if record is None:
            return None
        with self._lock:
            self._check_open()
            self._processes[(record.pid, record.start_ticks, record.boot)] = record
        return record

    def forget_process(self, pid: int, start_ticks: int | None = None) -> int:
        with self._lock:
            self._check_open()
            doomed = [
                k
                for k in self._processes
                if k[0] == pid and (start_ticks is None or k[1] == start_ticks)
            ]
            for k in doomed:
                del self._processes[k]
            return len(doomed)

    def recorded_processes(self) -> list[ProcessRecord]:
        with self._lock:
            self._check_open()
            return sorted(self._processes.values(), key=lambda r: (r.recorded_at, r.pid))

    def close(self) -> None:
        """Refuse every later call; the data is dropped with the object."""
        with self._lock:
            self._closed = True


# --- orphan sweep ---------------------------------------------------------------------------


def end_recorded_processes(
    store: AgentStore,
    *,
    grace: float = 2.0,
    exclude_pgids: Sequence[int] = (),
) -> list[ProcessRecord]:
    """End the processes a previous run recorded that are still alive, then forget them all.

    Call it at system start, before this run records anything. Each record is checked
    against ``/proc`` (pid, start time and boot id), so a process that merely reuses a
    recorded pid is left alone. When a verified process is still in its recorded process
    group, the whole group is ended (a CLI's own children go with it); otherwise only the
    process itself. Each gets SIGTERM, then SIGKILL after ``grace`` seconds. The caller's own
    process is never signalled, and the caller's own process group and ``exclude_pgids`` are
    never signalled as a group (a verified old process inside them is ended alone).

    Returns:
        The records whose processes were still running and were ended.
    """
    own_pid, own_pgid = os.getpid(), os.getpgrp()
    skip_groups = {own_pgid, *exclude_pgids}
    ended: list[ProcessRecord] = []
    groups_done: set[int] = set()
    for record in store.recorded_processes():
        if record.pid == own_pid or not record.is_running():
            continue
        stat = _procfs.process_stat(record.pid)
        pgid = record.pgid
        whole_group = (
            stat is not None
            and pgid is not None
            and stat.pgid == pgid
            and pgid > 1
            and pgid not in skip_groups
        )
        if whole_group:
            assert pgid is not None
            if pgid not in groups_done:
                groups_done.add(pgid)
                _processes.terminate_process_group(pgid, grace=grace)
        else:
            _end_one(record, grace)
        ended.append(record)
    for record in store.recorded_processes():
        store.forget_process(record.pid, record.start_ticks)
    return ended


def _end_one(record: ProcessRecord, grace: float) -> None:
    """End a single recorded process: SIGTERM, then SIGKILL after ``grace`` seconds.

    It checks the record (pid, start time, boot) before each signal, so a pid reused in the meantime
    is never signalled.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not record.is_running():
            return
        _processes.kill_process(record.pid, sig)
        _processes.wait_for_exit(record.pid, grace)
