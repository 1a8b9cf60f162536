"""``attach`` and ``detach``: telemetry handlers, as the user's process sees them.

The handler table and the actors that fill it live in ``_actors/telemetry.py``; this module
adds the user's side: after the table changes, the system (by default the current one) is
told which event names someone now wants, so agents send exactly those.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._actors.telemetry import Handler, add_handler, remove_handler
from . import client
from .system import AgentSystem

__all__ = ["attach", "detach"]


def attach(
    handler_id: str,
    event_names: Iterable[str] | None,
    fn: Handler,
    *,
    system: AgentSystem | None = None,
) -> None:
    """Call ``fn(name, measurements, metadata)`` for ``event_names`` (``None`` = all).

    Handlers run in this process, for events emitted by agents of ``system`` (default: the
    current system, when one is running; systems started later pick handlers up too).
    Returns once the system's telemetry hub has acknowledged the subscription.

    Raises:
        InvalidOption: ``handler_id`` is already attached, or a name is unknown.
    """
    add_handler(handler_id, event_names, fn)
    _sync(system)


def detach(handler_id: str, *, system: AgentSystem | None = None) -> bool:
    """Remove a handler. Returns whether it was attached."""
    removed = remove_handler(handler_id)
    _sync(system)
    return removed


def _sync(system: AgentSystem | None) -> None:
    """Tell ``system`` (default: the current one, if any) the names now wanted."""
    target = system if system is not None else client.default_system()
    if target is not None and not target.closed:
        target.sync_telemetry()
