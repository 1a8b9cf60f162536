"""What both modes of the codex backend share: the error classification of codex's messages.

Codex reports failures as free text (``turn.failed`` in ``exec`` mode, ``error``
notifications from the app-server), with the provider's HTTP status inside when there is
one. Both modes must map the same message to the same :class:`BackendErrorKind`, or an
implementation's ``handle_error`` would retry in one mode and give up in the other; they
also share the per-turn usage arithmetic (codex reports the thread's running total) and
the budget of network retries that codex itself does not bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from genagent_thespian import BackendError, BackendErrorKind, Event, Usage

__all__ = [
    "BACKEND",
    "DEFAULT_NETWORK_RETRIES",
    "NETWORK_BUDGET_CODE",
    "USAGE_FIELDS",
    "NetworkBudget",
    "classify_codex_error",
    "retry_after",
    "turn_usage",
]

BACKEND = "codex"
#: Default of the ``max_network_retries`` option. codex 0.169 retries an unreachable API
#: without end ("Reconnecting... waiting for network", after 0.3, 5, 10, 20, 40 s...), whatever
#: the provider's ``request_max_retries``; the backend ends the turn after this many.
DEFAULT_NETWORK_RETRIES = 3
NETWORK_BUDGET_CODE = "network_budget"
#: Codex's usage counters, as the ``exec`` JSON names them (app-server: camelCase).
USAGE_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
)


def classify_codex_error(message: str) -> tuple[str, int | None]:
    """Return ``(BackendErrorKind, status)`` for a ``turn.failed`` message."""
    match = re.search(r"\bstatus:? (\d{3})\b", message)
    status = int(match.group(1)) if match else None
    lowered = message.lower()
    if (
        status in (401, 403)
        or "unauthorized" in lowered
        or "missing environment variable" in lowered
    ):
        return BackendErrorKind.AUTHENTICATION, status
    if status == 429 or "rate limit" in lowered or "too many requests" in lowered:
        return BackendErrorKind.RATE_LIMITED, status
    if any(s in lowered for s in ("high demand", "overloaded", "at capacity")) or status in (
        503,
        529,
    ):
        return BackendErrorKind.OVERLOADED, status
    if status is not None and status >= 500:
        return BackendErrorKind.SERVER_ERROR, status
    if status is not None and 400 <= status < 500:
        return BackendErrorKind.INVALID_REQUEST, status
    if "stream disconnected" in lowered or "connection" in lowered or "network" in lowered:
        return BackendErrorKind.TRANSPORT, status
    return BackendErrorKind.UNKNOWN, status


def retry_after(message: str) -> float | None:
    """The wait a codex error message asks for ("try again in 1.5s", "retry in 200ms").

    Codex reports rate limits only in its message text, so the wait is read from there to fill
    :attr:`BackendError.retry_after`.
    """
    match = re.search(r"(?:try again|retry) in (\d+(?:\.\d+)?)\s*(ms|s)\b", message, re.IGNORECASE)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000.0 if match.group(2).lower() == "ms" else value


def turn_usage(
    cumulative: Mapping[str, int], previous: Mapping[str, int] | None, *, known_history: bool
) -> Usage:
    """This turn's usage from codex's running totals (codex reports the thread's total).

    With the totals before the turn (``previous``) the difference is the turn's; without
    them, a thread with history can only report its cumulative total (``scope``).
    """
    if previous is not None:
        turn = {
            name: max(cumulative[name] - int(previous.get(name, 0)), 0) for name in USAGE_FIELDS
        }
        scope = "turn"
    else:
        turn = dict(cumulative)
        scope = "cumulative" if known_history else "turn"
    return Usage(
        input_tokens=max(turn["input_tokens"] - turn["cached_input_tokens"], 0),
        cache_read_input_tokens=turn["cached_input_tokens"],
        cache_creation_input_tokens=turn["cache_write_input_tokens"],
        output_tokens=turn["output_tokens"],
        reasoning_output_tokens=turn["reasoning_output_tokens"],
        scope=scope,
    )


class NetworkBudget:
    """Counts codex's "waiting for network" retries and ends the turn past the budget.

    codex itself never gives up on an API it cannot connect to, so the budget is the
    backend's: ``limit`` retries (the ``max_network_retries`` option), then one ``error`` of
    kind ``transport`` (code ``network_budget``) that names the option.
    """

    def __init__(self, limit: int | None) -> None:
        """Count network failures against ``limit`` for one turn; ``None`` means the default."""
        self.limit = DEFAULT_NETWORK_RETRIES if limit is None else limit
        self.seen = 0

    def exceeded(self, message: str) -> bool:
        """Count ``message`` if it is a network retry; whether the budget is now spent."""
        if "waiting for network" not in message:
            return False
        self.seen += 1
        return self.seen > self.limit

    def error(self, message: str, thread_id: str | None) -> Event:
        """The terminal ``error`` of a turn whose budget is spent."""
        failure = BackendError(
            f"codex: cannot reach the API ({message}); gave up after {self.limit} "
            "retries (option max_network_retries)",
            kind=BackendErrorKind.TRANSPORT,
            backend=BACKEND,
        )
        return Event.error(failure, session_id=thread_id, code=NETWORK_BUDGET_CODE)
