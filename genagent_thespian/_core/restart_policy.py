"""What the supervisor does when an agent exits: restart types, intensity and back-off.

A :class:`RestartPolicy` is a plain, deterministic object: it holds one agent's restart
configuration and the times of its recent restarts, and answers one question,
:meth:`RestartPolicy.decide`, for each exit of that agent. The supervisor actor keeps one
instance per supervised agent (created with the agent, dropped when the agent is forgotten),
schedules the restart after ``decision.delay`` and reports a give-up. Nothing here touches an
actor system, a clock the test does not control, or a random source it cannot seed.

Restart types (OTP's names and meanings):

=============  ===============  ==============  ===========================
restart        exit "stopped"   exit "normal"   exit "crashed" / "killed"
=============  ===============  ==============  ===========================
``temporary``  forget           forget          forget (the upstream default)
``transient``  forget           forget          restart
``permanent``  forget           restart         restart
=============  ===============  ==============  ===========================

``stopped`` means the user called ``stop()``: the agent is never restarted after it.

Restart intensity: at most ``max_restarts`` restarts within any ``window`` seconds. The
restart that would make it ``max_restarts + 1`` is refused with ``give_up`` (OTP's
supervisor shuts down at that point; here the supervisor gives up on this one agent and
reports it). A restart made at time ``t`` counts while ``now - t < window``.

Back-off: the *k*-th restart inside the current window waits
``min(backoff_max, backoff_initial * backoff_factor ** (k - 1))`` seconds, so a quiet agent
restarts after ``backoff_initial`` and a flapping one slows down until intensity gives up.
With ``jitter=j`` the delay is drawn uniformly from ``[d * (1 - j), d * (1 + j)]`` and then
capped at ``backoff_max``.

Example:
    >>> clock = iter([0.0, 1.0, 2.0, 3.0]).__next__
    >>> policy = RestartPolicy(restart="permanent", max_restarts=2, window=10.0, clock=clock)
    >>> [str(policy.decide("crashed").action) for _ in range(3)]
    ['restart', 'restart', 'give_up']
"""

from __future__ import annotations

import enum
import math
import random as _random
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidOption
from .types import OptionValue

if TYPE_CHECKING:
    from ..messages import AgentSpec

__all__ = ["ExitKind", "RestartAction", "RestartDecision", "RestartPolicy", "RestartType"]


class RestartType(enum.StrEnum):
    """When an exited agent is started again."""

    TEMPORARY = "temporary"  # never restarted (the upstream default)
    TRANSIENT = "transient"  # restarted after an abnormal exit only (crash or kill)
    PERMANENT = "permanent"  # restarted after any exit except stop()


class ExitKind(enum.StrEnum):
    """How an agent's process ended, as the supervisor saw it."""

    NORMAL = "normal"  # the agent ended by itself without an error
    STOPPED = "stopped"  # stop() ended it: never restarted, its record is removed
    CRASHED = "crashed"  # an exception or a failed start ended it
    KILLED = "killed"  # its process died from outside (a signal, the OOM killer, ...)


class RestartAction(enum.StrEnum):
    """What the supervisor does about one exit."""

    RESTART = "restart"  # start the agent again after ``delay`` seconds
    GIVE_UP = "give_up"  # restart intensity exceeded: report, fail callers, forget the agent
    FORGET = "forget"  # the restart type does not restart after this exit: forget the agent


_ABNORMAL_EXITS = frozenset({ExitKind.CRASHED, ExitKind.KILLED})


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """The answer of :meth:`RestartPolicy.decide` for one exit.

    Attributes:
        action: ``"restart"``, ``"give_up"`` or ``"forget"`` (a :class:`RestartAction`).
        delay: Seconds to wait before restarting; ``0.0`` unless ``action`` is ``restart``.
        reason: One readable sentence for logs and for the error reported to callers.
        restarts_in_window: Restarts inside the current window, counting this one when
            ``action`` is ``restart``; for ``give_up`` the restarts that exhausted the budget.
    """

    action: RestartAction
    delay: float
    reason: str
    restarts_in_window: int


def _invalid(option: str, value: object, expected: str) -> InvalidOption:
    return InvalidOption(f"invalid restart option {option}={value!r}: expected {expected}")


def _check_number(
    option: str, value: OptionValue, *, minimum: float, inclusive: bool = True
) -> float:
    """A finite number at or above (or strictly above) ``minimum``; ``bool`` is refused."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value >= minimum if inclusive else value > minimum
    if not ok:
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise _invalid(option, value, f"a finite number {bound}")
    return float(value)


class RestartPolicy:
    """One agent's restart configuration and recent restart history.

    Use one instance per agent: its history is that agent's alone, it can be dropped with
    the agent, and two agents can never use up each other's restart budget.

    Args:
        restart: ``"temporary"``, ``"transient"`` or ``"permanent"``.
        max_restarts: Restarts allowed within ``window`` seconds (``0`` gives up at once).
        window: Length of the sliding intensity window, in seconds (> 0).
        backoff_initial: Delay before the first restart in a window, in seconds (>= 0).
        backoff_factor: Growth of the delay per further restart in the window (>= 1).
        backoff_max: Upper bound of every delay, in seconds (>= ``backoff_initial``).
        jitter: Relative spread of each delay, from ``0.0`` (none) to ``1.0``.
        clock: Returns monotonic seconds; tests pass a fake one.
        rand: Returns a float in ``[0, 1)``; used only when ``jitter > 0``. Pass
            ``random.Random(seed).random`` for a reproducible sequence.

    Raises:
        InvalidOption: An argument has the wrong type or is out of range; the message names
            the option and the value.
    """

    def __init__(
        self,
        *,
        restart: RestartType | str = RestartType.TEMPORARY,
        max_restarts: int = 3,
        window: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_factor: float = 2.0,
        backoff_max: float = 5.0,
        jitter: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = _random.random,
    ) -> None:
        """Check every setting now: a bad policy found at the first crash would be found too late.

        ``clock`` and ``rand`` are injectable, so the intensity window and the jitter can be tested
        without waiting or guessing.
        """
        try:
            self.restart = RestartType(restart)
        except ValueError:
            raise _invalid("restart", restart, "'temporary', 'transient' or 'permanent'") from None
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise _invalid("max_restarts", max_restarts, "an int >= 0")
        self.max_restarts = max_restarts
        self.window = _check_number("window", window, minimum=0.0, inclusive=False)
        self.backoff_initial = _check_number("backoff_initial", backoff_initial, minimum=0.0)
        self.backoff_factor = _check_number("backoff_factor", backoff_factor, minimum=1.0)
        self.backoff_max = _check_number("backoff_max", backoff_max, minimum=self.backoff_initial)
        self.jitter = _check_number("jitter", jitter, minimum=0.0)
        if self.jitter > 1.0:
            raise _invalid("jitter", jitter, "a number from 0.0 to 1.0")
        if not callable(clock):
            raise _invalid("clock", clock, "a callable returning monotonic seconds")
        if not callable(rand):
            raise _invalid("rand", rand, "a callable returning a float in [0, 1)")
        self._clock = clock
        self._rand = rand
        self._restart_times: deque[float] = deque()
        self._last_exit_id: Hashable | None = None
        self._last_decision: RestartDecision | None = None

    @classmethod
    def for_spec(cls, spec: AgentSpec, **overrides: OptionValue) -> RestartPolicy:
        """Build the policy of an agent from its start spec (``messages.AgentSpec``).

        Reads ``restart``, ``max_restarts`` and ``restart_window`` from ``spec``, and the
        optional ``backoff_initial``, ``backoff_factor``, ``backoff_max`` and ``jitter`` when
        the spec has them; ``overrides`` (for example ``clock``) win over both.
        """
        options: dict[str, OptionValue] = {
            "restart": spec.restart,
            "max_restarts": spec.max_restarts,
            "window": spec.restart_window,
        }
        for option in ("backoff_initial", "backoff_factor", "backoff_max", "jitter"):
            if hasattr(spec, option):
                options[option] = getattr(spec, option)
        options.update(overrides)
        return cls(**options)

    def __repr__(self) -> str:
        """Every setting, so a log line or a status shows the policy exactly."""
        return (
            f"RestartPolicy(restart={self.restart.value!r}, max_restarts={self.max_restarts}, "
            f"window={self.window}, backoff_initial={self.backoff_initial}, "
            f"backoff_factor={self.backoff_factor}, backoff_max={self.backoff_max}, "
            f"jitter={self.jitter})"
        )

    def options(self) -> dict[str, OptionValue]:
        """Return the configuration as plain, picklable values (without clock and rand)."""
        return {
            "restart": self.restart.value,
            "max_restarts": self.max_restarts,
            "window": self.window,
            "backoff_initial": self.backoff_initial,
            "backoff_factor": self.backoff_factor,
            "backoff_max": self.backoff_max,
            "jitter": self.jitter,
        }

    @property
    def restarts_in_window(self) -> int:
        """Restarts made within the last ``window`` seconds, as of now."""
        self._slide(self._clock())
        return len(self._restart_times)

    def reset(self) -> None:
        """Forget the restart history (for an agent that is started afresh)."""
        self._restart_times.clear()
        self._last_exit_id = None
        self._last_decision = None

    def decide(
        self, exit_kind: ExitKind | str, *, exit_id: Hashable | None = None
    ) -> RestartDecision:
        """Decide what to do about one exit of the agent, and record a restart if chosen.

        Args:
            exit_kind: ``"normal"``, ``"stopped"``, ``"crashed"`` or ``"killed"``.
            exit_id: Identifies the exit (for example the incarnation that exited). Thespian
                can report one exit twice; a repeated ``exit_id`` returns the previous
                decision again without counting another restart.

        Returns:
            The decision; a ``restart`` has been counted against the intensity budget.

        Raises:
            InvalidOption: ``exit_kind`` is not one of the four kinds.
        """
        try:
            kind = ExitKind(exit_kind)
        except ValueError:
            raise InvalidOption(
                f"invalid exit_kind {exit_kind!r}: expected one of "
                + ", ".join(repr(k.value) for k in ExitKind)
            ) from None
        if (
            exit_id is not None
            and exit_id == self._last_exit_id
            and self._last_decision is not None
        ):
            return self._last_decision
        decision = self._decide(kind)
        self._last_exit_id = exit_id
        self._last_decision = decision
        return decision

    def _decide(self, kind: ExitKind) -> RestartDecision:
        """Decide on one exit: forget the agent, restart it after a delay, or give up.

        As in OTP, ``max_restarts`` restarts within ``window`` seconds are allowed; one more means
        the fault is not transient, and restarting again would only hide it.
        """
        now = self._clock()
        self._slide(now)
        in_window = len(self._restart_times)
        if kind is ExitKind.STOPPED:
            return RestartDecision(RestartAction.FORGET, 0.0, "stopped by stop()", in_window)
        if not self._restarts_after(kind):
            reason = f"{self.restart.value} agent exited ({kind.value}); not restarted"
            return RestartDecision(RestartAction.FORGET, 0.0, reason, in_window)
        if in_window >= self.max_restarts:
            reason = (
                f"restart intensity exceeded: {in_window} restart(s) within "
                f"{self.window:g} s already (max_restarts={self.max_restarts}); "
                f"last exit {kind.value}"
            )
            return RestartDecision(RestartAction.GIVE_UP, 0.0, reason, in_window)
        self._restart_times.append(now)
        count = in_window + 1
        delay = self._delay(count)
        reason = f"{self.restart.value} agent exited ({kind.value}); restart {count} in window"
        return RestartDecision(RestartAction.RESTART, delay, reason, count)

    def _restarts_after(self, kind: ExitKind) -> bool:
        """Whether the restart type restarts after an exit of this kind (OTP's semantics).

        ``permanent`` always; ``transient`` only after an abnormal exit; ``temporary`` never.
        """
        if self.restart is RestartType.PERMANENT:
            return True
        if self.restart is RestartType.TRANSIENT:
            return kind in _ABNORMAL_EXITS
        return False

    def _slide(self, now: float) -> None:
        """Forget restarts that left the intensity window."""
        while self._restart_times and now - self._restart_times[0] >= self.window:
            self._restart_times.popleft()

    def _delay(self, count: int) -> float:
        """The backoff before restart number ``count``: exponential, capped, with optional jitter.

        Jitter spreads restarts of many agents that failed together (a provider outage), so they do
        not all come back, and fail, at the same instant.
        """
        try:
            grown = self.backoff_initial * self.backoff_factor ** (count - 1)
        except OverflowError:  # a huge max_restarts with a large factor
            grown = math.inf if self.backoff_initial > 0.0 else 0.0
        base = min(self.backoff_max, grown)
        if self.jitter > 0.0 and base > 0.0:
            spread = (2.0 * self._rand() - 1.0) * self.jitter
            base = base * (1.0 + spread)
        return min(self.backoff_max, max(0.0, base))
