"""What the two HTTP backends (anthropic, openai) share.

* :class:`Secret`: an API key that never shows in a ``repr``, a log line or an error.
* :func:`validate_options`: option checking with :class:`~genagent_thespian.InvalidOption`.
* :func:`tool_results_prompt`: how a caller answers the tool calls of the previous turn.
* :func:`error_from_status` and :func:`retry_after_from_headers`: provider errors to
  :class:`~genagent_thespian.BackendError`.
* :class:`StreamPump`: runs the SDK's blocking stream in a helper thread so that a turn can
  end the moment ``ctx.cancelled`` is set, and cuts the connection so the provider stops.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from genagent_thespian._core.errors import BackendError, BackendErrorKind, InvalidOption
from genagent_thespian._core.turn import Event, Usage
from genagent_thespian._core.types import OptionValue, Unchecked, WireValue

__all__ = [
    "TOOL_RESULTS_KEY",
    "ClientCache",
    "OptionSpec",
    "Secret",
    "StreamPump",
    "ToolResult",
    "error_from_status",
    "parse_tool_results",
    "retry_after_from_headers",
    "scrub",
    "tool_results_prompt",
    "transport_error",
    "validate_options",
]


class _Closable(Protocol):
    """What the cache needs of an SDK client: a ``close()`` that ends its connections."""

    def close(self) -> None: ...


_Client = TypeVar("_Client", bound=_Closable)


class ClientCache(Generic[_Client]):
    """The SDK clients of one process, one per connection settings, reused across turns.

    A cancelled turn cuts its client's connections, so :meth:`forget` drops that client (a
    new one serves the next turn) and closes it off the caller's thread.
    """

    def __init__(self) -> None:
        """One SDK client per key (credentials, endpoint, limits), so turns reuse connections."""
        self._clients: dict[tuple[object, ...], _Client] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], make: Callable[[], _Client]) -> _Client:
        """Return the client for ``key``, making it with ``make()`` the first time."""
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        made = make()
        with self._lock:
            client = self._clients.setdefault(key, made)
        if client is not made:  # another thread made one first
            _close_quietly(made)
        return client

    def forget(self, key: tuple[object, ...]) -> None:
        """Drop and close (in the background) the client for ``key``."""
        with self._lock:
            client = self._clients.pop(key, None)
        if client is not None:
            threading.Thread(target=_close_quietly, args=(client,), daemon=True).start()

    def close_all(self) -> None:
        """Close every client (idempotent)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: _Closable) -> None:
    """Close an SDK client, ignoring errors: it runs while shutting down, where a second error
    would only hide the first.
    """
    with contextlib.suppress(Exception):  # closing is best effort
        client.close()


class Secret:
    """A credential kept out of every ``repr``, ``str``, log line and error message.

    It pickles (a session holding it can travel to the worker), so whatever persists the
    session stores the key: prefer the provider's environment variable, which the backends
    read in the worker at each turn and never store.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        """Wrap a non-empty key; an empty one is refused here rather than sent as a blank header."""
        if not isinstance(value, str) or not value:
            raise InvalidOption("api_key must be a non-empty str")
        self._value = value

    def reveal(self) -> str:
        """Return the credential itself (only to hand it to the SDK)."""
        return self._value

    def __repr__(self) -> str:
        """Never the value: sessions and options are logged and shown in errors."""
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        """Equal to a ``Secret`` of the same value, so sessions compare by their content."""
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        """Hash the value, consistent with ``__eq__`` (client caches key on it)."""
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle as the class and the value: slotted, and a session must reach the worker."""
        return (Secret, (self._value,))


def scrub(text: str, *secrets: Secret | str | None) -> str:
    """Return ``text`` with every given secret replaced by ``***``.

    Values shorter than 8 characters are left alone: they are not real keys, and replacing
    them would garble ordinary words.
    """
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class OptionSpec:
    """One accepted option: its default and a check returning an error text or ``None``."""

    default: OptionValue
    check: Callable[[object], str | None]


def validate_options(
    backend: str, options: Unchecked, specs: Mapping[str, OptionSpec]
) -> dict[str, OptionValue]:
    """Return ``options`` completed with defaults, or raise :class:`InvalidOption`.

    Unknown keys are refused (the message lists the known ones) and every value is checked.
    Messages name the key and the type of a bad value, never the value itself (it may be a
    credential).
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidOption(f"{backend} options must be a mapping, not {type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in specs)
    if unknown:
        raise InvalidOption(
            f"unknown {backend} option(s) {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(sorted(specs))}"
        )
    values: dict[str, OptionValue] = {}
    for key, spec in specs.items():
        value = options.get(key, spec.default)
        if key in options:
            problem = spec.check(value)
            if problem is not None:
                raise InvalidOption(
                    f"{backend} option {key!r} {problem} (got a {type(value).__name__})"
                )
        values[key] = value
    return values


def optional(check: Callable[[object], str | None]) -> Callable[[object], str | None]:
    """Make ``check`` accept ``None`` too."""
    return lambda value: None if value is None else check(value)


def is_str(value: object) -> str | None:
    """Check a non-empty str."""
    return None if isinstance(value, str) and value else "must be a non-empty str"


def is_positive_int(value: object) -> str | None:
    """Check an int > 0."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive int"


def is_non_negative_int(value: object) -> str | None:
    """Check an int >= 0."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be an int >= 0"


def is_positive_number(value: object) -> str | None:
    """Check a number > 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive number"


def is_number_between(low: float, high: float) -> Callable[[object], str | None]:
    """Check a number in ``[low, high]``."""

    def check(value: object) -> str | None:
        """Accept an int or float in ``[low, high]``; ``bool`` is refused although it is an
        ``int``.
        """
        if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
            return None
        return f"must be a number in [{low}, {high}]"

    return check


def is_bool(value: object) -> str | None:
    """Check a bool."""
    return None if isinstance(value, bool) else "must be a bool"


def is_one_of(*allowed: object) -> Callable[[object], str | None]:
    """Check membership in ``allowed``."""

    def check(value: object) -> str | None:
        """``None`` if allowed, else the complaint the option check reports."""
        return None if value in allowed else f"must be one of {', '.join(map(repr, allowed))}"

    return check


def is_tool_list(value: object) -> str | None:
    """Check a list of JSON-serializable tool definitions, each a mapping with a ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return "must be a list of tool definitions (mappings)"
    for tool in value:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            return "must hold mappings that each have a str 'name'"
        try:
            json.dumps(tool)
        except (TypeError, ValueError):
            return "must hold JSON-serializable mappings"
    return None


def freeze_json(value: object) -> WireValue:
    """A deep copy of a JSON value through ``json`` (plain dicts and lists, no aliasing)."""
    return json.loads(json.dumps(value))


# ------------------------------------------------------------------------- tool results

#: The key marking a prompt as answers to the previous turn's tool calls.
TOOL_RESULTS_KEY = "genagent_tool_results"


@dataclass(frozen=True)
class ToolResult:
    """The answer to one tool call of the previous turn.

    Attributes:
        tool_use_id: The ``id`` of the ``tool_use`` event being answered.
        content: The tool's output, as text.
        is_error: Whether the tool failed.
    """

    tool_use_id: str
    content: str
    is_error: bool = False


def tool_results_prompt(results: Mapping[str, str] | list[ToolResult]) -> str:
    """Encode tool results as a prompt for the turn after one that ended in ``tool_use``.

    A turn whose result has ``stop_reason == "tool_use"`` lists the calls in
    ``result.data["pending_tool_uses"]``; the next prompt must answer them. A plain text
    prompt answers every pending call with that text; this helper answers each call by id::

        agent.ask(tool_results_prompt({"toolu_1": "22 C", "toolu_2": "rain"}))

    Args:
        results: ``{tool_use_id: output}``, or :class:`ToolResult` values (to flag errors).
    """
    if isinstance(results, Mapping):
        items = [ToolResult(str(k), str(v)) for k, v in results.items()]
    else:
        items = list(results)
    encoded = [
        {"tool_use_id": r.tool_use_id, "content": r.content, "is_error": r.is_error} for r in items
    ]
    return json.dumps({TOOL_RESULTS_KEY: encoded})


def parse_tool_results(prompt: str, pending_ids: list[str]) -> list[ToolResult]:
    """Answers to ``pending_ids`` from ``prompt`` (see :func:`tool_results_prompt`).

    Raises:
        InvalidOption: The prompt is a tool-results prompt that does not answer exactly the
            pending calls.
    """
    decoded: WireValue = None
    if prompt.lstrip().startswith("{") and TOOL_RESULTS_KEY in prompt:
        with contextlib.suppress(ValueError):
            decoded = json.loads(prompt)
    if not (isinstance(decoded, dict) and TOOL_RESULTS_KEY in decoded):
        return [ToolResult(tool_id, prompt) for tool_id in pending_ids]
    results = [
        ToolResult(str(r["tool_use_id"]), str(r.get("content", "")), bool(r.get("is_error")))
        for r in decoded[TOOL_RESULTS_KEY]
    ]
    answered = [r.tool_use_id for r in results]
    if sorted(answered) != sorted(pending_ids):
        raise InvalidOption(
            f"tool results answer {answered} but the pending tool calls are {pending_ids}"
        )
    return results


# ------------------------------------------------------------------------------- errors


_KIND_BY_ERROR_TYPE = {
    # Anthropic error.type
    "rate_limit_error": BackendErrorKind.RATE_LIMITED,
    "overloaded_error": BackendErrorKind.OVERLOADED,
    "authentication_error": BackendErrorKind.AUTHENTICATION,
    "permission_error": BackendErrorKind.AUTHENTICATION,
    "billing_error": BackendErrorKind.AUTHENTICATION,
    "invalid_request_error": BackendErrorKind.INVALID_REQUEST,
    "not_found_error": BackendErrorKind.INVALID_REQUEST,
    "request_too_large": BackendErrorKind.INVALID_REQUEST,
    "api_error": BackendErrorKind.SERVER_ERROR,
    "timeout_error": BackendErrorKind.SERVER_ERROR,
    # OpenAI error.code / error.type
    "rate_limit_exceeded": BackendErrorKind.RATE_LIMITED,
    "insufficient_quota": BackendErrorKind.RATE_LIMITED,
    "server_is_overloaded": BackendErrorKind.OVERLOADED,
    "slow_down": BackendErrorKind.OVERLOADED,
    "server_error": BackendErrorKind.SERVER_ERROR,
    "invalid_api_key": BackendErrorKind.AUTHENTICATION,
    "context_length_exceeded": BackendErrorKind.INVALID_REQUEST,
    "previous_response_not_found": BackendErrorKind.INVALID_REQUEST,
    "invalid_prompt": BackendErrorKind.INVALID_REQUEST,
}

#: Error codes that look retryable by status but are not (a spent quota stays spent).
_NEVER_RETRY = frozenset({"insufficient_quota", "enforced_spend_limit_reached"})


def _kind_by_status(status: int | None) -> str:
    """Classify an HTTP status the SDK reported into our error kinds.

    The kinds decide retries: 429 and the overload statuses (503, Anthropic's 529) are worth waiting
    out, 401/403 never are, and timeouts and conflicts (408, 409) count as server-side.
    """
    if status is None:
        return BackendErrorKind.UNKNOWN
    if status in (401, 403):
        return BackendErrorKind.AUTHENTICATION
    if status == 429:
        return BackendErrorKind.RATE_LIMITED
    if status in (503, 529):
        return BackendErrorKind.OVERLOADED
    if status >= 500 or status in (408, 409):
        return BackendErrorKind.SERVER_ERROR
    if status >= 400:
        return BackendErrorKind.INVALID_REQUEST
    return BackendErrorKind.UNKNOWN


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def error_from_status(
    *,
    backend: str,
    status: int | None,
    error_type: str | None,
    code: str | None = None,
    message: str,
    headers: Mapping[str, str] | None = None,
    mid_stream: bool = False,
) -> BackendError:
    """A :class:`BackendError` from an HTTP status and the provider's error type/code.

    The error type (``body.error.type`` for Anthropic, ``error.code`` then ``error.type``
    for OpenAI) decides first, because a mid-stream error arrives with status 200; the
    status decides otherwise. ``status_code`` is ``None`` for a mid-stream error.
    """
    kind = None
    for key in (code, error_type):
        if key and key in _KIND_BY_ERROR_TYPE:
            kind = _KIND_BY_ERROR_TYPE[key]
            break
    if kind is None:
        kind = _kind_by_status(None if mid_stream else status)
    retryable = kind in BackendErrorKind.RETRYABLE and not ({code, error_type} & _NEVER_RETRY)
    where = "in the middle of the stream" if mid_stream else f"HTTP {status}"
    label = code or error_type or "error"
    return BackendError(
        f"{backend} API error ({where}, {label}): {message}",
        kind=kind,
        retryable=retryable,
        retry_after=retry_after_from_headers(headers),
        status_code=None if mid_stream else status,
        backend=backend,
    )


def transport_error(backend: str, exc: BaseException, *secrets: Secret | None) -> BackendError:
    """A retryable ``transport`` error for a connection that failed or timed out."""
    detail = scrub(f"{type(exc).__name__}: {exc}", *secrets)
    return BackendError(
        f"{backend} API connection failed: {detail}",
        kind=BackendErrorKind.TRANSPORT,
        backend=backend,
    )


def is_transport_exception(exc: BaseException) -> bool:
    """Whether ``exc`` is an HTTP transport failure of httpx (or a fork of it)."""
    for cls in type(exc).__mro__:
        if cls.__module__.partition(".")[0].startswith("httpx") and cls.__name__ in (
            "TransportError",
            "TimeoutException",
            "StreamError",
        ):
            return True
    return isinstance(exc, (ConnectionError, socket.timeout))


def cancelled_error(backend: str) -> BackendError:
    """The error that ends a cancelled turn."""
    return BackendError(
        f"{backend} turn cancelled",
        kind=BackendErrorKind.CANCELLED,
        retryable=False,
        backend=backend,
    )


# ------------------------------------------------------------------------------ pumping


_DONE = object()
_PRODUCER_FINISH_S = 5.0  # seconds a finished turn waits for its producer thread to return


class StreamPump:
    """Runs a blocking producer in a daemon thread and hands its events to the turn.

    The producer gets an ``emit(event)`` callable and a :meth:`register` to report the
    response (or client) whose connection :meth:`abort` must cut. The turn iterates
    :meth:`events`, which ends with the producer, or at once when ``cancelled`` is set: then
    the connections are shut down so the blocked read fails and the server sees the client
    leave, and the producer's later events are dropped.
    """

    def __init__(
        self,
        produce: Callable[[Callable[[Event], None], StreamPump], None],
        *,
        name: str,
    ) -> None:
        """Prepare the producer thread; it starts on :meth:`events`, not here.

        The thread is a daemon: a producer stuck in a read the server never answers must not keep
        the worker process alive at exit.
        """
        self._produce = produce
        self._queue: queue.Queue[tuple[str, object] | object] = queue.Queue()  # or _DONE
        self._aborted = threading.Event()
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def aborted(self) -> bool:
        """Whether :meth:`abort` was called (the producer should stop)."""
        return self._aborted.is_set()

    def register(self, closer: Callable[[], None]) -> None:
        """Register a callable that cuts the producer's connection; run at once if aborted."""
        with self._lock:
            if not self._aborted.is_set():
                self._closers.append(closer)
                return
        with contextlib.suppress(Exception):
            closer()

    def _run(self) -> None:
        """The producer thread: run the producer and always queue the end marker.

        Any exception, ``BaseException`` included, is handed to the consumer in the queue, so the
        turn ends with an error instead of waiting for events that will never come.
        """
        try:
            self._produce(self._emit, self)
        except BaseException as exc:  # handed to the consumer, which maps it
            self._queue.put(("raise", exc))
        finally:
            self._queue.put(_DONE)

    def _emit(self, event: Event) -> None:
        """Queue an event for the turn, unless the stream was aborted (the turn has moved on)."""
        if not self._aborted.is_set():
            self._queue.put(("event", event))

    def events(
        self, cancelled: threading.Event, poll: float = 0.05
    ) -> Iterator[tuple[str, object]]:
        """Yield ``("event", Event)`` and ``("raise", exc)`` items, then ``("cancelled", None)``
        if ``cancelled`` was set before the producer finished."""
        self._thread.start()
        try:
            while True:
                if cancelled.is_set():
                    self.abort()
                    yield ("cancelled", None)
                    return
                try:
                    item = self._queue.get(timeout=poll)
                except queue.Empty:
                    continue
                if item is _DONE:
                    return
                yield cast("tuple[str, object]", item)  # all but _DONE are (kind, value)
        finally:
            if self._thread.is_alive():
                self.abort()

    def abort(self) -> None:
        """Cut the producer's connections (idempotent)."""
        with self._lock:
            self._aborted.set()
            closers, self._closers = self._closers, []
        for closer in closers:
            with contextlib.suppress(Exception):
                closer()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the producer thread; return whether it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def shutdown_response(response: _Closable) -> None:
    """Cut an httpx response's connection so a read blocked on it fails at once.

    Closing a socket does not wake a thread blocked reading it; shutting it down does.
    """
    stream = getattr(response, "extensions", {}).get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def shutdown_client_connections(http_client: object) -> None:
    """Best effort: shut down every pooled connection of an httpx client.

    This reaches a request still waiting for its response headers (no response object
    yet). It uses httpx/httpcore internals and silently does nothing if they change; the
    turn still ends at once, only the server may notice the disconnect later.
    """
    pool = getattr(getattr(http_client, "_transport", None), "_pool", None)
    for connection in list(getattr(pool, "connections", None) or []):
        inner = getattr(connection, "_connection", None)
        stream = getattr(inner, "_network_stream", None)
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def pumped_turn(
    *,
    backend: str,
    ctx_cancelled: threading.Event,
    produce: Callable[[Callable[[Event], None], StreamPump], None],
    map_exception: Callable[[BaseException], BackendError],
    on_cancel: Callable[[], None],
    partial_usage: Callable[[], Usage | None],
    thread_name: str,
    http_client: object = None,
) -> Iterator[Event]:
    """Run ``produce`` through a :class:`StreamPump` and end with exactly one terminal event.

    The producer's terminal event ends the turn; an exception it raises becomes one
    ``error`` event through ``map_exception``; ``ctx_cancelled`` ends the turn at once with
    ``error`` of kind ``cancelled`` (carrying the usage seen so far) after cutting the
    connections; a producer that returns without a terminal event gives
    ``no_terminal_event``.
    """
    pump = StreamPump(produce, name=thread_name)
    if http_client is not None:
        pump.register(lambda: shutdown_client_connections(http_client))
    for what, value in pump.events(ctx_cancelled):
        if what == "event":
            event = cast(Event, value)  # what _emit queues under "event"
            yield event
            if event.terminal:
                # The worker consumes the stream to its end (the Backend contract): let the
                # producer finish reading and hand its connection back to the pool, rather
                # than cut the shared client's connections under it.
                pump.join(_PRODUCER_FINISH_S)
                return
        elif what == "raise":
            yield Event.error(map_exception(cast(BaseException, value)))
            return
        else:
            on_cancel()
            yield Event.error(cancelled_error(backend), usage=partial_usage())
            return
    yield Event.error(
        BackendError(
            f"{backend} stream ended without a terminal event",
            kind=BackendErrorKind.NO_TERMINAL_EVENT,
            backend=backend,
        )
    )
