"""The OpenAI Responses API backend, on the official ``openai`` SDK (streaming).

Install with ``pip install 'genagent-thespian[openai]'`` and start an agent with
``backend="openai"``. The conversation lives on the provider: every response is stored
(``store: true``) and the next turn names it with ``previous_response_id``, which is all the
session keeps, so a restarted agent resumes exactly where it stopped. The ``instructions``
are not inherited through ``previous_response_id`` and are sent again every turn.

When the model calls functions the turn ends with ``stop_reason == "tool_use"`` and
``pending_tool_uses`` (ids are the ``call_id`` values); the next prompt answers them: plain
text answers every call with that text, and :func:`tool_results_prompt` answers each call
by id (sent as ``function_call_output`` items). The backend never runs tools itself.

Options (all optional; unknown keys raise :class:`~genagent_thespian.InvalidOption`):

=====================  ===========  ===================================================
key                    default      meaning
=====================  ===========  ===================================================
``model``              ``gpt-5``    model id
``instructions``       ``None``     system instructions, sent every turn
``max_output_tokens``  ``None``     output token limit
``temperature``        ``None``     0.0 - 2.0
``reasoning_effort``   ``None``     ``minimal``, ``low``, ``medium`` or ``high``
``tools``              ``()``       tool definitions (``{"type": "function", "name"...}``)
``api_key``            ``None``     the key; default: ``OPENAI_API_KEY`` read in the
                                    worker at each turn (never stored)
``base_url``           ``None``     API address (default: the SDK's, or ``OPENAI_BASE_URL``)
``max_retries``        ``0``        SDK retries; 0 leaves retrying to the agent's
                                    ``handle_error`` (errors carry ``retry_after``)
``timeout``            ``600``      seconds per request (SDK timeout)
=====================  ===========  ===================================================
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

from genagent_thespian._core.backend import Backend, TurnContext
from genagent_thespian._core.errors import BackendError, BackendErrorKind, InvalidOption
from genagent_thespian._core.turn import Event, EventKind, Usage
from genagent_thespian._core.types import JsonValue, Options, WireJson, WireMapping

from ._http import (
    ClientCache,
    OptionSpec,
    Secret,
    StreamPump,
    ToolResult,
    error_from_status,
    freeze_json,
    is_non_negative_int,
    is_number_between,
    is_one_of,
    is_positive_int,
    is_positive_number,
    is_str,
    is_tool_list,
    is_transport_exception,
    optional,
    parse_tool_results,
    pumped_turn,
    scrub,
    shutdown_response,
    tool_results_prompt,
    transport_error,
    validate_options,
)

if TYPE_CHECKING:  # the SDK is an extra, imported for real on first use
    import openai

__all__ = ["OpenAIBackend", "OpenAISession", "ToolResult", "tool_results_prompt"]

NAME = "openai"
API_KEY_ENV = "OPENAI_API_KEY"

_OPTIONS: dict[str, OptionSpec] = {
    "model": OptionSpec("gpt-5", is_str),
    "instructions": OptionSpec(None, optional(is_str)),
    "max_output_tokens": OptionSpec(None, optional(is_positive_int)),
    "temperature": OptionSpec(None, optional(is_number_between(0.0, 2.0))),
    "reasoning_effort": OptionSpec(None, optional(is_one_of("minimal", "low", "medium", "high"))),
    "tools": OptionSpec((), is_tool_list),
    "api_key": OptionSpec(None, optional(is_str)),
    "base_url": OptionSpec(None, optional(is_str)),
    "max_retries": OptionSpec(0, is_non_negative_int),
    "timeout": OptionSpec(600.0, is_positive_number),
}


@dataclass(frozen=True)
class OpenAISession:
    """The state of one Responses API conversation: settings and the last response id.

    Frozen and picklable; :meth:`OpenAIBackend.update_session` returns a new one after each
    successful turn. ``api_key`` is a :class:`Secret` (masked in ``repr``) and only set
    when the ``api_key`` option was given.

    Attributes:
        session_id: A library-generated id (the API has none).
        previous_response_id: The id of the last completed response; ``None`` at first.
        pending_calls: The ``call_id`` values the next prompt must answer.
        turn_index: How many turns completed.
        started: Whether ``session_started`` was already reported.
    """

    session_id: str
    model: str
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None
    tools: tuple[WireMapping, ...] = ()
    base_url: str | None = None
    max_retries: int = 0
    timeout: float = 600.0
    api_key: Secret | None = field(default=None, repr=False)
    previous_response_id: str | None = None
    pending_calls: tuple[str, ...] = ()
    turn_index: int = 0
    started: bool = False

    def __repr__(self) -> str:
        """Show the session without its API key: sessions appear in logs and error reports."""
        key = "<from env>" if self.api_key is None else "***"
        return (
            f"OpenAISession(session_id={self.session_id!r}, model={self.model!r}, "
            f"previous_response_id={self.previous_response_id!r}, "
            f"turn_index={self.turn_index}, api_key={key})"
        )


class OpenAIBackend(Backend):
    """OpenAI Responses API, streamed through the official SDK. See the module docstring."""

    name: ClassVar[str] = NAME
    live_session: ClassVar[bool] = False  # an HTTP client: not capped

    def __init__(self) -> None:
        self._clients: ClientCache[openai.OpenAI] = ClientCache()

    # -- session ------------------------------------------------------------------------

    def start_session(self, options: Options) -> OpenAISession:
        """Validate ``options`` and return a new session (no request is made)."""
        values = validate_options(NAME, options, _OPTIONS)
        api_key = Secret(values["api_key"]) if values["api_key"] else None
        if api_key is None and not os.environ.get(API_KEY_ENV):
            raise BackendError(
                f"no OpenAI API key: pass the 'api_key' option or set {API_KEY_ENV}",
                kind=BackendErrorKind.AUTHENTICATION,
                retryable=False,
                backend=NAME,
            )
        return OpenAISession(
            session_id=f"openai-{uuid.uuid4()}",
            model=values["model"],
            instructions=values["instructions"],
            max_output_tokens=values["max_output_tokens"],
            temperature=values["temperature"],
            reasoning_effort=values["reasoning_effort"],
            tools=tuple(freeze_json(list(values["tools"]))),
            base_url=values["base_url"],
            max_retries=values["max_retries"],
            timeout=float(values["timeout"]),
            api_key=api_key,
        )

    def update_session(self, session: OpenAISession, event: Event) -> OpenAISession:
        """Note ``session_started``; on ``result`` keep the response id and pending calls."""
        if event.kind == EventKind.SESSION_STARTED:
            return session if session.started else replace(session, started=True)
        if event.kind != EventKind.RESULT or event.data.get("session_id") != session.session_id:
            return session
        response_id = event.data.get("response_id")
        if not response_id:
            return session
        return replace(
            session,
            previous_response_id=response_id,
            pending_calls=tuple(str(c["id"]) for c in event.data.get("pending_tool_uses", ())),
            turn_index=session.turn_index + 1,
            started=True,
        )

    def terminate_session(self, session: OpenAISession) -> None:
        """Nothing to end: stored responses expire on the provider's schedule."""

    def close(self) -> None:
        """Close the SDK clients of this process. Idempotent."""
        self._clients.close_all()

    # -- turn ---------------------------------------------------------------------------

    def prompt(self, session: OpenAISession, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn: send ``prompt`` after ``previous_response_id`` and stream the reply."""
        started = time.monotonic()
        if not session.started:
            yield Event(
                EventKind.SESSION_STARTED,
                {"session_id": session.session_id, "model": session.model, "resumed": False},
            )
        yield Event(
            EventKind.TURN_STARTED, {"turn_index": session.turn_index, "model": session.model}
        )
        try:
            params = self._request(session, prompt)
            client = self._client(session)
        except BackendError as exc:
            yield Event.error(exc)
            return
        except InvalidOption as exc:
            yield Event.error(
                BackendError(str(exc), kind=BackendErrorKind.INVALID_REQUEST, backend=NAME)
            )
            return
        turn = _Turn(session, started)
        yield from pumped_turn(
            backend=NAME,
            ctx_cancelled=ctx.cancelled,
            produce=lambda emit, pump: turn.run(client, params, emit, pump),
            map_exception=lambda exc: map_openai_exception(exc, session.api_key),
            on_cancel=lambda: self._forget_client(session),
            partial_usage=turn.usage,
            thread_name=f"openai-turn-{ctx.ref}",
            http_client=getattr(client, "_client", None),
        )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _request(session: OpenAISession, prompt: str) -> WireJson:
        """The Responses API request for one turn: the new input only, chained by response id.

        The conversation is kept by the server (``store=True``) and continued with
        ``previous_response_id``, so a turn sends only what is new: the prompt, or, when the last
        answer called functions, the prompt parsed as their outputs, matched by ``call_id``.
        """
        if session.pending_calls:
            results = parse_tool_results(prompt, list(session.pending_calls))
            items: list[WireJson] = [
                {"type": "function_call_output", "call_id": r.tool_use_id, "output": r.content}
                for r in results
            ]
        else:
            items = [{"role": "user", "content": prompt}]
        params: WireJson = {"model": session.model, "input": items, "store": True}
        if session.previous_response_id:
            params["previous_response_id"] = session.previous_response_id
        if session.instructions is not None:
            params["instructions"] = session.instructions
        if session.max_output_tokens is not None:
            params["max_output_tokens"] = session.max_output_tokens
        if session.temperature is not None:
            params["temperature"] = session.temperature
        if session.reasoning_effort is not None:
            params["reasoning"] = {"effort": session.reasoning_effort}
        if session.tools:
            params["tools"] = [dict(t) for t in session.tools]
        return params

    def _client_key(self, session: OpenAISession) -> tuple[object, ...]:
        """What makes two sessions need different SDK clients (anything else shares one)."""
        return (session.base_url, session.api_key, session.max_retries, session.timeout)

    def _client(self, session: OpenAISession) -> openai.OpenAI:
        """The SDK client for this session's key, endpoint and limits, shared between its turns.

        The SDK is imported here, on first use, so the package imports without the ``openai`` extra;
        a missing SDK is a non-retryable :class:`BackendError` naming the extra.
        """
        try:
            import openai
        except ImportError as exc:
            raise BackendError(
                "the openai backend needs the openai SDK: pip install 'genagent-thespian[openai]'",
                kind=BackendErrorKind.UNKNOWN,
                retryable=False,
                backend=NAME,
            ) from exc
        return self._clients.get(
            self._client_key(session), lambda: self._make_client(openai, session)
        )

    def _make_client(self, sdk: ModuleType, session: OpenAISession) -> openai.OpenAI:
        """Create an SDK client; the key is revealed only here, at the call that needs it.

        A missing key fails the turn as an authentication error before any request is made, rather
        than as a 401 after a round trip.
        """
        api_key = session.api_key.reveal() if session.api_key else os.environ.get(API_KEY_ENV)
        if not api_key:
            raise BackendError(
                f"no OpenAI API key: pass the 'api_key' option or set {API_KEY_ENV}",
                kind=BackendErrorKind.AUTHENTICATION,
                retryable=False,
                backend=NAME,
            )
        client: openai.OpenAI = sdk.OpenAI(
            api_key=api_key,
            base_url=session.base_url,
            max_retries=session.max_retries,
            timeout=session.timeout,
        )
        return client

    def _forget_client(self, session: OpenAISession) -> None:
        """Drop the client whose connections a cancel cut (a new one serves the next turn)."""
        self._clients.forget(self._client_key(session))


def map_openai_exception(exc: BaseException, api_key: Secret | None = None) -> BackendError:
    """Map an exception raised while streaming to a :class:`BackendError`.

    HTTP errors are classified by ``error.code`` and ``error.type`` first, then by status;
    connection failures are ``transport``; undecodable stream data is ``protocol``.
    """
    if isinstance(exc, BackendError):
        return exc
    import openai

    env_key = os.environ.get(API_KEY_ENV)
    if isinstance(exc, openai.APIStatusError):
        body: WireJson = exc.body if isinstance(exc.body, dict) else {}
        error: WireJson = body["error"] if isinstance(body.get("error"), dict) else body
        message = error.get("message")
        if not isinstance(message, str):
            message = str(exc)
        return error_from_status(
            backend=NAME,
            status=exc.status_code,
            error_type=error.get("type") if isinstance(error.get("type"), str) else None,
            code=error.get("code") if isinstance(error.get("code"), str) else None,
            message=scrub(message, api_key, env_key),
            headers=dict(exc.response.headers),
        )
    if isinstance(exc, openai.APIConnectionError) or is_transport_exception(exc):
        return transport_error(NAME, exc, api_key, Secret(env_key) if env_key else None)
    if isinstance(exc, openai.APIError):  # an in-band {"error": ...} in the stream
        body = exc.body if isinstance(exc.body, dict) else {}
        return error_from_status(
            backend=NAME,
            status=None,
            error_type=body.get("type") if isinstance(body.get("type"), str) else None,
            code=body.get("code") if isinstance(body.get("code"), str) else None,
            message=scrub(exc.message, api_key, env_key),
            mid_stream=True,
        )
    detail = scrub(f"{type(exc).__name__}: {exc}", api_key, env_key)
    if isinstance(exc, ValueError):  # undecodable SSE data (json.JSONDecodeError)
        return BackendError(
            f"openai stream could not be decoded: {detail}",
            kind=BackendErrorKind.PROTOCOL,
            retryable=False,
            backend=NAME,
        )
    return BackendError(
        f"openai turn failed: {detail}", kind=BackendErrorKind.UNKNOWN, backend=NAME
    )


class _Turn:
    """Turns one streamed response into normalized events (runs in the pump thread)."""

    def __init__(self, session: OpenAISession, started: float) -> None:
        """Collect one streamed response: its id (the next turn's ``previous_response_id``), texts,
        function calls by item id, refusal and usage.
        """
        self.session = session
        self.started = started
        self.response_id: str | None = None
        self.model: str | None = session.model
        self.calls: dict[str, WireJson] = {}  # item id -> call_id, name
        self.texts: list[str] = []
        self.pending: list[WireJson] = []
        self.refused = False
        self.raw_usage: WireJson = {}

    def usage(self) -> Usage | None:
        """The usage reported, or ``None`` before the response finished."""
        if not self.raw_usage:
            return None
        total_input = int(self.raw_usage.get("input_tokens") or 0)
        cached = int((self.raw_usage.get("input_tokens_details") or {}).get("cached_tokens") or 0)
        details = self.raw_usage.get("output_tokens_details") or {}
        return Usage(
            input_tokens=max(0, total_input - cached),
            cache_read_input_tokens=cached,
            output_tokens=int(self.raw_usage.get("output_tokens") or 0),
            reasoning_output_tokens=int(details.get("reasoning_tokens") or 0),
            model=self.model,
        )

    def run(
        self,
        client: openai.OpenAI,
        params: WireJson,
        emit: Callable[[Event], None],
        pump: StreamPump,
    ) -> None:
        """Stream the response, emitting our events as they come, until its terminal event.

        After the terminal event the rest of the body is still read (and ignored) so the HTTP
        connection can go back to the SDK's pool. The pump can abort the stream from another thread;
        the response is registered with it so that shutting the socket unblocks the read.
        """
        stream = client.responses.create(**params, stream=True)
        pump.register(lambda: shutdown_response(stream.response))
        ended = False
        with stream:
            for raw in stream:
                if pump.aborted:
                    return
                if ended:
                    continue  # read the body to its end so the connection goes back to the pool
                event = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else dict(raw)
                for normalized in self.handle(event):
                    emit(normalized)
                    if normalized.terminal:
                        ended = True
                        break
        if ended:
            return
        if not pump.aborted:
            raise BackendError(
                "openai stream ended before response.completed (truncated stream)",
                kind=BackendErrorKind.PROTOCOL,
                retryable=True,
                backend=NAME,
            )

    def handle(self, event: WireMapping) -> Iterator[Event]:
        """Translate one server-sent event of the Responses API into our events.

        Function calls are remembered from ``output_item.added`` because argument deltas name only
        the item id, while the caller needs the ``call_id`` to answer the call.
        """
        kind = str(event.get("type", ""))
        item_id = event.get("item_id")
        where = {"message_id": item_id, "block_index": event.get("output_index")}
        if kind in ("response.created", "response.in_progress"):
            response = event.get("response") or {}
            self.response_id = response.get("id") or self.response_id
            self.model = response.get("model") or self.model
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                self.calls[str(item.get("id"))] = item
        elif kind == "response.output_text.delta":
            yield Event(EventKind.TEXT_DELTA, {"text": str(event.get("delta", "")), **where})
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            yield Event(EventKind.THINKING_DELTA, {"text": str(event.get("delta", "")), **where})
        elif kind == "response.function_call_arguments.delta":
            call = self.calls.get(str(item_id), {})
            yield Event(
                EventKind.TOOL_INPUT_DELTA,
                {"id": call.get("call_id"), "partial_json": str(event.get("delta", "")), **where},
            )
        elif kind == "response.output_item.done":
            yield from self._item_done(event.get("item") or {}, event.get("output_index"))
        elif kind in ("response.completed", "response.incomplete"):
            yield from self._finish(event.get("response") or {})
        elif kind == "response.failed":
            response = event.get("response") or {}
            error = response.get("error") or {}
            self.raw_usage = response.get("usage") or self.raw_usage
            yield Event.error(
                error_from_status(
                    backend=NAME,
                    status=None,
                    error_type=None,
                    code=error.get("code"),
                    message=str(error.get("message") or "response failed"),
                    mid_stream=True,
                ),
                usage=self.usage(),
            )
        elif kind == "error":
            yield Event.error(
                error_from_status(
                    backend=NAME,
                    status=None,
                    error_type=None,
                    code=event.get("code"),
                    message=str(event.get("message") or "stream error"),
                    mid_stream=True,
                ),
                usage=self.usage(),
            )

    def _item_done(self, item: WireMapping, index: object) -> Iterator[Event]:
        """Yield a finished output item as one whole event: message, reasoning or function call.

        A refusal is kept as text (the caller sees what the model said) and marks the turn, so its
        stop reason says ``refusal``. A function call becomes a pending call the next prompt
        answers.
        """
        kind = item.get("type")
        where = {"message_id": item.get("id"), "block_index": index}
        if kind == "message":
            parts = item.get("content") or []
            text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "output_text")
            if any(p.get("type") == "refusal" for p in parts):
                self.refused = True
                text += "".join(
                    str(p.get("refusal", "")) for p in parts if p.get("type") == "refusal"
                )
            self.texts.append(text)
            yield Event(EventKind.TEXT, {"text": text, **where})
        elif kind == "reasoning":
            summary = item.get("summary") or []
            text = "\n".join(str(s.get("text", "")) for s in summary)
            yield Event(EventKind.THINKING, {"text": text, "signature": None, **where})
        elif kind == "function_call":
            arguments = str(item.get("arguments") or "")
            try:
                parsed: JsonValue = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                parsed = None
            call = {"id": item.get("call_id"), "name": item.get("name"), "input": parsed}
            self.pending.append(call)
            yield Event(
                EventKind.TOOL_USE,
                {**call, "arguments": arguments, "kind": "function", "parent_id": None, **where},
            )

    def _finish(self, response: WireMapping) -> Iterator[Event]:
        """Yield the usage and the result of a completed response, with our stop reason.

        The Responses API has no stop reason of its own; it is derived from pending calls, an
        ``incomplete`` status (content filter or token limit) and refusals, so callers can branch on
        the same values as with the Anthropic backend.
        """
        self.response_id = response.get("id") or self.response_id
        self.model = response.get("model") or self.model
        self.raw_usage = response.get("usage") or self.raw_usage
        stop_reason = "end_turn"
        if self.pending:
            stop_reason = "tool_use"
        if response.get("status") == "incomplete":
            reason = (response.get("incomplete_details") or {}).get("reason")
            stop_reason = "refusal" if reason == "content_filter" else "max_tokens"
        elif self.refused:
            stop_reason = "refusal"
        usage = self.usage() or Usage(model=self.model)
        yield Event(EventKind.USAGE, {"usage": usage})
        yield Event.result(
            "".join(self.texts),
            session_id=self.session.session_id,
            response_id=self.response_id,
            stop_reason=stop_reason,
            model=self.model,
            usage=usage,
            num_api_calls=1,
            duration_ms=(time.monotonic() - self.started) * 1000,
            pending_tool_uses=list(self.pending),
        )
