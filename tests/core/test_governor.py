"""The session governor's policy, driven with a fake clock (no actors, no processes)."""

from __future__ import annotations

import pytest

from genagent_thespian import InvalidOption
from genagent_thespian._core.governor import (
    REPORT_WAIT,
    Deny,
    Grant,
    Report,
    Retire,
    SessionGovernor,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _waiting(gov: SessionGovernor, holder: str, *, live: list[str]) -> None:
    """``holder`` waits at the cap: every live holder is asked to report its use."""
    assert gov.request(holder, timeout=10) == [Report(h, on=True) for h in live]
    assert gov.reporting


def test_sessions_are_granted_under_the_cap_and_reused_by_their_holder(clock: Clock) -> None:
    gov = SessionGovernor(2, clock=clock)
    assert gov.request("a", timeout=10) == [Grant("a", report=False)]
    assert gov.request("b", timeout=10) == [Grant("b", report=False)]
    assert gov.request("a", timeout=10) == [Grant("a")]  # its session is live: no new one
    # Nobody waits: the holders do not report their turns, so busy is not known.
    assert not gov.reporting
    status = gov.status()
    assert (status.live, status.busy, status.queued) == (2, None, 0)


def test_use_reports_start_when_a_request_waits_and_stop_once_nobody_does(clock: Clock) -> None:
    gov = SessionGovernor(4, clock=clock)
    for holder in "abcd":
        gov.request(holder, timeout=10)
    _waiting(gov, "e", live=["a", "b", "c", "d"])
    # Until they answer, no session is known to be idle: nothing is retired.
    assert gov.status().busy == 4
    assert gov.in_use("a") == [] and gov.in_use("b") == [] and gov.in_use("c") == []
    assert gov.turn_done("d", idle_for=3.0) == [Retire("d")]
    assert gov.session_ended("d") == [Grant("e", report=True)]  # e reports from the start
    # Nobody waits, but the node is still full: the reports go on.
    assert gov.reporting and gov.status().busy == 4
    # Down to 3/4 of the cap, nobody waiting: they stop.
    assert gov.session_ended("a") == [Report(h, on=False) for h in ("b", "c", "e")]
    assert not gov.reporting and gov.status().busy is None


def test_at_the_cap_the_least_recently_used_idle_session_is_retired_for_a_waiter(
    clock: Clock,
) -> None:
    gov = SessionGovernor(2, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    clock.now += 2
    _waiting(gov, "c", live=["a", "b"])
    # The answers come in any order; the retire waits for all of them, then takes the
    # session idle for longest (a: 2 s; b: its turn ended a second ago).
    assert gov.turn_done("b", idle_for=1.0) == []
    assert gov.turn_done("a", idle_for=2.0) == [Retire("a")]
    assert gov.position("c") == 0
    assert gov.status().retiring == 1
    assert gov.request("c", timeout=10) == []  # one place per holder
    assert gov.session_ended("a") == [Grant("c", report=True)]
    assert gov.status().live == 2


def test_a_holder_that_never_answers_holds_back_the_retire_only_briefly(clock: Clock) -> None:
    gov = SessionGovernor(2, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    _waiting(gov, "c", live=["a", "b"])
    assert gov.turn_done("b", idle_for=0.5) == []  # a has not answered yet
    assert gov.next_deadline() == clock.now + REPORT_WAIT
    clock.now += REPORT_WAIT
    assert gov.tick() == [Retire("b")]  # a, silent, counts as busy
    assert gov.next_deadline() == 100.0 + 10  # c's own deadline, nothing else due


def test_an_idle_timeout_has_every_holder_report_from_its_grant(clock: Clock) -> None:
    gov = SessionGovernor(4, session_idle_timeout=30, clock=clock)
    assert gov.reporting
    assert gov.request("a", timeout=10) == [Grant("a", report=True)]


def test_busy_sessions_are_never_retired_and_waiters_are_served_in_order(clock: Clock) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    _waiting(gov, "b", live=["a"])
    assert gov.in_use("a") == []  # a is busy: nothing to retire yet
    assert gov.request("c", timeout=10) == []
    assert gov.turn_done("a") == [Retire("a")]  # now idle, and someone waits
    assert gov.session_ended("a") == [Grant("b", report=True)]
    assert gov.turn_done("b") == [Retire("b")]
    assert gov.session_ended("b") == [Grant("c", report=True)]


def test_a_holder_using_its_live_session_without_asking_becomes_busy(clock: Clock) -> None:
    gov = SessionGovernor(2, session_idle_timeout=60, clock=clock)  # reports from the start
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    clock.now += 1
    gov.turn_done("a")
    clock.now += 1
    gov.turn_done("b")
    clock.now += 1
    assert gov.in_use("a") == []  # a warm turn: no grant to wait for
    status = gov.status()
    assert (status.live, status.busy) == (2, 1)
    assert gov.request("c", timeout=10) == [Retire("b")]  # a is busy and was used last


def test_a_retire_that_crossed_a_warm_turn_is_void_and_another_session_is_retired(
    clock: Clock,
) -> None:
    gov = SessionGovernor(2, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    _waiting(gov, "c", live=["a", "b"])
    assert gov.turn_done("a", idle_for=1.0) == []
    assert gov.turn_done("b") == [Retire("a")]
    # a started a turn before the retire reached it: it keeps its session, and b, idle,
    # is retired for c instead.
    assert gov.in_use("a") == [Retire("b")]
    status = gov.status()
    assert (status.live, status.busy, status.retiring, status.queued) == (2, 1, 1, 1)
    assert gov.session_ended("b") == [Grant("c", report=True)]


def test_a_retire_refused_with_nothing_else_idle_waits_for_the_turn_to_end(
    clock: Clock,
) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    _waiting(gov, "b", live=["a"])
    assert gov.turn_done("a") == [Retire("a")]
    assert gov.in_use("a") == []  # the retire is refused; nothing else to retire
    status = gov.status()
    assert (status.live, status.busy, status.retiring, status.queued) == (1, 1, 0, 1)
    assert gov.turn_done("a") == [Retire("a")]  # idle again, and b still waits
    assert gov.session_ended("a") == [Grant("b", report=True)]


def test_a_session_the_governor_did_not_know_is_counted_and_the_cap_restored(
    clock: Clock,
) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    # "x" kept its live session through a leader failover: the new governor learns of it
    # from a turn's in_use (sent now and then even unasked), counts it, and gives the cap
    # back as soon as a request waits, by retiring the idle one.
    assert gov.in_use("x") == []
    assert gov.status().live == 2
    _waiting(gov, "b", live=["a", "x"])
    assert gov.in_use("x") == []
    assert gov.turn_done("a") == [Retire("a")]
    assert gov.session_ended("a") == []  # still over the cap: b waits for x's session
    assert gov.turn_done("x") == [Retire("x")]
    assert gov.session_ended("x") == [Grant("b", report=True)]
    assert gov.status().live == 1
    # Reporting already, a holder it did not know is asked to report at once.
    assert gov.in_use("y") == [Report("y", on=True)]


def test_a_request_still_waiting_at_its_deadline_is_denied(clock: Clock) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=2)
    gov.request("c", timeout=30)
    assert gov.next_deadline() == 100.0 + REPORT_WAIT  # a is asked to report its use
    gov.in_use("a")
    assert gov.next_deadline() == 102.0
    clock.now += 2.5
    assert gov.tick() == [Deny("b", 2.5)]
    assert gov.position("c") == 0
    assert gov.status().oldest_wait == 2.5


def test_an_idle_session_is_retired_after_the_idle_timeout(clock: Clock) -> None:
    gov = SessionGovernor(5, session_idle_timeout=30, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    gov.turn_done("a")
    assert gov.next_deadline() == 130.0
    clock.now += 29
    assert gov.tick() == []
    clock.now += 1
    assert gov.tick() == [Retire("a")]  # b is busy: kept
    assert gov.tick() == []  # retiring already
    gov.session_ended("a")
    assert gov.status().live == 1


def test_a_holder_asking_while_its_session_retires_waits_for_a_new_one(clock: Clock) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    _waiting(gov, "b", live=["a"])
    assert gov.turn_done("a") == [Retire("a")]
    assert gov.request("a", timeout=10) == []  # queued behind b
    assert gov.session_ended("a") == [Grant("b", report=True)]
    assert gov.turn_done("b") == [Retire("b")]
    assert gov.session_ended("b") == [Grant("a", report=True)]


def test_a_withdrawn_request_leaves_the_queue(clock: Clock) -> None:
    gov = SessionGovernor(1, clock=clock)
    gov.request("a", timeout=10)
    gov.request("b", timeout=10)
    gov.withdraw("b")
    assert gov.position("b") is None
    assert gov.turn_done("a") == []  # nobody waits: a keeps its session


@pytest.mark.parametrize(
    ("cap", "idle"), [(0, None), (True, None), (2.5, None), (2, 0), (2, -1), (2, "x")]
)
def test_bad_settings_are_refused(cap: object, idle: object) -> None:
    with pytest.raises(InvalidOption):
        SessionGovernor(cap, session_idle_timeout=idle)  # type: ignore[arg-type]


def test_the_default_cap_comes_from_the_hosts_total_memory() -> None:
    import psutil

    from genagent_thespian._core.governor import (
        SESSION_BUDGET_BYTES,
        node_session_cap,
        sessions_for_memory,
    )

    assert SESSION_BUDGET_BYTES == 256 * 1024 * 1024
    assert sessions_for_memory(24 * 1024**3) == 96
    assert sessions_for_memory(100 * 1024 * 1024) == 1  # a tiny host still runs one
    assert node_session_cap("auto") == sessions_for_memory(psutil.virtual_memory().total)
    assert node_session_cap(7) == 7
    assert node_session_cap(0) is None  # off
    assert node_session_cap(None) is None  # off
    for bad in (-1, "many", True, 2.5):
        with pytest.raises(InvalidOption):
            node_session_cap(bad)


def test_a_prewarm_takes_a_free_slot_as_an_idle_session(clock: Clock) -> None:
    gov = SessionGovernor(2, session_idle_timeout=60, clock=clock)  # busy counted
    assert gov.prewarm("a") is True
    status = gov.status()
    assert (status.live, status.busy, status.queued) == (1, 0, 0)
    assert gov.prewarm("a") is True  # already live: nothing changes
    assert gov.status().live == 1
    # The first turn on it is a warm turn: it is in use at once, no new slot taken.
    assert gov.in_use("a") == []
    assert (gov.status().live, gov.status().busy) == (1, 1)


def test_a_prewarm_never_evicts_never_queues_and_never_overtakes_a_waiting_turn(
    clock: Clock,
) -> None:
    gov = SessionGovernor(2, clock=clock)
    gov.request("busy", timeout=10)
    assert gov.prewarm("idle") is True
    # At the cap: refused, and nothing retired for it, busy or idle.
    assert gov.prewarm("late") is False
    status = gov.status()
    assert (status.live, status.retiring, status.queued) == (2, 0, 0)
    # A turn waits (the idle prewarmed session is being retired for it): a prewarm that
    # finds the freed slot must not take it ahead of the turn.
    _waiting(gov, "turn", live=["busy", "idle"])
    assert gov.in_use("busy") == []
    assert gov.turn_done("idle", idle_for=1.0) == [Retire("idle")]
    assert gov.prewarm("late") is False
    assert gov.session_ended("idle") == [Grant("turn", report=True)]
    assert gov.position("late") is None
    # Its own session being retired: refused (the holder's next turn asks as usual).
    gov.turn_done("turn")
    assert gov.request("other", timeout=10) == [Retire("turn")]
    assert gov.prewarm("turn") is False


def test_a_prewarmed_session_is_retired_like_any_idle_one(clock: Clock) -> None:
    gov = SessionGovernor(1, session_idle_timeout=30, clock=clock)
    assert gov.prewarm("a") is True
    assert gov.next_deadline() == clock.now + 30
    clock.now += 30
    assert gov.tick() == [Retire("a")]
    assert gov.session_ended("a") == []
    assert gov.prewarm("b") is True
    # Under pressure it is the least recently used idle session that goes.
    assert gov.request("c", timeout=10) == [Retire("b")]
