"""The Anthropic Messages API backend, on the official ``anthropic`` SDK (streaming).

Install with ``pip install 'genagent-thespian[anthropic]'`` and start an agent with
``backend="anthropic"``. The API keeps no conversation, so the session does: it holds the
whole history with every content block (text, thinking with its signature, tool_use), which
is what lets a tool-use conversation continue and a restarted agent resume exactly.

A turn sends the history plus the new user message, streams the reply and ends with one
``result`` (or one ``error``). When the model asks for tools (``stop_reason ==
"tool_use"``) the turn ends there; the result lists the calls in ``pending_tool_uses`` and
the next prompt answers them: plain text answers every call with that text, and
:func:`tool_results_prompt` answers each call by id. The backend never runs tools itself.

Options (all optional; unknown keys raise :class:`~genagent_thespian.InvalidOption`):

=================  =====================  ==================================================
key                default                meaning
=================  =====================  ==================================================
``model``          ``claude-sonnet-4-6``  model id
``max_tokens``     ``4096``               output token limit per API call
``system``         ``None``               system prompt
``temperature``    ``None``               0.0 - 1.0
``tools``          ``()``                 tool definitions (``name``, ``input_schema``...)
``thinking``       ``None``               extended thinking budget in tokens (>= 1024)
``prompt_caching`` ``False``              ``True``/``"5m"``/``"1h"``: cache_control on the
                                          system prompt and the last user message
``api_key``        ``None``               the key; default: ``ANTHROPIC_API_KEY`` read in
                                          the worker at each turn (never stored)
``base_url``       ``None``               API address (default: the SDK's, or
                                          ``ANTHROPIC_BASE_URL``)
``max_retries``    ``0``                  SDK retries; 0 leaves retrying to the agent's
                                          ``handle_error`` (errors carry ``retry_after``)
``timeout``        ``600``                seconds per request (SDK timeout)
=================  =====================  ==================================================
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

from genagent_thespian._core.backend import Backend, TurnContext
from genagent_thespian._core.errors import BackendError, BackendErrorKind, InvalidOption
from genagent_thespian._core.turn import Event, EventKind, Usage
from genagent_thespian._core.types import Options, WireJson, WireMapping

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
    import anthropic

__all__ = ["AnthropicBackend", "AnthropicSession", "ToolResult", "tool_results_prompt"]

NAME = "anthropic"
API_KEY_ENV = "ANTHROPIC_API_KEY"

_STOP_REASONS = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    "model_context_window_exceeded": "context_window",
}


def _is_thinking_budget(value: object) -> str | None:
    """Check the extended-thinking budget: the API refuses fewer than 1024 tokens."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1024
    return None if ok else "must be an int >= 1024 (thinking budget tokens)"


def _is_caching(value: object) -> str | None:
    """Check ``prompt_caching``: on/off, or the cache lifetime Anthropic accepts."""
    return None if value in (True, False, "5m", "1h") else "must be True, False, '5m' or '1h'"


_OPTIONS: dict[str, OptionSpec] = {
    "model": OptionSpec("claude-sonnet-4-6", is_str),
    "max_tokens": OptionSpec(4096, is_positive_int),
    "system": OptionSpec(None, optional(is_str)),
    "temperature": OptionSpec(None, optional(is_number_between(0.0, 1.0))),
    "tools": OptionSpec((), is_tool_list),
    "thinking": OptionSpec(None, optional(_is_thinking_budget)),
    "prompt_caching": OptionSpec(False, _is_caching),
    "api_key": OptionSpec(None, optional(is_str)),
    "base_url": OptionSpec(None, optional(is_str)),
    "max_retries": OptionSpec(0, is_non_negative_int),
    "timeout": OptionSpec(600.0, is_positive_number),
}


@dataclass(frozen=True)
class AnthropicSession:
    """The state of one Anthropic conversation: settings and the full message history.

    Frozen and picklable; :meth:`AnthropicBackend.update_session` returns a new one after
    each successful turn. ``api_key`` is a :class:`Secret` (masked in ``repr``) and only set
    when the ``api_key`` option was given.

    Attributes:
        session_id: A library-generated id (the API has none).
        messages: Every message so far, as the API takes them (plain dicts, all blocks).
        turn_index: How many turns completed.
        started: Whether ``session_started`` was already reported.
    """

    session_id: str
    model: str
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    tools: tuple[WireMapping, ...] = ()
    thinking: int | None = None
    prompt_caching: bool | str = False
    base_url: str | None = None
    max_retries: int = 0
    timeout: float = 600.0
    api_key: Secret | None = field(default=None, repr=False)
    messages: tuple[WireMapping, ...] = ()
    turn_index: int = 0
    started: bool = False

    def __repr__(self) -> str:
        """Show the session without its API key: sessions appear in logs and error reports."""
        key = "<from env>" if self.api_key is None else "***"
        return (
            f"AnthropicSession(session_id={self.session_id!r}, model={self.model!r}, "
            f"messages={len(self.messages)}, turn_index={self.turn_index}, api_key={key})"
        )

    @property
    def pending_tool_uses(self) -> list[WireMapping]:
        """The ``tool_use`` blocks of the last assistant message, if it ended the history."""
        if not self.messages or self.messages[-1].get("role") != "assistant":
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, (list, tuple)):
            return []
        return [b for b in content if isinstance(b, Mapping) and b.get("type") == "tool_use"]


class AnthropicBackend(Backend):
    """Anthropic Messages API, streamed through the official SDK. See the module docstring."""

    name: ClassVar[str] = NAME
    live_session: ClassVar[bool] = False  # an HTTP client: not capped

    def __init__(self) -> None:
        self._clients: ClientCache[anthropic.Anthropic] = ClientCache()

    # -- session ------------------------------------------------------------------------

    def start_session(self, options: Options) -> AnthropicSession:
        """Validate ``options`` and return a new session (no request is made)."""
        values = validate_options(NAME, options, _OPTIONS)
        api_key = Secret(values["api_key"]) if values["api_key"] else None
        if api_key is None and not os.environ.get(API_KEY_ENV):
            raise BackendError(
                f"no Anthropic API key: pass the 'api_key' option or set {API_KEY_ENV}",
                kind=BackendErrorKind.AUTHENTICATION,
                retryable=False,
                backend=NAME,
            )
        return AnthropicSession(
            session_id=f"anthropic-{uuid.uuid4()}",
            model=values["model"],
            max_tokens=values["max_tokens"],
            system=values["system"],
            temperature=values["temperature"],
            tools=tuple(freeze_json(list(values["tools"]))),
            thinking=values["thinking"],
            prompt_caching=values["prompt_caching"],
            base_url=values["base_url"],
            max_retries=values["max_retries"],
            timeout=float(values["timeout"]),
            api_key=api_key,
        )

    def update_session(self, session: AnthropicSession, event: Event) -> AnthropicSession:
        """Note ``session_started``; on ``result`` append the user and assistant messages."""
        if event.kind == EventKind.SESSION_STARTED:
            return session if session.started else replace(session, started=True)
        if event.kind != EventKind.RESULT:
            return session
        appended = event.data.get("messages_appended")
        if not appended or event.data.get("session_id") != session.session_id:
            return session
        return replace(
            session,
            messages=session.messages + tuple(appended),
            turn_index=session.turn_index + 1,
            started=True,
        )

    def terminate_session(self, session: AnthropicSession) -> None:
        """Nothing to end on the provider side (the API keeps no session)."""

    def close(self) -> None:
        """Close the SDK clients of this process. Idempotent."""
        self._clients.close_all()

    # -- turn ---------------------------------------------------------------------------

    def prompt(self, session: AnthropicSession, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn: send the history plus ``prompt`` and stream the reply."""
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
            user_message = self._user_message(session, prompt)
            params = self._request(session, user_message)
            client = self._client(session)
        except BackendError as exc:
            yield Event.error(exc)
            return
        except InvalidOption as exc:
            yield Event.error(
                BackendError(str(exc), kind=BackendErrorKind.INVALID_REQUEST, backend=NAME)
            )
            return
        turn = _Turn(session, user_message, started)
        yield from pumped_turn(
            backend=NAME,
            ctx_cancelled=ctx.cancelled,
            produce=lambda emit, pump: turn.run(client, params, emit, pump),
            map_exception=lambda exc: map_anthropic_exception(exc, session.api_key),
            on_cancel=lambda: self._forget_client(session),
            partial_usage=turn.usage,
            thread_name=f"anthropic-turn-{ctx.ref}",
            http_client=getattr(client, "_client", None),
        )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _user_message(session: AnthropicSession, prompt: str) -> WireJson:
        """The next user message: the prompt, or tool results when the last answer asked for tools.

        The Messages API is stateless and refuses a turn that leaves a ``tool_use`` unanswered, so
        while tool uses are pending the prompt is parsed as their results, matched by id.
        """
        pending = session.pending_tool_uses
        if not pending:
            return {"role": "user", "content": prompt}
        results = parse_tool_results(prompt, [str(b.get("id")) for b in pending])
        blocks: list[WireJson] = []
        for result in results:
            block: WireJson = {
                "type": "tool_result",
                "tool_use_id": result.tool_use_id,
                "content": result.content,
            }
            if result.is_error:
                block["is_error"] = True
            blocks.append(block)
        return {"role": "user", "content": blocks}

    @staticmethod
    def _request(session: AnthropicSession, user_message: WireJson) -> WireJson:
        """The request for one turn: the whole stored history plus the new user message.

        With prompt caching on, cache breakpoints go on the system prompt and the newest user
        message of this request only, never on the stored history (see the comment below).
        """
        messages = [dict(m) for m in session.messages] + [user_message]
        params: WireJson = {
            "model": session.model,
            "max_tokens": session.max_tokens,
            "messages": messages,
        }
        cache_control = None
        if session.prompt_caching:
            cache_control = {"type": "ephemeral"}
            if session.prompt_caching in ("5m", "1h"):
                cache_control["ttl"] = session.prompt_caching
        if session.system is not None:
            system_block: WireJson = {"type": "text", "text": session.system}
            if cache_control:
                system_block["cache_control"] = cache_control
            params["system"] = [system_block]
        if cache_control:
            # On the outgoing copy only: the stored history never carries breakpoints, so
            # the API's limit of four cache_control blocks holds however long it gets.
            content = user_message["content"]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            content = [dict(b) for b in content]
            content[-1]["cache_control"] = cache_control
            messages[-1] = {"role": "user", "content": content}
        if session.temperature is not None:
            # Through extra_body: newer SDKs no longer take sampling parameters as arguments.
            params["extra_body"] = {"temperature": session.temperature}
        if session.tools:
            params["tools"] = [dict(t) for t in session.tools]
        if session.thinking is not None:
            params["thinking"] = {"type": "enabled", "budget_tokens": session.thinking}
        return params

    def _client_key(self, session: AnthropicSession) -> tuple[object, ...]:
        """What makes two sessions need different SDK clients (anything else shares one)."""
        return (session.base_url, session.api_key, session.max_retries, session.timeout)

    def _client(self, session: AnthropicSession) -> anthropic.Anthropic:
        """The SDK client for this session's key, endpoint and limits, shared between its turns.

        The SDK is imported here, on first use, so the package imports without the ``anthropic``
        extra; a missing SDK is a non-retryable :class:`BackendError` naming the extra.
        """
        try:
            import anthropic
        except ImportError as exc:
            raise BackendError(
                "the anthropic backend needs the anthropic SDK: "
                "pip install 'genagent-thespian[anthropic]'",
                kind=BackendErrorKind.UNKNOWN,
                retryable=False,
                backend=NAME,
            ) from exc
        return self._clients.get(
            self._client_key(session), lambda: self._make_client(anthropic, session)
        )

    def _make_client(self, sdk: ModuleType, session: AnthropicSession) -> anthropic.Anthropic:
        """Create an SDK client; the key is revealed only here, at the call that needs it.

        A missing key fails the turn as an authentication error before any request is made, rather
        than as a 401 after a round trip.
        """
        api_key = session.api_key.reveal() if session.api_key else os.environ.get(API_KEY_ENV)
        if not api_key:
            raise BackendError(
                f"no Anthropic API key: pass the 'api_key' option or set {API_KEY_ENV}",
                kind=BackendErrorKind.AUTHENTICATION,
                retryable=False,
                backend=NAME,
            )
        client: anthropic.Anthropic = sdk.Anthropic(
            api_key=api_key,
            base_url=session.base_url,
            max_retries=session.max_retries,
            timeout=session.timeout,
        )
        return client

    def _forget_client(self, session: AnthropicSession) -> None:
        """Drop the client whose connections a cancel cut (a new one serves the next turn)."""
        self._clients.forget(self._client_key(session))


def map_anthropic_exception(exc: BaseException, api_key: Secret | None = None) -> BackendError:
    """Map an exception raised while streaming to a :class:`BackendError`.

    HTTP errors are classified by ``body.error.type`` first (an ``event: error`` in a 200
    stream arrives as ``APIStatusError`` with status 200), then by status; connection
    failures are ``transport``; undecodable stream data is ``protocol``.
    """
    if isinstance(exc, BackendError):
        return exc
    import anthropic

    env_key = os.environ.get(API_KEY_ENV)
    if isinstance(exc, anthropic.APIStatusError):
        body: WireJson = exc.body if isinstance(exc.body, dict) else {}
        error: WireJson = body["error"] if isinstance(body.get("error"), dict) else {}
        message = error.get("message")
        if not isinstance(message, str):
            message = str(exc)
        mapped = error_from_status(
            backend=NAME,
            status=exc.status_code,
            error_type=error.get("type"),
            message=scrub(message, api_key, env_key),
            headers=dict(exc.response.headers),
            mid_stream=exc.status_code == 200,
        )
        mapped.__cause__ = None
        return mapped
    if isinstance(exc, (anthropic.APIConnectionError,)) or is_transport_exception(exc):
        return transport_error(NAME, exc, api_key, Secret(env_key) if env_key else None)
    if isinstance(exc, ValueError):  # undecodable SSE data (json.JSONDecodeError)
        detail = scrub(f"{type(exc).__name__}: {exc}", api_key, env_key)
        return BackendError(
            f"anthropic stream could not be decoded: {detail}",
            kind=BackendErrorKind.PROTOCOL,
            retryable=False,
            backend=NAME,
        )
    detail = scrub(f"{type(exc).__name__}: {exc}", api_key, env_key)
    return BackendError(
        f"anthropic turn failed: {detail}", kind=BackendErrorKind.UNKNOWN, backend=NAME
    )


class _Turn:
    """Accumulates one streamed reply into normalized events (runs in the pump thread)."""

    def __init__(self, session: AnthropicSession, user_message: WireJson, started: float) -> None:
        """Collect one streamed response: content blocks by index, tool input fragments, usage.

        The blocks are kept whole (text, thinking with its signature, tool input) because they are
        appended to the history as the assistant's message, which the API checks on the next turn.
        """
        self.session = session
        self.user_message = user_message
        self.started = started
        self.message_id: str | None = None
        self.model: str | None = session.model
        self.blocks: dict[int, WireJson] = {}
        self.partial_json: dict[int, str] = {}
        self.stop_reason: str | None = None
        self.raw_usage: WireJson = {}
        self.stopped = False

    def usage(self) -> Usage | None:
        """The usage seen so far, or ``None`` before ``message_start``."""
        if not self.raw_usage:
            return None
        return Usage(
            input_tokens=int(self.raw_usage.get("input_tokens") or 0),
            output_tokens=int(self.raw_usage.get("output_tokens") or 0),
            cache_read_input_tokens=int(self.raw_usage.get("cache_read_input_tokens") or 0),
            cache_creation_input_tokens=int(self.raw_usage.get("cache_creation_input_tokens") or 0),
            model=self.model,
        )

    def run(
        self,
        client: anthropic.Anthropic,
        params: WireJson,
        emit: Callable[[Event], None],
        pump: StreamPump,
    ) -> None:
        """Stream the response, emitting our events as they come, until ``message_stop``.

        The pump can abort the stream from another thread (cancellation, close); the response is
        registered with it so that shutting the socket unblocks the read. A stream that ends without
        ``message_stop`` was cut off and is reported as a retryable protocol error.
        """
        stream = client.messages.create(**params, stream=True)
        pump.register(lambda: shutdown_response(stream.response))
        with stream:
            for raw in stream:
                if pump.aborted:
                    return
                event = raw.model_dump(mode="json") if hasattr(raw, "model_dump") else dict(raw)
                for normalized in self.handle(event):
                    emit(normalized)
        if pump.aborted:
            return
        if not self.stopped:
            raise BackendError(
                "anthropic stream ended before message_stop (truncated stream)",
                kind=BackendErrorKind.PROTOCOL,
                retryable=True,
                backend=NAME,
            )
        emit(Event(EventKind.USAGE, {"usage": self.usage() or Usage(model=self.model)}))
        emit(self.finish())

    def handle(self, event: WireMapping) -> Iterator[Event]:
        """Fold one server-sent event into the turn and yield the events it produces.

        Usage arrives in two parts (input counts on ``message_start``, output on ``message_delta``)
        and is merged, so the turn's usage is whole at the end.
        """
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.message_id = message.get("id")
            self.model = message.get("model") or self.model
            self.raw_usage.update({k: v for k, v in (message.get("usage") or {}).items() if v})
        elif kind == "content_block_start":
            index = int(event.get("index", len(self.blocks)))
            block = {k: v for k, v in (event.get("content_block") or {}).items() if v is not None}
            self.blocks[index] = block
            if block.get("type") in ("tool_use", "server_tool_use"):
                self.partial_json[index] = ""
        elif kind == "content_block_delta":
            yield from self._delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop":
            yield from self._block_done(int(event.get("index", 0)))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            usage = event.get("usage") or {}
            self.raw_usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True

    def _delta(self, index: int, delta: WireMapping) -> Iterator[Event]:
        """Append a block delta to its block and yield it as a delta event.

        Signatures and citations are accumulated too, although no event streams them: the whole
        block goes back into the history, where the API checks each thinking block's signature.
        """
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        where = {"message_id": self.message_id, "block_index": index}
        if kind == "text_delta":
            text = str(delta.get("text", ""))
            block["text"] = block.get("text", "") + text
            yield Event(EventKind.TEXT_DELTA, {"text": text, **where})
        elif kind == "thinking_delta":
            text = str(delta.get("thinking", ""))
            block["thinking"] = block.get("thinking", "") + text
            yield Event(EventKind.THINKING_DELTA, {"text": text, **where})
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + str(delta.get("signature", ""))
        elif kind == "input_json_delta":
            fragment = str(delta.get("partial_json", ""))
            self.partial_json[index] = self.partial_json.get(index, "") + fragment
            yield Event(
                EventKind.TOOL_INPUT_DELTA,
                {"id": block.get("id"), "partial_json": fragment, **where},
            )
        elif kind == "citations_delta":
            citation = delta.get("citation")
            if citation is not None:
                block.setdefault("citations", []).append(citation)

    def _block_done(self, index: int) -> Iterator[Event]:
        """Finish a block: parse its tool input and yield the block as one whole event.

        Tool input arrives as JSON fragments and is only valid once complete; invalid JSON is a
        protocol error, since the tool cannot be run on half an input.
        """
        block = self.blocks.get(index)
        if block is None:
            return
        where = {"message_id": self.message_id, "block_index": index}
        kind = block.get("type")
        if index in self.partial_json:
            text = self.partial_json[index]
            try:
                block["input"] = json.loads(text) if text.strip() else {}
            except ValueError as exc:
                raise BackendError(
                    f"anthropic tool input of block {index} is not valid JSON",
                    kind=BackendErrorKind.PROTOCOL,
                    backend=NAME,
                ) from exc
        if kind == "text":
            yield Event(EventKind.TEXT, {"text": block.get("text", ""), **where})
        elif kind == "thinking":
            yield Event(
                EventKind.THINKING,
                {"text": block.get("thinking", ""), "signature": block.get("signature"), **where},
            )
        elif kind in ("tool_use", "server_tool_use"):
            yield Event(
                EventKind.TOOL_USE,
                {
                    "id": block.get("id"),
                    "name": block.get("name"),
                    "input": block.get("input", {}),
                    "kind": "function" if kind == "tool_use" else "server",
                    "parent_id": None,
                    **where,
                },
            )

    def finish(self) -> Event:
        """The turn's result: its text, usage, pending tool uses and the two history messages.

        ``messages_appended`` carries the user and assistant messages frozen, so the session adds
        them to its history only when the turn succeeds; a failed turn leaves the history as it was.
        """
        content = [self.blocks[i] for i in sorted(self.blocks)]
        assistant = {"role": "assistant", "content": content}
        text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        usage = self.usage() or Usage(model=self.model)
        stop_reason = _STOP_REASONS.get(self.stop_reason or "", self.stop_reason)
        pending = [
            {"id": b.get("id"), "name": b.get("name"), "input": b.get("input", {})}
            for b in content
            if b.get("type") == "tool_use"
        ]
        return Event.result(
            text,
            session_id=self.session.session_id,
            stop_reason=stop_reason,
            model=self.model,
            message_id=self.message_id,
            usage=usage,
            num_api_calls=1,
            duration_ms=(time.monotonic() - self.started) * 1000,
            pending_tool_uses=pending,
            messages_appended=(freeze_json(self.user_message), freeze_json(assistant)),
        )
