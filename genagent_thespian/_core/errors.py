"""The one error tree of genagent-thespian.

Every failure a caller can see is a :class:`GenAgentError`. Leaves also subclass the
matching builtin, so ``except LookupError`` or ``except TimeoutError`` work as a reader
would expect::

    GenAgentError
    ├── AgentNotFound            (LookupError)   no agent is registered under the name
    ├── AgentAlreadyExists       (ValueError)    start_agent with a name already in use
    ├── InvalidOption            (ValueError)    bad start option, bad watchdog, unknown key
    ├── InvalidPrompt            (TypeError)     a prompt that is not a non-empty str
    ├── InvalidEvent             (TypeError)     a notify event that cannot be pickled
    ├── AgentStartFailed                         init_agent / start_session / pre_run failed
    ├── AgentOverloaded                          mailbox full (count or bytes)
    ├── AskTimeout               (TimeoutError)  the *caller's* own timeout ran out
    ├── MessageTooLarge          (ValueError)    a message over the transport's max_frame_bytes
    ├── SystemNotRunning                         no actor system to talk to
    ├── RequestNotFound          (LookupError)   poll/cancel of an unknown or evicted ref
    ├── DuplicateRequest         (ValueError)    a ref that is already queued, running or answered
    ├── UnexpectedMessage        (TypeError)     a message the receiving actor has no use for
    └── TurnFailed                               one turn ended without a Response
        ├── TurnInterrupted                      interrupt() ended it
        ├── TurnTimeout          (TimeoutError)  the agent's watchdog ended it
        ├── TurnCrashed                          the turn worker process died or raised
        ├── TurnSkipped                          pre_turn returned Skip()
        ├── TurnHalted                           pre_turn returned Halt()
        ├── TurnCancelled                        a queued tell was cancelled
        ├── SessionUnavailable   (TimeoutError)  no live session freed up (max_live_sessions)
        ├── CallbackError                        a user callback raised or returned garbage
        ├── BackendError                         the provider failed (kind, retryable, retry_after)
        ├── AgentStopped                         the agent stopped with this work pending
        └── AgentRestarted                       the agent restarted while this turn was in flight

Errors cross process boundaries inside reply messages, so every class pickles with its
context (``agent``, ``ref`` and its own fields). Messages never include secrets: the
``detail`` of a wrapped exception is its type and message only.
"""

from __future__ import annotations

from .types import AgentName, Fields

__all__ = [
    "AgentAlreadyExists",
    "AgentNotFound",
    "AgentOverloaded",
    "AgentRestarted",
    "AgentStartFailed",
    "AgentStopped",
    "AskTimeout",
    "BackendError",
    "BackendErrorKind",
    "CallbackError",
    "DuplicateRequest",
    "GenAgentError",
    "InvalidEvent",
    "InvalidOption",
    "InvalidPrompt",
    "MessageTooLarge",
    "RequestNotFound",
    "SessionUnavailable",
    "SystemNotRunning",
    "TurnCancelled",
    "TurnCrashed",
    "TurnFailed",
    "TurnHalted",
    "TurnInterrupted",
    "TurnSkipped",
    "TurnTimeout",
    "UnexpectedMessage",
]


class GenAgentError(Exception):
    """Root of every error raised or returned by genagent-thespian.

    Attributes:
        message: Human-readable description, without secrets.
        agent: Name of the agent concerned, when there is one.
        ref: Request ref concerned, when there is one.
    """

    #: Short machine-readable reason, stable across releases (used in telemetry).
    reason_kind: str = "error"

    def __init__(
        self, message: str = "", *, agent: AgentName = None, ref: str | None = None
    ) -> None:
        """Keep the message and the context (agent, ref) apart, so :meth:`with_context` can add
        context later without rewriting the message.
        """
        super().__init__(message)
        self.message = message
        self.agent = agent
        self.ref = ref

    def __str__(self) -> str:
        """The message followed by its context, e.g. ``agent stopped (agent='coder', ref=...)``."""
        context = []
        if self.agent is not None:
            context.append(f"agent={self.agent!r}")
        if self.ref is not None:
            context.append(f"ref={self.ref}")
        suffix = f" ({', '.join(context)})" if context else ""
        return f"{self.message}{suffix}"

    def _fields(self) -> Fields:
        """Return the keyword fields needed to rebuild this error (for pickling)."""
        return {"agent": self.agent, "ref": self.ref}

    def with_context(self, *, agent: AgentName = None, ref: str | None = None) -> GenAgentError:
        """Return a copy carrying ``agent`` and ``ref`` where they are not yet set.

        A copy, not the error itself: a backend may keep and raise one instance for several
        turns, and the context of one turn must not leak into another's. Context already
        set (by whoever knew better) is kept.
        """
        fields = self._fields()
        if fields.get("agent") is None:
            fields["agent"] = agent
        if fields.get("ref") is None:
            fields["ref"] = ref
        clone = type(self)(self.message, **fields)
        clone.__cause__ = self.__cause__
        return clone

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self._fields()))

    def __eq__(self, other: object) -> bool:
        """Equal when type, message and fields are equal: errors cross processes pickled, and
        tests compare the copy with the original.
        """
        return (
            type(self) is type(other)
            and self.message == other.message
            and self._fields() == other._fields()
        )

    def __hash__(self) -> int:
        return hash((type(self), self.message))


def _rebuild(cls: type[GenAgentError], message: str, fields: Fields) -> GenAgentError:
    """Rebuild an error from its message and fields: the pickling path of every error, since
    their ``__init__`` takes keyword-only context that ``BaseException``'s pickling loses.
    """
    return cls(message, **fields)


class AgentNotFound(GenAgentError, LookupError):
    """No agent is registered under the given name.

    Raised only when no agent holds the name and none is restarting under it (a caller
    waits out a restart instead). For a name that was stopped, ``AgentStopped`` is raised.
    """

    reason_kind = "not_found"


class AgentAlreadyExists(GenAgentError, ValueError):
    """``start_agent`` was given a name that a live agent already holds."""

    reason_kind = "already_exists"


class InvalidOption(GenAgentError, ValueError):
    """A start option or API argument is invalid (wrong type, out of range, unknown key)."""

    reason_kind = "invalid_option"


class InvalidPrompt(GenAgentError, TypeError):
    """A prompt was not a non-empty ``str``."""

    reason_kind = "invalid_prompt"


class InvalidEvent(GenAgentError, TypeError):
    """A ``notify`` event could not be pickled for delivery to the agent."""

    reason_kind = "invalid_event"


class AgentStartFailed(GenAgentError):
    """The agent could not start: ``init_agent``, ``start_session`` or ``pre_run`` failed.

    A first start that fails is not retried (a bad spec would fail the same way) and leaves
    no durable record; the message carries the original exception's type and text.
    """

    reason_kind = "start_failed"


class AgentOverloaded(GenAgentError):
    """The agent's bounded mailbox is full; the request was rejected, not queued.

    Nothing of the request was kept: retrying later (with back-off) is safe. The bound
    exists so that a flood of tells cannot grow an agent's memory (or its durable
    snapshot) without end.

    Attributes:
        limit: Which bound was hit: ``"count"`` or ``"bytes"``.
    """

    reason_kind = "overloaded"

    def __init__(
        self,
        message: str = "",
        *,
        agent: AgentName = None,
        ref: str | None = None,
        limit: str = "count",
    ) -> None:
        """``limit`` names the bound that was hit (``"count"`` or ``"bytes"``) so callers can
        tell a mailbox full by count from one full by bytes without parsing the message.
        """
        super().__init__(message, agent=agent, ref=ref)
        self.limit = limit

    def _fields(self) -> Fields:
        """The ``limit`` too, so a pickled copy keeps it."""
        return {**super()._fields(), "limit": self.limit}


class AskTimeout(GenAgentError, TimeoutError):
    """The caller's own ``timeout`` ran out. The request itself keeps running or queued.

    Nothing was cancelled: the turn may still finish (its answer is then dropped, since no
    one waits). End it with ``interrupt(name, ref)`` if it must not run on.
    """

    reason_kind = "caller_timeout"


class MessageTooLarge(GenAgentError, ValueError):
    """A message pickles to a frame larger than the transport's ``max_frame_bytes``.

    Raised where the message is sent (a client's call, or as the ``PoisonMessage`` an actor
    gets back), never sent in part: receivers drop such frames unread.

    Attributes:
        size: Bytes the frame would have had.
        limit: The ``max_frame_bytes`` in force.
    """

    reason_kind = "message_too_large"

    def __init__(
        self,
        message: str = "",
        *,
        agent: AgentName = None,
        ref: str | None = None,
        size: int = 0,
        limit: int = 0,
    ) -> None:
        """Carry the measured ``size`` and the ``limit`` it exceeded, both in bytes."""
        super().__init__(message, agent=agent, ref=ref)
        self.size = size
        self.limit = limit

    def _fields(self) -> Fields:
        return {**super()._fields(), "size": self.size, "limit": self.limit}


class SystemNotRunning(GenAgentError):
    """There is no actor system to talk to (not started, or shut down)."""

    reason_kind = "system_not_running"


class RequestNotFound(GenAgentError, LookupError):
    """``cancel`` or ``interrupt`` named a ref the agent does not hold (finished or unknown)."""

    reason_kind = "request_not_found"


class DuplicateRequest(GenAgentError, ValueError):
    """A ``Prompt`` reused the ref of a request this agent already holds or answered.

    A ref names one request: the agent never runs it twice. The caller of the original
    request still gets its answer; this is the answer to the copy.
    """

    reason_kind = "duplicate_request"


class UnexpectedMessage(GenAgentError, TypeError):
    """The receiving actor has no use for this message (not part of the public protocol).

    Sent back to a raw Thespian sender instead of silence; see ``genagent_thespian.messages``
    for what each actor accepts.
    """

    reason_kind = "unexpected_message"


class TurnFailed(GenAgentError):
    """A turn ended without a :class:`~genagent_thespian.Response`."""

    reason_kind = "turn_failed"


class TurnInterrupted(TurnFailed):
    """``interrupt()`` ended the turn; the provider's processes were ended too.

    The agent runs on: its next queued prompt starts. ``handle_error`` sees this error,
    but a ``Prompt`` it returns runs as a new follow-up, not as a retry of the turn.
    """

    reason_kind = "interrupted"


class TurnTimeout(TurnFailed, TimeoutError):
    """The agent's per-turn watchdog ended the turn.

    The watchdog runs from the moment the worker begins the backend call, so time spent
    queued or waiting for a previous turn's clean-up is not counted against it.
    """

    reason_kind = "timeout"


class TurnCrashed(TurnFailed):
    """The turn worker raised or its process died; the agent itself survived.

    The agent replaces the worker for its next turn and ends the provider processes the
    dead one left. Whether the provider saw the prompt is unknown: a retry may repeat it.
    """

    reason_kind = "task_crashed"


class TurnSkipped(TurnFailed):
    """``pre_turn`` returned ``Skip()``: the prompt was never sent."""

    reason_kind = "pre_turn_skipped"


class TurnHalted(TurnFailed):
    """``pre_turn`` returned ``Halt()``: the prompt was never sent and the agent halted."""

    reason_kind = "pre_turn_halted"


class TurnCancelled(TurnFailed):
    """A queued tell was cancelled before it ran."""

    reason_kind = "cancelled"


class SessionUnavailable(TurnFailed, TimeoutError):
    """The turn waited for a live provider session (``max_live_sessions``) and none freed up.

    It waited in the node's fair queue for as long as its watchdog allows; the prompt was
    never sent.
    """

    reason_kind = "session_unavailable"


class CallbackError(TurnFailed):
    """A user callback raised or returned a malformed value; the agent kept serving.

    Attributes:
        callback: Name of the callback (``"handle_response"``, ``"pre_turn"``, ...).
    """

    reason_kind = "callback_error"

    def __init__(
        self,
        message: str = "",
        *,
        agent: AgentName = None,
        ref: str | None = None,
        callback: str = "",
    ) -> None:
        """``callback`` names the implementation's method that raised (``handle_response``...)."""
        super().__init__(message, agent=agent, ref=ref)
        self.callback = callback

    def _fields(self) -> Fields:
        return {**super()._fields(), "callback": self.callback}


class AgentStopped(TurnFailed):
    """The agent stopped (``stop()``, crash, shutdown) while this request was active or queued.

    Every request an agent holds when it ends gets this error, so no caller waits for an
    agent that will not answer; for a plain agent that is restarted, requests that died
    with its old process are reported this way too.
    """

    reason_kind = "agent_terminated"


class AgentRestarted(TurnFailed):
    """The agent was restarted by its supervisor while this turn was in flight.

    The turn is never re-run silently: it is reported here and passed to ``handle_error``,
    which may return ``Prompt(...)`` to retry it.
    """

    reason_kind = "agent_restarted"


class BackendErrorKind:
    """The normalized kinds of :class:`BackendError` (plain strings, so they pickle anywhere).

    Backends map their provider's failures onto these, so an implementation's
    ``handle_error`` can decide (retry after ``retry_after``, give up, renew the session)
    without knowing which provider it runs on.
    """

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    AUTHENTICATION = "authentication"
    INVALID_REQUEST = "invalid_request"
    SERVER_ERROR = "server_error"
    TRANSPORT = "transport"
    CANCELLED = "cancelled"
    PROTOCOL = "protocol"
    PROCESS_EXIT = "process_exit"
    NO_TERMINAL_EVENT = "no_terminal_event"
    #: The provider cannot resume the session (it has no record of the conversation); the
    #: agent's ``on_session_lost`` policy decides what happens next.
    SESSION_LOST = "session_lost"
    UNKNOWN = "unknown"

    #: Kinds that are worth retrying after a pause.
    RETRYABLE = frozenset({RATE_LIMITED, OVERLOADED, SERVER_ERROR, TRANSPORT})


class BackendError(TurnFailed):
    """The LLM provider or its program failed.

    Backends raise this (``raise BackendError(...) from exc``) or end a turn with an
    ``error`` event; either way the caller receives it with the agent's name and ref.

    Attributes:
        kind: One of :class:`BackendErrorKind`.
        retryable: Whether retrying later may succeed.
        retry_after: Seconds the provider asked to wait, if it said.
        status_code: HTTP status, when there was one.
        backend: Name of the backend (``"claude"``, ``"scripted"``...).
    """

    reason_kind = "backend_error"

    def __init__(
        self,
        message: str = "",
        *,
        agent: AgentName = None,
        ref: str | None = None,
        kind: str = BackendErrorKind.UNKNOWN,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
        backend: str | None = None,
    ) -> None:
        """Classify the failure; ``retryable`` follows ``kind`` unless the backend says.

        A backend that knows a failure is permanent (a program that cannot start) says
        ``retryable=False`` even for a kind that is usually retryable.
        """
        super().__init__(message, agent=agent, ref=ref)
        self.kind = kind
        self.retryable = kind in BackendErrorKind.RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after
        self.status_code = status_code
        self.backend = backend

    def _fields(self) -> Fields:
        """The classification fields too, so a pickled copy keeps them."""
        return {
            **super()._fields(),
            "kind": self.kind,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "status_code": self.status_code,
            "backend": self.backend,
        }

    def __str__(self) -> str:
        """The message and context, then the classification in brackets, for logs and CLI output."""
        base = super().__str__()
        extra = f"kind={self.kind}"
        if self.status_code is not None:
            extra += f", status={self.status_code}"
        if self.retry_after is not None:
            extra += f", retry_after={self.retry_after}s"
        return f"{base} [{extra}]"
