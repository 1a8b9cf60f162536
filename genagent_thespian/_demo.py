"""Agents for the command line and the built-in ``genagent demo`` fleet.

:class:`ScriptedAgent` makes the scripted backend usable from the command line, where
options arrive as JSON: ``--option script='["hi", {"slow": "a slow reply", "seconds": 30}]'``.

:func:`run_builtin_demo` is the demo ``genagent demo`` runs until the patterns package ships
``genagent_thespian.patterns.demo.run_demo``: a fan-out/fan-in fleet where researchers
answer in parallel, notify an editor with their findings, and the editor writes the
summary once every finding is in, with progress printed as telemetry arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._backend import resolve_backend
from ._behaviour import GenAgent
from ._client import shutdown_system, start_agent, start_system, tell
from ._errors import InvalidOption
from ._scripted import Fail, Gate, Slow
from ._telemetry import attach, detach
from ._types import Event, EventKind, Response
from .messages import Prompt

__all__ = ["Editor", "Researcher", "ScriptedAgent", "run_builtin_demo", "script_from_json"]


def script_from_json(items: Any) -> list[Any]:
    """Turn a JSON script into scripted-backend items.

    Strings stay replies; ``{"slow": text, "seconds": s}`` becomes ``Slow``, ``{"fail":
    kind, "message": m}`` becomes ``Fail``, ``{"gate": path, "then": item}`` becomes ``Gate``.

    Raises:
        InvalidOption: an item has another shape.
    """
    if not isinstance(items, list):
        raise InvalidOption(f"script must be a JSON list, got {type(items).__name__}")
    return [_item(item) for item in items]


def _item(item: Any) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if "slow" in item:
            return Slow(str(item["slow"]), float(item.get("seconds", 1.0)))
        if "fail" in item:
            return Fail(str(item["fail"]), str(item.get("message", "scripted failure")))
        if "gate" in item:
            return Gate(str(item["gate"]), _item(item.get("then", "gate opened")))
    raise InvalidOption(
        f"unsupported script item {item!r:.60}: use a string, {{'slow': text, 'seconds': s}}, "
        "{'fail': kind} or {'gate': path}"
    )


class ScriptedAgent(GenAgent):
    """A general-purpose agent whose options are the scripted backend's, in JSON form.

    Options:
        script: A JSON script (see :func:`script_from_json`).
        default: The reply once the script is exhausted (default: ``"ok"``).
        record_to: A JSONL file recording every prompt received.
        forward_to: Agent names notified with ``{"from": name, "text": reply}`` after
            every reply (draws edges in the console's communication graph).
    """

    accepted_options = {"script", "default", "record_to", "forward_to"}

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Translate the JSON options into the scripted backend's session options."""
        forward = options.get("forward_to", [])
        self.forward_to = [forward] if isinstance(forward, str) else list(forward)
        session: dict[str, Any] = {
            "script": script_from_json(options.get("script", [])),
            "default": _item(options.get("default", "ok")),
        }
        if options.get("record_to"):
            session["record_to"] = options["record_to"]
        return session

    def handle_response(self, ref: str, response: Response) -> None:
        """Forward the reply to the ``forward_to`` agents."""
        for target in self.forward_to:
            self.notify(target, {"from": str(self.name), "text": response.text})

    def handle_event(self, event: Any) -> None:
        """Take notifications silently (they are visible in telemetry)."""
        return None


# ------------------------------------------------------------------------ built-in demo


class Researcher(GenAgent):
    """Answers a question and notifies the editor with the finding."""

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Keep the editor's name; pass the rest to the backend."""
        self.editor = options["editor"]
        return {k: v for k, v in options.items() if k != "editor"}

    def handle_response(self, ref: str, response: Response) -> None:
        """Send the finding to the editor."""
        self.notify(self.editor, {"from": str(self.name), "finding": response.text})


class Editor(GenAgent):
    """Collects ``expected`` findings, then writes a summary turn from them."""

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Remember how many findings to wait for."""
        self.expected = int(options["expected"])
        self.findings: list[str] = []
        return {k: v for k, v in options.items() if k != "expected"}

    def handle_response(self, ref: str, response: Response) -> None:
        """The summary is the turn's reply; watchers read it from the stream."""
        return None

    def handle_event(self, event: Any) -> Prompt | None:
        """Collect a finding; once all are in, self-chain the summary turn."""
        self.findings.append(f"{event['from']}: {event['finding']}")
        if len(self.findings) == self.expected:
            notes = "\n".join(self.findings)
            return Prompt(f"Write a two-sentence summary of these findings:\n{notes}")
        return None


_TOPICS = (
    "why supervisors restart crashed workers",
    "why a turn needs a watchdog",
    "why callers should hold names, not addresses",
    "why a mailbox needs a bound",
)


def run_builtin_demo(
    *, backend: str = "scripted", agents: int = 3, out: Callable[[str], None] = print
) -> int:
    """Run the fan-out/fan-in fleet on its own local node and print what happens.

    Returns:
        0 once the editor's summary arrived, 1 otherwise.
    """
    if not 1 <= agents <= len(_TOPICS):
        raise InvalidOption(f"--agents must be between 1 and {len(_TOPICS)}, got {agents}")
    resolve_backend(backend)  # a clear error (with an install hint) before any process starts
    started = time.monotonic()
    done = threading.Event()
    summary: list[str] = []

    def show(line: str) -> None:
        out(f"[{time.monotonic() - started:6.2f}s] {line}")

    def on_event(name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        agent = metadata.get("agent")
        if name == "prompt.start":
            first_line = str(metadata.get("prompt", "")).splitlines()[0]
            show(f"{agent}: turn started: {first_line[:70]}")
        elif name == "prompt.stop":
            show(f"{agent}: turn done in {measurements.get('duration_ms', 0.0):.0f} ms")
        elif name == "prompt.error":
            show(f"{agent}: turn failed: {metadata.get('reason')}: {metadata.get('error')}")
            if agent == "editor":
                done.set()
        elif name == "event.received":
            show(f"{metadata.get('sender')} -> {agent}: notification")
        elif name == "turn.event" and agent == "editor":
            event = metadata.get("event")
            if not isinstance(event, Event):
                return
            if event.kind == EventKind.TEXT_DELTA:
                summary.append(str(event.data.get("text", "")))
            elif event.kind == EventKind.RESULT:
                done.set()

    out(f"genagent demo: {agents} researcher(s) and an editor on the {backend!r} backend")
    system = start_system(base="multiprocTCPBase", make_default=False)
    handler_id = f"genagent-demo-{id(done)}"
    attach(
        handler_id,
        ["prompt.start", "prompt.stop", "prompt.error", "event.received", "turn.event"],
        on_event,
        system=system,
    )
    try:
        scripted = backend == "scripted"
        topics = _TOPICS[:agents]
        editor_options: dict[str, Any] = {"expected": agents}
        if scripted:
            editor_options["script"] = [
                f"All {agents} findings agree: supervision, deadlines, names and bounds "
                "keep a fleet of long-running agents steerable. Each one is cheap and "
                "each one removes a way for the fleet to hang."
            ]
        start_agent(Editor, name="editor", backend=backend, system=system, **editor_options)
        for index, topic in enumerate(topics, 1):
            options: dict[str, Any] = {"editor": "editor"}
            if scripted:
                options["script"] = [f"Finding {index}: that is {topic.split(' ', 1)[1]}."]
            start_agent(
                Researcher, name=f"researcher-{index}", backend=backend, system=system, **options
            )
        show(f"started editor and {agents} researcher(s)")
        for index, topic in enumerate(topics, 1):
            tell(f"researcher-{index}", f"In one sentence: {topic}?", system=system)
        if not done.wait(600.0):
            out("genagent demo: the editor did not finish within 600 s")
            return 1
        text = "".join(summary).strip()
        out("")
        out(f"summary: {text}" if text else "summary: (the editor's reply had no text)")
        show("done")
        return 0 if text else 1
    finally:
        detach(handler_id, system=system)
        shutdown_system(system)
