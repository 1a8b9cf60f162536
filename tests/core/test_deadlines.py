"""Deadlines: named timers over uncancellable wakeups, with as few wakeups as possible."""

from __future__ import annotations

import random

from genagent_thespian._core.deadlines import Deadlines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_a_deadline_earlier_than_every_pending_wakeup_arms_one() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    assert deadlines.schedule("watchdog", 600, "w") == 600
    assert deadlines.schedule("idle", 60, "i") == 60
    assert deadlines.schedule("later", 900, "l") is None  # the 60 s wakeup comes first


def test_rescheduling_a_key_replaces_it_and_piles_up_nothing() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    armed = [deadlines.schedule("watchdog", 600, f"turn-{n}") for n in range(1000)]
    assert armed[0] == 600 and armed[1:] == [None] * 999  # one wakeup for a thousand turns
    assert len(deadlines) == 1
    clock.now += 600
    payloads, again = deadlines.fire()
    assert payloads == ["turn-999"] and again is None


def test_each_wakeup_fires_what_is_due_and_rearms_only_when_needed() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    assert deadlines.schedule("b", 2.0, "b") == 2.0
    assert deadlines.schedule("a", 1.0, "a") == 1.0  # earlier than the pending wakeup
    assert deadlines.schedule("c", 5.0, "c") is None
    clock.now += 1.0  # the first wakeup
    assert deadlines.fire() == (["a"], None)  # the +2 s wakeup is still pending
    clock.now += 1.0  # the second wakeup
    assert deadlines.fire() == (["b"], 3.0)  # nothing pending covers c: arm for it
    clock.now += 3.0
    assert deadlines.fire() == (["c"], None)


def test_deadlines_due_together_fire_in_deadline_order() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    for key, seconds in (("late", 0.3), ("early", 0.1), ("middle", 0.2)):
        deadlines.schedule(key, seconds, key)
    clock.now += 1.0
    assert deadlines.fire()[0] == ["early", "middle", "late"]


def test_a_cancelled_deadline_never_fires() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    deadlines.schedule(("timer", 1), 1.0, "t")
    assert deadlines.cancel(("timer", 1)) is True
    assert deadlines.cancel(("timer", 1)) is False
    clock.now += 1.0
    assert deadlines.fire() == ([], None)


def test_thousands_pending_fire_in_order_with_replacements_and_cancellations() -> None:
    clock = Clock()
    deadlines: Deadlines[str] = Deadlines(clock)
    rng = random.Random(7)
    expected: dict[int, tuple[float, str]] = {}
    for n in range(5000):
        key = rng.randrange(3000)
        seconds = rng.uniform(0, 100)
        deadlines.schedule(key, seconds, f"{key}@{n}")
        expected[key] = (clock.now + seconds, f"{key}@{n}")
        if rng.random() < 0.2:
            gone = rng.randrange(3000)
            assert deadlines.cancel(gone) is (expected.pop(gone, None) is not None)
    assert len(deadlines) == len(expected)
    fired: list[str] = []
    for step in range(1, 101):
        clock.now = 100.0 + step
        fired += deadlines.fire()[0]
    assert fired == [payload for _, payload in sorted(expected.values())]
    assert len(deadlines) == 0


def test_a_key_rearmed_many_times_keeps_the_heap_small() -> None:
    clock = Clock()
    deadlines: Deadlines[int] = Deadlines(clock)
    for n in range(10_000):
        deadlines.schedule("watchdog", 600, n)
        deadlines.schedule(("timer", n % 10), 60, n)
    assert len(deadlines) == 11
    assert len(deadlines._heap) <= 2 * 11 + 64  # replaced entries are compacted away
