"""Backends used by the tests (importable by module, as the worker process must import them).

``SlowEndingBackend`` models a provider whose process takes time to stop: a cancelled turn
spends ``cancel_s`` before its terminal event, and every turn spends ``cleanup_s`` after
its terminal event (as a CLI backend does while its process exits). Each turn appends
``start``/``end`` lines with a monotonic time to the ``log`` file, so a test can check that
one turn's provider call never overlaps the previous one's clean-up.

``GatedBackend`` yields announcements, usage and a text delta, then waits (bounded) for its
``gate`` file before it ends the turn (the prompt ``warm-up`` just answers), so a test can
look at what reached the caller while the provider is still busy; it creates the ``reached``
file, when given, as it begins to wait.

``WarmingBackend`` implements ``Backend.warm``: it logs ``warm-start``/``warm-end`` lines
(spending ``warm_s`` between them, or raising when ``warm_fails``) and returns the session
marked ``warmed``; each turn logs ``start``/``end`` and answers ``warmed=<mark>``, so a
test sees that the warmed session reached the turn and that a turn never overlaps a warm.

``HeapReporter`` with ``HeapReportingBackend`` answer a turn with facts about the agent
process (set by ``pre_turn``, which runs there) and the worker process (set by the backend):
pid and how many objects the garbage collector holds frozen.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from genagent_thespian import (
    Backend,
    BackendError,
    BackendErrorKind,
    Event,
    EventKind,
    GenAgent,
    TurnContext,
    Usage,
)


class SlowEndingBackend(Backend):
    """See the module docstring. Options: ``log`` (path), ``cancel_s``, ``cleanup_s``."""

    name = "slow-ending"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        _log(session, "start", prompt)
        try:
            if prompt.startswith("hang"):
                ctx.cancelled.wait(60)
                time.sleep(float(session.get("cancel_s", 0)))  # the provider is slow to stop
                error = BackendError("cancelled", kind=BackendErrorKind.CANCELLED)
                yield Event.error(error)
                return
            yield Event.result(f"done: {prompt}")
        finally:
            time.sleep(float(session.get("cleanup_s", 0)))  # its process is slow to exit
            _log(session, "end", prompt)


class GatedBackend(Backend):
    """See the module docstring. Options: ``gate`` (the path whose existence ends the wait)."""

    name = "gated"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        if prompt == "warm-up":
            yield Event.result("warm")
            return
        yield Event(EventKind.SESSION_STARTED, {"session_id": "s1"})
        yield Event(EventKind.TURN_STARTED, {"turn_index": 0})
        yield Event(EventKind.USAGE, {"usage": Usage(input_tokens=1, output_tokens=1)})
        yield Event.text_delta("a")
        if session.get("reached"):
            Path(session["reached"]).touch()
        deadline = time.monotonic() + 30.0
        while not os.path.exists(session["gate"]) and time.monotonic() < deadline:
            if ctx.cancelled.wait(0.01):
                break
        yield Event(EventKind.RAW, {"type": "provider-line"})
        yield Event.text_delta("b")
        yield Event.result("ab")


class WarmingBackend(Backend):
    """See the module docstring. Options: ``log`` (path), ``warm_s``, ``warm_fails``."""

    name = "warming"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return dict(options)

    def warm(self, session: dict[str, Any], ctx: TurnContext) -> dict[str, Any]:
        _log(session, "warm-start", ctx.ref)
        if session.get("warm_fails"):
            raise RuntimeError("the provider cannot be warmed")
        ctx.cancelled.wait(float(session.get("warm_s", 0)))
        _log(session, "warm-end", ctx.ref)
        return {**session, "warmed": os.getpid()}

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        _log(session, "start", prompt)
        yield Event.result(f"warmed={session.get('warmed') == os.getpid()}")
        _log(session, "end", prompt)


def _log(session: Mapping[str, Any], what: str, prompt: str) -> None:
    with open(session["log"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"what": what, "prompt": prompt, "t": time.monotonic()}) + "\n")


def read_turn_log(path: Any) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


class ErrorLogger(GenAgent):
    """Hands ``backend_options`` to the backend; appends each ``handle_error`` to ``log``."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        self.log = options["log"]
        return dict(options.get("backend_options", {}))

    def handle_response(self, ref: str, response: Any) -> None:
        return None

    def handle_error(self, ref: str, error: Exception) -> None:
        kind = getattr(error, "kind", None)
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(json.dumps({"ref": ref, "kind": kind, "type": type(error).__name__}) + "\n")


class HeapReporter(GenAgent):
    """Replaces each prompt with the agent process's pid and frozen object count (JSON)."""

    def pre_turn(self, prompt: str) -> str:
        return json.dumps({"agent_pid": os.getpid(), "agent_frozen": gc.get_freeze_count()})

    def handle_response(self, ref: str, response: Any) -> None:
        return None


class HeapReportingBackend(Backend):
    """Answers the prompt's JSON with the worker process's pid and frozen object count added."""

    name = "heap-reporting"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        facts = {**json.loads(prompt), "worker_pid": os.getpid()}
        facts["worker_frozen"] = gc.get_freeze_count()
        yield Event.result(json.dumps(facts))


class ProcessFacts(GenAgent):
    """Replaces each prompt with the agent process's pid and agent marker (JSON)."""

    def pre_turn(self, prompt: str) -> str:
        return json.dumps({"agent_pid": os.getpid(), "agent_marker": _agent_marker()})

    def handle_response(self, ref: str, response: Any) -> None:
        return None


class ProcessFactsBackend(Backend):
    """Adds what the worker process inherited from its agent: the marker its CLIs carry."""

    name = "process-facts"

    def start_session(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def prompt(self, session: dict[str, Any], prompt: str, ctx: TurnContext) -> Iterator[Event]:
        facts = {**json.loads(prompt), "worker_pid": os.getpid()}
        facts["worker_marker"] = _agent_marker()
        yield Event.result(json.dumps(facts))


def _agent_marker() -> str | None:
    from genagent_thespian._os.processes import AGENT_MARKER

    return os.environ.get(AGENT_MARKER)
