"""Answer a message an actor has no use for, so a raw Thespian sender is never left waiting.

The public protocol (``genagent_thespian.messages``) promises every request one reply. A raw
client can send anything, though: ``None``, a dict, a class of its own. Silence would leave
its ``ask`` hanging until its timeout, so such a message is answered with
``Failure(UnexpectedMessage)`` and logged.

Only *foreign* messages are answered: the framework's own messages and Thespian's system
messages arrive between actors that never wait for an answer to them, and answering those
could start two actors bouncing failures at each other.
"""

from __future__ import annotations

from .._core.errors import UnexpectedMessage
from .._core.log import get_logger
from .._core.types import ActorAddress
from ..messages import Failure

__all__ = ["answer_unexpected", "is_foreign"]

_log = get_logger("genagent_thespian.protocol")
_OWN_PACKAGES = ("genagent_thespian", "thespian")


def is_foreign(message: object) -> bool:
    """Whether ``message`` comes from outside the framework and Thespian (a raw sender's)."""
    module = type(message).__module__ or ""
    return not any(module == own or module.startswith(own + ".") for own in _OWN_PACKAGES)


def answer_unexpected(
    actor: ActorAddress, role: str, message: object, sender: ActorAddress
) -> bool:
    """Send ``Failure(UnexpectedMessage)`` back for a foreign ``message``; return whether sent.

    Args:
        actor: The Thespian actor that received ``message``.
        role: How the log line and the error name the receiver (``"agent 'coder'"``).
        message: What arrived.
        sender: Who sent it (nothing is sent to ``None`` or to the actor itself).
    """
    if not is_foreign(message) or sender is None or sender == actor.myAddress:
        return False
    kind = type(message).__name__
    _log.warning("%s got an unexpected %s message; answered UnexpectedMessage", role, kind)
    error = UnexpectedMessage(
        f"{role} does not accept {kind} messages (see genagent_thespian.messages for the "
        "public protocol)"
    )
    actor.send(sender, Failure(error, getattr(message, "ref", None)))
    return True
