"""The Codex CLI backend: ``codex app-server`` kept per session, or ``codex exec`` per turn.

Two modes (option ``mode``): ``"app_server"`` (default) keeps one ``codex app-server``
process per session and drives it with JSON-RPC (``thread/start|resume``, ``turn/start``,
in-band ``turn/interrupt``); see :mod:`._codex_app`. ``"exec"``, the fallback, is described
below and lives in this module.

In ``exec`` mode a turn runs
``codex exec --json --skip-git-repo-check [flags] [resume <thread_id>] -- <prompt>`` with stdin
closed (codex reads an open stdin to its end before it starts, backends.md §5.2),
in the session's cwd and in its own process group. Every flag goes before ``resume``: the
``resume`` subcommand rejects most of them (§2.1). The thread id arrives with the first line
(``thread.started``) and is kept in the session through :meth:`CodexBackend.update_session`.

Codex reports usage as the thread's running total, so the per-turn usage is the difference
with the total kept in the session (§2.3). It sends no terminal event when it is
interrupted (SIGINT ends the turn silently, §2.4): the backend then synthesizes ``error`` of
kind ``cancelled``. Top-level ``error`` lines are notices (``retry`` for
``Reconnecting...``, otherwise ``warning``); only ``turn.failed`` fails the turn.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from genagent_thespian import (
    Backend,
    BackendError,
    BackendErrorKind,
    Event,
    EventKind,
    InvalidOption,
    TurnContext,
)
from genagent_thespian._core.types import Options, Pickled, Session, WireJson, WireMapping

from ._codex_app import AppServerSessions, new_key
from ._codex_common import (
    BACKEND,
    NETWORK_BUDGET_CODE,
    USAGE_FIELDS,
    NetworkBudget,
    classify_codex_error,
    retry_after,
    turn_usage,
)
from ._options import (
    check_choice,
    check_count,
    check_env,
    check_number,
    check_positive_int,
    check_str,
    check_str_list,
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

__all__ = ["CodexBackend", "CodexSession", "CodexTurnTranslator", "classify_codex_error"]

#: Environment variable naming the program when the ``binary`` option is not given.
BINARY_ENV = "GENAGENT_CODEX_BIN"
_POLL_S = 0.1
_STOP_GRACE_S = 5.0
#: What codex prints when asked to resume a thread it has no record of (0.169.0, then older).
_THREAD_LOST_MARKERS = ("no rollout found for thread id", "No saved session found")
_PROVIDER_KEYS = {
    "name": str,
    "base_url": str,
    "env_key": str,
    "wire_api": str,
    "supports_websockets": bool,
    "request_max_retries": int,
    "stream_max_retries": int,
    "stream_idle_timeout_ms": int,
    "query_params": dict,
    "http_headers": dict,
}


def _check_config(backend: str, key: str, value: object) -> WireJson:
    """``-c`` overrides: a mapping of dotted keys to TOML-able scalars or lists."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_.\-]+", k) for k in value
    ):
        raise InvalidOption(f"{backend}: option {key!r} must map dotted config keys to values")
    for name, item in value.items():
        try:
            _toml_value(item)
        except TypeError as exc:
            raise InvalidOption(f"{backend}: config {name!r}: {exc}") from exc
    return dict(value)


def _check_provider(backend: str, key: str, value: object) -> WireJson:
    """A custom model provider: ``name`` and ``base_url`` required, known keys only."""
    if not isinstance(value, Mapping):
        raise InvalidOption(f"{backend}: option 'provider' must be a mapping")
    unknown = sorted(str(k) for k in value if k not in _PROVIDER_KEYS)
    if unknown:
        known = ", ".join(sorted(_PROVIDER_KEYS))
        raise InvalidOption(
            f"{backend}: unknown provider key(s) {', '.join(unknown)}; known: {known}"
        )
    for name, expected in _PROVIDER_KEYS.items():
        if name in value and not isinstance(value[name], expected):
            raise InvalidOption(
                f"{backend}: provider {name!r} must be a {expected.__name__}, "
                f"got {type(value[name]).__name__}"
            )
    for required in ("name", "base_url"):
        if not value.get(required):
            raise InvalidOption(f"{backend}: provider needs {required!r}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", value["name"]):
        raise InvalidOption(f"{backend}: provider name must be letters, digits, '_' or '-'")
    return dict(value)


_CHECKERS = {
    "mode": check_choice("app_server", "exec"),
    "cwd": lambda backend, key, value: value,  # resolved by resolve_cwd
    "binary": lambda backend, key, value: value,  # resolved by resolve_binary
    "model": check_str,
    "sandbox": check_choice("read-only", "workspace-write", "danger-full-access"),
    "approval_policy": check_choice("untrusted", "on-failure", "on-request", "never"),
    "config": _check_config,
    "provider": _check_provider,
    "add_dirs": check_str_list,
    "env": check_env,
    "thread_id": check_str,
    "interrupt_grace_s": check_number,
    "max_line_bytes": check_positive_int,
    "max_network_retries": check_count,
}


def _toml_value(value: object) -> str:
    """Render ``value`` as a TOML value for ``-c key=value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + "}"
        )
    raise TypeError(f"cannot pass a {type(value).__name__} as a codex config value")


@dataclass(frozen=True, slots=True)
class CodexSession:
    """A Codex thread as data (picklable; no live resource).

    Attributes:
        cwd: Directory codex runs in (its workspace).
        binary: Absolute path of the ``codex`` program.
        options: The validated options (see ``docs/backends.md``).
        thread_id: The thread id, once codex announced it.
        turns: Turns that ended with a result.
        cumulative_usage: Codex's running usage totals after the last turn, if known.
    """

    cwd: str
    binary: str
    options: Options = field(default_factory=dict)
    thread_id: str | None = None
    turns: int = 0
    cumulative_usage: Mapping[str, int] | None = None
    key: str = ""

    def __setstate__(self, state: list[Pickled]) -> None:
        """Unpickle, also a session stored before a field existed (it takes its default)."""
        for index, spec in enumerate(fields(self)):
            if index < len(state):
                value = state[index]
            elif spec.default_factory is not MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            object.__setattr__(self, spec.name, value)

    @property
    def mode(self) -> str:
        """``"app_server"`` (one long-lived process per session) or ``"exec"``."""
        return str(self.options.get("mode", "app_server"))


class CodexTurnTranslator:
    """Turn the stdout lines of one ``codex exec --json`` run into normalized events.

    Pure and independent of any process. Args:
        previous_usage: The thread's usage totals before this turn, if known.
        resumed: Whether the turn continues an existing thread.
        known_history: Whether earlier turns exist (then, without ``previous_usage``, the
            usage can only be reported as the cumulative total).
    """

    def __init__(
        self,
        *,
        previous_usage: Mapping[str, int] | None = None,
        resumed: bool = False,
        known_history: bool = False,
        thread_id: str | None = None,
        max_network_retries: int | None = None,
    ) -> None:
        """Start a turn's translation of ``codex exec --json`` with what the session knows.

        ``previous_usage`` is the thread's token totals before this turn (codex reports running
        totals, so the turn's usage is the difference); ``known_history`` marks a thread resumed
        without those totals, whose usage can only be reported as cumulative.
        """
        self.network = NetworkBudget(max_network_retries)
        self.previous_usage = previous_usage
        self.resumed = resumed
        self.known_history = known_history
        self.thread_id = thread_id
        self.terminal: Event | None = None
        self.last_text: str | None = None
        self.last_error: str | None = None
        self._started_tools: set[str] = set()

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
        kind = obj.get("type")
        if kind == "thread.started":
            self.thread_id = obj.get("thread_id") or self.thread_id
            return [
                Event(
                    EventKind.SESSION_STARTED,
                    {
                        "session_id": self.thread_id,
                        "thread_id": self.thread_id,
                        "resumed": self.resumed,
                    },
                )
            ]
        if kind == "turn.started":
            return [Event(EventKind.TURN_STARTED, {"session_id": self.thread_id})]
        if kind in ("item.started", "item.updated", "item.completed"):
            return self._item(kind, obj.get("item") or {})
        if kind == "error":
            message = redact(str(obj.get("message", "")))
            if message.startswith("Reconnecting..."):
                retry = Event(EventKind.RETRY, {"message": message})
                if self.network.exceeded(message):
                    return [retry, *self._end(self.network.error(message, self.thread_id))]
                return [retry]
            self.last_error = message
            return [Event(EventKind.WARNING, {"code": "error", "message": message})]
        if kind == "turn.completed":
            return self._completed(obj.get("usage") or {})
        if kind == "turn.failed":
            error = obj.get("error")
            reported = error.get("message") if isinstance(error, Mapping) else error
            message = redact(str(reported or self.last_error or "turn failed"))
            error_kind, status = classify_codex_error(message)
            failure = BackendError(
                f"codex: {message}",
                kind=error_kind,
                status_code=status,
                retry_after=retry_after(message),
                backend=BACKEND,
            )
            return self._end(Event.error(failure, session_id=self.thread_id, code=error_kind))
        return [Event(EventKind.RAW, {"type": kind}, raw=obj)]

    def finish(self, *, returncode: int | None, stderr: str = "", cancelled: bool) -> list[Event]:
        """End a stream that stopped without a terminal event: one synthesized ``error``."""
        if self.terminal is not None:
            return []
        if cancelled:
            error = BackendError(
                "codex turn cancelled (codex sends no terminal event when interrupted)",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
        else:
            detail = f": {stderr}" if stderr else ""
            if self.last_error:
                detail = f": {self.last_error}{detail and '; ' + stderr}"
            lost = self.resumed and any(m in stderr for m in _THREAD_LOST_MARKERS)
            error = BackendError(
                f"codex exited (status {returncode}) without a terminal event{detail}",
                kind=BackendErrorKind.SESSION_LOST if lost else BackendErrorKind.PROCESS_EXIT,
                backend=BACKEND,
            )
        return self._end(
            Event.error(error, session_id=self.thread_id, returncode=returncode, code=error.kind)
        )

    def protocol_error(self, message: str) -> list[Event]:
        """End the turn with a ``protocol`` error (an oversized or unusable stream)."""
        if self.terminal is not None:
            return []
        error = BackendError(message, kind=BackendErrorKind.PROTOCOL, backend=BACKEND)
        return self._end(Event.error(error, session_id=self.thread_id, code="protocol"))

    def _end(self, event: Event) -> list[Event]:
        """Record ``event`` as the turn's one terminal event and return it as the last event."""
        self.terminal = event
        return [event]

    def _item(self, phase: str, item: WireMapping) -> list[Event]:
        """Translate an item's start, update or completion into our events.

        ``codex exec`` never streams text, so a finished message is sent as one ``TEXT_DELTA`` and
        then as ``TEXT`` marked streamed: streaming consumers see every answer and no one prints it
        twice. A tool's ``TOOL_USE`` is sent once, from whichever of its phases is seen first.
        """
        item_type = item.get("type")
        item_id = item.get("id")
        if item_type == "agent_message":
            if phase != "item.completed":
                return []
            self.last_text = item.get("text", "")
            return [
                Event(EventKind.TEXT_DELTA, {"text": self.last_text, "item_id": item_id}),
                Event(
                    EventKind.TEXT, {"text": self.last_text, "item_id": item_id, "streamed": True}
                ),
            ]
        if item_type == "reasoning":
            if phase != "item.completed":
                return []
            return [Event(EventKind.THINKING, {"text": item.get("text", ""), "item_id": item_id})]
        if item_type == "error":
            return [
                Event(EventKind.WARNING, {"code": "item_error", "message": item.get("message")})
            ]
        tool = _tool_of(item)
        if tool is None:
            return [Event(EventKind.RAW, {"type": phase, "item_type": item_type}, raw=item)]
        events = []
        if phase in ("item.started", "item.completed") and item_id not in self._started_tools:
            # item.started is not sent for every tool item: announce the tool once either way
            self._started_tools.add(str(item_id))
            events.append(Event(EventKind.TOOL_USE, {"id": item_id, **tool}))
        if phase == "item.completed":
            status = item.get("status")
            output = item.get("aggregated_output")
            if output is None and isinstance(item.get("result"), Mapping):
                output = item["result"].get("content")
            events.append(
                Event(
                    EventKind.TOOL_RESULT,
                    {
                        "tool_use_id": item_id,
                        "output": output,
                        "exit_code": item.get("exit_code"),
                        "is_error": status in ("failed", "declined") or bool(item.get("error")),
                        "status": status,
                    },
                )
            )
        return events

    def _completed(self, totals: WireMapping) -> list[Event]:
        """Translate ``turn.completed`` into the turn's usage and its successful terminal event."""
        cumulative = {name: int(totals.get(name) or 0) for name in USAGE_FIELDS}
        usage = turn_usage(cumulative, self.previous_usage, known_history=self.known_history)
        return [
            Event(EventKind.USAGE, {"usage": usage, "cumulative": cumulative}),
            *self._end(
                Event.result(
                    self.last_text,
                    session_id=self.thread_id,
                    thread_id=self.thread_id,
                    stop_reason="end_turn",
                    cumulative_usage=cumulative,
                )
            ),
        ]


def _tool_of(item: WireMapping) -> WireJson | None:
    """The ``tool_use`` fields of a tool-like item, or ``None`` for other items."""
    item_type = item.get("type")
    if item_type == "command_execution":
        return {"kind": "shell", "name": "shell", "input": {"command": item.get("command")}}
    if item_type == "mcp_tool_call":
        name = f"mcp__{item.get('server')}__{item.get('tool')}"
        return {"kind": "mcp", "name": name, "input": item.get("arguments")}
    if item_type == "web_search":
        return {"kind": "web_search", "name": "web_search", "input": {"query": item.get("query")}}
    if item_type == "file_change":
        return {
            "kind": "file_change",
            "name": "file_change",
            "input": {"changes": item.get("changes")},
        }
    if item_type == "collab_tool_call":
        return {
            "kind": "subagent",
            "name": str(item.get("tool")),
            "input": {"prompt": item.get("prompt")},
        }
    return None


class CodexBackend(Backend):
    """Backend for the Codex CLI (``codex exec --json``, 0.169); see the module docstring."""

    name = BACKEND
    thread_turns = True  # the slow part is the codex program, in a group the agent kills

    def __init__(self) -> None:
        """Keep the turns in flight by process group, so ``close()`` and cancellation can find them.

        ``_stopped_by_close`` remembers which groups ``close()`` stopped, so that their exit is
        reported as a cancellation and not as the CLI crashing.
        """
        self._app = AppServerSessions(self.app_server_command, self.environment)
        self._running: dict[int, CliProcess] = {}  # turns in flight, by process group
        # the session of each turn in flight, and its translator (which learns the thread id)
        self._sessions: dict[int, tuple[CodexSession, CodexTurnTranslator]] = {}
        self._stopped_by_close: set[int] = set()
        self._lock = threading.Lock()

    def start_session(self, options: Options) -> CodexSession:
        """Validate ``options`` and return a new session (no process is started here).

        Raises:
            InvalidOption: Unknown key, bad value, or a ``cwd`` that is not a directory.
            BackendError: The ``codex`` program cannot be found.
        """
        opts = validate(BACKEND, options, _CHECKERS)
        cwd = resolve_cwd(BACKEND, opts.pop("cwd", None))
        binary = resolve_binary(
            BACKEND, opts.pop("binary", None), env_var=BINARY_ENV, default_name="codex"
        )
        thread_id = opts.pop("thread_id", None)
        return CodexSession(
            cwd=cwd, binary=binary, options=opts, thread_id=thread_id, key=new_key()
        )

    def update_session(self, session: Session, event: Event) -> Session:
        """Record the thread id and the running usage totals from ``event``."""
        if not isinstance(session, CodexSession):
            return session
        if event.kind == EventKind.SESSION_STARTED and event.data.get("thread_id"):
            return replace(session, thread_id=event.data["thread_id"])
        if event.kind == EventKind.RESULT:
            totals = event.data.get("cumulative_usage")
            return replace(
                session,
                thread_id=event.data.get("thread_id") or session.thread_id,
                turns=session.turns + 1,
                cumulative_usage=dict(totals) if isinstance(totals, Mapping) else None,
            )
        return session

    def renew_session(self, session: Session) -> Session:
        """Return a new codex thread (no id yet, no usage) with ``session``'s options."""
        if not isinstance(session, CodexSession):
            return session
        return replace(session, thread_id=None, turns=0, cumulative_usage=None)

    def warm(self, session: Session, ctx: TurnContext) -> Session:
        """``app_server`` mode: start the session's app-server and open its thread now.

        The first turn then runs on that process (same pid) and only sends ``turn/start``
        (see :meth:`AppServerSessions.warm`). ``exec`` mode starts one process per turn:
        nothing to warm. A session pickled before app-server mode gets its key here, so
        the turn finds the process under the same key.
        """
        if not isinstance(session, CodexSession) or session.mode != "app_server":
            return session
        if ctx.cancelled.is_set():
            return session
        if not session.key:
            session = replace(session, key=session.thread_id or new_key())
        self._app.warm(session, ctx)
        return session

    def terminate_session(self, session: Session) -> None:
        """End the session's app-server, or its ``exec`` turn still in flight, if any."""
        if isinstance(session, CodexSession) and session.key:
            self._app.terminate(session.key)
        with self._lock:
            thread_id = getattr(session, "thread_id", None)
            pgids = [
                pgid
                for pgid, (running, translator) in self._sessions.items()
                if running == session or (thread_id and translator.thread_id == thread_id)
            ]
        self._stop(pgids)

    def close(self) -> None:
        """End every process group this instance still runs. Idempotent."""
        self._app.close()
        with self._lock:
            pgids = list(self._running)
        self._stop(pgids)

    def _stop(self, pgids: list[int]) -> None:
        """Stop the given turns' processes, remembering that we stopped them (see ``__init__``)."""
        with self._lock:
            processes = [self._running[g] for g in pgids if g in self._running]
            self._stopped_by_close.update(p.pgid for p in processes)
        for process in processes:
            process.stop(grace=1.0)

    def app_server_pid(self, session: CodexSession) -> int | None:
        """The pid of the session's live ``codex app-server`` (``None`` between processes)."""
        return self._app.pid_of(session.key)

    def app_server_command(self, session: CodexSession) -> list[str]:
        """Return the argv of the session's ``codex app-server`` (``app_server`` mode).

        Model, sandbox and approval policy go in ``thread/start``; ``add_dirs`` become the
        writable roots ``--add-dir`` would set; the rest are ``-c`` overrides as in ``exec``.
        """
        argv = [session.binary, "app-server"]
        overrides = self._overrides(session)
        if session.options.get("add_dirs"):
            overrides["sandbox_workspace_write.writable_roots"] = list(session.options["add_dirs"])
        for key, value in overrides.items():
            argv += ["-c", f"{key}={_toml_value(value)}"]
        return argv

    def command(self, session: CodexSession, prompt: str) -> list[str]:
        """Return the argv of a turn of ``session`` (flags first, then ``resume``)."""
        opts = session.options
        argv = [session.binary, "exec", "--json", "--skip-git-repo-check"]
        if "model" in opts:
            argv += ["-m", opts["model"]]
        if "sandbox" in opts:
            argv += ["-s", opts["sandbox"]]
        for directory in opts.get("add_dirs", ()):
            argv += ["--add-dir", directory]
        overrides = self._overrides(session)
        if "approval_policy" in opts:
            overrides = {"approval_policy": opts["approval_policy"], **overrides}
        for key, value in overrides.items():
            argv += ["-c", f"{key}={_toml_value(value)}"]
        if session.thread_id:
            argv += ["resume", session.thread_id]
        argv += ["--", prompt]
        return argv

    @staticmethod
    def _overrides(session: CodexSession) -> WireJson:
        """The ``-c`` overrides of both modes: the provider, then the user's ``config``."""
        opts = session.options
        overrides: WireJson = {}
        provider = opts.get("provider")
        if provider:
            name = provider["name"]
            overrides["model_provider"] = name
            settings = {"wire_api": "responses", **provider}
            for key, value in settings.items():
                overrides[f"model_providers.{name}.{key}"] = value
        overrides.update(opts.get("config", {}))
        return overrides

    def session_files(self, session: Session) -> Mapping[str, Path]:
        """The thread's rollout under ``$CODEX_HOME`` (``sessions/Y/M/D/rollout-*-<id>.jsonl``)."""
        if not isinstance(session, CodexSession) or not session.thread_id:
            return {}
        pattern = f"sessions/*/*/*/rollout-*-{session.thread_id}.jsonl"
        return files_under(self._codex_home(session), pattern)

    def session_file_path(self, session: Session, name: str) -> Path | None:
        """Where a saved rollout goes on this host: under ``$CODEX_HOME``."""
        if not isinstance(session, CodexSession):
            return None
        return path_under(self._codex_home(session), name)

    def _codex_home(self, session: CodexSession) -> Path:
        """Where codex keeps its files: ``CODEX_HOME`` if the session sets it, else ``~/.codex``
        under the session's home.
        """
        env = self.environment(session)
        configured = env.get("CODEX_HOME")
        return Path(configured) if configured else home_of(env) / ".codex"

    def environment(self, session: CodexSession) -> dict[str, str]:
        """Return the environment of a turn's process."""
        env = dict(os.environ)
        env.update(session.options.get("env", {}))
        env["PWD"] = session.cwd
        return env

    def prompt(self, session: Session, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Run one turn in a new ``codex exec`` process; always ends with one terminal event."""
        if not isinstance(session, CodexSession):
            raise InvalidOption(f"codex: not a CodexSession: {type(session).__name__}")
        if ctx.cancelled.is_set():
            error = BackendError(
                "codex turn cancelled before it started",
                kind=BackendErrorKind.CANCELLED,
                backend=BACKEND,
            )
            yield Event.error(error, session_id=session.thread_id, code=error.kind)
            return
        if session.mode == "app_server":
            if not session.key:  # a session pickled before app_server mode existed
                session = replace(session, key=session.thread_id or new_key())
            yield from self._app.prompt(session, prompt, ctx)
            return
        translator = CodexTurnTranslator(
            previous_usage=session.cumulative_usage,
            resumed=session.thread_id is not None,
            known_history=session.thread_id is not None,
            thread_id=session.thread_id,
            max_network_retries=session.options.get("max_network_retries"),
        )
        try:
            process = CliProcess(
                self.command(session, prompt),
                cwd=session.cwd,
                env=self.environment(session),
                keep_stdin_open=False,
                max_line_bytes=int(session.options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
            )
        except ProcessStartError as exc:
            error = BackendError(
                f"codex: {exc}",
                kind=BackendErrorKind.PROCESS_EXIT,
                retryable=False,
                backend=BACKEND,
            )
            yield Event.error(error, code="start_failed")
            return
        with self._lock:
            self._running[process.pgid] = process
            self._sessions[process.pgid] = (session, translator)
        ctx.track_process_group(process.pgid)
        grace = float(session.options.get("interrupt_grace_s", _STOP_GRACE_S))
        try:
            yield from self._drive(process, translator, ctx, grace)
        finally:
            process.stop(signals=(signal.SIGINT, signal.SIGTERM), grace=1.0)
            with self._lock:
                self._running.pop(process.pgid, None)
                self._sessions.pop(process.pgid, None)
                self._stopped_by_close.discard(process.pgid)
            ctx.untrack_process_group(process.pgid)

    def _drive(
        self, process: CliProcess, translator: CodexTurnTranslator, ctx: TurnContext, grace: float
    ) -> Iterator[Event]:
        """Read a ``codex exec`` process to its end; a cancellation becomes SIGINT, then SIGTERM.

        ``codex exec`` has no interrupt request, but SIGINT makes it end the turn and exit without a
        terminal event. If it is still running ``grace`` seconds later it is stopped. The poll
        timeout keeps a cancellation visible while codex is silent.
        """
        cancelled_at: float | None = None
        while True:
            if ctx.cancelled.is_set() and cancelled_at is None:
                cancelled_at = time.monotonic()
                # SIGINT makes codex interrupt the turn; it then exits without a terminal event.
                process.signal_group(signal.SIGINT)
            if cancelled_at is not None and time.monotonic() - cancelled_at > grace:
                process.stop(signals=(signal.SIGTERM,), grace=1.0)
            try:
                line = process.read_line(_POLL_S)
            except EOFError:
                returncode = process.wait(_STOP_GRACE_S)
                with self._lock:
                    closed = process.pgid in self._stopped_by_close
                yield from translator.finish(
                    returncode=returncode,
                    stderr=process.stderr_tail(),
                    cancelled=cancelled_at is not None or closed,
                )
                return
            if line is None:
                continue
            if isinstance(line, OversizedLine):
                yield from translator.protocol_error(f"codex: {line}")
                return
            yield from translator.feed_line(line)
            if translator.terminal is not None:
                if translator.terminal.data.get("code") != NETWORK_BUDGET_CODE:
                    process.wait(_STOP_GRACE_S)  # after its last line codex exits by itself
                return
