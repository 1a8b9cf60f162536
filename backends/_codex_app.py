"""The codex backend's ``app_server`` mode: one ``codex app-server`` per session, JSON-RPC on stdio.

``codex app-server`` (0.169.0) speaks JSON-RPC 2.0 without the ``jsonrpc`` member, one object
per line. A session's process is started at its first turn and kept across turns:

1. ``initialize`` (answered with the user agent), then the ``initialized`` notification;
2. ``thread/start`` (model, cwd, sandbox, approval policy) for a new session, or
   ``thread/resume`` by thread id for one that has a thread (a new process after an
   interrupt, a crash, or a restarted worker);
3. per turn, ``turn/start`` with the prompt; the server answers with the turn id at once and
   then streams notifications (``item/*``, ``thread/tokenUsage/updated``, ``error``...) up
   to ``turn/completed``, whose ``turn.status`` is ``completed``, ``failed`` or
   ``interrupted``.

An interrupt is in-band: ``turn/interrupt`` (thread and turn id), which codex answers with
``turn/completed`` status ``interrupted``. The process is then retired (as the claude
backend does after an interrupt: the turn may have left a tool half done), so the next turn
resumes the thread in a new process. If codex does not end the turn within
``interrupt_grace_s``, the process group is stopped. Requests from the server (approvals,
user input) are refused with a JSON-RPC error, since no one is there to answer them: the
agent's options decide the sandbox and approval policy up front.

Recorded transcripts: ``tests/data/captures/codex_app_*.jsonl``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field

from genagent_thespian import BackendError, BackendErrorKind, Event, EventKind, TurnContext
from genagent_thespian._core.types import Session, WireJson, WireMapping

from ._codex_common import (
    BACKEND,
    NETWORK_BUDGET_CODE,
    USAGE_FIELDS,
    NetworkBudget,
    classify_codex_error,
    retry_after,
    turn_usage,
)
from ._process import (
    DEFAULT_MAX_LINE_BYTES,
    CliProcess,
    OversizedLine,
    ProcessStartError,
    decode_json_line,
    redact,
)

__all__ = ["AppServerSessions", "AppServerTranslator", "new_key"]

_POLL_S = 0.1
_STOP_GRACE_S = 5.0
_HANDSHAKE_S = 60.0  # initialize and thread/start|resume (codex loads its config, MCP...)
#: What codex answers to ``thread/resume`` of a thread it has no record of.
_THREAD_LOST_MARKERS = ("no rollout found for thread id", "No saved session found")
#: Notifications that say nothing about the turn's content.
_QUIET = frozenset(
    {
        "thread/started",
        "thread/status/changed",
        "thread/readState/changed",
        "account/rateLimits/updated",
        "remoteControl/status/changed",
        "mcpServer/startupStatus/updated",
        "turn/diff/updated",
        "serverRequest/resolved",
        "skills/changed",
        "thread/settings/updated",
    }
)
_CAMEL_USAGE = {
    "input_tokens": "inputTokens",
    "cached_input_tokens": "cachedInputTokens",
    "cache_write_input_tokens": "cacheWriteInputTokens",
    "output_tokens": "outputTokens",
    "reasoning_output_tokens": "reasoningOutputTokens",
}


def _tool_of(item: WireMapping) -> WireJson | None:
    """The ``tool_use`` fields of a tool-like app-server item, or ``None`` for other items."""
    item_type = item.get("type")
    if item_type == "commandExecution":
        return {"kind": "shell", "name": "shell", "input": {"command": item.get("command")}}
    if item_type == "mcpToolCall":
        name = f"mcp__{item.get('server')}__{item.get('tool')}"
        return {"kind": "mcp", "name": name, "input": item.get("arguments")}
    if item_type == "webSearch":
        return {"kind": "web_search", "name": "web_search", "input": {"query": item.get("query")}}
    if item_type == "fileChange":
        return {
            "kind": "file_change",
            "name": "file_change",
            "input": {"changes": item.get("changes")},
        }
    if item_type == "collabAgentToolCall":
        return {
            "kind": "subagent",
            "name": str(item.get("tool")),
            "input": {"prompt": item.get("prompt")},
        }
    return None


class AppServerTranslator:
    """Turn the notifications of one app-server turn into normalized events.

    Pure and independent of any process: feed it parsed notifications with :meth:`feed`;
    once :attr:`terminal` is set the turn has its one terminal event.

    Args:
        thread_id: The thread the turn runs in.
        previous_usage: The thread's usage totals before this turn, if known.
        known_history: Whether earlier turns exist (see ``turn_usage``).
    """

    def __init__(
        self,
        *,
        thread_id: str | None = None,
        previous_usage: Mapping[str, int] | None = None,
        known_history: bool = False,
        max_network_retries: int | None = None,
    ) -> None:
        """Start a turn's translation with what the session knows from its earlier turns.

        ``previous_usage`` is the thread's token totals before this turn: the app server reports
        running totals only, so the turn's own usage is the difference. ``known_history`` says the
        thread had turns before this process saw it, when the difference cannot be taken.
        """
        self.network = NetworkBudget(max_network_retries)
        self.thread_id = thread_id
        self.turn_id: str | None = None
        self.previous_usage = previous_usage
        self.known_history = known_history
        self.terminal: Event | None = None
        self.cancel_requested = False
        self.last_text: str | None = None
        self.last_error: WireMapping | None = None
        self.cumulative: dict[str, int] | None = None
        self._streamed: set[str] = set()
        self._started_tools: set[str] = set()

    def feed(self, obj: WireMapping) -> list[Event]:
        """Translate one notification (``{"method": ..., "params": ...}``)."""
        if self.terminal is not None:
            return []
        method = str(obj.get("method"))
        params = obj.get("params") or {}
        turn_id = params.get("turnId") or (params.get("turn") or {}).get("id")
        if turn_id and self.turn_id and turn_id != self.turn_id:
            return []  # a notification of another turn (a late one of an interrupted turn)
        if method == "turn/started":
            return [
                Event(EventKind.TURN_STARTED, {"session_id": self.thread_id, "turn_id": turn_id})
            ]
        if method == "item/agentMessage/delta":
            self._streamed.add(str(params.get("itemId")))
            return [
                Event(
                    EventKind.TEXT_DELTA,
                    {"text": params.get("delta", ""), "item_id": params.get("itemId")},
                )
            ]
        if method in ("item/reasoning/textDelta", "item/reasoning/summaryTextDelta"):
            self._streamed.add(str(params.get("itemId")))
            return [
                Event(
                    EventKind.THINKING_DELTA,
                    {"text": params.get("delta", ""), "item_id": params.get("itemId")},
                )
            ]
        if method in ("item/started", "item/completed"):
            return self._item(method, params.get("item") or {})
        if method == "thread/tokenUsage/updated":
            total = (params.get("tokenUsage") or {}).get("total") or {}
            self.cumulative = {
                name: int(total.get(camel) or 0) for name, camel in _CAMEL_USAGE.items()
            }
            return []
        if method == "error":
            error = params.get("error") or {}
            message = redact(str(error.get("message", "")))
            if params.get("willRetry"):
                retry = Event(
                    EventKind.RETRY, {"message": message, "status_code": _status_of(error)}
                )
                if self.network.exceeded(message):
                    return [retry, *self._end(self.network.error(message, self.thread_id))]
                return [retry]
            self.last_error = error
            return [Event(EventKind.WARNING, {"code": "error", "message": message})]
        if method in ("warning", "configWarning", "deprecationNotice", "guardianWarning"):
            message = params.get("message") or params.get("summary") or json.dumps(params)[:300]
            return [Event(EventKind.WARNING, {"code": method, "message": redact(str(message))})]
        if method == "turn/completed":
            return self._completed(params.get("turn") or {})
        if method in _QUIET:
            return []
        return [Event(EventKind.RAW, {"type": method}, raw=obj)]

    def finish(self, *, returncode: int | None, stderr: str = "", cancelled: bool) -> list[Event]:
        """End a turn whose process stopped before ``turn/completed``: one ``error``."""
        if self.terminal is not None:
            return []
        if cancelled:
            error = BackendError(
                "codex turn cancelled; the app-server was stopped before it ended the turn",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
        else:
            detail = f": {stderr}" if stderr else ""
            error = BackendError(
                f"codex app-server exited (status {returncode}) during the turn{detail}",
                kind=BackendErrorKind.PROCESS_EXIT,
                backend=BACKEND,
            )
        return self._end(
            Event.error(error, session_id=self.thread_id, returncode=returncode, code=error.kind)
        )

    def fail(self, error: BackendError, code: str) -> list[Event]:
        """End the turn with ``error`` (a refused request, an unusable stream)."""
        if self.terminal is not None:
            return []
        return self._end(Event.error(error, session_id=self.thread_id, code=code))

    def _end(self, event: Event) -> list[Event]:
        """Record ``event`` as the turn's one terminal event and return it as the last event."""
        self.terminal = event
        return [event]

    def _item(self, method: str, item: WireMapping) -> list[Event]:
        """Translate an item's start or completion into our events.

        Text and reasoning become events only on completion, when they are whole; text that was not
        streamed as deltas gets one synthetic ``TEXT_DELTA`` first, so a streaming consumer sees
        every answer. A tool announces ``TOOL_USE`` once, whether its start was seen or only its
        end, and its completion adds the ``TOOL_RESULT``; declined and failed tools count as errors.
        """
        item_type = item.get("type")
        item_id = str(item.get("id"))
        completed = method == "item/completed"
        if item_type == "userMessage":
            return []
        if item_type == "agentMessage":
            if not completed:
                return []
            self.last_text = item.get("text", "")
            data = {"text": self.last_text, "item_id": item_id}
            if item_id in self._streamed:
                return [Event(EventKind.TEXT, {**data, "streamed": True})]
            return [
                Event(EventKind.TEXT_DELTA, data),
                Event(EventKind.TEXT, {**data, "streamed": True}),
            ]
        if item_type == "reasoning":
            if not completed:
                return []
            text = "\n".join([*(item.get("summary") or ()), *(item.get("content") or ())])
            return [
                Event(
                    EventKind.THINKING,
                    {"text": text, "item_id": item_id, "streamed": item_id in self._streamed},
                )
            ]
        tool = _tool_of(item)
        if tool is None:
            return [Event(EventKind.RAW, {"type": method, "item_type": item_type}, raw=item)]
        events = []
        if item_id not in self._started_tools:
            self._started_tools.add(item_id)
            events.append(Event(EventKind.TOOL_USE, {"id": item_id, **tool}))
        if completed:
            status = item.get("status")
            output = item.get("aggregatedOutput")
            if output is None and isinstance(item.get("result"), Mapping):
                output = item["result"].get("content")
            events.append(
                Event(
                    EventKind.TOOL_RESULT,
                    {
                        "tool_use_id": item_id,
                        "output": output,
                        "exit_code": item.get("exitCode"),
                        "is_error": status in ("failed", "declined") or bool(item.get("error")),
                        "status": status,
                    },
                )
            )
        return events

    def _completed(self, turn: WireMapping) -> list[Event]:
        """Translate ``turn/completed`` into the turn's usage and its one terminal event.

        A turn the server calls failed after we asked to cancel it is still reported as cancelled:
        the caller wanted it to stop and it did. Other failures are classified from the message and,
        when the message carries none, from the HTTP status in the reported error.
        """
        status = turn.get("status")
        if status == "completed":
            cumulative = self.cumulative or dict.fromkeys(USAGE_FIELDS, 0)
            usage = turn_usage(cumulative, self.previous_usage, known_history=self.known_history)
            result = Event.result(
                self.last_text,
                session_id=self.thread_id,
                thread_id=self.thread_id,
                turn_id=self.turn_id,
                stop_reason="end_turn",
                cumulative_usage=cumulative,
            )
            return [
                Event(EventKind.USAGE, {"usage": usage, "cumulative": cumulative}),
                *self._end(result),
            ]
        if status == "interrupted" or self.cancel_requested:
            error = BackendError(
                "codex turn cancelled (interrupted)",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
            return self._end(Event.error(error, session_id=self.thread_id, code=error.kind))
        reported = turn.get("error") or self.last_error or {}
        message = redact(str(reported.get("message") or "turn failed"))
        kind, status_code = classify_codex_error(message)
        status_code = status_code or _status_of(reported)
        if kind == BackendErrorKind.UNKNOWN and status_code is not None:
            kind, _ = classify_codex_error(f"status {status_code}")
        failure = BackendError(
            f"codex: {message}",
            kind=kind,
            status_code=status_code,
            retry_after=retry_after(message),
            backend=BACKEND,
        )
        return self._end(Event.error(failure, session_id=self.thread_id, code=kind))


def _status_of(error: WireMapping) -> int | None:
    """The HTTP status codex forwards in ``codexErrorInfo`` (``{"httpConnectionFailed": ...}``)."""
    info = error.get("codexErrorInfo")
    if isinstance(info, Mapping):
        for detail in info.values():
            if isinstance(detail, Mapping) and isinstance(detail.get("httpStatusCode"), int):
                return int(detail["httpStatusCode"])
    return None


# ----------------------------------------------------------------------------- processes


class _RequestFailed(Exception):
    """The server answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: WireMapping) -> None:
        """Keep the server's error object; the message is redacted since it may quote a key."""
        super().__init__(f"{method}: {redact(str(error.get('message', error)))}")
        self.error = error


@dataclass
class _Server:
    """A running ``codex app-server`` and what it holds.

    Attributes:
        thread_id: The codex thread this process has open; a session whose thread differs
            (a resumed agent, a renewed session) makes the next turn open its own.
        ctx: The turn context of the turn that last used it: its process group is tracked
            there, so the agent can end the process should the worker die.
        busy: A turn runs on it; a busy server is stopped hard, an idle one gracefully.
        stopping: It is being retired: if its turn sees it exit, the turn ends cancelled,
            not as a crash.
        initialized: The JSON-RPC handshake is done (once per process).
        backlog: Notifications read while waiting for a response, handled in order after.
        unannounced: The ``session_started`` of a new thread a prewarm opened: the session
            learns the thread id from the first turn that runs on it (yielded there), so a
            thread codex never stored (no turn yet) is never written into the session.
    """

    process: CliProcess
    thread_id: str | None = None
    ctx: TurnContext | None = None
    busy: bool = False
    stopping: bool = False
    initialized: bool = False
    backlog: list[WireMapping] = field(default_factory=list)
    unannounced: Event | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def notify(self, method: str, params: WireMapping | None = None) -> None:
        """Send a JSON-RPC notification: a message without ``id``, never answered."""
        message: WireJson = {"method": method}
        if params is not None:
            message["params"] = params
        self.process.write_line(json.dumps(message))

    def send(self, method: str, params: WireMapping) -> int:
        """Send a JSON-RPC request and return its id, which the matching response carries."""
        request_id = next(self._ids)
        self.process.write_line(json.dumps({"id": request_id, "method": method, "params": params}))
        return request_id

    def answer_server_request(self, obj: WireMapping) -> None:
        """Refuse a request from codex (approval, user input): no one is there to answer."""
        reply = {
            "id": obj.get("id"),
            "error": {
                "code": -32601,
                "message": f"{obj.get('method')} is not answered by genagent",
            },
        }
        with contextlib.suppress(OSError):
            self.process.write_line(json.dumps(reply))


class AppServerSessions:
    """The live app-server processes of one backend instance, one per session key.

    A process is kept between turns only while it is known good: after a turn that ended
    with a result (or with a provider error it reported in-band), not cancelled, and still
    running. Anything else (a cancel, a crash, codex's own network retries running out)
    retires it, and the next turn starts a fresh one that resumes the thread, so a process
    in an unknown state never serves a second turn.
    """

    def __init__(
        self,
        command: Callable[[Session], list[str]],
        environment: Callable[[Session], dict[str, str]],
    ) -> None:
        """Hold the command and environment builders of the owning backend, not the backend itself.

        The builders are all a server start needs from the backend: the argv and the
        environment of a session.
        """
        self._command = command
        self._environment = environment
        self._live: dict[str, _Server] = {}
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def pid_of(self, key: str) -> int | None:
        """The pid of the session's live app-server, if any (for tests and benchmarks)."""
        with self._lock:
            server = self._live.get(key)
        return server.process.pid if server is not None else None

    def terminate(self, key: str) -> None:
        """End the session's process (close stdin, wait, SIGTERM, SIGKILL). Never raises."""
        with self._lock:
            server = self._live.pop(key, None)
        if server is not None:
            self._retire(server, graceful=not server.busy)

    def close(self) -> None:
        """End every live process. Idempotent."""
        with self._lock:
            servers = list(self._live.values())
            self._live.clear()
        for server in servers:
            self._retire(server, graceful=not server.busy)

    def _retire(self, server: _Server, *, graceful: bool) -> None:
        """Stop a server process and stop tracking its group with the agent's turn context.

        A graceful stop closes stdin first (the app server exits when its input ends) before any
        signal; a forced one goes straight to SIGTERM with a short grace. Stopping never raises: it
        runs in cleanup paths where a second error would hide the first.
        """
        server.stopping = True
        process = server.process
        try:
            if graceful:
                process.stop(close_stdin_first=True, signals=(signal.SIGTERM,), grace=_STOP_GRACE_S)
            else:
                process.stop(signals=(signal.SIGTERM,), grace=1.0)
        except Exception:  # pragma: no cover - stopping must never fail the caller
            process.signal_group(signal.SIGKILL)
        if server.ctx is not None:
            with contextlib.suppress(Exception):  # the agent may be gone
                server.ctx.untrack_process_group(process.pgid)

    # -- prewarm ----------------------------------------------------------------------------

    def warm(self, session: Session, ctx: TurnContext) -> None:
        """Start the session's app-server and open its thread now, as its next turn would.

        The process, the handshake and ``thread/start`` (or ``thread/resume``) are those of
        :meth:`prompt`, which then finds them done and only sends ``turn/start``. A new
        thread stays out of the session until a turn runs on it (``unannounced``): codex
        writes no rollout for a thread without a turn (checked with 0.169.0: resuming one
        after its process ended is "no rollout found"), so a prewarmed process retired
        before any turn must leave the session without that thread id. A server that
        fails its handshake is retired; the first turn then starts from scratch and
        reports the failure as its own.

        Raises:
            ProcessStartError: the app-server could not be started.
        """
        translator = _translator_for(session)
        key = session.key
        server = self._server(key, session, ctx)
        keep = False
        server.busy = True
        try:
            if server.thread_id is None or server.thread_id != session.thread_id:
                opened = [
                    event
                    for event in self._open_thread(server, session, translator, ctx)
                    if event.kind == EventKind.SESSION_STARTED
                ]
                if session.thread_id is None and opened and translator.terminal is None:
                    server.unannounced = opened[-1]
            keep = (
                translator.terminal is None
                and server.thread_id is not None
                and not ctx.cancelled.is_set()
                and server.process.poll() is None
            )
        finally:
            server.busy = False
            if not keep:
                with self._lock:
                    if self._live.get(key) is server:
                        del self._live[key]
                self._retire(server, graceful=False)

    # -- turns ------------------------------------------------------------------------------

    def prompt(self, session: Session, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn of ``session`` in its app-server; always ends with one terminal event.

        A process that fails to start is reported as ``process_exit``, not retryable (the
        command or its environment is wrong, and a retry would fail alike). The process is
        marked busy for the turn, so ``terminate`` during it stops it hard.
        """
        translator = _translator_for(session)
        key = session.key
        keep = False
        server: _Server | None = None
        try:
            try:
                server = self._server(key, session, ctx)
            except ProcessStartError as exc:
                error = BackendError(
                    f"codex: {exc}",
                    kind=BackendErrorKind.PROCESS_EXIT,
                    retryable=False,
                    backend=BACKEND,
                )
                yield from translator.fail(error, "start_failed")
                return
            server.busy = True
            announced, server.unannounced = server.unannounced, None
            if announced is not None and session.thread_id is None:
                yield announced  # the thread a prewarm opened: the session learns it now
            elif server.thread_id is None or server.thread_id != session.thread_id:
                yield from self._open_thread(server, session, translator, ctx)
                if translator.terminal is not None:
                    return
            translator.thread_id = server.thread_id
            yield from self._turn(server, session, prompt, translator, ctx)
            keep = (
                translator.terminal is not None
                and translator.terminal.kind == EventKind.RESULT
                and not ctx.cancelled.is_set()
                and server.process.poll() is None
            ) or (
                translator.terminal is not None
                and translator.terminal.kind == EventKind.ERROR
                and translator.terminal.data.get("code") != NETWORK_BUDGET_CODE  # still retrying
                and not translator.cancel_requested
                and server.process.poll() is None
            )
        finally:
            if server is not None:
                server.busy = False
                if not keep:
                    with self._lock:
                        if self._live.get(key) is server:
                            del self._live[key]
                    self._retire(server, graceful=False)

    def _server(self, key: str, session: Session, ctx: TurnContext) -> _Server:
        """Return the session's app-server (starting and initializing one if needed).

        A kept process that exited meanwhile is retired first. The process group is tracked
        with this turn's context every time: each turn has its own context, and the agent
        must know the group whichever turn is running when its worker dies.
        """
        with self._lock:
            server = self._live.get(key)
        if server is not None and server.process.poll() is not None:
            with self._lock:
                self._live.pop(key, None)
            self._retire(server, graceful=False)
            server = None
        if server is None:
            process = CliProcess(
                self._command(session),
                cwd=session.cwd,
                env=self._environment(session),
                keep_stdin_open=True,
                max_line_bytes=int(session.options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
            )
            server = _Server(process)
            with self._lock:
                self._live[key] = server
        server.ctx = ctx
        ctx.track_process_group(server.process.pgid)  # this turn's agent must know the group
        return server

    def _open_thread(
        self, server: _Server, session: Session, translator: AppServerTranslator, ctx: TurnContext
    ) -> Iterator[Event]:
        """Finish the handshake and start or resume the session's thread."""
        if not server.initialized:
            client = {"name": "genagent_thespian", "title": None, "version": "1"}
            request_id = _send(server, "initialize", {"clientInfo": client, "capabilities": None})
            answer = yield from self._call(
                server, "initialize", translator, ctx, wait_for=request_id
            )
            if answer is None:
                return
            with contextlib.suppress(OSError):
                server.notify("initialized")
            server.initialized = True
        opts = session.options
        params: WireJson = {"cwd": session.cwd}
        if "model" in opts:
            params["model"] = opts["model"]
        if "sandbox" in opts:
            params["sandbox"] = opts["sandbox"]
        if "approval_policy" in opts:
            params["approvalPolicy"] = opts["approval_policy"]
        resumed = session.thread_id is not None
        if resumed:
            method, params = (
                "thread/resume",
                {"threadId": session.thread_id, **params, "excludeTurns": True},
            )
        else:
            method = "thread/start"
        request_id = _send(server, method, params)
        try:
            result = yield from self._call(server, method, translator, ctx, wait_for=request_id)
        except _RequestFailed as exc:
            message = str(exc)
            lost = resumed and any(m in message for m in _THREAD_LOST_MARKERS)
            error = BackendError(
                f"codex: {message}",
                kind=BackendErrorKind.SESSION_LOST if lost else BackendErrorKind.INVALID_REQUEST,
                backend=BACKEND,
            )
            yield from translator.fail(error, "not_found" if lost else "request_failed")
            return
        if result is None:
            return
        thread = result.get("thread") or {}
        server.thread_id = thread.get("id") or session.thread_id
        translator.thread_id = server.thread_id
        yield Event(
            EventKind.SESSION_STARTED,
            {
                "session_id": server.thread_id,
                "thread_id": server.thread_id,
                "resumed": resumed,
                "model": result.get("model"),
            },
        )

    def _call(
        self,
        server: _Server,
        method: str,
        translator: AppServerTranslator,
        ctx: TurnContext,
        *,
        wait_for: int,
    ) -> Generator[Event, None, WireMapping | None]:
        """Read until the answer to request ``wait_for``; keep notifications for the turn.

        Returns the result, or ``None`` after ending the turn (the process ended, the turn
        was cancelled, or the handshake took too long).
        """
        deadline = time.monotonic() + _HANDSHAKE_S
        while True:
            if ctx.cancelled.is_set():
                translator.cancel_requested = True
                yield from translator.finish(returncode=None, cancelled=True)
                return None
            if time.monotonic() > deadline:
                error = BackendError(
                    f"codex app-server did not answer {method} within {_HANDSHAKE_S:g}s",
                    kind=BackendErrorKind.PROTOCOL,
                    backend=BACKEND,
                )
                yield from translator.fail(error, "protocol")
                return None
            obj = yield from self._read(server, translator, ctx)
            if obj is None:
                if translator.terminal is not None:
                    return None
                continue
            if obj.get("id") == wait_for and "method" not in obj:
                if "error" in obj:
                    raise _RequestFailed(method, obj["error"] or {})
                return obj.get("result") or {}
            if "method" in obj and "id" in obj:
                server.answer_server_request(obj)
            elif "method" in obj:
                server.backlog.append(obj)

    def _read(
        self, server: _Server, translator: AppServerTranslator, ctx: TurnContext
    ) -> Generator[Event, None, WireMapping | None]:
        """One message from the server, or ``None`` (nothing yet, or the turn ended)."""
        process = server.process
        try:
            line = process.read_line(_POLL_S)
        except EOFError:
            returncode = process.wait(_STOP_GRACE_S)
            stderr = process.stderr_tail()
            message = f"codex: {stderr}" if stderr else "codex app-server exited"
            lost = any(m in stderr for m in _THREAD_LOST_MARKERS)
            if lost:
                error = BackendError(message, kind=BackendErrorKind.SESSION_LOST, backend=BACKEND)
                yield from translator.fail(error, "not_found")
                return None
            yield from translator.finish(
                returncode=returncode,
                stderr=stderr,
                cancelled=translator.cancel_requested or server.stopping,
            )
            return None
        if line is None:
            return None
        if isinstance(line, OversizedLine):
            error = BackendError(f"codex: {line}", kind=BackendErrorKind.PROTOCOL, backend=BACKEND)
            yield from translator.fail(error, "protocol")
            return None
        decoded = decode_json_line(line)
        if isinstance(decoded, Event):
            yield decoded
            return None
        return decoded

    def _turn(
        self,
        server: _Server,
        session: Session,
        prompt: str,
        translator: AppServerTranslator,
        ctx: TurnContext,
    ) -> Iterator[Event]:
        """``turn/start``, then the turn's notifications up to ``turn/completed``."""
        params = {"threadId": server.thread_id, "input": [{"type": "text", "text": prompt}]}
        request_id = _send(server, "turn/start", params)
        try:
            result = yield from self._call(
                server, "turn/start", translator, ctx, wait_for=request_id
            )
        except _RequestFailed as exc:
            error = BackendError(
                f"codex: {exc}", kind=BackendErrorKind.INVALID_REQUEST, backend=BACKEND
            )
            yield from translator.fail(error, "request_failed")
            return
        if result is None:
            return
        translator.turn_id = (result.get("turn") or {}).get("id")
        backlog, server.backlog = server.backlog, []
        for early in backlog:
            yield from translator.feed(early)
        grace = float(session.options.get("interrupt_grace_s", _STOP_GRACE_S))
        interrupted_at: float | None = None
        while translator.terminal is None:
            if ctx.cancelled.is_set() and interrupted_at is None:
                interrupted_at = time.monotonic()
                translator.cancel_requested = True
                with contextlib.suppress(OSError):  # a dead process shows when read
                    server.send(
                        "turn/interrupt",
                        {"threadId": server.thread_id, "turnId": translator.turn_id},
                    )
            if interrupted_at is not None and time.monotonic() - interrupted_at > grace:
                server.process.stop(signals=(signal.SIGTERM,), grace=1.0)
                yield from translator.finish(returncode=server.process.returncode, cancelled=True)
                return
            obj = yield from self._read(server, translator, ctx)
            if obj is None:
                continue
            if "method" in obj and "id" in obj:
                server.answer_server_request(obj)
            elif "method" in obj:
                yield from translator.feed(obj)
            # answers to turn/interrupt carry nothing: turn/completed ends the turn


def _send(server: _Server, method: str, params: WireMapping) -> int:
    """Send a request; a dead process shows when read (the id then never comes back)."""
    try:
        return server.send(method, params)
    except OSError:
        return -1


def new_key() -> str:
    """A key naming one session's app-server (sessions have no thread id before turn one)."""
    return uuid.uuid4().hex


def _translator_for(session: Session) -> AppServerTranslator:
    """A translator of the app-server's notifications for one turn (or warm) of ``session``."""
    return AppServerTranslator(
        thread_id=session.thread_id,
        previous_usage=session.cumulative_usage,
        known_history=session.thread_id is not None,
        max_network_retries=session.options.get("max_network_retries"),
    )
