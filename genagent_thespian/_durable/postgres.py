"""``PostgresAgentStore``: the durable agent store on a PostgreSQL server (psycopg 3).

SQLite is the embedded default for one host. A convention of several hosts needs one store
every host reaches over the network, so that any surviving host can resume any agent:
``store="postgresql://user:password@host:port/database"`` keeps the same records (specs,
state snapshots with their mailboxes, results, incarnations, process records)
with the same contract (:class:`~genagent_thespian._durable.store.AgentStore`), the same
checksums and the same errors.

Each process holds one connection per store object, guarded by a lock so threads can share
it. After a ``fork`` (every Thespian actor process is one) the child opens its own
connection: it never uses or closes the parent's, whose socket it merely inherited.
Writes are single transactions in ``READ COMMITTED`` whose incarnation checks are row
updates, so two writers never both pass a fence; reads run in ``REPEATABLE READ`` so one
``load`` sees one snapshot.

The connection URL may carry a password: errors and ``repr`` show the server and database
only (:func:`safe_location`).

Install with ``pip install 'genagent-thespian[postgres]'``.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

from .._core.errors import AgentAlreadyExists, AgentNotFound, InvalidOption
from .._core.types import DbRow
from .store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    AgentStore,
    Leadership,
    Lease,
    ProcessRecord,
    StaleIncarnation,
    StoreCorrupted,
    StoredAgent,
    StoredAgentEntry,
    StoredRequest,
    StoreError,
    StoreSchemaMismatch,
    TakeOver,
    _as_blob,
    _check_epoch,
    _check_file_name,
    _check_key,
    _check_max_results,
    _check_ref,
    _crc,
    _short,
    describe_process,
)

__all__ = ["URL_SCHEMES", "PostgresAgentStore", "is_postgres_url", "safe_location"]

#: A row as psycopg returns it by default (``DbRow``: the columns' types are the query's).
_Row: TypeAlias = DbRow

if TYPE_CHECKING:  # psycopg is an extra: imported for real only when a store opens
    import psycopg

    _Connection: TypeAlias = psycopg.Connection[_Row]
    _Cursor: TypeAlias = psycopg.Cursor[_Row]

#: Store locations with these prefixes name a PostgreSQL database.
URL_SCHEMES = ("postgresql://", "postgres://")

# ``seq`` is a sequence: ordering by it is insertion order for one agent, whose writes come
# from one process at a time. Tables are created in one transaction under an advisory lock,
# so processes opening a new database at once do not race.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS genagent_meta (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    )""",
    # The ``in_flight*`` columns and the ``mailbox`` table are never written (the snapshot
    # holds the mailbox, see ``_durable/store.py``); they stay so every database has one schema.
    """CREATE TABLE IF NOT EXISTS agents (
        key TEXT PRIMARY KEY,
        name BYTEA NOT NULL, name_crc BIGINT NOT NULL,
        spec BYTEA NOT NULL, spec_crc BIGINT NOT NULL,
        state BYTEA, state_crc BIGINT,
        in_flight_ref TEXT, in_flight BYTEA, in_flight_crc BIGINT,
        incarnation BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS mailbox (
        seq BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        blob BYTEA NOT NULL, crc BIGINT NOT NULL,
        UNIQUE (key, ref)
    )""",
    "CREATE INDEX IF NOT EXISTS mailbox_by_agent ON mailbox(key)",
    """CREATE TABLE IF NOT EXISTS results (
        seq BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        ref TEXT NOT NULL,
        blob BYTEA NOT NULL, crc BIGINT NOT NULL,
        UNIQUE (key, ref)
    )""",
    "CREATE INDEX IF NOT EXISTS results_by_agent ON results(key)",
    """CREATE TABLE IF NOT EXISTS leases (
        key TEXT PRIMARY KEY REFERENCES agents(key) ON DELETE CASCADE,
        epoch BIGINT NOT NULL,
        owner TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS leadership (
        convention TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        holder TEXT NOT NULL,
        expires TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS session_files (
        key TEXT NOT NULL REFERENCES agents(key) ON DELETE CASCADE,
        name TEXT NOT NULL,
        blob BYTEA NOT NULL, crc BIGINT NOT NULL,
        PRIMARY KEY (key, name)
    )""",
    """CREATE TABLE IF NOT EXISTS processes (
        pid BIGINT NOT NULL,
        start_ticks BIGINT NOT NULL,
        boot TEXT NOT NULL,
        pgid BIGINT,
        role TEXT NOT NULL,
        agent_key TEXT,
        recorded_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (pid, start_ticks, boot)
    )""",
)

#: Connections a forked child inherited: never used nor closed there (closing would end the
#: parent's session), kept referenced for the life of the child.
_INHERITED: list[_Connection] = []
_OPEN_STORES: weakref.WeakSet[PostgresAgentStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """Give every open store a fresh lock in a forked child.

    A fork copies a lock held by another thread of the parent as held, and nothing in the
    child would ever release it: the child's first store call would hang.
    """
    for store in list(_OPEN_STORES):
        store._lock = threading.RLock()


os.register_at_fork(after_in_child=_reset_after_fork)


def is_postgres_url(location: str) -> bool:
    """Whether a store location names a PostgreSQL database rather than a SQLite file."""
    return location.startswith(URL_SCHEMES)


def safe_location(url: str) -> str:
    """``url`` without its password or other secrets: ``postgresql://user@host:port/db``."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
    except Exception:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _password(url: str) -> str:
    """The URL's password, so error texts can be scrubbed of it; empty when there is none."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return str(conninfo_to_dict(url).get("password") or "")
    except Exception:
        return ""


def _psycopg() -> ModuleType:
    """Import psycopg on first use: it is an extra, and SQLite-only users never install it."""
    try:
        import psycopg
    except ImportError:
        raise InvalidOption(
            "a postgresql:// store needs psycopg 3: pip install 'genagent-thespian[postgres]'"
        ) from None
    return psycopg


class PostgresAgentStore(AgentStore):
    """The :class:`AgentStore` on PostgreSQL (see the module docstring).

    Args:
        url: ``postgresql://user:password@host:port/database`` (libpq's URL or key=value
            form; ``PGPASSWORD`` and ``~/.pgpass`` work as usual).
        connect_timeout: Seconds to wait for the server when connecting.
        open_timeout: Seconds the first connection may take in all: a server slow to accept
            (a loaded host) is tried again, ``connect_timeout`` each time, until then. A
            refusal (server down, bad password) fails at once.

    Raises:
        InvalidOption: psycopg is not installed, or a timeout is invalid.
        StoreError: The server cannot be reached or refused the connection.
        StoreSchemaMismatch: The database holds another schema version of this store.
    """

    def __init__(
        self, url: str, *, connect_timeout: float = 2.0, open_timeout: float = 20.0
    ) -> None:
        """Check the timeout, then connect and check (or create) the schema at once.

        Connecting here means an unreachable server or a foreign schema fails ``start_agent``, not
        the first turn boundary of a running agent.
        """
        for option, value in (("connect_timeout", connect_timeout), ("open_timeout", open_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
                raise InvalidOption(f"invalid {option}={value!r}: expected seconds")
        self._psycopg = _psycopg()
        self._url = url
        self.location = safe_location(url)
        self.connect_timeout = float(connect_timeout)
        self.open_timeout = float(open_timeout)
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()
        self._connection = self._open(patience=self.open_timeout)
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        return f"PostgresAgentStore({self.location!r})"

    # connection management ------------------------------------------------------------------

    def _open(self, *, patience: float = 0.0) -> _Connection:
        """Connect and create or check the schema under an advisory lock.

        The transaction-scoped advisory lock serialises agents on several hosts that open a new
        database together, so the schema is created once. Connections run in autocommit mode and
        every store call opens its own explicit transaction.

        A connection attempt that times out is made again until ``patience`` seconds have
        passed: the first open of a store (every agent process makes one) must ride out a
        server slow to accept, as on a host under load (measured: two suites at once on two
        cores, 2 s were not always enough). A reconnection later gets no patience: an agent
        that cannot reach its store must learn it within its lease.
        """
        deadline = time.monotonic() + patience
        with self._translate("open"):
            while True:
                try:
                    conn: _Connection = self._psycopg.connect(
                        self._url, autocommit=True, **self._network_defaults()
                    )
                    break
                except self._psycopg.errors.ConnectionTimeout:
                    if time.monotonic() >= deadline:
                        raise
            with conn.transaction():  # transactions are explicit: autocommit otherwise
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPLICATION_ID,))
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO genagent_meta (name, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (SCHEMA_VERSION,),
                )
                row = conn.execute(
                    "SELECT value FROM genagent_meta WHERE name = 'schema_version'"
                ).fetchone()
        if row is None or int(row[0]) != SCHEMA_VERSION:
            conn.close()
            raise StoreSchemaMismatch(
                f"agent store {self.location} has schema version {row and row[0]}, "
                f"this release uses {SCHEMA_VERSION}"
            )
        return conn

    def _network_defaults(self) -> dict[str, object]:
        """Timeouts so a server behind a partition fails a call within seconds, not minutes.

        A lease holder must notice it cannot reach the store before its lease runs out;
        a query on a dead TCP path would otherwise wait for the kernel's retransmissions
        (about 15 minutes). Settings in the URL win.
        """
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(self._url)
        defaults = {
            "connect_timeout": max(2, round(self.connect_timeout)),
            "keepalives": 1,
            "keepalives_idle": 2,
            "keepalives_interval": 1,
            "keepalives_count": 2,
            "tcp_user_timeout": 2000,
        }
        return {k: v for k, v in defaults.items() if k not in given}

    def _conn(self) -> _Connection:
        """This process's live connection, opening a new one after a fork or a lost server.

        A psycopg connection must not be shared across ``fork`` (both processes would talk on
        one socket), and Thespian forks every actor from a process that may have used the store.
        """
        if self._closed:
            raise StoreError(f"agent store {self.location} is closed")
        if self._pid != os.getpid():  # a forked child: its own connection
            _INHERITED.append(self._connection)
            self._pid = os.getpid()
            self._connection = self._open()
        elif self._connection.broken or self._connection.closed:
            self._connection = self._open()  # the server went away and may be back
        return self._connection

    @contextmanager
    def _translate(self, operation: str, key: str | None = None) -> Iterator[None]:
        """Turn psycopg errors into :class:`StoreError` (or :class:`StoreCorrupted`), scrubbed.

        psycopg's messages can quote the connection string; :meth:`_scrubbed` removes the password
        before the text reaches an exception, which may be logged or sent to a client.
        """
        psycopg = self._psycopg
        try:
            yield
        except psycopg.errors.DataCorrupted as exc:
            raise StoreCorrupted(
                f"agent store {self.location}: {operation} failed: {exc.sqlstate}"
            ) from None
        except psycopg.Error as exc:
            where = f" (agent key {_short(key)})" if key else ""
            raise StoreError(
                f"agent store {self.location}: {operation}{where} failed: "
                f"{type(exc).__name__}: {self._scrubbed(exc)}"
            ) from None

    def _scrubbed(self, exc: BaseException) -> str:
        """The error's first line, with the URL and its password blanked out if quoted."""
        text = (str(exc).strip().splitlines() or [""])[0]
        text = text.replace(self._url, self.location)
        password = _password(self._url)
        return text.replace(password, "***") if password else text

    @contextmanager
    def _write(self, operation: str, key: str | None = None) -> Iterator[_Cursor]:
        """A write transaction on this process's connection, under the store's lock."""
        with self._lock, self._translate(operation, key):
            conn = self._conn()
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    @contextmanager
    def _read(self, operation: str, key: str | None = None) -> Iterator[_Cursor]:
        """A ``REPEATABLE READ`` read-only transaction: all SELECTs of one call see one snapshot."""
        with self._lock, self._translate(operation, key):
            conn = self._conn()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield cur

    def close(self) -> None:
        """Close this process's connection; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pid == os.getpid():
                self._connection.close()
            else:
                _INHERITED.append(self._connection)

    # helpers --------------------------------------------------------------------------------

    def _touch(
        self,
        cur: _Cursor,
        key: str,
        assignments: str,
        params: Sequence[object],
        incarnation: int | None,
    ) -> None:
        """Run ``UPDATE agents SET <assignments>`` for ``key``, checking it and its incarnation."""
        cur.execute(
            f"UPDATE agents SET {assignments}, updated_at = %s "
            "WHERE key = %s AND (%s::bigint IS NULL OR incarnation = %s::bigint)",
            (*params, time.time(), key, incarnation, incarnation),
        )
        if cur.rowcount == 1:
            return
        row = cur.execute("SELECT incarnation FROM agents WHERE key = %s", (key,)).fetchone()
        if row is None:
            raise AgentNotFound(f"no stored agent with key {_short(key)}")
        raise StaleIncarnation(
            f"agent key {_short(key)} is at incarnation {row[0]}, the write was for {incarnation}"
        )

    @staticmethod
    def _put_result(cur: _Cursor, key: str, result: StoredRequest, max_results: int) -> None:
        """Store a tell result as the newest and evict beyond ``max_results``."""
        if max_results == 0:
            cur.execute("DELETE FROM results WHERE key = %s", (key,))
            return
        # Deleting first gives a re-stored ref a new seq: it becomes the newest result.
        cur.execute("DELETE FROM results WHERE key = %s AND ref = %s", (key, result.ref))
        cur.execute(
            "INSERT INTO results (key, ref, blob, crc) VALUES (%s, %s, %s, %s)",
            (key, result.ref, result.blob, _crc(result.blob)),
        )
        cur.execute(
            "DELETE FROM results WHERE key = %s AND seq <= ("
            " SELECT seq FROM results WHERE key = %s ORDER BY seq DESC LIMIT 1 OFFSET %s)",
            (key, key, max_results),
        )

    def _verified(self, key: str, part: str, blob: bytes | None, crc: int | None) -> bytes | None:
        """Return a stored blob after checking its CRC; damage raises :class:`StoreCorrupted`."""
        if blob is None:
            return None
        data = bytes(blob)
        if crc is None or _crc(data) != crc:
            raise StoreCorrupted(
                f"agent store {self.location}: the {part} of agent key {_short(key)} is "
                "damaged (checksum mismatch)"
            )
        return data

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
            cur.execute(
                "INSERT INTO agents (key, name, name_crc, spec, spec_crc, created_at,"
                " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING",
                (key, name_blob, _crc(name_blob), spec_blob, _crc(spec_blob), now, now),
            )
            if cur.rowcount != 1:
                raise AgentAlreadyExists(
                    f"a durable agent with key {_short(key)} is already stored"
                )

    def delete_agent(self, key: str) -> bool:
        """Delete the agent's row; its results, lease and session files go by cascade."""
        key = _check_key(key)
        with self._write("delete_agent", key) as cur:
            cur.execute("DELETE FROM agents WHERE key = %s", (key,))  # cascades
            return bool(cur.rowcount > 0)

    def list_agents(self) -> list[StoredAgentEntry]:
        """The stored agents, oldest first (a restart resumes them in start order), CRCs checked."""
        with self._read("list_agents") as cur:
            rows = cur.execute(
                "SELECT key, name, name_crc, incarnation FROM agents ORDER BY created_at, key"
            ).fetchall()
        entries = []
        for key, name, name_crc, incarnation in rows:
            name_blob = self._verified(key, "name", name, name_crc)
            assert name_blob is not None
            entries.append(StoredAgentEntry(key, name_blob, int(incarnation)))
        return entries

    def load(self, key: str) -> StoredAgent | None:
        """Read the record and its results in one ``REPEATABLE READ`` snapshot."""
        key = _check_key(key)
        with self._read("load", key) as cur:
            rows = self._select_agent(cur, key)
        return None if rows is None else self._build_agent(key, *rows)

    def begin_incarnation(self, key: str) -> StoredAgent:
        """Increment and load in one transaction, so no write of the old incarnation lands
        between.
        """
        key = _check_key(key)
        with self._write("begin_incarnation", key) as cur:
            cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = %s WHERE key = %s",
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
        """The four steps of a takeover in one transaction; the old lease's time left is
        computed by the server's clock, as :meth:`lease` does.

        The fence comes first: its update locks the agent's row, so a concurrent takeover
        commits before this one reads the lease, and this one then waits out that lease
        (each statement sees what was committed before it began)."""
        key = _check_key(key)
        with self._write("take_over", key) as cur:
            cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = %s WHERE key = %s",
                (time.time(), key),
            )
            row = cur.execute(
                "SELECT epoch, owner, extract(epoch FROM expires - clock_timestamp())"
                " FROM leases WHERE key = %s",
                (key,),
            ).fetchone()
            previous = None if row is None else Lease(int(row[0]), row[1], float(row[2]))
            rows = self._select_agent(cur, key)
            if rows is None:
                raise AgentNotFound(f"no stored agent with key {_short(key)}")
            agent = self._build_agent(key, *rows)
            self._upsert_lease(cur, key, agent.incarnation, owner, seconds)
            if process is not None:
                self._insert_process(cur, process)
        return TakeOver(agent, previous)

    @staticmethod
    def _select_agent(cur: _Cursor, key: str) -> tuple[_Row, list[_Row]] | None:
        """The agent's row and result rows, read in the caller's transaction."""
        row = cur.execute(
            "SELECT name, name_crc, spec, spec_crc, state, state_crc, incarnation"
            " FROM agents WHERE key = %s",
            (key,),
        ).fetchone()
        if row is None:
            return None
        result_rows = cur.execute(
            "SELECT ref, blob, crc FROM results WHERE key = %s ORDER BY seq", (key,)
        ).fetchall()
        return tuple(row), result_rows

    def _build_agent(self, key: str, row: _Row, result_rows: list[_Row]) -> StoredAgent:
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
            incarnation=int(incarnation),
        )

    def bump_incarnation(self, key: str) -> int:
        """Increment with ``RETURNING``: the row lock gives concurrent bumps distinct numbers."""
        key = _check_key(key)
        with self._write("bump_incarnation", key) as cur:
            row = cur.execute(
                "UPDATE agents SET incarnation = incarnation + 1, updated_at = %s WHERE key = %s"
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
        """Check the incarnation (a fenced no-op update) and upsert the files in one transaction.

        A stale incarnation on another host must not overwrite the transcript its successor
        already saved; the row lock of the no-op update also orders concurrent savers.
        """
        key = _check_key(key)
        checked = {
            _check_file_name(name): _as_blob(blob, "session file") for name, blob in files.items()
        }
        with self._write("put_session_files", key) as cur:
            self._touch(cur, key, "incarnation = incarnation", (), incarnation)
            for name, blob in checked.items():
                cur.execute(
                    "INSERT INTO session_files (key, name, blob, crc) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (key, name) DO UPDATE SET blob = EXCLUDED.blob,"
                    " crc = EXCLUDED.crc",
                    (key, name, blob, _crc(blob)),
                )

    def session_files(self, key: str) -> dict[str, bytes]:
        """Every stored session file by name, each CRC checked (empty when none was saved)."""
        key = _check_key(key)
        with self._read("session_files", key) as cur:
            rows = cur.execute(
                "SELECT name, blob, crc FROM session_files WHERE key = %s ORDER BY name", (key,)
            ).fetchall()
        return {
            name: self._verified(key, f"session file {name}", blob, crc) or b""
            for name, blob, crc in rows
        }

    # leases ---------------------------------------------------------------------------------
    # Times are the server's (clock_timestamp()), so hosts with skewed clocks agree.

    def lease(self, key: str) -> Lease | None:
        """The lease, with its remaining seconds computed by the database server's clock.

        Hosts whose clocks differ then agree on how long a lease has left, which is what deciding to
        wait out a lease or take it over depends on.
        """
        key = _check_key(key)
        with self._read("lease", key) as cur:
            row = cur.execute(
                "SELECT epoch, owner, extract(epoch FROM expires - clock_timestamp())"
                " FROM leases WHERE key = %s",
                (key,),
            ).fetchone()
        return None if row is None else Lease(int(row[0]), row[1], float(row[2]))

    def renew_lease(self, key: str, *, epoch: int, owner: str, seconds: float) -> None:
        """Check the epoch and write the lease in one transaction, so a fenced incarnation can
        never extend a lease after a newer one began.
        """
        key = _check_key(key)
        with self._write("renew_lease", key) as cur:
            row = cur.execute(
                "SELECT incarnation FROM agents WHERE key = %s FOR UPDATE", (key,)
            ).fetchone()
            _check_epoch(key, row, epoch)
            self._upsert_lease(cur, key, epoch, owner, seconds)

    @staticmethod
    def _upsert_lease(cur: _Cursor, key: str, epoch: int, owner: str, seconds: float) -> None:
        """Write the lease row of ``key``, expiring by the server's clock, in the caller's
        transaction."""
        cur.execute(
            "INSERT INTO leases (key, epoch, owner, expires)"
            " VALUES (%s, %s, %s, clock_timestamp() + make_interval(secs => %s))"
            " ON CONFLICT (key) DO UPDATE SET epoch = EXCLUDED.epoch,"
            " owner = EXCLUDED.owner, expires = EXCLUDED.expires",
            (key, epoch, owner, float(seconds)),
        )

    def release_lease(self, key: str, *, epoch: int) -> None:
        """Expire the lease now instead of deleting it: the row still says which epoch held it
        last, and a successor finds it expired and need not wait.
        """
        key = _check_key(key)
        with self._write("release_lease", key) as cur:
            cur.execute(
                "UPDATE leases SET expires = clock_timestamp() WHERE key = %s AND epoch = %s",
                (key, epoch),
            )

    # convention leadership ------------------------------------------------------------------

    def claim_leadership(self, convention: str, holder: str, seconds: float) -> Leadership:
        """Take or renew the convention's leadership lease if it is free, expired or ours.

        An expired lease taken over gets the next epoch (the fencing token of the new leader's
        services); a renewal by the holder keeps it. Answered with who holds it otherwise.
        """
        with self._write("claim_leadership") as cur:
            # The row is locked (or, when missing, the insert conflicts) so two claims
            # serialize; times are the server's, like the agents' leases.
            cur.execute(
                "INSERT INTO leadership (convention, epoch, holder, expires)"
                " VALUES (%s, 0, '', clock_timestamp()) ON CONFLICT (convention) DO NOTHING",
                (convention,),
            )
            row = cur.execute(
                "SELECT epoch, holder, extract(epoch FROM expires - clock_timestamp())"
                " FROM leadership WHERE convention = %s FOR UPDATE",
                (convention,),
            ).fetchone()
            if row is None:  # inserted just above in this transaction
                raise StoreError(f"the leadership row of convention {convention!r} vanished")
            epoch, current, left = int(row[0]), row[1], float(row[2])
            if left > 0 and current != holder:
                return Leadership(epoch, current, left)
            if left <= 0:
                epoch += 1
            cur.execute(
                "UPDATE leadership SET epoch = %s, holder = %s,"
                " expires = clock_timestamp() + make_interval(secs => %s) WHERE convention = %s",
                (epoch, holder, float(seconds), convention),
            )
            return Leadership(epoch, holder, seconds, acquired=True)

    def leadership(self, convention: str) -> Leadership | None:
        """Who leads ``convention``; ``None`` also for the placeholder row of epoch 0.

        ``claim_leadership`` inserts that row to have something to lock; it was never held.
        """
        with self._read("leadership") as cur:
            row = cur.execute(
                "SELECT epoch, holder, extract(epoch FROM expires - clock_timestamp())"
                " FROM leadership WHERE convention = %s AND epoch > 0",
                (convention,),
            ).fetchone()
        return None if row is None else Leadership(int(row[0]), row[1], float(row[2]))

    def release_leadership(self, convention: str, holder: str) -> None:
        """Expire the lease by the server's clock; a deposed leader's release is a no-op."""
        with self._write("release_leadership") as cur:
            cur.execute(
                "UPDATE leadership SET expires = clock_timestamp()"
                " WHERE convention = %s AND holder = %s",
                (convention, holder),
            )

    # turn-boundary writes -------------------------------------------------------------------

    def save_state(self, key: str, blob: bytes, *, incarnation: int | None = None) -> None:
        """Replace the snapshot; ``_touch`` refuses it if a newer incarnation began."""
        key = _check_key(key)
        blob = _as_blob(blob, "state blob")
        with self._write("save_state", key) as cur:
            self._touch(cur, key, "state = %s, state_crc = %s", (blob, _crc(blob)), incarnation)

    def put_result(self, key: str, ref: str, blob: bytes, *, max_results: int) -> None:
        """Store a tell's result and evict the oldest beyond ``max_results``, in one transaction."""
        key = _check_key(key)
        result = StoredRequest(_check_ref(ref), _as_blob(blob, "result blob"))
        max_results = _check_max_results(max_results)
        with self._write("put_result", key) as cur:
            if cur.execute("SELECT 1 FROM agents WHERE key = %s", (key,)).fetchone() is None:
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
        """Record (or refresh) the process; its key includes the start time and boot id, so a
        reused pid is a new row and never overwrites the record of the earlier process.
        """
        record = describe_process(pid, role, pgid, agent_key)
        if record is None:
            return None
        with self._write("record_process") as cur:
            self._insert_process(cur, record)
        return record

    @staticmethod
    def _insert_process(cur: _Cursor, record: ProcessRecord) -> None:
        """Write (or refresh) ``record`` in the caller's transaction."""
        cur.execute(
            "INSERT INTO processes"
            " (pid, start_ticks, boot, pgid, role, agent_key, recorded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (pid, start_ticks, boot) DO UPDATE SET pgid = EXCLUDED.pgid,"
            " role = EXCLUDED.role, agent_key = EXCLUDED.agent_key,"
            " recorded_at = EXCLUDED.recorded_at",
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

    def forget_processes(self, processes: Sequence[tuple[int, int]]) -> int:
        """Drop the records of ``(pid, start_ticks)`` pairs in one transaction."""
        if not processes:
            return 0
        with self._write("forget_processes") as cur:
            cur.execute(
                "DELETE FROM processes WHERE (pid, start_ticks) IN"
                " (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                ([pid for pid, _ in processes], [ticks for _, ticks in processes]),
            )
            return int(cur.rowcount)

    def forget_process(self, pid: int, start_ticks: int | None = None) -> int:
        """Delete the records of ``pid`` (only the one started at ``start_ticks``, if given).

        The casts give the server a type for the parameter when it is ``NULL``.
        """
        with self._write("forget_process") as cur:
            cur.execute(
                "DELETE FROM processes WHERE pid = %s"
                " AND (%s::bigint IS NULL OR start_ticks = %s::bigint)",
                (pid, start_ticks, start_ticks),
            )
            return int(cur.rowcount)

    def recorded_processes(self) -> list[ProcessRecord]:
        """Every process record, oldest first, with the server's numeric types made Python's."""
        with self._read("recorded_processes") as cur:
            rows = cur.execute(
                "SELECT pid, start_ticks, boot, pgid, role, agent_key, recorded_at"
                " FROM processes ORDER BY recorded_at, pid"
            ).fetchall()
        return [
            ProcessRecord(
                int(pid),
                int(ticks),
                boot,
                None if pgid is None else int(pgid),
                role,
                agent_key,
                float(recorded_at),
            )
            for pid, ticks, boot, pgid, role, agent_key, recorded_at in rows
        ]
