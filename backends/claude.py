"""The Claude Code CLI backend: ``claude`` driven over pipes, one long-lived process per session.

Two modes (option ``mode``):

* ``"stream"`` (default): one ``claude -p --input-format stream-json --output-format
  stream-json --verbose`` process per session, kept by the backend instance in the worker
  process and reused for every turn (a turn writes one ``{"type":"user"}`` line and reads up
  to its ``result`` line). The process stays alive across turns until the turn is
  interrupted or times out, the process crashes, or the agent stops or retires its worker.
  An interrupt is an in-band ``control_request`` (claude answers with an aborted result);
  the process is then ended and the next turn starts a new one with ``--resume``, because
  an aborted turn may leave the CLI mid-tool. If the CLI has not ended the turn
  ``interrupt_grace_s`` after the request, its group is ended (SIGINT, SIGTERM, SIGKILL).
* ``"per_turn"``: one ``claude -p ... -- <prompt>`` process per turn, stdin closed; after
  its result the CLI exits by itself (waited for, bounded). An interrupt is SIGINT to its
  group (claude then ends with an aborted result), escalating to SIGTERM and SIGKILL.

Both modes rely on the worker's turn-ending contract (:class:`Backend`): the generator is
consumed after its terminal event, so the decision to keep or end the process is made here,
after the result, and never by a ``close()`` racing the result.

The session (:class:`ClaudeSession`) is plain data: the session id (chosen here, passed as
``--session-id`` on the first process and ``--resume`` afterwards), the cwd the CLI runs in
(claude has no ``--cwd``), the validated options and the cumulative cost. Every process
runs in its own process group, reported to :meth:`TurnContext.track_process_group`.

Wire format and traps: ``shared/reference/backends.md`` §1 and §5 (claude 2.1.x).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from genagent_thespian import (
    Backend,
    BackendError,
    BackendErrorKind,
    Event,
    EventKind,
    InvalidOption,
    TurnContext,
    Usage,
)
from genagent_thespian._core.types import Options, Session, WireJson, WireMapping

from ._options import (
    check_bool,
    check_choice,
    check_env,
    check_number,
    check_positive_int,
    check_str,
    check_str_list,
    check_text,
    resolve_binary,
    resolve_cwd,
    validate,
)
from ._process import (
    DEFAULT_MAX_LINE_BYTES,
    CliProcess,
    OversizedLine,
    ProcessStartError,
    decode_json_line,
    redact,
)
from ._session_files import files_under, home_of, path_under

__all__ = ["ClaudeBackend", "ClaudeSession", "ClaudeTurnTranslator", "classify_claude_error"]

BACKEND = "claude"
#: Environment variable naming the program when the ``binary`` option is not given.
BINARY_ENV = "GENAGENT_CLAUDE_BIN"
SUBAGENT = "subagent"  # custom event kind for lines produced inside a subagent (Task tool)

_PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
_SETTING_SOURCES = ("user", "project", "local")
#: Flags the backend itself owns: passing them through ``extra_args`` would break the
#: stream protocol or the session bookkeeping, so they are refused by name.
_OWN_FLAGS = frozenset(
    {
        "p",
        "print",
        "output-format",
        "input-format",
        "verbose",
        "session-id",
        "resume",
        "r",
        "continue",
        "c",
        "fork-session",
    }
)
#: The CLI's retry budget, set through its environment (``claude`` 2.1.x reads both).
RETRIES_ENV = "CLAUDE_CODE_MAX_RETRIES"
TIMEOUT_ENV = "API_TIMEOUT_MS"


#: claude 2.1.331 clamps CLAUDE_CODE_MAX_RETRIES to this (with a warning on stderr).
MAX_RETRIES_LIMIT = 15


def _check_retries(backend: str, key: str, value: object) -> int:
    """Check ``max_retries`` against the CLI's own ceiling here, at start, not in the first turn.

    A value the CLI refuses would otherwise surface only as a failed turn, after the agent has
    already accepted prompts.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES_LIMIT:
        raise InvalidOption(
            f"{backend}: option {key!r} must be an int from 0 to {MAX_RETRIES_LIMIT} "
            f"(claude's own limit), got {value!r:.80}"
        )
    return value


def _check_json_or_mapping(backend: str, key: str, value: object) -> str | WireJson:
    """A mapping (sent as JSON) or a non-empty string (a file path or JSON text)."""
    if isinstance(value, Mapping):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            message = f"{backend}: option {key!r} is not JSON-serializable: {exc}"
            raise InvalidOption(message) from None
        return dict(value)
    if isinstance(value, str | os.PathLike) and os.fspath(value):
        return os.fspath(value)
    raise InvalidOption(
        f"{backend}: option {key!r} must be a mapping or a path/JSON string, "
        f"got {type(value).__name__}"
    )


def _check_mcp_servers(backend: str, key: str, value: object) -> str | WireJson:
    """The SDK's ``mcp_servers``: ``{name: config}`` or the path of an MCP config file."""
    checked = _check_json_or_mapping(backend, key, value)
    if isinstance(checked, dict):
        for name, config in checked.items():
            if not isinstance(name, str) or not name or not isinstance(config, Mapping):
                raise InvalidOption(
                    f"{backend}: option {key!r} maps server names to config mappings; "
                    f"entry {name!r:.40} is not one"
                )
    return checked


def _check_setting_sources(backend: str, key: str, value: object) -> tuple[str, ...]:
    """Accept one source or a list of them, and refuse names the CLI does not know.

    ``setting_sources`` decides which settings files the CLI reads (user, project, local); a
    wrong name is refused when the agent starts rather than by the CLI in the first turn.
    """
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or any(i not in _SETTING_SOURCES for i in items):
        raise InvalidOption(
            f"{backend}: option {key!r} must be a list of {', '.join(_SETTING_SOURCES)}, "
            f"got {value!r:.80}"
        )
    return tuple(items)


def _check_extra_args(backend: str, key: str, value: object) -> dict[str, str | None]:
    """The SDK's ``extra_args``: ``{flag: value}`` (``None`` for a bare flag), no dashes."""
    if not isinstance(value, Mapping):
        raise InvalidOption(f"{backend}: option {key!r} must be a mapping of flag to value")
    checked: dict[str, str | None] = {}
    for flag, arg in value.items():
        if not isinstance(flag, str) or not flag or flag.startswith("-") or "=" in flag:
            raise InvalidOption(
                f"{backend}: option {key!r}: flag names are given without dashes, got {flag!r:.40}"
            )
        if flag in _OWN_FLAGS:
            raise InvalidOption(
                f"{backend}: option {key!r}: --{flag} is set by the backend itself "
                "(use the options mode, session_id, resume, fork_session)"
            )
        if arg is not None and not isinstance(arg, str):
            raise InvalidOption(
                f"{backend}: option {key!r}: the value of --{flag} must be a string or None"
            )
        checked[flag] = arg
    return checked


_CHECKERS = {
    "mode": check_choice("stream", "per_turn"),
    "cwd": lambda backend, key, value: value,  # resolved by resolve_cwd
    "binary": lambda backend, key, value: value,  # resolved by resolve_binary
    "cli_path": lambda backend, key, value: value,  # the SDK's name for ``binary``
    "session_id": check_str,
    "resume": check_bool,
    "fork_session": check_bool,
    "model": check_str,
    "system_prompt": check_text,
    "append_system_prompt": check_str,
    "permission_mode": check_choice(*_PERMISSION_MODES),
    "permission_prompt_tool": check_str,
    "allowed_tools": check_str_list,
    "disallowed_tools": check_str_list,
    "add_dirs": check_str_list,
    "mcp_servers": _check_mcp_servers,
    "settings": _check_json_or_mapping,
    "setting_sources": _check_setting_sources,
    "extra_args": _check_extra_args,
    "max_turns": check_positive_int,
    "max_budget_usd": check_number,
    "max_retries": _check_retries,
    "api_timeout_s": check_number,
    "include_partial_messages": check_bool,
    "env": check_env,
    "interrupt_grace_s": check_number,
    "max_line_bytes": check_positive_int,
}
_SESSION_ARGS = (
    ("model", "--model"),
    ("system_prompt", "--system-prompt"),
    ("append_system_prompt", "--append-system-prompt"),
    ("permission_mode", "--permission-mode"),
    ("permission_prompt_tool", "--permission-prompt-tool"),
    ("max_turns", "--max-turns"),
    ("max_budget_usd", "--max-budget-usd"),
)
_POLL_S = 0.1
_STOP_GRACE_S = 5.0
_SESSION_NOT_FOUND = "No conversation found"  # claude --resume of an id it has no record of
_SESSION_IN_USE = "is already in use"  # claude --session-id of an id it has a record of


@dataclass(frozen=True, slots=True)
class ClaudeSession:
    """A Claude Code session as data (picklable; no live resource).

    Attributes:
        session_id: The CLI's session id (a UUID).
        cwd: Directory the CLI runs in; the CLI files the session under it.
        binary: Absolute path of the ``claude`` program.
        options: The validated options (see ``docs/backends.md``).
        started: The CLI has recorded this session, so a new process must ``--resume`` it.
        turns: Turns that ended with a result.
        total_cost_usd: The CLI's cumulative session cost after the last result, if known.
        model: The model the CLI reported.
    """

    session_id: str
    cwd: str
    binary: str
    options: Options = field(default_factory=dict)
    started: bool = False
    turns: int = 0
    total_cost_usd: float | None = None
    model: str | None = None

    @property
    def mode(self) -> str:
        """``"stream"`` (one process per session) or ``"per_turn"``."""
        return str(self.options.get("mode", "stream"))


# ----------------------------------------------------------------------------- translation


def classify_claude_error(
    result: WireMapping, api_error: WireMapping | None = None
) -> tuple[str, str | None]:
    """Return ``(BackendErrorKind, code)`` for an ``is_error`` result line.

    ``api_error`` is the synthetic ``assistant`` line that precedes an API failure (it
    carries ``error``, ``api_error_status`` and ``api_error_type``). ``code`` is a finer
    reason that has no kind of its own (``max_turns``, ``budget``, ``not_found``...).
    """
    api_error = api_error or {}
    status = result.get("api_error_status") or api_error.get("api_error_status")
    error_type = result.get("api_error_type") or api_error.get("api_error_type") or ""
    cli_error = str(api_error.get("error") or "")
    subtype = str(result.get("subtype") or "")
    terminal = str(result.get("terminal_reason") or "")
    prose = " ".join(str(e) for e in result.get("errors") or ())
    if terminal.startswith("aborted"):
        return BackendErrorKind.CANCELLED, terminal
    if subtype == "error_max_turns" or terminal == "max_turns":
        return BackendErrorKind.INVALID_REQUEST, "max_turns"
    if subtype == "error_max_budget_usd":
        return BackendErrorKind.INVALID_REQUEST, "budget"
    if _SESSION_NOT_FOUND in prose:
        return BackendErrorKind.SESSION_LOST, "not_found"
    if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
        return BackendErrorKind.AUTHENTICATION, error_type or None
    if cli_error == "authentication_failed":
        return BackendErrorKind.AUTHENTICATION, cli_error
    if status == 429 or error_type == "rate_limit_error" or cli_error == "rate_limit":
        return BackendErrorKind.RATE_LIMITED, error_type or None
    if status == 529 or error_type == "overloaded_error":
        return BackendErrorKind.OVERLOADED, error_type or None
    if (isinstance(status, int) and status >= 500) or error_type == "api_error":
        return BackendErrorKind.SERVER_ERROR, error_type or None
    if isinstance(status, int) and 400 <= status < 500:
        return BackendErrorKind.INVALID_REQUEST, error_type or None
    transport = str(result.get("api_error") or api_error.get("api_error") or "")
    if transport.startswith("connection") or (cli_error == "server_error" and status is None):
        # No HTTP answer at all: refused, reset, DNS, or the API_TIMEOUT_MS timeout (which
        # claude reports as a server_error without status or api_error).
        return BackendErrorKind.TRANSPORT, transport or "no_response"
    if cli_error == "server_error":
        return BackendErrorKind.SERVER_ERROR, cli_error
    return BackendErrorKind.UNKNOWN, terminal or subtype or None


def _usage_of(result: WireMapping, cost: float | None, model: str | None) -> Usage:
    """Build our :class:`Usage` from a result's ``usage`` object, missing counters as zero.

    Counters the result leaves out count as zero, so sums over turns never meet ``None``;
    thinking tokens are read from ``output_tokens_details``, where the CLI reports them.
    """
    usage = result.get("usage") or {}
    details = usage.get("output_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        reasoning_output_tokens=int(details.get("thinking_tokens") or 0),
        cost_usd=cost,
        model=model,
    )


def _turn_cost(result: WireMapping, previous_total: float | None) -> float | None:
    """The cost of this turn: ``model_usage_since_last_result``, else the cumulative delta."""
    since = result.get("model_usage_since_last_result")
    if isinstance(since, Mapping) and since:
        costs = [m.get("costUSD") for m in since.values() if isinstance(m, Mapping)]
        if costs and all(isinstance(c, int | float) for c in costs):
            return float(sum(c for c in costs if c is not None))
    total = result.get("total_cost_usd")
    if not isinstance(total, int | float):
        return None
    if previous_total is None:
        return float(total)
    return max(float(total) - previous_total, 0.0)


class ClaudeTurnTranslator:
    """Turn the stdout lines of one claude turn into normalized events.

    Pure and independent of any process: feed it parsed lines with :meth:`feed` (or raw
    bytes with :meth:`feed_line`) and, if the stream ends early, call :meth:`finish`. Once
    :attr:`terminal` is set the turn has its one terminal event.

    Args:
        session_id: The id expected (used when the CLI never says).
        previous_total_cost: The session's cumulative cost before this turn, if known.
        resumed: Whether this turn continues an existing session (for ``session_started``).
    """

    def __init__(
        self,
        *,
        session_id: str | None = None,
        previous_total_cost: float | None = None,
        resumed: bool = False,
    ) -> None:
        """Start a turn's translation, carrying what the session knows from earlier turns.

        ``previous_total_cost`` lets the turn's own cost be derived from the CLI's running total;
        ``resumed`` is reported on ``SESSION_STARTED`` so a reader knows the conversation went on.
        """
        self.session_id = session_id
        self.previous_total_cost = previous_total_cost
        self.resumed = resumed
        self.model: str | None = None
        self.terminal: Event | None = None
        self.cancel_requested = False
        self.seen_init = False  # the CLI announced the session in this turn
        self._delta_blocks: set[tuple[str | None, int]] = set()
        self._assistant_blocks: dict[str | None, int] = {}
        self._tool_ids: dict[tuple[str | None, int], str] = {}
        self._last_retry: WireMapping | None = None
        self._api_error: WireMapping | None = None

    # -- input ----------------------------------------------------------------------------

    def feed_line(self, line: bytes | str) -> list[Event]:
        """Translate one stdout line; a non-JSON line becomes a ``warning`` event."""
        decoded = decode_json_line(line)
        if decoded is None:
            return []
        if isinstance(decoded, Event):
            return [decoded]
        return self.feed(decoded)

    def feed(self, obj: WireMapping) -> list[Event]:
        """Translate one parsed stdout object."""
        if self.terminal is not None:
            return []
        events = self._translate(obj)
        parent = obj.get("parent_tool_use_id")
        if parent and obj.get("type") != "result":
            # Lines produced inside a subagent are kept apart from the main conversation.
            return [
                Event(SUBAGENT, {"parent_tool_use_id": parent, "event": e.kind, **e.data}, raw=obj)
                for e in events
            ]
        return events

    def finish(self, *, returncode: int | None, stderr: str = "", cancelled: bool) -> list[Event]:
        """End a stream that stopped without a ``result``: one synthesized ``error`` event."""
        if self.terminal is not None:
            return []
        if cancelled:
            error = BackendError(
                "claude turn cancelled; the CLI was stopped before it sent a result",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
        else:
            detail = f": {stderr}" if stderr else ""
            lost = _SESSION_NOT_FOUND in stderr
            error = BackendError(
                f"claude exited (status {returncode}) without a result{detail}",
                kind=BackendErrorKind.SESSION_LOST if lost else BackendErrorKind.PROCESS_EXIT,
                backend=BACKEND,
            )
        code = "not_found" if error.kind == BackendErrorKind.SESSION_LOST else error.kind
        return self._end(
            Event.error(error, session_id=self.session_id, returncode=returncode, code=code)
        )

    def protocol_error(self, message: str) -> list[Event]:
        """End the turn with a ``protocol`` error (an oversized or unusable stream)."""
        if self.terminal is not None:
            return []
        error = BackendError(message, kind=BackendErrorKind.PROTOCOL, backend=BACKEND)
        return self._end(Event.error(error, session_id=self.session_id, code="protocol"))

    # -- dispatch -------------------------------------------------------------------------

    def _end(self, event: Event) -> list[Event]:
        """Record ``event`` as the turn's one terminal event and return it as the last event."""
        self.terminal = event
        return [event]

    def _translate(self, obj: WireMapping) -> list[Event]:
        """Dispatch one stream-json object on its ``type``; unknown types pass through as ``RAW``.

        Passing unknown objects through, instead of dropping them, keeps new CLI messages visible to
        observers before this translator learns them.
        """
        kind = obj.get("type")
        if kind == "system":
            return self._system(obj)
        if kind == "stream_event":
            return self._stream_event(obj)
        if kind == "assistant":
            return self._assistant(obj)
        if kind == "user":
            return self._user(obj)
        if kind == "result":
            return self._result(obj)
        if kind == "rate_limit_event":
            info = obj.get("rate_limit_info") or {}
            status = info.get("status")
            if status in (None, "allowed"):
                return [Event(EventKind.RAW, {"type": kind}, raw=obj)]
            code = "rate_limit" if status == "rejected" else f"rate_limit_{status}"
            return [Event(EventKind.WARNING, {"code": code, "message": str(status), "info": info})]
        if kind in ("control_response", "control_cancel_request"):
            return []  # answers to our own interrupt requests
        return [Event(EventKind.RAW, {"type": kind}, raw=obj)]

    def _system(self, obj: WireMapping) -> list[Event]:
        """Translate ``system`` messages: session start, API retries, and the CLI's status noise.

        Only the first ``init`` of a turn becomes ``SESSION_STARTED``/``TURN_STARTED`` (the
        CLI may announce it more than once), so each turn starts exactly once. The last retry is
        remembered: if the turn then fails retryably, its delay becomes the error's ``retry_after``.
        """
        subtype = obj.get("subtype")
        if subtype == "init":
            if self.seen_init:
                return []
            self.seen_init = True
            self.session_id = obj.get("session_id") or self.session_id
            self.model = obj.get("model") or self.model
            return [
                Event(
                    EventKind.SESSION_STARTED,
                    {
                        "session_id": self.session_id,
                        "model": self.model,
                        "cwd": obj.get("cwd"),
                        "resumed": self.resumed,
                    },
                ),
                Event(EventKind.TURN_STARTED, {"session_id": self.session_id}),
            ]
        if subtype == "status":
            return []
        if subtype == "api_retry":
            self._last_retry = obj
            return [
                Event(
                    EventKind.RETRY,
                    {
                        "attempt": obj.get("attempt"),
                        "max_retries": obj.get("max_retries"),
                        "delay_ms": obj.get("retry_delay_ms"),
                        "status_code": obj.get("error_status"),
                        "message": obj.get("error"),
                    },
                )
            ]
        return [Event(EventKind.RAW, {"type": "system", "subtype": subtype}, raw=obj)]

    def _stream_event(self, obj: WireMapping) -> list[Event]:
        """Translate the partial-message deltas (``--include-partial-messages``).

        Blocks seen as deltas are remembered so the full ``assistant`` message that follows marks
        its text ``streamed``, and a consumer does not print it twice. Tool input arrives keyed by
        block index only, so the tool id from the block start is kept to label it.
        """
        inner = obj.get("event") or {}
        message_id = obj.get("api_message_id")
        kind = inner.get("type")
        index = int(inner.get("index") or 0)
        if kind == "content_block_start":
            block = inner.get("content_block") or {}
            if block.get("type") in ("tool_use", "server_tool_use") and block.get("id"):
                self._tool_ids[(message_id, index)] = block["id"]
            return []
        if kind == "content_block_delta":
            delta = inner.get("delta") or {}
            delta_type = delta.get("type")
            where = {"message_id": message_id, "index": index}
            if delta_type == "text_delta":
                self._delta_blocks.add((message_id, index))
                return [Event(EventKind.TEXT_DELTA, {"text": delta.get("text", ""), **where})]
            if delta_type == "thinking_delta":
                self._delta_blocks.add((message_id, index))
                return [
                    Event(EventKind.THINKING_DELTA, {"text": delta.get("thinking", ""), **where})
                ]
            if delta_type == "input_json_delta":
                tool_id = self._tool_ids.get((message_id, index))
                partial = delta.get("partial_json", "")
                return [Event(EventKind.TOOL_INPUT_DELTA, {"id": tool_id, "partial_json": partial})]
            return []
        if kind == "message_stop":
            abandoned = inner.get("abandoned_blocks")
            if isinstance(abandoned, Mapping):
                first = int(abandoned.get("from_block_index") or 0)
                message_id = abandoned.get("api_message_id") or message_id
            else:
                # A stream the CLI gave up on (an error mid-stream, retried without
                # streaming) ends with no assistant line for the blocks it streamed.
                confirmed = self._assistant_blocks.get(message_id, 0)
                unconfirmed = [
                    i for m, i in self._delta_blocks if m == message_id and i >= confirmed
                ]
                if not unconfirmed:
                    return []
                first = min(unconfirmed)
            return [Event(EventKind.DISCARD, {"message_id": message_id, "from_block_index": first})]
        return []

    def _assistant(self, obj: WireMapping) -> list[Event]:
        """Translate a complete assistant message into text, thinking and tool-use events.

        Blocks are counted per message id because the CLI may split one API message into several
        ``assistant`` lines, and the count is what matches a block to its deltas. The CLI's
        synthetic error message is kept for :func:`classify_claude_error` and shown as a warning.
        """
        message = obj.get("message") or {}
        message_id = message.get("id")
        self.model = message.get("model") if message.get("model") != "<synthetic>" else self.model
        if obj.get("error") or obj.get("is_api_error_message"):
            # The CLI's synthetic message that announces an API failure; the result follows.
            self._api_error = obj
            text = " ".join(
                b.get("text", "") for b in message.get("content") or () if b.get("type") == "text"
            )
            return [Event(EventKind.WARNING, {"code": obj.get("error"), "message": text})]
        events = []
        for block in message.get("content") or ():
            index = self._assistant_blocks.get(message_id, 0)
            self._assistant_blocks[message_id] = index + 1
            block_type = block.get("type")
            streamed = (message_id, index) in self._delta_blocks
            if block_type == "text":
                data = {"text": block.get("text", ""), "message_id": message_id}
                events.append(Event(EventKind.TEXT, {**data, "streamed": streamed}))
            elif block_type == "thinking":
                data = {"text": block.get("thinking", ""), "signature": block.get("signature")}
                events.append(Event(EventKind.THINKING, {**data, "streamed": streamed}))
            elif block_type in ("tool_use", "server_tool_use"):
                events.append(
                    Event(
                        EventKind.TOOL_USE,
                        {
                            "id": block.get("id"),
                            "name": block.get("name"),
                            "input": block.get("input"),
                            "kind": "function" if block_type == "tool_use" else "server",
                        },
                    )
                )
            else:
                events.append(Event(EventKind.RAW, {"type": "assistant", "block": block_type}))
        return events

    def _user(self, obj: WireMapping) -> list[Event]:
        """Translate tool results (the CLI ran a tool) and the CLI's own "interrupted" note."""
        content = (obj.get("message") or {}).get("content")
        if not isinstance(content, list):
            return [Event(EventKind.RAW, {"type": "user"}, raw=obj)]
        events = []
        for block in content:
            if block.get("type") == "tool_result":
                events.append(
                    Event(
                        EventKind.TOOL_RESULT,
                        {
                            "tool_use_id": block.get("tool_use_id"),
                            "output": block.get("content"),
                            "is_error": bool(block.get("is_error")),
                            "meta": obj.get("tool_use_result"),
                        },
                    )
                )
            elif block.get("type") == "text" and "interrupted" in block.get("text", ""):
                events.append(
                    Event(EventKind.WARNING, {"code": "interrupted", "message": block["text"]})
                )
        return events

    def _result(self, obj: WireMapping) -> list[Event]:
        """Translate the ``result`` message: the turn's usage, then its one terminal event.

        An error result is classified with the API error seen earlier in the turn, if any. A turn
        that was cancelled and then ended with an unclassified error is reported as cancelled, since
        the error is only the CLI's way of saying it stopped.
        """
        self.session_id = obj.get("session_id") or self.session_id
        model = self.model
        model_usage = obj.get("modelUsage")
        if not model and isinstance(model_usage, Mapping) and len(model_usage) == 1:
            model = next(iter(model_usage))
        cost = _turn_cost(obj, self.previous_total_cost)
        total = obj.get("total_cost_usd")
        total_cost = float(total) if isinstance(total, int | float) else None
        usage = _usage_of(obj, cost, model)
        common = {
            "session_id": self.session_id,
            "total_cost_usd": total_cost,
            "num_turns": obj.get("num_turns"),
            "duration_ms": obj.get("duration_ms"),
            "terminal_reason": obj.get("terminal_reason"),
        }
        usage_event = Event(
            EventKind.USAGE, {"usage": usage, "cumulative": {"model_usage": model_usage}}
        )
        if not obj.get("is_error"):
            result = Event.result(
                obj.get("result") if isinstance(obj.get("result"), str) else None,
                stop_reason=obj.get("stop_reason"),
                cost_usd=cost,
                model=model,
                **common,
            )
            return [usage_event, *self._end(result)]
        kind, code = classify_claude_error(obj, self._api_error)
        if self.cancel_requested and kind == BackendErrorKind.UNKNOWN:
            kind = BackendErrorKind.CANCELLED
        message = obj.get("result") if isinstance(obj.get("result"), str) else None
        if not message:
            message = "; ".join(str(e) for e in obj.get("errors") or ()) or str(
                obj.get("subtype") or "error"
            )
        if kind == BackendErrorKind.CANCELLED:
            message = f"turn cancelled ({obj.get('terminal_reason') or obj.get('subtype')})"
        retry_after = None
        retry = self._last_retry
        if kind in BackendErrorKind.RETRYABLE and retry and retry.get("retry_delay_ms"):
            retry_after = float(retry["retry_delay_ms"]) / 1000.0
        status = obj.get("api_error_status") or (self._api_error or {}).get("api_error_status")
        error = BackendError(
            f"claude: {redact(message)}",
            kind=kind,
            retry_after=retry_after,
            status_code=status if isinstance(status, int) else None,
            backend=BACKEND,
        )
        return [usage_event, *self._end(Event.error(error, code=code, **common))]


def _as_json_arg(value: object, original: object) -> str:
    """A mapping option as JSON text; a string option (a path or JSON) as given."""
    return original if isinstance(original, str) else json.dumps(value, separators=(",", ":"))


def _check_budget_env(opts: WireMapping) -> None:
    """Refuse a retry budget given both as an option and as its environment variable."""
    env = opts.get("env", {})
    for key, variable in (("max_retries", RETRIES_ENV), ("api_timeout_s", TIMEOUT_ENV)):
        if key in opts and variable in env:
            raise InvalidOption(
                f"claude: option {key!r} and env {variable} set the same budget; give one"
            )


def _as_cancelled(event: Event) -> Event:
    """Report a failure that ended a cancelled turn as ``cancelled`` (the cause is kept)."""
    error = event.data.get("error")
    if event.kind != EventKind.ERROR or not isinstance(error, BackendError):
        return event
    if error.kind == BackendErrorKind.CANCELLED:
        return event
    cancelled = BackendError(
        f"claude turn cancelled ({error.message})", kind=BackendErrorKind.CANCELLED, backend=BACKEND
    )
    rest = {k: v for k, v in event.data.items() if k not in ("error", "message")}
    return Event.error(cancelled, **rest)


# ------------------------------------------------------------------------------- backend


@dataclass
class _Live:
    """A running stream-mode process and the turn context that tracks its group."""

    process: CliProcess
    ctx: TurnContext | None = None
    stopping: bool = False  # close() or terminate_session() is ending it
    busy: bool = False  # a turn is reading from it


class ClaudeBackend(Backend):
    """Backend for the Claude Code CLI (``claude`` 2.1.x); see the module docstring."""

    name = BACKEND
    thread_turns = True  # the slow part is the claude program, in a group the agent kills

    def __init__(self) -> None:
        """Track live processes: one per session in stream mode, one per running turn otherwise,
        so ``close()`` and ``terminate_session()`` can find and stop them.
        """
        self._live: dict[str, _Live] = {}  # stream mode: the process of each session
        self._per_turn: dict[int, _Live] = {}  # per-turn mode: running processes by group
        self._lock = threading.Lock()

    # -- session lifecycle ----------------------------------------------------------------

    def start_session(self, options: Options) -> ClaudeSession:
        """Validate ``options`` and return a new session (no process is started here).

        Raises:
            InvalidOption: Unknown key, bad value, or a ``cwd`` that is not a directory.
            BackendError: The ``claude`` program cannot be found.
        """
        opts = validate(BACKEND, options, _CHECKERS)
        if "cli_path" in opts and "binary" in opts:
            raise InvalidOption("claude: options 'binary' and 'cli_path' name the same thing")
        cwd = resolve_cwd(BACKEND, opts.pop("cwd", None))
        binary = resolve_binary(
            BACKEND,
            opts.pop("binary", None) or opts.pop("cli_path", None),
            env_var=BINARY_ENV,
            default_name="claude",
        )
        session_id = opts.pop("session_id", None) or str(uuid.uuid4())
        try:
            uuid.UUID(session_id)
        except ValueError as exc:
            raise InvalidOption(
                f"claude: option 'session_id' must be a UUID: {session_id!r}"
            ) from exc
        resume = opts.get("resume", False)
        if resume and "session_id" not in options:
            raise InvalidOption("claude: option 'resume' needs the 'session_id' to continue")
        _check_budget_env(opts)
        if opts.pop("fork_session", False):
            if not resume:
                raise InvalidOption(
                    "claude: option 'fork_session' needs 'resume' and the 'session_id' to fork"
                )
            # The fork gets its own id, chosen here like any new session's; the first
            # process resumes the parent with --fork-session, later ones resume the fork.
            opts = {k: v for k, v in opts.items() if k != "resume"}
            opts["fork_from"] = session_id
            session_id, resume = str(uuid.uuid4()), False
        return ClaudeSession(
            session_id=session_id,
            cwd=cwd,
            binary=binary,
            options=opts,
            started=resume,
            model=opts.get("model"),
        )

    def update_session(self, session: Session, event: Event) -> Session:
        """Record the session id, the model and the cumulative cost from ``event``."""
        if not isinstance(session, ClaudeSession):
            return session
        if event.kind == EventKind.SESSION_STARTED:
            return replace(
                session,
                session_id=event.data.get("session_id") or session.session_id,
                model=event.data.get("model") or session.model,
                started=True,
            )
        if event.kind == EventKind.RESULT:
            total = event.data.get("total_cost_usd")
            return replace(
                session,
                session_id=event.data.get("session_id") or session.session_id,
                started=True,
                turns=session.turns + 1,
                total_cost_usd=total if isinstance(total, float) else session.total_cost_usd,
            )
        return session

    def resume_session(self, session: Session) -> Session:
        """Mark ``session`` as recorded by the CLI, so the next process uses ``--resume``."""
        if isinstance(session, ClaudeSession) and (session.turns or session.started):
            return replace(session, started=True)
        return session

    def renew_session(self, session: Session) -> Session:
        """Return a new claude session (new id, no history) with ``session``'s options."""
        if not isinstance(session, ClaudeSession):
            return session
        options = {k: v for k, v in session.options.items() if k not in ("resume", "fork_from")}
        return replace(
            session,
            session_id=str(uuid.uuid4()),
            options=options,
            started=False,
            turns=0,
            total_cost_usd=None,
        )

    def terminate_session(self, session: Session) -> None:
        """End the session's process (close stdin, wait, SIGTERM, SIGKILL). Never raises."""
        if isinstance(session, ClaudeSession):
            with self._lock:
                live = self._live.pop(session.session_id, None)
            if live is not None:
                self._retire(live, graceful=not live.busy)

    def close(self) -> None:
        """End every live process of this backend instance. Idempotent."""
        with self._lock:
            lives = [*self._live.values(), *self._per_turn.values()]
            self._live.clear()
        for live in lives:
            # An idle session process gets to flush its transcript; a busy one is mid-turn
            # (the watchdog is retiring the worker) and is stopped at once.
            self._retire(live, graceful=not live.busy)

    def warm(self, session: Session, ctx: TurnContext) -> Session:
        """Stream mode: start the session's process now; the first turn writes to it.

        It is the very process :meth:`_turn_streamed` would start (the same argv:
        ``--session-id`` for a new session, ``--resume`` for a stored one), kept as the
        session's live process, so the first turn reuses it (same pid) and pays no CLI
        start-up. Nothing is written to it: claude records no turn, and a warmed process
        retired unused leaves the session as it was. ``per_turn`` mode starts one process
        per turn with the prompt on its command line: nothing to warm.

        Raises:
            ProcessStartError: the CLI could not be started (the first turn reports it).
        """
        if not isinstance(session, ClaudeSession) or session.mode == "per_turn":
            return session
        if not ctx.cancelled.is_set():
            self._live_process(session, ctx)
        return session

    # -- turns ----------------------------------------------------------------------------

    def prompt(self, session: Session, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn (see the module docstring); always ends with one terminal event."""
        if not isinstance(session, ClaudeSession):
            raise InvalidOption(f"claude: not a ClaudeSession: {type(session).__name__}")
        if ctx.cancelled.is_set():
            error = BackendError(
                "claude turn cancelled before it started",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
            yield Event.error(error, session_id=session.session_id, code=error.kind)
            return
        run = self._turn_per_process if session.mode == "per_turn" else self._turn_streamed
        translator = self._translator(session)
        retry: ClaudeSession | None = None
        for event in run(session, prompt, ctx, translator):
            if self._never_recorded(session, translator, event):
                # The first process of this session died before claude stored the session:
                # there is no conversation to lose, so the session starts afresh.
                retry = replace(session, started=False)
                warning = ("session_not_recorded", "has no stored session {}; starting it anew")
                break
            if self._already_in_use(session, translator, event):
                # claude stored the session but the agent's record did not say so (it was
                # killed in the moment between): continue the stored session.
                retry = replace(session, started=True)
                warning = ("session_in_use", "already has session {}; resuming it")
                break
            yield event
        if retry is None:
            return
        code, message = warning
        yield Event(
            EventKind.WARNING,
            {"code": code, "message": "claude " + message.format(session.session_id)},
        )
        yield from run(retry, prompt, ctx, self._translator(retry))

    @staticmethod
    def _translator(session: ClaudeSession) -> ClaudeTurnTranslator:
        """A translator that continues the session's cost total and knows whether it resumes."""
        return ClaudeTurnTranslator(
            session_id=session.session_id,
            previous_total_cost=session.total_cost_usd,
            resumed=session.started,
        )

    @staticmethod
    def _never_recorded(
        session: ClaudeSession, translator: ClaudeTurnTranslator, event: Event
    ) -> bool:
        """Whether ``event`` says claude cannot resume a session that never had a turn.

        This is not a lost conversation, and not a case for ``on_session_lost``: the
        session never completed a turn (every earlier prompt of it was answered with a
        failure) and was not given by the user (``resume=True``), and claude never stored
        it (it was killed before the model's first answer). Starting it afresh under the
        same id loses nothing. Any other "No conversation found" is ``session_lost``.
        """
        return (
            event.kind == EventKind.ERROR
            and event.data.get("code") == "not_found"
            and session.started
            and session.turns == 0
            and not session.options.get("resume")
            and not translator.seen_init
        )

    @staticmethod
    def _already_in_use(
        session: ClaudeSession, translator: ClaudeTurnTranslator, event: Event
    ) -> bool:
        """Whether ``event`` says claude refused ``--session-id`` for a session it has."""
        error = event.data.get("error")
        return (
            event.kind == EventKind.ERROR
            and not session.started
            and not translator.seen_init
            and isinstance(error, BackendError)
            and error.kind == BackendErrorKind.PROCESS_EXIT
            and _SESSION_IN_USE in error.message
        )

    def _turn_streamed(
        self,
        session: ClaudeSession,
        prompt: str,
        ctx: TurnContext,
        translator: ClaudeTurnTranslator,
    ) -> Iterator[Event]:
        """Run a turn on the session's kept process (``keep_process=True``), starting one if needed.

        The prompt goes on stdin as a stream-json user message. A kept process can die between turns
        without anyone noticing; if it ends before writing anything, the turn is run once more in a
        fresh process that resumes the session, so the user never sees that failure.
        """
        line = json.dumps(
            {
                "type": "user",
                "message": {"role": "user", "content": prompt},
                "parent_tool_use_id": None,
                "session_id": session.session_id,
            }
        )
        # A kept process that died between turns (killed, crashed) may not look dead yet
        # when the turn starts; if it ends before saying anything, the turn runs once more
        # in a new process, which resumes the session.
        for attempt in (1, 2):
            try:
                live, reused = self._live_process(session, ctx)
            except ProcessStartError as exc:
                yield from self._start_failed(translator, exc)
                return
            outcome = yield from self._stream_once(
                live, session, line, ctx, translator, stale_ok=reused and attempt == 1
            )
            if outcome != "stale":
                return

    def _stream_once(
        self,
        live: _Live,
        session: ClaudeSession,
        line: str,
        ctx: TurnContext,
        translator: ClaudeTurnTranslator,
        *,
        stale_ok: bool,
    ) -> Generator[Event, None, str]:
        """Send the prompt to ``live`` and drive the turn; return how it ended.

        Cancellation first asks the CLI to interrupt through a control request, so the session stays
        usable; if stdin is gone, SIGINT to its group does the same job. The process is kept for the
        next turn only if the turn ended with a result and was not interrupted.
        """
        keep = False
        outcome = "eof"
        try:
            with contextlib.suppress(OSError):  # a dead process shows when read
                live.process.write_line(line)

            def interrupt() -> None:
                """Ask the CLI to interrupt the turn (a control request on stdin), keeping the
                process and its session; if stdin is gone, SIGINT to its group has the same
                effect.
                """
                request = {
                    "type": "control_request",
                    "request_id": f"req_int_{uuid.uuid4().hex[:12]}",
                    "request": {"subtype": "interrupt"},
                }
                try:
                    live.process.write_line(json.dumps(request))
                except OSError:
                    live.process.signal_group(signal.SIGINT)

            outcome = yield from self._drive(live, translator, ctx, interrupt, session, stale_ok)
            # The turn-ending contract lets this line run after the result: the process is
            # kept for the next turn unless the turn was interrupted or the CLI is gone.
            keep = (
                outcome == "terminal" and not ctx.cancelled.is_set() and live.process.poll() is None
            )
        finally:
            if not keep:
                with self._lock:
                    if self._live.get(session.session_id) is live:
                        del self._live[session.session_id]
                self._retire(live, graceful=False)
        return outcome

    def _turn_per_process(
        self,
        session: ClaudeSession,
        prompt: str,
        ctx: TurnContext,
        translator: ClaudeTurnTranslator,
    ) -> Iterator[Event]:
        """Run a turn in a new ``claude -p`` process that exits after its result.

        The process group is registered with the turn context at once, so that a worker killed
        mid-turn leaves nothing behind, and retired in ``finally`` whatever happens.
        """
        try:
            process = self._spawn(session, prompt=prompt)
        except ProcessStartError as exc:
            yield from self._start_failed(translator, exc)
            return
        live = _Live(process, ctx)
        with self._lock:
            self._per_turn[process.pgid] = live
        ctx.track_process_group(process.pgid)
        try:

            def interrupt() -> None:
                process.signal_group(signal.SIGINT)

            yield from self._drive(live, translator, ctx, interrupt, session, False)
            process.wait(_STOP_GRACE_S)  # after its result the CLI exits by itself
        finally:
            with self._lock:
                self._per_turn.pop(process.pgid, None)
            self._retire(live, graceful=False)

    def _drive(
        self,
        live: _Live,
        translator: ClaudeTurnTranslator,
        ctx: TurnContext,
        interrupt: Callable[[], None],
        session: ClaudeSession,
        stale_ok: bool,
    ) -> Generator[Event, None, str]:
        """Read lines until the terminal event; return how the turn ended.

        Returns ``"terminal"`` when the CLI sent a result (the process may go on),
        ``"eof"`` when the process ended, ``"killed"`` when the interrupt grace ran out,
        ``"protocol"`` on an unusable stream, and (only when ``stale_ok``) ``"stale"``
        without yielding anything when the process ended before writing a line.
        """
        live.busy = True
        try:
            return (yield from self._read_turn(live, translator, ctx, interrupt, session, stale_ok))
        finally:
            live.busy = False

    def _read_turn(
        self,
        live: _Live,
        translator: ClaudeTurnTranslator,
        ctx: TurnContext,
        interrupt: Callable[[], None],
        session: ClaudeSession,
        stale_ok: bool,
    ) -> Generator[Event, None, str]:
        """The read loop of :meth:`_drive`: poll lines, honour cancellation, detect the end.

        Reads use a short poll rather than a blocking read so that a cancellation is seen within
        ``_POLL_S`` even while the CLI is silent (a long tool call). After an interrupt the CLI gets
        ``interrupt_grace_s`` to end the turn itself before its process is stopped.
        """
        process = live.process
        said_anything = False
        grace = float(session.options.get("interrupt_grace_s", _STOP_GRACE_S))
        cancel_deadline: float | None = None
        while True:
            if ctx.cancelled.is_set() and cancel_deadline is None:
                translator.cancel_requested = True
                cancel_deadline = time.monotonic() + grace
                interrupt()
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                process.stop(grace=min(grace, _STOP_GRACE_S))
                yield from translator.finish(returncode=process.returncode, cancelled=True)
                return "killed"
            try:
                line = process.read_line(_POLL_S)
            except EOFError:
                returncode = process.wait(_STOP_GRACE_S)
                if stale_ok and not said_anything and not ctx.cancelled.is_set():
                    return "stale"
                yield from translator.finish(
                    returncode=returncode,
                    stderr=process.stderr_tail(),
                    cancelled=translator.cancel_requested or live.stopping,
                )
                return "eof"
            if line is None:
                continue
            said_anything = True
            if isinstance(line, OversizedLine):
                yield from translator.protocol_error(f"claude: {line}")
                return "protocol"
            events = translator.feed_line(line)
            for event in events:
                yield _as_cancelled(event) if ctx.cancelled.is_set() else event
            if translator.terminal is not None:
                return "terminal"

    def _start_failed(
        self, translator: ClaudeTurnTranslator, exc: ProcessStartError
    ) -> Iterator[Event]:
        """End the turn with a non-retryable error when the CLI could not even start.

        A missing or unrunnable program will not start on a retry either, hence ``retryable=False``:
        the caller should fix the installation, not try again.
        """
        error = BackendError(
            f"claude: {exc}", kind=BackendErrorKind.PROCESS_EXIT, retryable=False, backend=BACKEND
        )
        translator.terminal = Event.error(error, code="start_failed")
        yield translator.terminal

    # -- processes ------------------------------------------------------------------------

    def _live_process(self, session: ClaudeSession, ctx: TurnContext) -> tuple[_Live, bool]:
        """Return the session's process (starting one if needed) and whether it was kept."""
        with self._lock:
            live = self._live.get(session.session_id)
        if live is not None and live.process.poll() is not None:
            with self._lock:
                self._live.pop(session.session_id, None)
            self._retire(live, graceful=False)
            live = None
        reused = live is not None
        if live is None:
            live = _Live(self._spawn(session, prompt=None))
            with self._lock:
                self._live[session.session_id] = live
        live.ctx = ctx
        ctx.track_process_group(live.process.pgid)  # this turn's agent must know the group
        return live, reused

    def _spawn(self, session: ClaudeSession, *, prompt: str | None) -> CliProcess:
        """Start the CLI for the session: a one-shot ``-p`` run, or a kept stream-json process.

        Stdin stays open only for a kept process, which reads its prompts there; a one-shot run
        gets the prompt on the command line, with stdin closed so it never waits for more.
        """
        return CliProcess(
            self.command(session, prompt=prompt),
            cwd=session.cwd,
            env=self.environment(session),
            keep_stdin_open=prompt is None,
            max_line_bytes=int(session.options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
        )

    def command(self, session: ClaudeSession, *, prompt: str | None) -> list[str]:
        """Return the argv for a process of ``session`` (stream mode when ``prompt`` is None)."""
        opts = session.options
        argv = [session.binary, "-p", "--output-format", "stream-json", "--verbose"]
        if prompt is None:
            argv += ["--input-format", "stream-json"]
        if opts.get("include_partial_messages"):
            argv.append("--include-partial-messages")
        for key, flag in _SESSION_ARGS:
            if key in opts:
                value = opts[key]
                argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if opts.get("allowed_tools"):
            argv += ["--allowedTools", ",".join(opts["allowed_tools"])]
        if opts.get("disallowed_tools"):
            argv += ["--disallowedTools", ",".join(opts["disallowed_tools"])]
        for directory in opts.get("add_dirs", ()):
            argv += ["--add-dir", directory]
        if "mcp_servers" in opts:
            servers = opts["mcp_servers"]
            argv += ["--mcp-config", _as_json_arg({"mcpServers": servers}, servers)]
        if "settings" in opts:
            argv += ["--settings", _as_json_arg(opts["settings"], opts["settings"])]
        if "setting_sources" in opts:
            argv += ["--setting-sources", ",".join(opts["setting_sources"])]
        for flag, value in opts.get("extra_args", {}).items():
            argv += [f"--{flag}"] if value is None else [f"--{flag}", value]
        if session.started:
            argv.append(f"--resume={session.session_id}")
        elif opts.get("fork_from"):
            argv += [f"--resume={opts['fork_from']}", "--fork-session"]
            argv.append(f"--session-id={session.session_id}")
        else:
            argv.append(f"--session-id={session.session_id}")
        if prompt is not None:
            argv += ["--", prompt]
        return argv

    def session_files(self, session: Session) -> Mapping[str, Path]:
        """The session's transcript under the CLI's config folder (``projects/*/<id>.jsonl``)."""
        if not isinstance(session, ClaudeSession):
            return {}
        return files_under(self._config_dir(session), f"projects/*/{session.session_id}.jsonl")

    def session_file_path(self, session: Session, name: str) -> Path | None:
        """Where a saved transcript goes on this host: under the CLI's config folder."""
        if not isinstance(session, ClaudeSession):
            return None
        return path_under(self._config_dir(session), name)

    def _config_dir(self, session: ClaudeSession) -> Path:
        """Where the CLI keeps its files: ``CLAUDE_CONFIG_DIR`` if the session sets it, else
        ``~/.claude`` under the session's home.
        """
        env = self.environment(session)
        configured = env.get("CLAUDE_CONFIG_DIR")
        return Path(configured) if configured else home_of(env) / ".claude"

    def environment(self, session: ClaudeSession) -> dict[str, str]:
        """Return the environment of a process of ``session``."""
        env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
        env.update(session.options.get("env", {}))
        if "max_retries" in session.options:
            env[RETRIES_ENV] = str(session.options["max_retries"])
        if "api_timeout_s" in session.options:
            env[TIMEOUT_ENV] = str(max(1, round(session.options["api_timeout_s"] * 1000)))
        env["PWD"] = session.cwd
        return env

    def _retire(self, live: _Live, *, graceful: bool) -> None:
        """End ``live``'s process group and report it ended. Never raises."""
        live.stopping = True
        process = live.process
        try:
            if graceful:
                process.stop(close_stdin_first=True, signals=(signal.SIGTERM,), grace=_STOP_GRACE_S)
            else:
                process.stop(signals=(signal.SIGINT, signal.SIGTERM), grace=1.0)
        except Exception:  # pragma: no cover - stopping must never fail the caller
            process.signal_group(signal.SIGKILL)
        if live.ctx is not None:
            with contextlib.suppress(Exception):  # the agent may be gone
                live.ctx.untrack_process_group(process.pgid)
