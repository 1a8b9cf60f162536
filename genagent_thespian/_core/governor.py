"""``SessionGovernor``: at most N live provider sessions per node, fairly shared.

A live Claude Code session is a CLI process of about 180-190 MiB PSS (measured here); a
node that must serve thousands of mostly idle agents cannot keep one per agent. The
governor holds the cap (``max_live_sessions``) and decides, for every turn that needs a
session, whether it gets one now, waits, or gives up:

* a holder whose session is live gets it at once (it becomes *busy*); a holder may also
  use its live session without asking and say so afterwards (``in_use``): that is what
  agents do, so a turn on a warm session costs no round trip to the governor;
* otherwise, with room under the cap, a new session is *granted*;
* otherwise the request waits in a FIFO queue (fair: first come, first served) and the
  least recently used *idle* session is retired (its CLI ended cleanly, resumed with
  ``--resume`` / thread resume on that agent's next turn); when it is gone the head of the
  queue is granted the slot;
* a request still queued at its deadline is *denied* (the turn fails with a typed error);
* an idle session unused for ``session_idle_timeout`` seconds is retired even without
  demand, so memory is given back;
* a *prewarm* (an agent started with ``prewarm=True`` wants its session live before any
  turn) takes only a free slot: never while a turn waits, never by retiring anybody, and
  it never queues. Granted, it is an ordinary idle session (retired least recently used,
  or after the idle timeout); refused, nothing is owed to anyone (the first turn asks as
  usual).

**Use reports only where they decide something.** Which sessions are busy, and since when
the idle ones are idle, matters only for retiring: when a request waits for a session to
go, and with an idle timeout. Otherwise holders need not say when each turn begins and
ends, two messages per turn that cost an agent a third of its CPU per claude turn: the
governor is *quiet*. When a request has to wait (or always, with an idle timeout) it
wants *reports*: it tells every live holder to report its use (``Report(on=True)``,
answered with ``in_use`` or ``turn_done(idle_for=...)``), and every holder it grants from
then on; until a holder has answered, its session counts as busy (never retired), so the
first waiter waits for those answers (one message each way). When nobody waits and the
live sessions are down to three quarters of the cap, it tells them to stop
(``Report(on=False)``). Quiet, ``status`` cannot tell busy from idle sessions (``busy``
is ``None``).

Pure: no actors, no processes; the caller passes a clock and carries out the decisions
(``Grant``, ``Retire``, ``Deny``, ``Report``). Holders are any hashable keys (agent names).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .errors import InvalidOption

__all__ = [
    "REPORT_WAIT",
    "SESSION_BUDGET_BYTES",
    "Decision",
    "Deny",
    "GovernorStatus",
    "Grant",
    "Report",
    "Retire",
    "SessionGovernor",
    "node_session_cap",
    "sessions_for_memory",
]

#: Seconds the governor waits for every live holder to answer ``Report(on=True)`` before it
#: retires the least recently used idle session among those that answered.
REPORT_WAIT = 1.0

#: Memory set aside per live session by the default cap (``max_live_sessions="auto"``): a
#: live Claude Code CLI measured 180-190 MiB PSS here, plus room for its tools' children.
SESSION_BUDGET_BYTES = 256 * 1024 * 1024


def sessions_for_memory(total_bytes: int) -> int:
    """The ``"auto"`` cap: how many live sessions fit in ``total_bytes`` (at least 1).

    Sized from the host's *total* memory, not what happens to be free when the node starts:
    the cap is a property of the host, and the same host gets the same cap every time."""
    return max(1, total_bytes // SESSION_BUDGET_BYTES)


def node_session_cap(setting: object) -> int | None:
    """The cap a node applies for its ``max_live_sessions`` setting; ``None``: no governor.

    ``"auto"`` (the default, also when the setting is absent) sizes it from this host's
    total memory; ``0`` or ``None`` turn the governor off; an int >= 1 is the cap."""
    if setting is None or setting == 0:
        return None
    if setting == "auto":
        import psutil

        return sessions_for_memory(psutil.virtual_memory().total)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise InvalidOption(
            f"max_live_sessions must be an int >= 0, 'auto' or None, got {setting!r}"
        )
    return setting


@dataclass(frozen=True, slots=True)
class Grant:
    """``holder`` may run its turn (its session is live, or it may start one); ``report``:
    it must report its use (``in_use``/``turn_done``) from now on."""

    holder: Hashable
    report: bool = False


@dataclass(frozen=True, slots=True)
class Retire:
    """End ``holder``'s idle session cleanly; report ``session_ended`` once it is gone."""

    holder: Hashable


@dataclass(frozen=True, slots=True)
class Deny:
    """``holder``'s request waited ``waited`` seconds and reached its deadline."""

    holder: Hashable
    waited: float


@dataclass(frozen=True, slots=True)
class Report:
    """``holder`` must report its use from now on (``on``: answer at once with
    ``in_use`` or ``turn_done``), or may stop reporting it (not ``on``)."""

    holder: Hashable
    on: bool


Decision = Grant | Retire | Deny | Report


@dataclass(frozen=True, slots=True)
class GovernorStatus:
    """What ``status``/``top`` show: the cap, sessions live, busy, retiring, and the queue.

    ``busy`` is ``None`` while the governor is quiet (no request waits and no idle timeout
    is set, so holders do not report their turns; see the module docstring)."""

    max_live_sessions: int
    live: int
    busy: int | None
    retiring: int
    queued: int
    oldest_wait: float | None


@dataclass
class _Session:
    busy: bool
    last_used: float
    retiring: bool = False
    known: bool = True  # the holder reports its use (or answered the request to)


class SessionGovernor:
    """The cap on live sessions and the fair queue (see the module docstring)."""

    def __init__(
        self,
        max_live_sessions: int,
        *,
        session_idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_live_sessions, bool) or not isinstance(max_live_sessions, int):
            raise InvalidOption(f"max_live_sessions must be an int, got {max_live_sessions!r}")
        if max_live_sessions < 1:
            raise InvalidOption(f"max_live_sessions must be >= 1, got {max_live_sessions}")
        if session_idle_timeout is not None and (
            isinstance(session_idle_timeout, bool)
            or not isinstance(session_idle_timeout, int | float)
            or session_idle_timeout <= 0
        ):
            raise InvalidOption(
                f"session_idle_timeout must be > 0 seconds or None, got {session_idle_timeout!r}"
            )
        self.max_live = max_live_sessions
        self.idle_timeout = session_idle_timeout
        self._clock = clock
        # Live sessions in least-recently-used order (oldest first).
        self._live: OrderedDict[Hashable, _Session] = OrderedDict()
        self._queue: deque[tuple[Hashable, float, float]] = deque()  # (holder, asked, deadline)
        #: Holders report their use (see the module docstring): always with an idle timeout.
        self.reporting = session_idle_timeout is not None
        self._answers_due: float | None = None  # until when answers to Report(on) are awaited

    # ------------------------------------------------------------------ inputs

    def request(self, holder: Hashable, *, timeout: float) -> list[Decision]:
        """``holder`` needs a session for a turn, within ``timeout`` seconds."""
        now = self._clock()
        session = self._live.get(holder)
        if session is not None and not session.retiring:
            self._use(holder, session, now)
            return [Grant(holder, self.reporting)]
        if any(queued == holder for queued, _, _ in self._queue):
            return []  # already waiting: one place in the queue per holder
        if session is None and len(self._live) < self.max_live:
            self._live[holder] = _Session(busy=True, last_used=now)
            return [Grant(holder, self.reporting)]
        self._queue.append((holder, now, now + max(0.0, timeout)))
        return self._pressure() + self._make_room()

    def prewarm(self, holder: Hashable) -> bool:
        """``holder`` wants its session live ahead of any turn; whether it may start it.

        Only a free slot is taken: with a turn waiting, or the cap reached, the answer is
        no (a prewarm must neither evict a session nor get ahead of a turn in the queue,
        and a refused one costs nobody anything). A granted session is idle and most
        recently used: the first turn on it is a warm turn (``in_use``), and under
        pressure or past the idle timeout it is retired like any idle session. A holder
        whose session is live already is answered yes (nothing changes); one whose
        session is being retired, no."""
        session = self._live.get(holder)
        if session is not None:
            return not session.retiring
        if self._queue or len(self._live) >= self.max_live:
            return False
        self._live[holder] = _Session(busy=False, last_used=self._clock())
        return True

    def in_use(self, holder: Hashable) -> list[Decision]:
        """``holder`` runs a turn on its live session, which it did not ask for.

        An agent whose session is live (granted before, not retired) starts its turn at
        once and tells the governor, so a warm turn waits for nobody. The session becomes
        busy and most recently used. When a ``Retire`` crossed the notice (the holder
        started its turn before the retire reached it), the retire is void: the session
        stays, and another idle one is retired instead if somebody waits. A holder the
        governor does not know (it was told the session ended, or the governor is new
        after a leader failover) is counted again: its session is live whatever the
        governor believed, and an over-full node gives sessions back as they go idle.
        (A quiet governor learns of such a holder from the occasional ``in_use`` that holders
        send even when not asked to report.)"""
        now = self._clock()
        session = self._live.get(holder)
        if session is None:
            self._live[holder] = _Session(busy=True, last_used=now)
            if self.reporting:
                return [Report(holder, on=True), *self._make_room()]
            return []
        session.retiring = False
        self._use(holder, session, now)
        return self._make_room()

    def turn_done(self, holder: Hashable, *, idle_for: float = 0.0) -> list[Decision]:
        """``holder``'s turn ended (``idle_for`` seconds ago); its session stays live, idle."""
        session = self._live.get(holder)
        if session is None:
            return []
        session.busy, session.known = False, True
        session.last_used = self._clock() - max(0.0, idle_for)
        self._live.move_to_end(holder)
        return self._make_room()

    def _use(self, holder: Hashable, session: _Session, now: float) -> None:
        """``holder``'s session is now busy and the most recently used."""
        session.busy, session.known, session.last_used = True, True, now
        self._live.move_to_end(holder)

    def session_ended(self, holder: Hashable) -> list[Decision]:
        """``holder``'s session is gone (retired, crashed, stopped): its slot is free."""
        self._live.pop(holder, None)
        return self._grant_waiting() + self._pressure()

    def withdraw(self, holder: Hashable) -> list[Decision]:
        """``holder`` no longer waits (its turn was cancelled or its agent stopped)."""
        self._queue = deque(q for q in self._queue if q[0] != holder)
        return self._pressure()

    def tick(self) -> list[Decision]:
        """Deny requests past their deadline; retire sessions idle past the idle timeout."""
        now = self._clock()
        decisions: list[Decision] = []
        kept: deque[tuple[Hashable, float, float]] = deque()
        for holder, asked, deadline in self._queue:
            if now >= deadline:
                decisions.append(Deny(holder, now - asked))
            else:
                kept.append((holder, asked, deadline))
        self._queue = kept
        decisions += self._pressure()
        if self._answers_due is not None and now >= self._answers_due:
            self._answers_due = None  # some holders never answered: go on without them
            decisions += self._make_room()
        if self.idle_timeout is not None:
            for holder, session in self._live.items():
                idle_for = now - session.last_used
                if self._idle(session) and idle_for >= self.idle_timeout:
                    session.retiring = True
                    decisions.append(Retire(holder))
        return decisions

    # ------------------------------------------------------------------ views

    def next_deadline(self) -> float | None:
        """Clock time of the next queued deadline or idle expiry (``None``: nothing due)."""
        times = [deadline for _, _, deadline in self._queue]
        if self._answers_due is not None:
            times.append(self._answers_due)
        if self.idle_timeout is not None:
            times += [s.last_used + self.idle_timeout for s in self._live.values() if self._idle(s)]
        return min(times) if times else None

    def status(self) -> GovernorStatus:
        """The numbers ``status`` and ``top`` show."""
        now = self._clock()
        return GovernorStatus(
            max_live_sessions=self.max_live,
            live=len(self._live),
            busy=(
                sum(1 for s in self._live.values() if s.busy or not s.known)
                if self.reporting
                else None
            ),
            retiring=sum(1 for s in self._live.values() if s.retiring),
            queued=len(self._queue),
            oldest_wait=(now - self._queue[0][1]) if self._queue else None,
        )

    def position(self, holder: Hashable) -> int | None:
        """``holder``'s place in the queue (0: next), or ``None`` when it does not wait."""
        for index, (queued, _, _) in enumerate(self._queue):
            if queued == holder:
                return index
        return None

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _idle(session: _Session) -> bool:
        """Known to be idle (its holder reports its use), and not already retiring."""
        return session.known and not session.busy and not session.retiring

    def _make_room(self) -> list[Decision]:
        """Retire least recently used idle sessions until the waiting ones will fit.

        Right after the reports were asked for, only once every holder has answered (or
        ``REPORT_WAIT`` has passed): the first answer is not the least recently used."""
        if self._answers_due is not None:
            unknown = any(not s.known for s in self._live.values())
            if unknown and self._clock() < self._answers_due:
                return []
            self._answers_due = None
        retiring = sum(1 for s in self._live.values() if s.retiring)
        needed = len(self._queue) - retiring - (self.max_live - len(self._live))
        if needed <= 0:
            return []
        idle = sorted(
            (session.last_used, index, holder)
            for index, (holder, session) in enumerate(self._live.items())
            if self._idle(session)
        )
        decisions: list[Decision] = []
        for _, _, holder in idle[:needed]:  # oldest use first
            self._live[holder].retiring = True
            decisions.append(Retire(holder))
        return decisions

    def _pressure(self) -> list[Decision]:
        """Start the holders' use reports when a request waits; stop them once nobody waits
        and the live sessions are down to three quarters of the cap."""
        if self.idle_timeout is not None:
            return []  # the idle timeout needs them always
        if not self.reporting and self._queue:
            self.reporting = True
            for session in self._live.values():
                session.known = False  # counted busy until its holder answers
            self._answers_due = self._clock() + REPORT_WAIT
            return [Report(holder, on=True) for holder in self._live]
        if self.reporting and not self._queue and len(self._live) <= self.max_live * 3 // 4:
            self.reporting, self._answers_due = False, None
            return [Report(holder, on=False) for holder in self._live]
        return []

    def _grant_waiting(self) -> list[Decision]:
        decisions: list[Decision] = []
        now = self._clock()
        while self._queue and len(self._live) < self.max_live:
            holder, _, _ = self._queue.popleft()
            self._live[holder] = _Session(busy=True, last_used=now)
            decisions.append(Grant(holder, self.reporting))
        return decisions + self._make_room()
