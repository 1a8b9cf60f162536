"""The chaos test kit: kill processes and damage stores on purpose, from a test.

Everything here works from OS facts the test hands in (pids, process groups, file paths),
so it needs no actor system and can aim at any process: an agent, its turn worker, a CLI
child, or a whole process group. Waits are condition waits with a deadline, never fixed
sleeps. Offered to users through ``genagent_thespian.testing``.

Example:
    Kill a random live process every 200 ms for 5 s, reproducibly::

        monkey = ChaosMonkey(lambda: my_worker_pids(), interval=0.2, duration=5.0, seed=7)
        with monkey:
            monkey.wait(timeout=10)
        print(monkey.kills)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .._core.errors import AgentNotFound, InvalidOption
from .._core.types import AgentName
from .._durable.store import agent_key
from .._os import processes as _processes
from .._os.processes import children_of, descendants_of, process_alive, wait_for_exit
from .._os.procfs import process_group_members

__all__ = [
    "ChaosKill",
    "ChaosMonkey",
    "children_of",
    "corrupt_file",
    "corrupt_store",
    "descendants_of",
    "kill_process",
    "kill_process_group",
    "process_alive",
    "process_group_members",
    "wait_for_exit",
]


# --- killing ------------------------------------------------------------------------------


def kill_process(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to ``pid``; return whether it was sent (``False``: no such process).

    Raises:
        InvalidOption: ``pid`` is not a positive int, or is this very process (a test that
            aims at itself is wrong, not lucky).
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise InvalidOption(f"invalid pid {pid!r}: expected a positive int")
    if pid == os.getpid():
        raise InvalidOption(f"refusing to signal the calling process itself (pid {pid})")
    return _processes.kill_process(pid, sig)


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of group ``pgid``; return whether it was sent.

    Raises:
        InvalidOption: ``pgid`` is not an int > 1, or is the caller's own group (which
            would signal the caller, and in a test run the test runner).
    """
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        raise InvalidOption(f"invalid process group {pgid!r}: expected an int > 1")
    if pgid == os.getpgrp():
        raise InvalidOption(f"refusing to signal the caller's own process group {pgid}")
    return _processes.kill_process_group(pgid, sig)


# --- damaging files -------------------------------------------------------------------------

_AGENT_COLUMNS = {"name": "name", "spec": "spec", "state": "state"}
_ROW_TABLES = {"results": "results"}


def corrupt_store(
    path: str | os.PathLike[str],
    key: str | None = None,
    *,
    name: AgentName = None,
    part: str = "state",
) -> None:
    """Damage a durable agent store so that reading it fails with ``StoreCorrupted``.

    With an agent (``key``, or ``name`` from which the key is computed) one part of that
    agent's record is overwritten behind the store's back, so its checksum no longer
    matches and loading that agent fails while the other agents stay readable. Without an
    agent the file's header is overwritten, so opening the store fails.

    Args:
        path: The SQLite store file.
        key: The agent's store key (see ``agent_key``).
        name: The agent's name, instead of ``key``.
        part: What to damage: ``"state"`` (default, the snapshot that holds the mailbox
            and the in-flight request), ``"spec"``, ``"name"`` or ``"results"`` (every
            stored tell result).

    Raises:
        AgentNotFound: The agent, or the part to damage, is not in the store.
        InvalidOption: ``part`` is unknown, or both ``key`` and ``name`` were given.
    """
    if key is not None and name is not None:
        raise InvalidOption("corrupt_store takes key or name, not both")
    if name is not None:
        key = agent_key(name)
    if key is None:
        _damage_header(path)
        return
    if part not in _AGENT_COLUMNS and part not in _ROW_TABLES:
        choices = ", ".join(repr(p) for p in [*_AGENT_COLUMNS, *_ROW_TABLES])
        raise InvalidOption(f"invalid part {part!r}: expected one of {choices}")
    garbage = b"\x80\x04chaos: damaged on purpose\x00"
    conn = sqlite3.connect(os.fspath(path), timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if part in _AGENT_COLUMNS:
            column = _AGENT_COLUMNS[part]
            cur = conn.execute(
                f"UPDATE agents SET {column} = ? WHERE key = ? AND {column} IS NOT NULL",
                (garbage, key),
            )
        else:
            table = _ROW_TABLES[part]
            cur = conn.execute(f"UPDATE {table} SET blob = ? WHERE key = ?", (garbage, key))
        changed = cur.rowcount
        conn.execute("COMMIT")
    finally:
        conn.close()
    if changed == 0:
        raise AgentNotFound(f"agent key {key[:12]} has no {part} to damage in {os.fspath(path)}")


def _damage_header(path: str | os.PathLike[str]) -> None:
    """Overwrite the first 100 bytes of a SQLite file (its header) so the next open fails.

    The write-ahead log is checkpointed first: with a live log SQLite reads page 1 from the log, and
    damage to the file alone would go unnoticed. A reader holding the log busy makes the damage
    impossible to place, so that is an error rather than a silent no-op.
    """
    # With a live write-ahead log, SQLite reads page 1 (and with it the header) from the
    # log, not from the file. Move every logged page into the file first, so the damage
    # is what the next reader sees.
    conn = sqlite3.connect(os.fspath(path), timeout=30.0, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy:
        raise InvalidOption(
            f"cannot damage {os.fspath(path)} now: a reader kept the write-ahead log busy"
        )
    corrupt_file(path, offset=0, length=100, seed=0)


def corrupt_file(
    path: str | os.PathLike[str],
    *,
    offset: int = 0,
    length: int = 64,
    seed: int | None = None,
) -> bytes:
    """Overwrite ``length`` bytes of a file at ``offset`` with different random bytes.

    For session files of a CLI backend, a store, or any file a test wants damaged. Every
    byte in the range is changed (a random non-zero XOR), so the damage is never a no-op.

    Returns:
        The original bytes that were overwritten.

    Raises:
        InvalidOption: The range is empty or outside the file.
    """
    size = os.path.getsize(path)
    if length <= 0 or offset < 0 or offset >= size:
        raise InvalidOption(
            f"cannot damage {length} byte(s) at offset {offset} of {os.fspath(path)} ({size} bytes)"
        )
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        f.seek(offset)
        original = f.read(length)
        damaged = bytes(b ^ rng.randrange(1, 256) for b in original)
        f.seek(offset)
        f.write(damaged)
        f.flush()
        os.fsync(f.fileno())
    return original


# --- the monkey -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosKill:
    """One kill by a :class:`ChaosMonkey`.

    Attributes:
        at: Seconds since the monkey started.
        pid: The pid it chose.
        signal: The signal it sent.
        delivered: ``False`` if the process had already gone when the signal was sent.
    """

    at: float
    pid: int
    signal: int
    delivered: bool


class ChaosMonkey:
    """Kill a random candidate process at a steady rate, in a background thread.

    Each tick (every ``interval`` seconds, the first one ``interval`` after :meth:`start`)
    it calls ``candidates()``, picks one pid with its own seeded RNG (from the sorted
    candidates, so a seed and the same candidates give the same choices), and kills it. It
    stops by itself after ``duration`` seconds or ``max_kills`` kills, whichever comes
    first, or when :meth:`stop` is called. Errors raised by ``candidates`` or ``kill`` are
    collected in :attr:`errors` and the monkey carries on.

    Args:
        candidates: Returns the pids that may be killed now (the caller's own pid is
            always left out).
        interval: Seconds between ticks (> 0).
        duration: Seconds after which the monkey stops (> 0).
        max_kills: Stop after this many kills (``None``: no count limit).
        seed: Seed of the RNG that picks the victims.
        sig: The signal to send (default SIGKILL).
        kill: Sends the signal: ``kill(pid, sig) -> delivered``. Defaults to
            :func:`kill_process`; pass :func:`kill_process_group` to kill whole groups.
        clock: Monotonic seconds.

    Raises:
        InvalidOption: An argument is out of range.
    """

    def __init__(
        self,
        candidates: Callable[[], Iterable[int]],
        *,
        interval: float = 0.2,
        duration: float = 5.0,
        max_kills: int | None = None,
        seed: int | None = None,
        sig: int = signal.SIGKILL,
        kill: Callable[[int, int], bool] = kill_process,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check every setting before any thread starts; bad values are :class:`InvalidOption`.

        ``kill`` and ``clock`` are injectable so the monkey's own tests can run without signalling
        real processes or waiting in real time.
        """
        if not callable(candidates):
            raise InvalidOption(f"invalid candidates={candidates!r}: expected a callable")
        for option, value in (("interval", interval), ("duration", duration)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise InvalidOption(f"invalid {option}={value!r}: expected seconds > 0")
        if max_kills is not None and (
            not isinstance(max_kills, int) or isinstance(max_kills, bool) or max_kills < 1
        ):
            raise InvalidOption(f"invalid max_kills={max_kills!r}: expected an int >= 1 or None")
        self._candidates = candidates
        self.interval = float(interval)
        self.duration = float(duration)
        self.max_kills = max_kills
        self.sig = sig
        self._kill = kill
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._kills: list[ChaosKill] = []
        self._errors: list[BaseException] = []
        self._ticks = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kills(self) -> list[ChaosKill]:
        """The kills so far, oldest first (a copy)."""
        with self._lock:
            return list(self._kills)

    @property
    def killed_pids(self) -> list[int]:
        """The pids the monkey sent a signal to (delivered or not), oldest first."""
        return [k.pid for k in self.kills]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by ``candidates`` or ``kill`` (a copy)."""
        with self._lock:
            return list(self._errors)

    @property
    def ticks(self) -> int:
        """Ticks run so far, including ticks with no candidate."""
        with self._lock:
            return self._ticks

    @property
    def running(self) -> bool:
        """Whether the background thread is still at work."""
        return self._thread is not None and not self._done.is_set()

    def start(self) -> ChaosMonkey:
        """Start the background thread (once)."""
        if self._thread is not None:
            raise InvalidOption("this ChaosMonkey has already been started")
        self._thread = threading.Thread(target=self._run, name="genagent-chaos-monkey", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the monkey has stopped by itself; ``False`` if ``timeout`` ran out."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the monkey now and wait for its thread (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ChaosMonkey:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        """The monkey's thread: on each tick pick one candidate at random and kill it.

        Ticks are scheduled from the start time, not from the previous kill, so a slow
        ``candidates()`` does not stretch the run. The test process itself is never a candidate. A
        failing ``candidates()`` or ``kill`` is kept in the errors for the test to see rather than
        ending the thread, and each kill records whether the signal was delivered.
        """
        started = self._clock()
        deadline = started + self.duration
        next_tick = started + self.interval
        own_pid = os.getpid()
        try:
            while True:
                if self._stop.wait(max(0.0, next_tick - self._clock())):
                    return
                now = self._clock()
                if now > deadline:
                    return
                next_tick += self.interval
                with self._lock:
                    self._ticks += 1
                try:
                    pool = sorted({int(p) for p in self._candidates() if int(p) != own_pid})
                    if not pool:
                        continue
                    victim = self._rng.choice(pool)
                    delivered = bool(self._kill(victim, self.sig))
                except Exception as exc:
                    with self._lock:
                        self._errors.append(exc)
                    continue
                with self._lock:
                    self._kills.append(ChaosKill(now - started, victim, self.sig, delivered))
                    if self.max_kills is not None and len(self._kills) >= self.max_kills:
                        return
        finally:
            self._done.set()
