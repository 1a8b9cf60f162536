"""``SessionGovernorActor``: the node's cap on live provider sessions, as an actor.

A thin shell around the pure :class:`~genagent_thespian._core.governor.SessionGovernor`:
an agent without a live session asks it before a turn (``_SessionWanted``), one whose
session is live runs the turn at once and tells it (``_SessionInUse``); agents tell it when
the turn ended (``_SessionIdle``) and when their session ended (``_SessionGone``). It
answers ``_SessionGranted`` or ``_SessionDenied`` and asks the least recently used idle
agent to retire its session (``_SessionRetire``; an agent that is busy by then answers
``_SessionInUse`` and keeps it). An agent's worker, with the CLI process it keeps
between turns, is what counts as its live session. Created by the supervisor at boot
when the node has ``max_live_sessions`` set (``start_system``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._core.governor import Deny, Grant, Retire, SessionGovernor
from .._core.log import get_logger
from .._core.protocol import (
    _SessionDenied,
    _SessionGone,
    _SessionGranted,
    _SessionIdle,
    _SessionInUse,
    _SessionRetire,
    _SessionWanted,
)

__all__ = [
    "GOVERNOR_NAME",
    "MAX_LIVE_SESSIONS",
    "SESSION_IDLE_TIMEOUT",
    "GovernSessions",
    "SessionGovernorActor",
    "SessionsStatus",
]

GOVERNOR_NAME = "genagent_thespian.governor"
#: Node capabilities ``start_system`` sets from ``max_live_sessions``/``session_idle_timeout``.
MAX_LIVE_SESSIONS = "GenAgent Max Live Sessions"
SESSION_IDLE_TIMEOUT = "GenAgent Session Idle Timeout"

_log = get_logger("genagent_thespian.governor")


@dataclass(frozen=True, slots=True)
class GovernSessions:
    """Supervisor -> governor at boot: the cap and the idle timeout."""

    max_live_sessions: int
    session_idle_timeout: float | None


@dataclass(frozen=True, slots=True)
class SessionsStatus:
    """Anyone -> governor: answered with the policy's ``GovernorStatus``."""


class SessionGovernorActor(Actor):
    """Carries out the governor's decisions (see the module docstring). Never raises."""

    def __init__(self) -> None:
        super().__init__()
        self._policy: SessionGovernor | None = None
        self._holders: dict[Any, Any] = {}  # agent name -> its address (the latest seen)
        self._wakeup_at: float | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        """Apply one message to the policy and send what it decides."""
        try:
            self._handle(message, sender)
        except Exception:
            _log.exception("session governor failed handling %s", type(message).__name__)

    def _handle(self, message: Any, sender: Any) -> None:
        if isinstance(message, GovernSessions):
            if self._policy is None:
                self._policy = SessionGovernor(
                    message.max_live_sessions, session_idle_timeout=message.session_idle_timeout
                )
            return
        policy = self._policy
        if policy is None or isinstance(message, ActorExitRequest):
            return
        if isinstance(message, _SessionWanted):
            self._holders[message.name] = sender
            self._carry_out(policy.request(message.name, timeout=message.timeout))
        elif isinstance(message, _SessionInUse):
            self._holders[message.name] = sender
            self._carry_out(policy.in_use(message.name))
        elif isinstance(message, _SessionIdle):
            self._holders[message.name] = sender
            self._carry_out(policy.turn_done(message.name))
        elif isinstance(message, _SessionGone):
            if message.withdraw:
                policy.withdraw(message.name)
            self._carry_out(policy.session_ended(message.name))
        elif isinstance(message, WakeupMessage):
            self._wakeup_at = None
            self._carry_out(policy.tick())
        elif isinstance(message, SessionsStatus):
            self.send(sender, policy.status())
        self._arm(policy)

    def _carry_out(self, decisions: list[Grant | Retire | Deny]) -> None:
        for decision in decisions:
            address = self._holders.get(decision.holder)
            if address is None:
                continue
            if isinstance(decision, Grant):
                self.send(address, _SessionGranted(decision.holder))
            elif isinstance(decision, Retire):
                self.send(address, _SessionRetire(decision.holder))
            else:
                self.send(address, _SessionDenied(decision.holder, decision.waited))

    def _arm(self, policy: SessionGovernor) -> None:
        """Ask for a wakeup at the next deadline, unless one comes early enough."""
        due = policy.next_deadline()
        if due is None:
            return
        if self._wakeup_at is not None and self._wakeup_at <= due:
            return
        self._wakeup_at = due
        self.wakeupAfter(max(0.0, due - time.monotonic()) + 0.001)
