"""``ScriptedBackend``: a deterministic backend for tests and demos, shipped to users.

Each turn takes the next item of the agent's script:

* ``"text"``: a plain text reply (streamed as deltas, then ``text``, ``usage``, ``result``);
* a list of :class:`~genagent_thespian.Event`: yielded as given (omit the terminal event to
  test the ``no_terminal_event`` guard);
* a callable ``f(prompt)`` returning any of these items (a module-level function, so it
  pickles on the multiprocess bases);
* ``Fail(kind, message, retry_after=None)``: the provider fails with a ``BackendError``;
* ``Crash(message, after=0)``: an exception while streaming (the turn crashes);
* ``Exit(code)``: the worker process dies outright (simulated in-process on
  ``simpleSystemBase``);
* ``Slow(text, seconds)``: a reply streamed over ``seconds``, honouring cancellation, for
  interrupt and watchdog tests;
* ``Gate(path, then, before=())``: stream the events ``before``, wait until the file
  ``path`` exists (a cross-process latch a test opens with :func:`open_gate`), then play
  ``then`` (``before`` lets a test see part of a turn while it provably still runs).

The session is data: the script, the position and the history of prompts received. The
history is readable from tests through ``genagent_thespian.backend_session(name).history``
or, when the session has ``record_to=path``, from that JSONL file (written before the turn
runs, flushed and fsynced, so it survives a killed process): :func:`read_history`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeAlias

from .._core.backend import Backend, TurnContext, WorkerExit
from .._core.errors import BackendError, BackendErrorKind, InvalidOption
from .._core.turn import Event, EventKind, Usage
from .._core.types import Options

__all__ = [
    "Crash",
    "Exit",
    "Fail",
    "Gate",
    "ScriptedBackend",
    "ScriptedSession",
    "Slow",
    "WorkerExit",
    "open_gate",
    "read_history",
]


@dataclass(frozen=True, slots=True)
class Fail:
    """Script item: the provider fails with ``BackendError(kind=...)``."""

    kind: str = BackendErrorKind.SERVER_ERROR
    message: str = "scripted failure"
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Crash:
    """Script item: raise ``RuntimeError(message)`` after ``after`` events were streamed."""

    message: str = "scripted crash"
    after: int = 0


@dataclass(frozen=True, slots=True)
class Exit:
    """Script item: the worker process exits with ``code`` in the middle of the turn."""

    code: int = 1


@dataclass(frozen=True, slots=True)
class Slow:
    """Script item: stream ``text`` word by word over ``seconds``; stops when cancelled.

    With ``hold`` (a file path), the rest of the text waits after the first word until that
    file exists (:func:`open_gate`), so a test can look at the turn mid-stream without
    racing the clock.
    """

    text: str = "slow reply"
    seconds: float = 1.0
    hold: str | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """Script item: stream ``before``, block until file ``path`` exists, then play ``then``."""

    path: str
    then: ScriptedItem = "gate opened"
    timeout: float = 60.0
    before: tuple[Event, ...] = ()


#: One turn of a script: a reply text, the turn's events, one of the items above, or a
#: function of the prompt that returns an item.
ScriptedItem: TypeAlias = (
    "str | Sequence[Event] | Fail | Crash | Exit | Slow | Gate | Callable[[str], ScriptedItem]"
)


@dataclass(frozen=True, slots=True)
class ScriptedSession:
    """The scripted backend's session: picklable data, like every session.

    ``position`` is where the next turn reads the script and ``history`` the prompts
    received, so a test can check both after a restart: a durable agent resumes the same
    session (``resumed`` set), and a non-durable one starts a fresh one.
    """

    session_id: str
    script: tuple[ScriptedItem, ...] = ()
    position: int = 0
    history: tuple[str, ...] = ()
    default: ScriptedItem | None = None
    record_to: str | None = None
    resumed: bool = False
    turns_since_start: int = 0

    @property
    def remaining(self) -> int:
        """Script items not yet played."""
        return max(0, len(self.script) - self.position)


_OPTIONS = {"script", "default", "record_to", "session_id"}


class ScriptedBackend(Backend):
    """A backend that plays a script (see the module docstring).

    It keeps the whole backend contract (sessions that pickle, one terminal event per turn,
    cancellation, resume after a restart) without a provider or a network, so the framework's
    own tests, and users' tests of their agents, are fast and deterministic.
    """

    name = "scripted"

    def start_session(self, options: Options) -> ScriptedSession:
        """Validate options ``script``, ``default``, ``record_to``, ``session_id``.

        Every script item is checked now, in the agent's start, so a malformed script fails
        ``start_agent`` with ``InvalidOption`` naming the item, instead of failing one turn
        much later as a backend error that looks like a provider's.
        """
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InvalidOption(
                f"unknown scripted backend option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}"
            )
        script = options.get("script", ())
        if isinstance(script, str | bytes) or not isinstance(script, Sequence):
            raise InvalidOption(f"script must be a list of items, got {type(script).__name__}")
        for index, item in enumerate(script):
            _validate_item(item, f"script[{index}]")
        default = options.get("default")
        if default is not None:
            _validate_item(default, "default")
        record_to = options.get("record_to")
        if record_to is not None and not isinstance(record_to, str | os.PathLike):
            raise InvalidOption("record_to must be a path")
        session_id = options.get("session_id") or f"scripted-{uuid.uuid4().hex[:12]}"
        return ScriptedSession(
            session_id=str(session_id),
            script=tuple(script),
            default=default,
            record_to=os.fspath(record_to) if record_to is not None else None,
        )

    def prompt(self, session: ScriptedSession, prompt: str, ctx: TurnContext) -> Iterator[Event]:
        """Play the next script item for ``prompt``.

        The prompt is appended to ``record_to`` first (fsynced), so a test can see that a
        prompt reached the backend even if the worker is killed mid-turn. The first event,
        ``session_started``, carries the new position: the worker hands it to
        ``update_session``, and the agent's session advances even for a turn that crashes.
        """
        if session.record_to:
            _append_history(session.record_to, session.session_id, prompt)
        if session.position < len(session.script):
            item = session.script[session.position]
        elif session.default is not None:
            item = session.default
        else:
            raise BackendError(
                f"the script is exhausted after {len(session.script)} item(s)",
                kind=BackendErrorKind.INVALID_REQUEST,
                backend=self.name,
            )
        yield Event(
            EventKind.SESSION_STARTED,
            {
                "session_id": session.session_id,
                "resumed": session.resumed,
                "position": session.position + 1,
                "prompt": prompt,
            },
        )
        yield from _play(item, prompt, session, ctx)

    def update_session(self, session: ScriptedSession, event: Event) -> ScriptedSession:
        """Advance the script and record the prompt when a turn starts.

        The script advances when a turn starts, not when it ends: a turn that crashes has used
        its item, as a provider that saw the prompt would have, and is not replayed.
        """
        if event.kind == EventKind.SESSION_STARTED and "position" in event.data:
            return replace(
                session,
                position=int(event.data["position"]),
                history=(*session.history, str(event.data.get("prompt", ""))),
                turns_since_start=session.turns_since_start + 1,
            )
        return session

    def resume_session(self, session: ScriptedSession) -> ScriptedSession:
        """Continue the same script after a restart, marking the session as resumed."""
        return replace(session, resumed=True, turns_since_start=0)


def _validate_item(item: object, where: str) -> None:
    """Refuse an item the player would not know how to play, when the script is given.

    Checking at session start (and after a callable returns) turns a typo in a test's script into an
    immediate :class:`InvalidOption` instead of a confusing failure mid-turn.
    """
    if isinstance(item, str | Fail | Crash | Exit | Slow | Gate) or callable(item):
        return
    if isinstance(item, list | tuple) and all(isinstance(e, Event) for e in item):
        return
    raise InvalidOption(f"{where}: unsupported script item {item!r:.60}")


def _play(
    item: ScriptedItem, prompt: str, session: ScriptedSession, ctx: TurnContext
) -> Iterator[Event]:
    """Play one script item as a turn; each kind of item exercises one failure path.

    ``Fail`` raises a classified :class:`BackendError`; ``Crash`` raises an unclassified error after
    some streamed words (a backend bug); ``Exit`` ends the worker process; ``Slow`` and ``Gate``
    hold the turn so a test can act on it mid-flight, and both honour cancellation.
    """
    if callable(item) and not isinstance(item, type):
        item = item(prompt)
        _validate_item(item, "callable result")
    if isinstance(item, str):
        yield from _text_turn(item, prompt, session)
    elif isinstance(item, list | tuple):
        yield from item
    elif isinstance(item, Fail):
        raise BackendError(
            item.message, kind=item.kind, retry_after=item.retry_after, backend="scripted"
        )
    elif isinstance(item, Crash):
        for index, word in enumerate(item.message.split()):
            if index >= item.after:
                break
            yield Event.text_delta(word + " ")
        raise RuntimeError(item.message)
    elif isinstance(item, Exit):
        raise WorkerExit(item.code)
    elif isinstance(item, Slow):
        yield from _slow_turn(item, prompt, session, ctx)
    elif isinstance(item, Gate):
        yield from item.before
        deadline = time.monotonic() + item.timeout
        while not os.path.exists(item.path):
            if ctx.cancelled.wait(0.005):
                yield _cancelled()
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"gate {item.path} never opened", kind=BackendErrorKind.TRANSPORT
                )
        yield from _play(item.then, prompt, session, ctx)


def _text_turn(
    text: str, prompt: str, session: ScriptedSession, *, streamed: bool = False
) -> Iterator[Event]:
    """The events of a text turn, in the order real backends send them, with plausible usage."""
    if not streamed:
        yield Event.text_delta(text)
    yield Event(EventKind.TEXT, {"text": text})
    usage = Usage(
        input_tokens=len(prompt.split()), output_tokens=len(text.split()), model="scripted"
    )
    yield Event(EventKind.USAGE, {"usage": usage})
    yield Event.result(
        text, session_id=session.session_id, stop_reason="end_turn", model="scripted"
    )


def _slow_turn(
    item: Slow, prompt: str, session: ScriptedSession, ctx: TurnContext
) -> Iterator[Event]:
    """Stream ``item.text`` word by word over ``item.seconds``, checking for cancellation between
    words, so interrupts and watchdogs can be tested against a turn that is really running.
    """
    words = item.text.split() or [item.text]
    pause = item.seconds / len(words)
    for index, word in enumerate(words):
        if ctx.cancelled.wait(pause):
            yield _cancelled()
            return
        yield Event.text_delta(word if index == 0 else " " + word)
        if index == 0 and item.hold is not None:
            while not os.path.exists(item.hold):
                if ctx.cancelled.wait(0.005):
                    yield _cancelled()
                    return
    yield from _text_turn(item.text, prompt, session, streamed=True)


def _cancelled() -> Event:
    """The terminal event of a cancelled scripted turn, as real backends end one."""
    return Event.error(
        BackendError("the turn was cancelled", kind=BackendErrorKind.CANCELLED, backend="scripted")
    )


def _append_history(path: str, session_id: str, prompt: str) -> None:
    """Append the prompt to the session's history file, synced before the turn goes on.

    Tests of durability read this file to prove which prompts a backend really saw (and that no
    prompt ran twice across a crash), so each line must be on disk before the turn can die.
    """
    line = json.dumps({"session_id": session_id, "prompt": prompt, "pid": os.getpid()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(path: str | os.PathLike[str]) -> list[str]:
    """Return the prompts recorded in a ``record_to`` file, in the order they were received."""
    file = Path(path)
    if not file.exists():
        return []
    return [json.loads(line)["prompt"] for line in file.read_text("utf-8").splitlines() if line]


def open_gate(path: str | os.PathLike[str]) -> None:
    """Open a ``Gate`` script item's latch (create its file)."""
    Path(path).touch()
