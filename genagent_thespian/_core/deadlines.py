"""``Deadlines``: an actor's named timers on top of Thespian's uncancellable wakeups.

Thespian's ``wakeupAfter`` cannot be cancelled, and every pending wakeup is re-sorted each
time a new one is added. An agent arming a 600 s watchdog and a 60 s idle timer per turn
would pile up thousands of dead wakeups (measured: a third of the agent's CPU); a
supervisor arming a check per agent start, wake-up and exit keeps thousands pending, and
Thespian sorts its whole list at every new one. Instead, an actor keeps its deadlines here,
each under a key (arming a key again replaces it; cancelling is a dict removal), and asks
Thespian for a wakeup only when no pending one comes early enough. The deadlines sit in a
heap, so arming one and firing the due ones cost ``O(log n)`` each with thousands pending;
replaced and cancelled entries are dropped lazily, and the heap is rebuilt when they
outnumber the live ones. A pure object: the caller passes the clock and arms the wakeups.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

#: Deadlines this close together fire in the same wakeup (seconds).
_SLACK = 0.0005


#: The type of the payloads one ``Deadlines`` holds (each actor its own union of timer kinds).
P = TypeVar("P")


class Deadlines(Generic[P]):
    """Named deadlines with as few pending wakeups as possible (see the module docstring).

    Example:
        >>> now = [0.0]
        >>> deadlines = Deadlines(clock=lambda: now[0])
        >>> deadlines.schedule("watchdog", 5.0, "turn 1")   # arm a wakeup in 5 s
        5.0
        >>> deadlines.schedule("retry", 9.0, "ref-a")       # the 5 s wakeup re-arms for it
        >>> deadlines.cancel("watchdog")
        True
        >>> now[0] = 5.0
        >>> deadlines.fire()                                # nothing due: arm for the retry
        ([], 4.0)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` is injectable so the agent's timers can be tested without waiting."""
        self._clock = clock
        self._deadlines: dict[Hashable, tuple[float, int, P]] = {}  # key -> (at, seq, payload)
        self._heap: list[tuple[float, int, Hashable]] = []  # (at, seq, key); stale ones too
        self._seq = itertools.count()  # orders equal times and tells a live entry from a stale one
        self._wakeups: list[float] = []  # times of the wakeups asked for, sorted

    def schedule(self, key: Hashable, seconds: float, payload: P) -> float | None:
        """Set deadline ``key`` ``seconds`` from now, replacing any earlier one of that key.

        Returns:
            The delay of a wakeup the caller must arm now, or ``None`` when a pending
            wakeup already comes in time.
        """
        at = self._clock() + max(0.0, seconds)
        seq = next(self._seq)
        self._deadlines[key] = (at, seq, payload)
        heapq.heappush(self._heap, (at, seq, key))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._deadlines):
            self._compact()
        return self._arm_for(at)

    def cancel(self, key: Hashable) -> bool:
        """Forget deadline ``key``; returns whether it was pending."""
        return self._deadlines.pop(key, None) is not None

    def pending(self, key: Hashable) -> bool:
        """Whether deadline ``key`` is set."""
        return key in self._deadlines

    def pending_items(self) -> list[tuple[float, P]]:
        """Every pending deadline as ``(seconds from now, payload)``, soonest first."""
        now = self._clock()
        return [
            (at - now, payload)
            for at, _, payload in sorted(self._deadlines.values(), key=lambda item: item[:2])
        ]

    def fire(self) -> tuple[list[P], float | None]:
        """Handle a wakeup: return the payloads now due, and a wakeup delay to arm if needed.

        Payloads come in deadline order. The returned delay is ``None`` when no deadline
        is left or a pending wakeup already covers the next one.
        """
        now = self._clock()
        while self._wakeups and self._wakeups[0] <= now + _SLACK:
            self._wakeups.pop(0)
        payloads: list[P] = []
        while (head := self._live_head()) is not None and head[0] <= now + _SLACK:
            _, _, key = heapq.heappop(self._heap)
            payloads.append(self._deadlines.pop(key)[2])
        if head is None:
            return payloads, None
        return payloads, self._arm_for(head[0])

    def __len__(self) -> int:
        """How many deadlines are pending."""
        return len(self._deadlines)

    def _live_head(self) -> tuple[float, int, Hashable] | None:
        """The soonest deadline still pending, dropping replaced and cancelled entries."""
        heap = self._heap
        while heap:
            _, seq, key = heap[0]
            entry = self._deadlines.get(key)
            if entry is not None and entry[1] == seq:
                return heap[0]
            heapq.heappop(heap)
        return None

    def _compact(self) -> None:
        """Rebuild the heap from the live deadlines (stale entries outnumber them)."""
        self._heap = [(at, seq, key) for key, (at, seq, _) in self._deadlines.items()]
        heapq.heapify(self._heap)

    def _arm_for(self, at: float) -> float | None:
        """Record that a wakeup is needed at ``at``; return the delay to arm, or ``None``.

        A new wakeup is armed only when none is pending at or before ``at`` (within ``_SLACK``):
        the earlier one re-arms for the rest when it fires, so a burst of deadlines does not
        flood the actor's mailbox with timer messages.
        """
        index = bisect.bisect_right(self._wakeups, at + _SLACK)
        if index > 0:
            return None  # a wakeup at or before ``at`` is pending; it will re-arm as needed
        bisect.insort(self._wakeups, at)
        return max(0.0, at - self._clock())
