"""``SessionGovernorActor``: the node's cap on live provider sessions, as an actor.

A thin shell around the pure :class:`~genagent_thespian._core.governor.SessionGovernor`:
an agent without a live session asks it before a turn (``_SessionWanted``), one whose
session is live runs the turn at once; agents tell it when their session ended
(``_SessionGone``). It answers ``_SessionGranted`` or ``_SessionDenied`` and asks the least
recently used idle agent to retire its session (``_SessionRetire``; an agent that is busy
by then answers ``_SessionInUse`` and keeps it). While a turn waits (and with an idle timeout) it
needs to know which sessions are busy: it asks the agents to report their use
(``_ReportUse``), and they say when each turn begins (``_SessionInUse``) and ends
(``_SessionIdle``); otherwise they do not, which saves two messages per turn. An
agent started with ``prewarm=True`` asks for a free slot ahead of any turn
(``_PrewarmWanted``, answered ``_PrewarmAnswer``; never queued). An agent's worker, with
the CLI process it keeps between turns, is what counts as its live session.

One per node, under the global name :data:`GOVERNOR_NAME`, which Thespian resolves per
node, configured from that node's own capabilities (:func:`node_sessions`): a node caps
the sessions that use its memory. On a single host the supervisor creates it at boot; a
convention node creates it when it starts, as a child of its admin, so it outlives any
leader (its agents look it up by name, and would create it should it be missing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from .._core.errors import InvalidOption
from .._core.governor import Decision, Grant, Report, Retire, SessionGovernor, node_session_cap
from .._core.log import get_logger
from .._core.protocol import (
    _PrewarmAnswer,
    _PrewarmWanted,
    _ReportUse,
    _SessionDenied,
    _SessionGone,
    _SessionGranted,
    _SessionIdle,
    _SessionInUse,
    _SessionRetire,
    _SessionWanted,
)
from .._core.types import ActorAddress, AgentName, Capabilities

__all__ = [
    "GOVERNOR_NAME",
    "MAX_LIVE_SESSIONS",
    "SESSION_IDLE_TIMEOUT",
    "SessionGovernorActor",
    "SessionSettings",
    "SessionsStatus",
    "node_sessions",
    "session_capabilities",
]

GOVERNOR_NAME = "genagent_thespian.governor"
#: Node capabilities ``start_system`` sets from ``max_live_sessions``/``session_idle_timeout``.
MAX_LIVE_SESSIONS = "GenAgent Max Live Sessions"
SESSION_IDLE_TIMEOUT = "GenAgent Session Idle Timeout"

_log = get_logger("genagent_thespian.governor")


def session_capabilities(
    capabilities: Capabilities | None,
    max_live_sessions: int | str | None,
    session_idle_timeout: float | None,
) -> Capabilities:
    """The node capabilities carrying the session governor's settings (checked here).

    ``"auto"`` travels as is: the node sizes it from its own host's memory.

    Raises:
        InvalidOption: a bad cap or idle timeout, or an idle timeout without a cap.
    """
    cap = node_session_cap(max_live_sessions)  # checks the setting (the result is this host's)
    if cap is None:
        if session_idle_timeout is not None:
            raise InvalidOption("session_idle_timeout needs max_live_sessions")
        return {**(capabilities or {}), MAX_LIVE_SESSIONS: 0}
    SessionGovernor(cap, session_idle_timeout=session_idle_timeout)  # checks the timeout
    return {
        **(capabilities or {}),
        MAX_LIVE_SESSIONS: max_live_sessions,
        SESSION_IDLE_TIMEOUT: session_idle_timeout,
    }


def node_sessions(capabilities: Capabilities) -> SessionSettings | None:
    """The governor settings of the node with these capabilities; ``None``: not capped.

    Absent settings (a node started without them) mean the host's default, ``"auto"``; a
    bad value is logged and replaced by that default rather than failing the node."""
    try:
        cap = node_session_cap(capabilities.get(MAX_LIVE_SESSIONS, "auto"))
    except InvalidOption:
        _log.warning("bad %s capability; using the host's default", MAX_LIVE_SESSIONS)
        cap = node_session_cap("auto")
    if cap is None:
        return None
    return SessionSettings(cap, capabilities.get(SESSION_IDLE_TIMEOUT))


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """A node's governor settings: the cap and the idle timeout (see :func:`node_sessions`)."""

    max_live_sessions: int
    session_idle_timeout: float | None


@dataclass(frozen=True, slots=True)
class SessionsStatus:
    """Anyone -> governor: answered with the policy's ``GovernorStatus``."""


class SessionGovernorActor(Actor):
    """Carries out the governor's decisions (see the module docstring). Never raises."""

    def __init__(self, capabilities: Capabilities | None = None) -> None:
        """Configured from the capabilities of the node it runs on (whoever created it),
        so it governs from its first message."""
        super().__init__()
        self._policy: SessionGovernor | None = None
        settings = node_sessions(capabilities or {})
        if settings is not None:
            self._policy = SessionGovernor(
                settings.max_live_sessions, session_idle_timeout=settings.session_idle_timeout
            )
        self._holders: dict[
            AgentName, ActorAddress
        ] = {}  # agent name -> its address (the latest seen)
        self._wakeup_at: float | None = None

    def receiveMessage(self, message: object, sender: ActorAddress) -> None:
        """Apply one message to the policy and send what it decides."""
        try:
            self._handle(message, sender)
        except Exception:
            _log.exception("session governor failed handling %s", type(message).__name__)

    def _handle(self, message: object, sender: ActorAddress) -> None:
        policy = self._policy
        if isinstance(message, ActorExitRequest):
            return
        if policy is None:  # created on a node that caps nothing: nobody waits here
            if isinstance(message, _SessionWanted):
                self.send(sender, _SessionGranted(message.name))
            elif isinstance(message, _PrewarmWanted):
                self.send(sender, _PrewarmAnswer(message.name, granted=True))
            return
        if isinstance(message, _SessionWanted):
            self._holders[message.name] = sender
            self._carry_out(policy.request(message.name, timeout=message.timeout))
        elif isinstance(message, _PrewarmWanted):
            self._holders[message.name] = sender
            granted = policy.prewarm(message.name)
            self.send(sender, _PrewarmAnswer(message.name, granted, report=policy.reporting))
        elif isinstance(message, _SessionInUse):
            self._holders[message.name] = sender
            self._carry_out(policy.in_use(message.name))
        elif isinstance(message, _SessionIdle):
            self._holders[message.name] = sender
            self._carry_out(policy.turn_done(message.name, idle_for=message.idle_for))
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

    def _carry_out(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            address = self._holders.get(decision.holder)
            if address is None:
                continue
            if isinstance(decision, Grant):
                self.send(address, _SessionGranted(decision.holder, report=decision.report))
            elif isinstance(decision, Retire):
                self.send(address, _SessionRetire(decision.holder))
            elif isinstance(decision, Report):
                self.send(address, _ReportUse(decision.holder, decision.on))
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
