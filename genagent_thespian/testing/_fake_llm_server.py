"""A loopback fake of the Anthropic Messages API and the OpenAI Responses API, for tests.

:class:`FakeLLMServer` answers the HTTP requests an LLM client makes (the official
``anthropic`` and ``openai`` SDKs, the ``claude`` and ``codex`` programs) from a script that
the test writes, and records every request so the test can assert on what was sent::

    with FakeLLMServer() as server:
        server.script(Text("Hello", chunks=["Hel", "lo"]), HTTPError(429, retry_after=1))
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-test", max_retries=0)
        ...
        (request,) = server.wait_for_requests(1)
        assert request.body["messages"][0]["content"] == "hi"

One script serves both dialects: each *model request* (``POST /v1/messages`` or
``POST /v1/responses``) takes the next script item and the server renders it in the dialect
of the request, streamed as server-sent events when the body says ``"stream": true`` and as
one JSON object otherwise. Other requests (``count_tokens``, ``GET /v1/models``, anything a
CLI calls at start-up) are answered with a sensible default and recorded, without taking a
script item. When the script is empty, the server answers with ``default`` (by default an
explicit, non-retryable error naming the request, so a test that forgot a reply notices).

Script items:

* a ``str`` or :class:`Text`, :class:`Thinking`, :class:`ToolUse` block: a reply of that block;
* :class:`Reply`: several blocks, stop reason, usage, model, a delay per streamed event;
* :class:`HTTPError`: an error status with the provider's JSON error body and headers;
* :class:`StreamError`: a ``200`` stream that starts a reply and then fails in-band;
* :class:`Hang`: stop answering (optionally after a prefix) until released, the client
  disconnects or the server closes;
* :class:`Truncated`: a stream whose connection drops after some events;
* :class:`Raw`: any bytes as the body (garbage, malformed SSE);
* :class:`When`: an item that only matches requests for which a predicate is true;
* any callable ``(RecordedRequest) -> item``: builds the reply from the request.

The server only listens on a loopback address. Credentials are never recorded: the
``authorization``, ``x-api-key`` and similar headers are replaced by ``<redacted>``, and
:attr:`RecordedRequest.auth_fingerprint` lets a test check *which* key was sent by comparing
with :meth:`FakeLLMServer.fingerprint`.

The threads, and what happens to one model request::

    test thread            server thread (ThreadingHTTPServer)   handler thread (one per connection)
      script(items)  --->  self._script (under the lock)
                           accept --------------------------------> _Handler: read the body,
                                                                    _record (wakes waiters),
                                                                    _take the next item,
                                                                    render it (SSE or JSON)
      wait_for_requests <--- notify_all
      close(): release hangs, cut every live connection, join the threads

Why a real server rather than a patched client: the CLIs are separate programs; the only
seam they share with the SDKs is HTTP, and a fake at that seam tests the code that users
run (retries, streaming parsers, timeouts) instead of a stand-in for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from .._core.types import WireJson, WireMapping, WireValue

__all__ = [
    "FakeLLMServer",
    "HTTPError",
    "Hang",
    "Raw",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "StreamError",
    "Text",
    "Thinking",
    "ToolUse",
    "Truncated",
    "When",
]

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "openai-api-key", "cookie", "proxy-authorization"}
)
REDACTED = "<redacted>"
_POLL_SECONDS = 0.05


def _new_id(prefix: str) -> str:
    """An id shaped like the provider's (``msg_...``, ``resp_...``), unique per call."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _split(text: str, chunks: Sequence[str] | int | None) -> list[str]:
    """Split ``text`` into stream fragments: as given, into ``n`` pieces, or whole."""
    if chunks is None:
        return [text] if text else []
    if isinstance(chunks, int):
        if chunks <= 0:
            raise ValueError(f"chunks must be positive, got {chunks}")
        size = max(1, -(-len(text) // chunks))
        return [text[i : i + size] for i in range(0, len(text), size)]
    pieces = list(chunks)
    if "".join(pieces) != text:
        raise ValueError(f"chunks {pieces!r} do not join to the text {text!r}")
    return pieces


# --------------------------------------------------------------------------- script items


@dataclass(frozen=True)
class Text:
    """A text block. ``chunks`` (the fragments, or how many) controls the streamed deltas."""

    text: str
    chunks: Sequence[str] | int | None = None

    def fragments(self) -> list[str]:
        """The streamed delta fragments of this block."""
        return _split(self.text, self.chunks)


@dataclass(frozen=True)
class Thinking:
    """A thinking block (Anthropic) or reasoning summary item (OpenAI)."""

    text: str
    signature: str = "fake-signature"
    chunks: Sequence[str] | int | None = None

    def fragments(self) -> list[str]:
        """The streamed delta fragments of this block."""
        return _split(self.text, self.chunks)


@dataclass(frozen=True)
class ToolUse:
    """A tool call: Anthropic ``tool_use`` block or OpenAI ``function_call`` item.

    Attributes:
        name: The tool name.
        input: The tool input (sent as a JSON object).
        id: The call id; generated when ``None``.
        chunks: How the input JSON is split into ``input_json_delta`` fragments.
    """

    name: str
    input: WireMapping = field(default_factory=dict)
    id: str | None = None
    chunks: Sequence[str] | int | None = None

    def fragments(self) -> list[str]:
        """The streamed JSON fragments of the input."""
        return _split(json.dumps(dict(self.input)), self.chunks)


Block = Text | Thinking | ToolUse


@dataclass(frozen=True)
class Reply:
    """A whole model reply.

    Attributes:
        blocks: The content blocks, in order (a ``str`` is a :class:`Text`).
        stop_reason: Anthropic stop reason; ``None`` means ``tool_use`` when a block is a
            :class:`ToolUse`, else ``end_turn``. ``max_tokens`` makes OpenAI replies
            ``incomplete``.
        usage: Token counts (``input_tokens``, ``output_tokens``,
            ``cache_read_input_tokens``, ``cache_creation_input_tokens``,
            ``reasoning_tokens``), Anthropic semantics; OpenAI usage is derived from them.
        model: The model reported; ``None`` echoes the request's model.
        chunk_delay: Seconds to wait before each streamed event (a slow stream).
        id: The message or response id; generated when ``None``.
    """

    blocks: Sequence[Block | str] = ()
    stop_reason: str | None = None
    usage: Mapping[str, int] | None = None
    model: str | None = None
    chunk_delay: float = 0.0
    id: str | None = None

    def content(self) -> list[Block]:
        """The blocks with plain strings made into :class:`Text`."""
        return [Text(b) if isinstance(b, str) else b for b in self.blocks]

    def effective_stop_reason(self) -> str:
        """The stop reason sent: the given one, else derived from the blocks."""
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content()) else "end_turn"


@dataclass(frozen=True)
class HTTPError:
    """An error response with the provider's JSON error body.

    Attributes:
        status: The HTTP status (401, 429, 500, 529...).
        message: The error message; a default names the status.
        error_type: Anthropic ``error.type`` / OpenAI ``error.type``; derived from the status
            when ``None`` (``rate_limit_error``, ``overloaded_error``...).
        code: OpenAI ``error.code`` (``rate_limit_exceeded``, ``invalid_api_key``...);
            derived from the status when ``None``.
        retry_after: Sent as the ``retry-after`` header (seconds) when not ``None``.
        headers: Extra response headers.
        body: A body to send instead of the provider's error shape.
    """

    status: int
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: WireValue = None


@dataclass(frozen=True)
class StreamError:
    """A ``200`` stream that fails in-band after ``partial`` was streamed.

    Anthropic: ``event: error`` with ``{"type":"error","error":{...}}``. OpenAI: a
    ``response.failed`` event (or an ``error`` event when ``openai_event="error"``).
    """

    partial: Reply | Block | str | None = None
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    code: str | None = None
    openai_event: str = "response.failed"
    chunk_delay: float = 0.0


@dataclass(frozen=True, eq=False)
class Hang:
    """Stop answering until :meth:`release`, the client disconnects or the server closes.

    Attributes:
        prefix: When given, the ``200`` headers and the start of this reply (everything
            before its final stop events) are sent first, so the client sees a stream that
            goes silent; otherwise nothing at all is sent.
        then: Without a prefix, what to answer after :meth:`release` (any script item);
            by default, and always after a prefix, the connection is closed.
    """

    prefix: Reply | Block | str | None = None
    then: ScriptItem | None = None
    _released: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        """Refuse ``prefix`` with ``then``: once a stream has started it cannot start over."""
        if self.prefix is not None and self.then is not None:
            raise ValueError(
                "Hang takes a prefix or a then, not both: once a stream has started it can "
                "only be cut (use Reply(chunk_delay=...) for a stream that stalls and resumes)"
            )

    def release(self) -> None:
        """Let the hanging request go on (send ``then`` or close)."""
        self._released.set()

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released.is_set()


@dataclass(frozen=True)
class Truncated:
    """Stream ``reply`` but drop the connection after ``after_events`` SSE events.

    The chunked body is never terminated, so clients see a broken connection.
    """

    reply: Reply | Block | str
    after_events: int = 2


@dataclass(frozen=True)
class Raw:
    """Send ``body`` as is (garbage, malformed SSE), with this status and content type."""

    body: bytes | str
    status: int = 200
    content_type: str = "text/event-stream"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class When:
    """Only serve ``item`` to a model request for which ``predicate(request)`` is true.

    Items without a predicate match any request. The server takes the first queued item
    that matches, so a ``When`` can wait in the queue while other requests go by.
    """

    predicate: Callable[[RecordedRequest], bool]
    item: ScriptItem


ScriptItem = (
    str
    | Text
    | Thinking
    | ToolUse
    | Reply
    | HTTPError
    | StreamError
    | Hang
    | Truncated
    | Raw
    | When
    | Callable[["RecordedRequest"], object]
)


def _as_reply(item: Reply | Block | str | None) -> Reply:
    """Accept the shorthands a script may use (``None``, one block, a string) as a
    :class:`Reply`.
    """
    if item is None:
        return Reply()
    if isinstance(item, Reply):
        return item
    return Reply(blocks=(item,))


# ------------------------------------------------------------------------------- records


class RecordedRequest:
    """One request the server received (thread-safe to read once :attr:`done` is set).

    Attributes:
        method: ``GET``, ``POST``...
        path: The path without the query string.
        query: The query parameters (first value of each).
        headers: Lower-case header names; credential headers read ``<redacted>``.
        body: The parsed JSON body, or ``None`` (see :attr:`raw_body` then).
        raw_body: The body bytes when it was not JSON (``b""`` otherwise).
        api: ``"anthropic"``, ``"openai"`` or ``None``.
        kind: ``"messages"``, ``"count_tokens"``, ``"responses"``, ``"models"`` or ``"other"``.
        auth_fingerprint: :meth:`FakeLLMServer.fingerprint` of the credential sent, or ``None``.
        served: What the request was answered with (a script item, or a description).
        status: The HTTP status sent, once known.
        client_disconnected: The client went away before the answer was complete.
        client_port: The client's TCP port (equal for requests on one kept-alive connection).
        done: Set when the server finished with the request.
    """

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: WireValue,
        raw_body: bytes,
        auth_fingerprint: str | None,
        client_port: int | None = None,
    ) -> None:
        """Keyword-only, so a new field never shifts the meaning of an existing call."""
        self.method = method
        self.client_port = client_port
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.raw_body = raw_body
        self.auth_fingerprint = auth_fingerprint
        self.api, self.kind = _classify(method, path)
        self.received_at = time.monotonic()
        self.served: object = None
        self.status: int | None = None
        self.client_disconnected = False
        self.done = threading.Event()

    @property
    def is_model_request(self) -> bool:
        """Whether this request asks the model for a reply (and takes a script item)."""
        return self.kind in ("messages", "responses")

    @property
    def stream(self) -> bool:
        """Whether the body asked for a streamed answer."""
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def model(self) -> str | None:
        """The ``model`` of the body, if any."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def has_auth(self) -> bool:
        """Whether any credential header was sent."""
        return self.auth_fingerprint is not None

    def wait_done(self, timeout: float = 5.0) -> bool:
        """Wait until the server finished answering this request; return whether it did."""
        return self.done.wait(timeout)

    def __repr__(self) -> str:
        """A one-line summary for assertion messages; the body and headers are left out."""
        return (
            f"RecordedRequest({self.method} {self.path} api={self.api} kind={self.kind} "
            f"stream={self.stream} status={self.status})"
        )


def _classify(method: str, path: str) -> tuple[str | None, str]:
    """Which API (Anthropic or OpenAI) and which kind of call a request is, from its path.

    Only ``messages`` and ``responses`` calls are model requests that take scripted items; token
    counting and model listing are answered with defaults, so SDK preflight calls do not consume a
    test's script.
    """
    path = path.rstrip("/")
    if path.endswith("/messages/count_tokens"):
        return "anthropic", "count_tokens"
    if method == "POST" and path.endswith("/messages"):
        return "anthropic", "messages"
    if method == "POST" and path.endswith("/responses"):
        return "openai", "responses"
    if method == "GET" and path.endswith("/models"):
        return None, "models"
    return None, "other"


# ------------------------------------------------------------------------------- errors


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {  # status -> (type, code)
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    503: ("server_error", "server_is_overloaded"),
    529: ("server_error", "server_is_overloaded"),
}


def _anthropic_error_type(status: int) -> str:
    """The ``error.type`` Anthropic sends with ``status``: clients branch on it, not on the code."""
    if status in _ANTHROPIC_ERROR_TYPES:
        return _ANTHROPIC_ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def _openai_error(status: int) -> tuple[str, str | None]:
    """The ``error.type`` and ``error.code`` OpenAI sends with ``status`` (clients read both)."""
    if status in _OPENAI_ERRORS:
        return _OPENAI_ERRORS[status]
    return ("server_error", None) if status >= 500 else ("invalid_request_error", None)


# ------------------------------------------------------------------------------- server


class _AbortError(Exception):
    """The client went away or the server is closing: stop answering this request."""


class FakeLLMServer:
    """A scripted loopback server speaking the Anthropic and OpenAI streaming protocols.

    Args:
        host: A loopback address to listen on.
        port: The port; ``0`` picks a free one.
        default: The item answering a model request when the script is empty; by default
            a ``400`` error (with ``x-should-retry: false``) naming the request.
        check_previous_response_id: Answer a Responses request whose
            ``previous_response_id`` this server never issued with a ``400``
            ``previous_response_not_found`` error, as the real API does.

    Attributes:
        url: ``http://host:port`` (the Anthropic ``base_url``).
        openai_base_url: ``url + "/v1"`` (the OpenAI ``base_url``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default: ScriptItem | None = None,
        check_previous_response_id: bool = True,
    ) -> None:
        """Create the server; it listens once started (``with`` or :meth:`start`).

        Only loopback hosts are accepted: the server answers any key, so it must never be reachable
        from another machine.
        """
        if host not in _LOOPBACK_HOSTS:
            raise ValueError(f"FakeLLMServer only listens on loopback, not {host!r}")
        self._lock = threading.Condition()
        self._script: list[ScriptItem] = []
        self._requests: list[RecordedRequest] = []
        self._issued_response_ids: set[str] = set()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._closing = threading.Event()
        self._closed = False
        self.default = default
        self.check_previous_response_id = check_previous_response_id
        self._http = _Server((host, port), _make_handler(self))
        bound_host, bound_port = str(self._http.server_address[0]), self._http.server_address[1]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}"
        self.openai_base_url = f"{self.url}/v1"
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name=f"FakeLLMServer:{bound_port}",
            daemon=True,
        )
        self._thread.start()

    # -- script -------------------------------------------------------------------------

    def script(self, *items: ScriptItem) -> FakeLLMServer:
        """Append ``items`` to the reply queue (see the module docstring); return self."""
        with self._lock:
            self._script.extend(items)
        return self

    def clear_script(self) -> None:
        """Drop every queued item."""
        with self._lock:
            self._script.clear()

    @property
    def remaining(self) -> int:
        """How many script items are still queued."""
        with self._lock:
            return len(self._script)

    def release_hangs(self) -> None:
        """Release every :class:`Hang` still queued or hanging."""
        with self._lock:
            items: list[object] = list(self._script)
            items += [r.served for r in self._requests]
        for item in items:
            if isinstance(item, Hang):
                item.release()

    # -- records ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def model_requests(self) -> list[RecordedRequest]:
        """The requests that asked the model for a reply (messages and responses)."""
        return [r for r in self.requests if r.is_model_request]

    def wait_for_requests(
        self,
        count: int,
        *,
        timeout: float = 5.0,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` requests (matching ``where``, default: model requests) arrived.

        Returns:
            The first ``count`` matching requests.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds (the message lists what did).
        """
        match = where or (lambda r: r.is_model_request)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [r for r in self._requests if match(r)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"FakeLLMServer: waited {timeout}s for {count} matching requests, "
                        f"got {len(found)}; all requests: {self._requests!r}"
                    )
                self._lock.wait(left)

    @staticmethod
    def fingerprint(secret: str) -> str:
        """A short digest of ``secret``, as in :attr:`RecordedRequest.auth_fingerprint`."""
        return hashlib.sha256(secret.encode()).hexdigest()[:16]

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving: release hangs, drop open connections, join the threads. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        deadline = time.monotonic() + 5
        with self._lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeLLMServer:
        """Use the server in a ``with`` block: it is already serving, and closes at the end."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the server however the block ended, so no test leaves a thread or port behind."""
        self.close()

    def __repr__(self) -> str:
        """The URL and how many script items are left: what a failing test's message needs."""
        return f"FakeLLMServer({self.url}, queued={self.remaining})"

    # -- internals used by the handler --------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        """Keep ``request`` and wake the threads in ``wait_for_requests``.

        Recorded before the reply is chosen, so a test waiting for a request sees it even when
        the reply hangs or the script has run out.
        """
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _take(self, request: RecordedRequest) -> object:
        """Take the next scripted item for ``request``: the first ``When`` that matches, or the
        first plain item; with nothing left, the default, else a 400 that says the script ran
        out.
        """
        with self._lock:
            for index, item in enumerate(self._script):
                if isinstance(item, When):
                    if not item.predicate(request):
                        continue
                    del self._script[index]
                    return item.item
                del self._script[index]
                return item
        if self.default is not None:
            return self.default
        return HTTPError(
            400,
            message=(
                f"FakeLLMServer has no scripted reply left for {request.method} {request.path}"
            ),
            headers={"x-should-retry": "false"},
        )

    def _issue_response_id(self, response_id: str) -> None:
        """Remember a response id this server issued, for ``previous_response_id`` checks."""
        with self._lock:
            self._issued_response_ids.add(response_id)

    def _knows_response_id(self, response_id: str) -> bool:
        """Whether this server issued ``response_id``; a client chaining to another id is
        refused.
        """
        with self._lock:
            return response_id in self._issued_response_ids

    def _track(self, sock: socket.socket, thread: threading.Thread, add: bool) -> None:
        """Add or drop a live connection and its thread, so :meth:`close` can cut and join them
        all.
        """
        with self._lock:
            if add:
                self._connections.add(sock)
                self._handler_threads.add(thread)
            else:
                self._connections.discard(sock)
                self._handler_threads.discard(thread)


class _Server(ThreadingHTTPServer):
    """The HTTP server under :class:`FakeLLMServer`: daemon threads, no waiting on close.

    ``block_on_close = False`` because the fake closes live connections itself; waiting for a hung
    handler would make a test's teardown hang with it.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to ``server``: ``http.server`` builds handlers from a class, not an
    instance, so the fake is attached as a class attribute.
    """

    class Handler(_Handler):
        """``_Handler`` bound to this server (each server gets its own subclass)."""

        fake = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    """One HTTP request: record it, then serve the scripted item in the right API's dialect."""

    fake: ClassVar[FakeLLMServer]
    record: RecordedRequest
    _renderer: _Anthropic | _OpenAI | None = None
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLMServer/1"

    # -- plumbing -----------------------------------------------------------------------

    def setup(self) -> None:
        """Register the connection, so closing the server can cut it even mid-answer."""
        super().setup()
        self.fake._track(self.connection, threading.current_thread(), add=True)

    def finish(self) -> None:
        """Flush what is left (a client already gone is not an error) and unregister the
        connection.
        """
        with contextlib.suppress(OSError):
            super().finish()
        self.fake._track(self.connection, threading.current_thread(), add=False)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests read the records, not stderr."""

    def do_GET(self) -> None:
        """Every verb goes through ``_handle``: it is recorded, and answered by path."""
        self._handle()

    def do_POST(self) -> None:
        """A model request takes a script item; other POSTs get their default answer."""
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _peer_gone(self, wait: float = 0.0) -> bool:
        """Whether the client closed its end (waits up to ``wait`` seconds for that)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], wait)
            if not readable:
                return False
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked == b""
        except (OSError, ValueError):
            return True

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, aborting early when the client leaves or the server closes."""
        deadline = time.monotonic() + seconds
        while True:
            if self.fake._closing.is_set() or self._peer_gone():
                raise _AbortError
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._peer_gone(min(left, _POLL_SECONDS)):
                raise _AbortError

    def _write(self, data: bytes) -> None:
        """Write to the client; a closed connection becomes :class:`_AbortError`, ending the
        handler.
        """
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _AbortError from exc

    def _send_head(self, status: int, headers: Mapping[str, str]) -> None:
        """Send the status and headers, and record the status the client was given."""
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
        except OSError as exc:
            raise _AbortError from exc
        self.record.status = status

    def _send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a whole JSON response with the request-id header the real API would send."""
        data = json.dumps(payload).encode()
        self._send_head(
            status,
            {
                "content-type": "application/json",
                "content-length": str(len(data)),
                **self._id_headers(),
                **(headers or {}),
            },
        )
        if self.command != "HEAD":
            self._write(data)

    def _id_headers(self) -> dict[str, str]:
        """A request id in each API's own header name (``x-request-id`` or ``request-id``), which
        the SDKs put into their errors.
        """
        request_id = _new_id("req_fake")
        if self.record.api == "openai":
            return {"x-request-id": request_id}
        return {"request-id": request_id}

    # -- streaming ----------------------------------------------------------------------

    def _start_stream(self) -> None:
        """Start a chunked server-sent-events response, as both APIs stream."""
        self._send_head(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
                **self._id_headers(),
            },
        )

    def _chunk(self, data: bytes) -> None:
        """Send one chunk of a chunked body: its length in hex, the bytes, CRLF."""
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end_stream(self) -> None:
        """End a chunked body with the zero-length chunk, as a complete stream does."""
        self._write(b"0\r\n\r\n")

    def _send_events(
        self, events: Iterator[tuple[str, WireJson]], delay: float, limit: int | None = None
    ) -> int:
        """Send SSE events, at most ``limit``, pausing ``delay`` between them; return how many.

        Between events the handler checks whether the client has gone, so a cancelled stream is
        noticed (and recorded as a disconnect) instead of written into a closed socket.
        """
        sent = 0
        for name, data in events:
            if limit is not None and sent >= limit:
                break
            if delay:
                self._pause(delay)
            elif self._peer_gone():
                raise _AbortError
            self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            sent += 1
        return sent

    # -- request handling ---------------------------------------------------------------

    def _read_request(self) -> RecordedRequest:
        """Read and record the request; secret headers are stored redacted, as a fingerprint only.

        Tests can then assert which key a request used without the key appearing in a repr, a log or
        a failure message.
        """
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: WireValue = None
        if raw:
            try:
                body = json.loads(raw)
                raw = b""
            except ValueError:
                body = None
        headers: dict[str, str] = {}
        fingerprint = None
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in _SECRET_HEADERS:
                headers[lower] = REDACTED
                secret = value.removeprefix("Bearer ").removeprefix("bearer ").strip()
                if lower in ("authorization", "x-api-key", "api-key") and fingerprint is None:
                    fingerprint = FakeLLMServer.fingerprint(secret)
            else:
                headers[lower] = value
        return RecordedRequest(
            method=self.command,
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query).items()},
            headers=headers,
            body=body,
            raw_body=raw,
            auth_fingerprint=fingerprint,
            client_port=self.client_address[1] if self.client_address else None,
        )

    def _dialect(self) -> _Anthropic | _OpenAI:
        """The renderer for this request's API (one per request: it numbers the events)."""
        if self._renderer is None:
            renderer: _Anthropic | _OpenAI
            if self.record.api == "openai":
                renderer = _OpenAI(self.record, self.fake)
            else:
                renderer = _Anthropic(self.record)
            self._renderer = renderer
        return self._renderer

    def _handle(self) -> None:
        """Serve one request: model requests take the script, other calls get defaults.

        A client that goes away mid-answer is recorded as ``client_disconnected`` (unless the server
        itself is closing), which is how tests check that a cancellation reached the provider.
        """
        record = self._read_request()
        self.record = record
        self._renderer = None
        self.fake._record(record)
        try:
            if record.is_model_request:
                if not self._refused():
                    self._serve(self.fake._take(record))
            else:
                record.served = f"default {record.kind}"
                self._serve_auxiliary()
        except _AbortError:
            record.client_disconnected = not self.fake._closing.is_set()
            self.close_connection = True
        finally:
            record.done.set()
            with self.fake._lock:
                self.fake._lock.notify_all()

    def _serve_auxiliary(self) -> None:
        """Answer calls that are not model requests (token counting, model list) with defaults."""
        record = self.record
        if record.kind == "count_tokens":
            size = len(json.dumps(record.body)) if record.body is not None else 0
            self._send_json(200, {"input_tokens": max(1, size // 4)})
        elif record.kind == "models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "created": 0}],
                    "has_more": False,
                    "first_id": "fake-model",
                    "last_id": "fake-model",
                },
            )
        else:
            self._send_json(
                404,
                {
                    "type": "error",
                    "error": {
                        "type": "not_found_error",
                        "message": f"FakeLLMServer does not serve {record.method} {record.path}",
                    },
                },
                {"x-should-retry": "false"},
            )

    def _serve(self, item: object) -> None:
        """Serve one scripted item, calling it first if it is a function of the request."""
        record = self.record
        while callable(item) and not isinstance(item, (Hang, When)):
            item = item(record)
        if isinstance(item, When):
            item = item.item
        record.served = item
        if isinstance(item, HTTPError):
            self._serve_http_error(item)
        elif isinstance(item, Raw):
            self._serve_raw(item)
        elif isinstance(item, Hang):
            self._serve_hang(item)
        elif isinstance(item, StreamError):
            self._serve_stream_error(item)
        elif isinstance(item, Truncated):
            self._serve_truncated(item)
        elif isinstance(item, (Reply, Text, Thinking, ToolUse, str)):
            self._serve_reply(_as_reply(item))
        else:
            raise TypeError(f"FakeLLMServer cannot serve script item {item!r}")

    def _refused(self) -> bool:
        """Answer a request the real API would refuse; return whether it was refused.

        A refused request does not take a script item.
        """
        record = self.record
        if record.api == "openai" and isinstance(record.body, dict):
            previous = record.body.get("previous_response_id")
            if (
                previous
                and self.fake.check_previous_response_id
                and not self.fake._knows_response_id(previous)
            ):
                self._serve_http_error(
                    HTTPError(
                        400,
                        message=f"Previous response with id '{previous}' not found.",
                        code="previous_response_not_found",
                    )
                )
                return True
        return False

    def _serve_reply(self, reply: Reply) -> None:
        """Serve a reply as a stream or a whole response, as the request asked."""
        dialect = self._dialect()
        if self.record.stream:
            self._start_stream()
            self._send_events(dialect.events(reply), reply.chunk_delay)
            self._end_stream()
        else:
            self._send_json(200, dialect.whole(reply))

    def _serve_http_error(self, error: HTTPError) -> None:
        """Serve an HTTP error with the body each API uses, so the SDKs map it to their own
        errors.
        """
        headers = dict(error.headers)
        if error.retry_after is not None:
            value = error.retry_after
            headers["retry-after"] = str(int(value) if float(value).is_integer() else value)
        body = error.body if error.body is not None else _error_body(self.record.api, error)
        self._send_json(error.status, body, headers)

    def _serve_raw(self, raw: Raw) -> None:
        """Serve bytes exactly as scripted, for tests of malformed or unexpected responses."""
        data = raw.body.encode() if isinstance(raw.body, str) else raw.body
        self._send_head(
            raw.status,
            {"content-type": raw.content_type, "content-length": str(len(data)), **raw.headers},
        )
        self._write(data)

    def _serve_stream_error(self, failure: StreamError) -> None:
        """Stream part of a reply, then an in-band error event, as the APIs do on overload
        mid-stream.
        """
        dialect = self._dialect()
        partial = _as_reply(failure.partial)
        self._start_stream()
        self._send_events(dialect.events(partial, finish=False), failure.chunk_delay)
        self._send_events(iter([dialect.stream_error(failure, partial)]), failure.chunk_delay)
        self._end_stream()

    def _serve_truncated(self, truncated: Truncated) -> None:
        """Stream part of a reply, then drop the connection without ending the chunked body."""
        reply = _as_reply(truncated.reply)
        dialect = self._dialect()
        self._start_stream()
        self._send_events(dialect.events(reply), reply.chunk_delay, limit=truncated.after_events)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _serve_hang(self, hang: Hang) -> None:
        """Stop answering (after an optional stream prefix) until released, closed or abandoned.

        It polls for the client leaving, so a test can check that a cancelled turn closed its
        connection while the provider was still "thinking".
        """
        if hang.prefix is not None:
            self._start_stream()
            prefix = _as_reply(hang.prefix)
            dialect = self._dialect()
            self._send_events(dialect.events(prefix, finish=False), prefix.chunk_delay)
        while not hang.released:
            if self.fake._closing.is_set() or self._peer_gone(_POLL_SECONDS):
                raise _AbortError
        if hang.then is not None:
            self._serve(hang.then)
            return
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _error_body(api: str | None, error: HTTPError) -> WireJson:
    """The error body each API sends for an HTTP status, with its type and code fields."""
    message = error.message or f"FakeLLMServer scripted HTTP {error.status}"
    if api == "openai":
        error_type, code = _openai_error(error.status)
        return {
            "error": {
                "message": message,
                "type": error.error_type or error_type,
                "param": None,
                "code": error.code or code,
            }
        }
    return {
        "type": "error",
        "error": {
            "type": error.error_type or _anthropic_error_type(error.status),
            "message": message,
        },
        "request_id": _new_id("req_fake"),
    }


# ------------------------------------------------------------------------------ dialects


def _usage(reply: Reply, blocks: Sequence[Block]) -> dict[str, int]:
    """Token counts for a reply: the scripted ones, else plausible defaults that are never zero."""
    given = dict(reply.usage or {})
    output = sum(max(1, len(b.fragments())) for b in blocks) or 1
    return {
        "input_tokens": given.get("input_tokens", 12),
        "output_tokens": given.get("output_tokens", output),
        "cache_read_input_tokens": given.get("cache_read_input_tokens", 0),
        "cache_creation_input_tokens": given.get("cache_creation_input_tokens", 0),
        "reasoning_tokens": given.get("reasoning_tokens", 0),
    }


class _Anthropic:
    """Renders replies as Anthropic Messages API objects and SSE events."""

    def __init__(self, request: RecordedRequest) -> None:
        self.model = request.model or "claude-fake"

    def _message(self, reply: Reply, content: list[WireJson]) -> WireJson:
        """The message object shared by the whole response and the stream's ``message_start``."""
        usage = _usage(reply, reply.content())
        return {
            "id": reply.id or _new_id("msg_fake"),
            "type": "message",
            "role": "assistant",
            "model": reply.model or self.model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": usage["output_tokens"],
                "service_tier": "standard",
            },
        }

    @staticmethod
    def _block(block: Block, tool_ids: dict[int, str], index: int) -> WireJson:
        """One content block as the Messages API writes it; tool ids stay the same per index."""
        if isinstance(block, Text):
            return {"type": "text", "text": block.text}
        if isinstance(block, Thinking):
            return {"type": "thinking", "thinking": block.text, "signature": block.signature}
        tool_id = tool_ids.setdefault(index, block.id or _new_id("toolu_fake"))
        return {"type": "tool_use", "id": tool_id, "name": block.name, "input": dict(block.input)}

    def whole(self, reply: Reply) -> WireJson:
        """The non-streaming response: every block at once, with the stop reason."""
        ids: dict[int, str] = {}
        content = [self._block(b, ids, i) for i, b in enumerate(reply.content())]
        message = self._message(reply, content)
        message["stop_reason"] = reply.effective_stop_reason()
        return message

    def events(self, reply: Reply, finish: bool = True) -> Iterator[tuple[str, WireJson]]:
        """The Messages API stream of a reply, event by event, as the real API orders them.

        With ``finish=False`` the stream stops before ``message_delta`` and ``message_stop``, for
        streams that are then cut or fail in-band.
        """
        message = self._message(reply, [])
        usage = dict(message["usage"])
        message["usage"] = {**usage, "output_tokens": 1}
        yield "message_start", {"type": "message_start", "message": message}
        ids: dict[int, str] = {}
        for index, block in enumerate(reply.content()):
            whole = self._block(block, ids, index)
            start: WireJson
            if isinstance(block, Text):
                start = {"type": "text", "text": ""}
            elif isinstance(block, Thinking):
                start = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                start = {**whole, "input": {}}
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            if index == 0:
                yield "ping", {"type": "ping"}
            for fragment in block.fragments():
                if isinstance(block, Text):
                    delta = {"type": "text_delta", "text": fragment}
                elif isinstance(block, Thinking):
                    delta = {"type": "thinking_delta", "thinking": fragment}
                else:
                    delta = {"type": "input_json_delta", "partial_json": fragment}
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            if isinstance(block, Thinking):
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "signature_delta", "signature": block.signature},
                    },
                )
            if finish or index < len(reply.content()) - 1:
                yield "content_block_stop", {"type": "content_block_stop", "index": index}
        if not finish:
            return
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.effective_stop_reason(), "stop_sequence": None},
                "usage": {k: v for k, v in usage.items() if k != "service_tier"},
            },
        )
        yield "message_stop", {"type": "message_stop"}

    @staticmethod
    def stream_error(failure: StreamError, partial: Reply) -> tuple[str, WireJson]:
        """The in-band ``error`` event of the Messages API."""
        return (
            "error",
            {"type": "error", "error": {"type": failure.error_type, "message": failure.message}},
        )


class _OpenAI:
    """Renders replies as OpenAI Responses API objects and SSE events."""

    def __init__(self, request: RecordedRequest, server: FakeLLMServer) -> None:
        """Render for one request: its body gives the echoed fields (instructions, previous
        id...).
        """
        body = request.body if isinstance(request.body, dict) else {}
        self.model = request.model or "gpt-fake"
        self.request_body = body
        self.server = server
        self.sequence = itertools.count()

    def _response(self, reply: Reply, status: str, output: list[WireJson]) -> WireJson:
        """The response object, echoing the request's settings as the Responses API does."""
        response_id = reply.id or _new_id("resp_fake")
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": self.request_body.get("instructions"),
            "max_output_tokens": self.request_body.get("max_output_tokens"),
            "model": reply.model or self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": self.request_body.get("previous_response_id"),
            "store": self.request_body.get("store", True),
            "temperature": self.request_body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": self.request_body.get("tools", []),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "metadata": {},
        }

    @staticmethod
    def _usage(reply: Reply) -> WireJson:
        """Usage in the Responses API's shape: cached tokens are part of ``input_tokens``."""
        usage = _usage(reply, reply.content())
        total_input = (
            usage["input_tokens"]
            + usage["cache_read_input_tokens"]
            + usage["cache_creation_input_tokens"]
        )
        return {
            "input_tokens": total_input,
            "input_tokens_details": {"cached_tokens": usage["cache_read_input_tokens"]},
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
            "total_tokens": total_input + usage["output_tokens"],
        }

    @staticmethod
    def _item(block: Block, status: str = "completed") -> WireJson:
        """One output item (message, reasoning or function call) as the Responses API writes it."""
        if isinstance(block, Text):
            return {
                "id": _new_id("msg_fake"),
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": block.text, "annotations": []}],
            }
        if isinstance(block, Thinking):
            return {
                "id": _new_id("rs_fake"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": block.text}],
            }
        return {
            "id": _new_id("fc_fake"),
            "type": "function_call",
            "status": status,
            "call_id": block.id or _new_id("call_fake"),
            "name": block.name,
            "arguments": json.dumps(dict(block.input)),
        }

    def _finish_status(self, reply: Reply) -> str:
        return "incomplete" if reply.effective_stop_reason() == "max_tokens" else "completed"

    def whole(self, reply: Reply) -> WireJson:
        """The non-streaming response; its id is registered so a later ``previous_response_id``
        can be checked against the ids this server really issued.
        """
        output = [self._item(b) for b in reply.content()]
        response = self._response(reply, self._finish_status(reply), output)
        response["usage"] = self._usage(reply)
        if response["status"] == "incomplete":
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        self.server._issue_response_id(response["id"])
        return response

    def _event(self, name: str, **data: object) -> tuple[str, WireJson]:
        return name, {"type": name, "sequence_number": next(self.sequence), **data}

    def events(self, reply: Reply, finish: bool = True) -> Iterator[tuple[str, WireJson]]:
        """The Responses API stream of a reply, event by event, ending with
        ``response.completed`` (or ``incomplete``), unless ``finish=False``.
        """
        response = self._response(reply, "in_progress", [])
        self.response_id = response["id"]
        yield self._event("response.created", response=response)
        yield self._event("response.in_progress", response=response)
        output: list[WireJson] = []
        for index, block in enumerate(reply.content()):
            item = self._item(block)
            yield from self._item_events(index, block, item)
            output.append(item)
        if not finish:
            return
        status = self._finish_status(reply)
        final = {**response, "status": status, "output": output, "usage": self._usage(reply)}
        if status == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        self.server._issue_response_id(final["id"])
        yield self._event(f"response.{status}", response=final)

    def _item_events(
        self, index: int, block: Block, item: WireJson
    ) -> Iterator[tuple[str, WireJson]]:
        """The events that stream one output item: added, its deltas, done."""
        item_id = item["id"]
        if isinstance(block, Text):
            added = {**item, "status": "in_progress", "content": []}
            yield self._event("response.output_item.added", output_index=index, item=added)
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            yield self._event("response.content_part.added", **where, part=part)
            for fragment in block.fragments():
                yield self._event(
                    "response.output_text.delta", **where, delta=fragment, logprobs=[]
                )
            yield self._event("response.output_text.done", **where, text=block.text, logprobs=[])
            yield self._event(
                "response.content_part.done", **where, part={**part, "text": block.text}
            )
        elif isinstance(block, Thinking):
            yield self._event(
                "response.output_item.added", output_index=index, item={**item, "summary": []}
            )
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            part = {"type": "summary_text", "text": ""}
            yield self._event("response.reasoning_summary_part.added", **where, part=part)
            for fragment in block.fragments():
                yield self._event("response.reasoning_summary_text.delta", **where, delta=fragment)
            yield self._event("response.reasoning_summary_text.done", **where, text=block.text)
            yield self._event(
                "response.reasoning_summary_part.done", **where, part={**part, "text": block.text}
            )
        else:
            added = {**item, "status": "in_progress", "arguments": ""}
            yield self._event("response.output_item.added", output_index=index, item=added)
            for fragment in block.fragments():
                yield self._event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=index,
                    delta=fragment,
                )
            yield self._event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                arguments=item["arguments"],
            )
        yield self._event("response.output_item.done", output_index=index, item=item)

    def stream_error(self, failure: StreamError, partial: Reply) -> tuple[str, WireJson]:
        """The in-band failure of the Responses API: ``response.failed``, or a bare ``error``
        event when the script asks for that form.
        """
        code = failure.code or _openai_code_for(failure.error_type)
        if failure.openai_event == "error":
            return self._event("error", code=code, message=failure.message, param=None)
        response = self._response(partial, "failed", [])
        response["id"] = getattr(self, "response_id", response["id"])
        response["error"] = {"code": code, "message": failure.message}
        return self._event("response.failed", response=response)


def _openai_code_for(error_type: str) -> str:
    """The OpenAI error code for an Anthropic-style error type, so one script serves both APIs."""
    return {
        "overloaded_error": "server_is_overloaded",
        "rate_limit_error": "rate_limit_exceeded",
        "api_error": "server_error",
        "invalid_request_error": "invalid_prompt",
    }.get(error_type, error_type)
