"""The data of a turn: normalized events, token usage and the assembled response.

Every backend translates its provider's stream into :class:`Event` values of the kinds in
:class:`EventKind`, ending every turn with exactly one terminal event (``result`` or
``error``). The framework assembles the events of a successful turn into a
:class:`Response`. All three types are frozen and pickle, because they travel between the
worker, the agent and the caller's process.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

from .types import EventData

__all__ = ["Event", "EventKind", "Response", "Usage"]


class EventKind(enum.StrEnum):
    """The normalized event kinds. Backends may also emit custom (non-terminal) kinds.

    One vocabulary for every provider, so that an implementation's
    ``handle_stream_event``, the CLI, the console and telemetry handlers work unchanged
    whichever backend an agent uses. The comment on each kind lists the keys of its
    ``data``. Exactly one terminal event (``result`` or ``error``) ends every turn.
    """

    SESSION_STARTED = "session_started"  # session_id, model, cwd, resumed
    TURN_STARTED = "turn_started"  # turn_index
    TEXT_DELTA = "text_delta"  # text: a streamed fragment
    TEXT = "text"  # text: a whole block or message (not re-appended after deltas)
    THINKING_DELTA = "thinking_delta"  # text
    THINKING = "thinking"  # text, signature
    TOOL_USE = "tool_use"  # id, name, input, kind
    TOOL_INPUT_DELTA = "tool_input_delta"  # id, partial_json
    TOOL_RESULT = "tool_result"  # tool_use_id, output, is_error, exit_code
    RETRY = "retry"  # attempt, delay_ms, status_code, message
    WARNING = "warning"  # message, code
    DISCARD = "discard"  # message_id: drop earlier deltas of that message
    USAGE = "usage"  # usage: Usage
    RESULT = "result"  # terminal: text, session_id, stop_reason
    ERROR = "error"  # terminal: error (BackendError) or kind/message
    RAW = "raw"  # an unmapped provider event


TERMINAL_KINDS = frozenset({EventKind.RESULT, EventKind.ERROR})


@dataclass(frozen=True, slots=True)
class Event:
    """One normalized event of a turn.

    Attributes:
        kind: An :class:`EventKind` value (a ``str``) or a custom kind.
        data: Kind-specific fields (see :class:`EventKind`); must pickle.
        timestamp: ``time.monotonic()`` when the event was created.
        raw: The provider's original line or object, when the backend keeps it.
    """

    kind: str
    data: EventData = field(default_factory=dict)
    timestamp: float = field(default_factory=time.monotonic)
    raw: object = None

    @property
    def terminal(self) -> bool:
        """Whether this event ends the turn (``result`` or ``error``)."""
        return self.kind in TERMINAL_KINDS

    @classmethod
    def text_delta(cls, text: str, **data: object) -> Event:
        """Build a ``text_delta`` event."""
        return cls(EventKind.TEXT_DELTA, {"text": text, **data})

    @classmethod
    def result(cls, text: str | None = None, **data: object) -> Event:
        """Build a terminal ``result`` event."""
        return cls(EventKind.RESULT, {"text": text, **data})

    @classmethod
    def error(cls, error: BaseException, **data: object) -> Event:
        """Build a terminal ``error`` event carrying ``error`` (ideally a BackendError)."""
        return cls(EventKind.ERROR, {"error": error, "message": str(error), **data})


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one turn (``scope="turn"``) or a running total.

    ``input_tokens`` counts uncached input only; cached reads and cache writes are
    separate, so ``total_input_tokens`` is their sum. ``cost_usd`` is known only where the
    provider reports it (Claude Code) or a price table is configured.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_output_tokens: int = 0
    cost_usd: float | None = None
    model: str | None = None
    scope: str = "turn"

    @property
    def total_input_tokens(self) -> int:
        """Uncached, cache-read and cache-write input tokens together."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def total_tokens(self) -> int:
        """All input and output tokens."""
        return self.total_input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages field by field; the cost stays ``None`` only when neither side knows it.

        The model is the newer one's, so a session's total names the model it uses now.
        """
        if not isinstance(other, Usage):
            return NotImplemented
        cost: float | None
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        summed = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.type == "int"
        }
        return replace(self, **summed, cost_usd=cost, model=other.model or self.model)


@dataclass(frozen=True, slots=True)
class Response:
    """The outcome of one successful turn.

    Attributes:
        text: The result event's ``text`` when it is a ``str``; otherwise the ``text``
            events joined (or, without any, the ``text_delta`` fragments), no separator.
        events: Every event of the turn in arrival order, the terminal one included.
        usage: The last ``usage`` event's usage, or ``None``.
        duration_ms: Wall time from dispatch to the terminal event.
        session_id: The terminal result's ``session_id`` (not the remembered one).
        prompt: The prompt actually dispatched (after ``pre_turn`` rewrote it).
        ref: The request ref this response answers.
        stop_reason: The normalized stop reason of the result, when known.
        model: The model that answered, when known.
    """

    text: str = ""
    events: tuple[Event, ...] = ()
    usage: Usage | None = None
    duration_ms: float = 0.0
    session_id: str | None = None
    prompt: str | None = None
    ref: str | None = None
    stop_reason: str | None = None
    model: str | None = None

    def __repr__(self) -> str:  # cheap: Thespian formats every message it sends
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"Response(text={text!r}, events={len(self.events)}, ref={self.ref})"

    @classmethod
    def from_events(
        cls,
        events: Iterable[Event],
        *,
        duration_ms: float = 0.0,
        prompt: str | None = None,
        ref: str | None = None,
    ) -> Response:
        """Assemble a response from a turn's events (the last one should be ``result``).

        The ``result`` event's text wins: providers put the final answer there. Without it,
        whole ``text`` blocks are joined, and only if there are none the deltas, never both,
        since a backend that streams deltas usually sends the whole block as well. The last
        ``usage`` event is taken as the turn's usage (they are totals, not increments).
        """
        events = tuple(events)
        result = next((e for e in reversed(events) if e.kind == EventKind.RESULT), None)
        result_data: EventData = result.data if result is not None else {}
        text = result_data.get("text")
        if not isinstance(text, str):
            whole = [e.data.get("text", "") for e in events if e.kind == EventKind.TEXT]
            if not whole:
                whole = [e.data.get("text", "") for e in events if e.kind == EventKind.TEXT_DELTA]
            text = "".join(t for t in whole if isinstance(t, str))
        usage = None
        for event in events:
            if event.kind == EventKind.USAGE:
                candidate = event.data.get("usage")
                if isinstance(candidate, Usage):
                    usage = candidate
        model = result_data.get("model") or (usage.model if usage else None)
        return cls(
            text=text,
            events=events,
            usage=usage,
            duration_ms=duration_ms,
            session_id=result_data.get("session_id"),
            prompt=prompt,
            ref=ref,
            stop_reason=result_data.get("stop_reason"),
            model=model,
        )
