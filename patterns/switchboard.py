"""Switchboard: a named fleet of long-lived sessions driven by a human or a tool (MCP, a UI).

Topology: one :class:`Switchboard` facade over N named :class:`SessionAgent` agents. The
facade is the whole interface: it never blocks on a turn. ``send`` queues a prompt and
returns its ref at once, ``poll`` says where it stands, ``inbox`` lists the turns that
finished since the last acknowledgement, ``summary`` is a note the manager keeps per
session.

Corrected behaviour (upstream guide defects, gen_agent #237):

* ``send`` is atomic. Sessions run with a mailbox of size zero, so the agent itself
  rejects a prompt while it is busy or halted; there is no check-then-act window in which
  two senders both see "idle".
* An unknown session name raises ``AgentNotFound`` (not an unreachable ``:not_found``).
* ``inbox(ack=True)`` acknowledges exactly the entries it returned (by sequence number),
  so a turn that finishes while the acknowledgement is in flight is never marked read
  without having been shown.
* ``halt`` is the core's external halt (after the running turn); ``resume`` undoes it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import genagent_thespian as g
from genagent_thespian import AgentOverloaded, AgentSystem, GenAgentError, Response

from ._common import backend_options
from ._state import PatternStates, SnapshotAgent

__all__ = ["Inbox", "SessionAgent", "SessionBusy", "SessionHalted", "Switchboard"]


class SessionBusy(GenAgentError):
    """``send`` to a session that is running a turn (nothing was queued)."""

    reason_kind = "session_busy"


class SessionHalted(GenAgentError):
    """``send`` to a halted session (nothing was queued); ``resume`` it first."""

    reason_kind = "session_halted"


@dataclass(frozen=True, slots=True)
class Inbox:
    """New finished turns of one session, and its summary.

    Attributes:
        new_requests: History entries after the acknowledged cursor, oldest first. Each is
            a dict with ``status`` (``"ok"``/``"failed"``), ``seq``, ``ref`` and ``text`` or
            ``error``, plus ``usage``/``duration_ms`` for successes and ``completed_at``.
        summary: The session's summary note.
    """

    new_requests: list[dict[str, Any]]
    summary: str


_OWN_OPTIONS = frozenset({"path"})


class SessionAgent(SnapshotAgent):
    """One long-lived session. Records every finished turn; never self-chains or halts."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Take ``path`` (the session's working directory, passed on as ``cwd``)."""
        self.path: str | None = options.get("path")
        self.summary = ""
        self.history: list[dict[str, Any]] = []
        self.inbox_cursor = 0  # highest acknowledged seq
        self.next_seq = 1
        forwarded = backend_options(options, _OWN_OPTIONS)
        if self.path is not None:
            forwarded.setdefault("cwd", self.path)
        return forwarded

    def snapshot(self) -> dict[str, Any]:
        """The session's history, cursor and summary."""
        return {
            "path": self.path,
            "summary": self.summary,
            "history": self.history,
            "inbox_cursor": self.inbox_cursor,
        }

    def _record(self, entry: dict[str, Any]) -> None:
        """Append a finished exchange to the history with a sequence number and completion time."""
        entry["seq"] = self.next_seq
        entry["completed_at"] = time.time()
        self.next_seq += 1
        self.history.append(entry)

    def handle_response(self, ref: str, response: Response) -> None:
        """Append ``{status: ok, seq, ref, text, usage, duration_ms}``."""
        usage = response.usage
        self._record(
            {
                "status": "ok",
                "ref": ref,
                "text": response.text,
                "usage": None
                if usage is None
                else {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                "duration_ms": response.duration_ms,
            }
        )

    def handle_error(self, ref: str, error: Exception) -> None:
        """Append ``{status: failed, seq, ref, error, kind}``."""
        kind = getattr(error, "reason_kind", type(error).__name__)
        self._record({"status": "failed", "ref": ref, "error": str(error), "kind": kind})

    def handle_event(self, event: Any) -> None:
        """Apply ``("update_summary", text)`` and ``("ack_inbox", seq)``; ignore the rest."""
        if isinstance(event, tuple) and len(event) == 2:
            tag, value = event
            if tag == "update_summary" and isinstance(value, str):
                self.summary = value
            elif tag == "ack_inbox" and isinstance(value, int):
                self.inbox_cursor = max(self.inbox_cursor, value)


class Switchboard:
    """The manager's interface to a fleet of named sessions.

    Example:
        >>> board = Switchboard()                                     # doctest: +SKIP
        >>> board.start_session("api", backend="claude", path="/src/api")
        >>> ref = board.send("api", "Summarize lib/foo.py")
        >>> board.poll("api", ref).done
    """

    def __init__(self, *, system: AgentSystem | None = None) -> None:
        """A switchboard on ``system``; its sessions are the agents it started."""
        self._system = system
        self._states = PatternStates(system)
        self._sessions: list[Any] = []

    @property
    def sessions(self) -> list[Any]:
        """Names of the sessions this switchboard started and has not stopped."""
        return list(self._sessions)

    def start_session(
        self,
        name: Any,
        *,
        backend: Any,
        path: str | None = None,
        impl: type[SessionAgent] = SessionAgent,
        **options: Any,
    ) -> Any:
        """Start a session agent ``name``; ``options`` go to the backend (``script``, ``model``).

        Raises:
            AgentAlreadyExists: Another agent has that name.
            AgentStartFailed: The agent could not start.
            InvalidOption: An option is invalid.
        """
        extra: dict[str, Any] = {"path": path} if path is not None else {}
        g.start_agent(
            impl,
            name=name,
            backend=backend,
            max_queued=0,
            system=self._system,
            **extra,
            **options,
        )
        self._sessions.append(name)
        return name

    def send(self, name: Any, prompt: str) -> str:
        """Start ``prompt`` on an idle session and return its ref (never waits for the turn).

        Raises:
            SessionBusy: a turn is running; nothing was queued.
            SessionHalted: the session is halted; nothing was queued.
            AgentNotFound: no session has that name.
        """
        try:
            return g.tell(name, prompt, system=self._system)
        except AgentOverloaded:
            state = g.status(name, system=self._system)
            if state.halted or state.halt_pending:
                raise SessionHalted("the session is halted; resume it first", agent=name) from None
            raise SessionBusy("the session is running a turn", agent=name) from None

    def poll(self, name: Any, ref: str) -> g.PollResult:
        """Return where ``ref`` stands (``.state`` pending/completed/failed, ``.done``)."""
        return g.poll(name, ref, system=self._system)

    def _snapshot(self, name: Any) -> dict[str, Any]:
        """A session's published state; unknown names raise :class:`AgentNotFound`.

        The status call comes first so a name that is not an agent is reported as such, rather than
        as a session that has not published yet.
        """
        g.status(name, system=self._system)  # raises AgentNotFound for unknown names
        snapshot = self._states.read(name)
        if snapshot is None:
            raise g.AgentNotFound("no session with that name on this switchboard", agent=name)
        return snapshot

    def inbox(self, name: Any, *, ack: bool = False) -> Inbox:
        """Return the turns finished since the last acknowledgement.

        With ``ack=True`` exactly the returned entries are acknowledged (by ``seq``).
        """
        snapshot = self._snapshot(name)
        cursor = snapshot["inbox_cursor"]
        new = [entry for entry in snapshot["history"] if entry["seq"] > cursor]
        if ack and new:
            g.notify(name, ("ack_inbox", new[-1]["seq"]), system=self._system)
        return Inbox(new_requests=new, summary=snapshot["summary"])

    def transcript(self, name: Any, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the session's history (the last ``limit`` entries when given)."""
        history = self._snapshot(name)["history"]
        return history if limit is None else history[-limit:] if limit > 0 else []

    def summary(self, name: Any) -> str:
        """Return the session's summary note."""
        return str(self._snapshot(name)["summary"])

    def update_summary(self, name: Any, text: str) -> None:
        """Replace the session's summary note (applied after a running turn)."""
        g.notify(name, ("update_summary", text), system=self._system)

    def status(self, name: Any) -> g.AgentStatus:
        """Return the session agent's status snapshot."""
        return g.status(name, system=self._system)

    def interrupt(self, name: Any, ref: str | None = None) -> str:
        """End the session's running turn (only ``ref``, when given)."""
        return g.interrupt(name, ref, system=self._system)

    def halt(self, name: Any) -> None:
        """Halt the session after its running turn; ``send`` then raises ``SessionHalted``."""
        g.halt(name, system=self._system)

    def resume(self, name: Any) -> None:
        """Unhalt the session."""
        g.resume(name, system=self._system)

    def stop_session(self, name: Any) -> None:
        """Stop the session's agent for good."""
        try:
            g.stop(name, system=self._system)
        finally:
            if name in self._sessions:
                self._sessions.remove(name)

    def close(self) -> None:
        """Stop every session this switchboard started and delete its snapshots."""
        for name in list(self._sessions):
            with contextlib.suppress(g.AgentNotFound, g.AgentStopped):  # gone meanwhile
                self.stop_session(name)
        self._states.close()

    def __enter__(self) -> Switchboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
