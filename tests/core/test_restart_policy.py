"""Tests of the pure restart policy: restart types, intensity window, back-off, validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genagent_thespian._core.errors import InvalidOption
from genagent_thespian._core.restart_policy import (
    ExitKind,
    RestartAction,
    RestartDecision,
    RestartPolicy,
    RestartType,
)


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock | None = None, **options: object) -> RestartPolicy:
    return RestartPolicy(clock=clock or FakeClock(), **options)  # type: ignore[arg-type]


# --- restart type x exit kind -------------------------------------------------------------

EXPECTED = {
    ("temporary", "normal"): "forget",
    ("temporary", "stopped"): "forget",
    ("temporary", "crashed"): "forget",
    ("temporary", "killed"): "forget",
    ("transient", "normal"): "forget",
    ("transient", "stopped"): "forget",
    ("transient", "crashed"): "restart",
    ("transient", "killed"): "restart",
    ("permanent", "normal"): "restart",
    ("permanent", "stopped"): "forget",
    ("permanent", "crashed"): "restart",
    ("permanent", "killed"): "restart",
}


@pytest.mark.parametrize(("restart", "exit_kind"), sorted(EXPECTED))
def test_every_restart_type_and_exit_kind(restart: str, exit_kind: str) -> None:
    decision = make(restart=restart).decide(exit_kind)

    assert decision.action == EXPECTED[(restart, exit_kind)]
    assert isinstance(decision.action, RestartAction)
    if decision.action == "restart":
        assert decision.delay == pytest.approx(0.05)
        assert decision.restarts_in_window == 1
    else:
        assert decision.delay == 0.0
        assert decision.restarts_in_window == 0
    assert exit_kind in decision.reason


def test_default_is_temporary_like_upstream() -> None:
    policy = make()
    assert policy.restart is RestartType.TEMPORARY
    assert policy.decide(ExitKind.KILLED).action is RestartAction.FORGET


def test_forget_decisions_do_not_use_up_the_budget() -> None:
    policy = make(restart="transient", max_restarts=1)
    for _ in range(5):
        assert policy.decide("normal").action == "forget"
        assert policy.decide("stopped").action == "forget"
    assert policy.decide("crashed").action == "restart"


def test_stopped_is_forgotten_even_when_the_budget_is_spent() -> None:
    policy = make(restart="permanent", max_restarts=0)
    assert policy.decide("crashed").action == "give_up"
    assert policy.decide("stopped").action == "forget"


# --- intensity ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_restarts", [0, 1, 3, 7])
def test_gives_up_exactly_at_restart_n_plus_one_within_the_window(max_restarts: int) -> None:
    clock = FakeClock()
    policy = make(clock, restart="permanent", max_restarts=max_restarts, window=5.0)
    for expected_count in range(1, max_restarts + 1):
        clock.advance(4.9 / (max_restarts + 1))
        decision = policy.decide("crashed")
        assert decision.action == "restart"
        assert decision.restarts_in_window == expected_count

    clock.advance(4.9 / (max_restarts + 1))
    decision = policy.decide("crashed")

    assert decision.action == "give_up"
    assert decision.restarts_in_window == max_restarts
    assert decision.delay == 0.0
    assert "intensity" in decision.reason
    assert f"max_restarts={max_restarts}" in decision.reason


def test_restarts_older_than_the_window_no_longer_count() -> None:
    clock = FakeClock()
    policy = make(clock, restart="permanent", max_restarts=2, window=5.0)
    assert policy.decide("crashed").restarts_in_window == 1  # at t=0
    clock.advance(3.0)
    assert policy.decide("crashed").restarts_in_window == 2  # at t=3
    clock.advance(1.0)
    assert policy.decide("crashed").action == "give_up"  # t=4: two in window already

    clock.advance(1.0)  # t=5: the restart at t=0 is exactly one window old and drops out
    assert policy.restarts_in_window == 1
    decision = policy.decide("crashed")
    assert decision.action == "restart"
    assert decision.restarts_in_window == 2


def test_a_long_quiet_period_restores_the_whole_budget() -> None:
    clock = FakeClock()
    policy = make(clock, restart="transient", max_restarts=3, window=5.0)
    for _ in range(3):
        policy.decide("killed")
    assert policy.decide("killed").action == "give_up"
    clock.advance(60.0)
    assert policy.restarts_in_window == 0
    assert [policy.decide("killed").action for _ in range(4)] == [
        "restart",
        "restart",
        "restart",
        "give_up",
    ]


def test_a_repeated_exit_id_is_decided_once() -> None:
    policy = make(restart="permanent", max_restarts=2)
    first = policy.decide("killed", exit_id=("agent", 1))
    again = policy.decide("killed", exit_id=("agent", 1))
    assert again is first
    assert policy.restarts_in_window == 1
    assert policy.decide("killed", exit_id=("agent", 2)).restarts_in_window == 2


def test_reset_forgets_the_history() -> None:
    policy = make(restart="permanent", max_restarts=1)
    policy.decide("crashed")
    assert policy.decide("crashed").action == "give_up"
    policy.reset()
    assert policy.decide("crashed").action == "restart"


# --- back-off -----------------------------------------------------------------------------


def test_backoff_grows_by_the_factor_and_is_capped() -> None:
    policy = make(
        restart="permanent",
        max_restarts=10,
        window=100.0,
        backoff_initial=0.1,
        backoff_factor=3.0,
        backoff_max=2.0,
    )
    delays = [policy.decide("crashed").delay for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0, 2.0])


def test_backoff_restarts_from_initial_after_the_window_empties() -> None:
    clock = FakeClock()
    policy = make(clock, restart="permanent", max_restarts=5, window=1.0, backoff_initial=0.2)
    assert [policy.decide("crashed").delay for _ in range(3)] == pytest.approx([0.2, 0.4, 0.8])
    clock.advance(1.0)
    assert policy.decide("crashed").delay == pytest.approx(0.2)


def test_zero_backoff_restarts_immediately() -> None:
    policy = make(restart="permanent", max_restarts=3, backoff_initial=0.0, backoff_max=0.0)
    assert [policy.decide("crashed").delay for _ in range(3)] == [0.0, 0.0, 0.0]


def test_huge_budget_does_not_overflow_the_delay() -> None:
    policy = make(
        restart="permanent",
        max_restarts=5000,
        window=1e9,
        backoff_factor=10.0,
        backoff_max=7.0,
    )
    delays = [policy.decide("crashed").delay for _ in range(5000)]
    assert delays[-1] == 7.0
    assert all(math.isfinite(d) for d in delays)


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_stays_within_its_bounds(draw: float) -> None:
    policy = make(
        restart="permanent",
        max_restarts=4,
        window=100.0,
        backoff_initial=1.0,
        backoff_factor=2.0,
        backoff_max=5.0,
        jitter=0.5,
        rand=lambda: draw,
    )
    for base in (1.0, 2.0, 4.0, 5.0):
        delay = policy.decide("crashed").delay
        assert base * 0.5 <= delay <= min(5.0, base * 1.5)
        assert delay == pytest.approx(min(5.0, base * (1.0 + (2 * draw - 1) * 0.5)))


def test_jitter_with_a_seeded_source_is_reproducible() -> None:
    def delays(seed: int) -> list[float]:
        policy = make(
            restart="permanent",
            max_restarts=5,
            window=100.0,
            jitter=1.0,
            rand=random.Random(seed).random,
        )
        return [policy.decide("crashed").delay for _ in range(5)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_no_jitter_never_calls_the_random_source() -> None:
    def refuse() -> float:
        raise AssertionError("rand must not be used without jitter")

    policy = make(restart="permanent", rand=refuse)
    assert policy.decide("crashed").action == "restart"


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("restart", "sometimes"),
        ("restart", None),
        ("max_restarts", -1),
        ("max_restarts", 2.5),
        ("max_restarts", True),
        ("max_restarts", "3"),
        ("window", 0),
        ("window", -1.0),
        ("window", math.inf),
        ("window", math.nan),
        ("window", "5"),
        ("backoff_initial", -0.1),
        ("backoff_factor", 0.5),
        ("backoff_max", 0.01),  # below the default backoff_initial of 0.05
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("clock", 3.0),
        ("rand", "random"),
    ],
)
def test_invalid_arguments_name_the_option_and_value(option: str, value: object) -> None:
    with pytest.raises(InvalidOption) as excinfo:
        RestartPolicy(**{option: value})  # type: ignore[arg-type]
    assert option in str(excinfo.value)
    assert repr(value) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_invalid_exit_kind_is_a_typed_error() -> None:
    with pytest.raises(InvalidOption, match="'exploded'"):
        make(restart="permanent").decide("exploded")


def test_options_round_trip_into_an_equal_policy() -> None:
    policy = make(restart="transient", max_restarts=4, window=2.5, jitter=0.1)
    again = RestartPolicy(**policy.options())
    assert again.options() == policy.options()
    assert repr(again) == repr(policy)


def test_decision_is_frozen() -> None:
    decision = make(restart="permanent").decide("crashed")
    assert isinstance(decision, RestartDecision)
    with pytest.raises(AttributeError):
        decision.delay = 1.0  # type: ignore[misc]


# --- property: never more than max_restarts restarts inside any window ----------------------


@settings(max_examples=200, deadline=None)
@given(
    restart=st.sampled_from(["transient", "permanent"]),
    max_restarts=st.integers(min_value=0, max_value=6),
    window=st.floats(min_value=0.1, max_value=20.0),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=5.0),
            st.sampled_from(["normal", "stopped", "crashed", "killed"]),
        ),
        max_size=60,
    ),
)
def test_never_more_than_max_restarts_in_any_window(
    restart: str,
    max_restarts: int,
    window: float,
    steps: list[tuple[float, str]],
) -> None:
    clock = FakeClock(0.0)
    policy = make(clock, restart=restart, max_restarts=max_restarts, window=window)
    restart_times: list[float] = []
    for gap, exit_kind in steps:
        clock.advance(gap)
        decision = policy.decide(exit_kind)
        if decision.action == "restart":
            restart_times.append(clock.now)
            assert 0.0 <= decision.delay <= policy.backoff_max
        # Every window of length T ending at a restart holds at most max_restarts restarts
        # (written as the policy defines "inside": ``now - t < window``; ``end - window < t``
        # rounds differently for some float sums and would test the arithmetic, not the policy).
        for end in restart_times:
            inside = [t for t in restart_times if t <= end and end - t < window]
            assert len(inside) <= max_restarts
        # And the policy refuses only when the budget really is spent.
        if decision.action == "give_up":
            inside_now = [t for t in restart_times if clock.now - t < window]
            assert len(inside_now) == max_restarts


def test_for_spec_reads_the_agent_spec() -> None:
    from genagent_thespian.messages import AgentSpec

    spec = AgentSpec(
        name="a",
        impl=object,
        backend="scripted",
        restart="transient",
        max_restarts=2,
        restart_window=9.0,
    )
    clock = FakeClock()
    policy = RestartPolicy.for_spec(spec, clock=clock, backoff_initial=0.5)
    assert policy.options() == {
        "restart": "transient",
        "max_restarts": 2,
        "window": 9.0,
        "backoff_initial": 0.5,
        "backoff_factor": 2.0,
        "backoff_max": 5.0,
        "jitter": 0.0,
    }
    assert policy.decide("killed").delay == 0.5
    with pytest.raises(InvalidOption, match=r"window=0\.0"):
        RestartPolicy.for_spec(
            AgentSpec(name="a", impl=object, backend="scripted", restart_window=0.0)
        )
