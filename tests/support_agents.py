"""Agent implementations used by the tests (importable by module, as actor classes must be).

``Recorder`` agents append one JSON line per callback to a file named by the ``log``
option, so a test in another process can assert exactly which callbacks ran, in which
order, with which arguments, whatever the actor system base.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genagent_thespian import GenAgent, Halt, Prompt, Response, Skip


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the callback records of a ``Recorder`` log."""
    file = Path(path)
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text("utf-8").splitlines() if line]


def calls(path: str | os.PathLike[str], *names: str) -> list[dict[str, Any]]:
    """Return the records of the given callbacks (all when no name is given)."""
    return [r for r in read_log(path) if not names or r["cb"] in names]


def _directive(spec: Any) -> Any:
    """Turn a JSON-friendly directive spec into a callback return value."""
    if spec is None or spec == "noreply":
        return None
    if spec == "halt":
        return Halt()
    if spec == "skip":
        return Skip()
    if spec == "raise":
        raise RuntimeError("callback told to raise")
    if spec == "bad":
        return 42
    if isinstance(spec, str) and spec.startswith("prompt:"):
        return Prompt(spec.removeprefix("prompt:"))
    if isinstance(spec, str) and spec.startswith("after:"):  # after:<seconds>:<prompt>
        _, seconds, text = spec.split(":", 2)
        return Prompt(text, delay=float(seconds))
    raise ValueError(f"unknown directive spec {spec!r}")


class Recorder(GenAgent):
    """A configurable agent that records every callback.

    Options (all optional): ``log`` (path), ``script`` / ``default`` (scripted backend),
    ``responses`` and ``errors`` (lists of directive specs consumed per call, default
    noreply), ``events`` (a dict from event to directive spec; other events noreply),
    ``pre_turn`` (a dict from prompt to ``"skip"``/``"halt"``/``"raise"``/``"bad"`` or
    ``"rewrite:<text>"``), ``post_turn`` (``"raise"``), ``pre_run`` (``"raise"``),
    ``init`` (``"raise"``), ``backend_options`` (extra session options).
    """

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        self.log = options.get("log")
        self.responses = list(options.get("responses", []))
        self.errors = list(options.get("errors", []))
        self.events = dict(options.get("events", {}))
        self.pre_turn_rules = dict(options.get("pre_turn", {}))
        self.post_turn_rule = options.get("post_turn")
        self.pre_run_rule = options.get("pre_run")
        self.stream_kinds: list[str] = []
        self.event_count = 0
        self._record("init_agent", options=sorted(options))
        if options.get("init") == "raise":
            raise RuntimeError("init_agent told to raise")
        backend_options = {
            "script": options.get("script", []),
            **options.get("backend_options", {}),
        }
        if "default" in options:
            backend_options["default"] = options["default"]
        return backend_options

    def _record(self, cb: str, **data: Any) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(json.dumps({"cb": cb, **data}, default=repr) + "\n")

    def pre_run(self) -> None:
        self._record("pre_run")
        if self.pre_run_rule == "raise":
            raise RuntimeError("pre_run told to raise")

    def pre_turn(self, prompt: str) -> Any:
        self._record("pre_turn", prompt=prompt)
        rule = self.pre_turn_rules.get(prompt)
        if isinstance(rule, str) and rule.startswith("rewrite:"):
            return rule.removeprefix("rewrite:")
        if rule is None:
            return prompt
        return _directive(rule)

    def handle_stream_event(self, event: Any) -> None:
        self.stream_kinds.append(str(event.kind))

    def handle_response(self, ref: str, response: Response) -> Any:
        self._record(
            "handle_response",
            ref=ref,
            text=response.text,
            prompt=response.prompt,
            stream_kinds=self.stream_kinds,
        )
        self.stream_kinds = []
        return _directive(self.responses.pop(0) if self.responses else None)

    def handle_error(self, ref: str, error: Exception) -> Any:
        self._record(
            "handle_error",
            ref=ref,
            error=type(error).__name__,
            kind=getattr(error, "kind", None),
            stream_kinds=self.stream_kinds,
        )
        self.stream_kinds = []
        return _directive(self.errors.pop(0) if self.errors else None)

    def handle_event(self, event: Any) -> Any:
        self.event_count += 1
        self._record("handle_event", event=event, count=self.event_count)
        if isinstance(event, dict) and "do" in event:
            self._act(event)
            return None
        key = event if isinstance(event, str) else json.dumps(event, default=repr)
        return _directive(self.events.get(key))

    def _act(self, action: dict[str, Any]) -> None:
        """Carry out an agent-to-agent action described by a test's event."""
        do = action["do"]
        if do == "tell":
            self._record("told", ref=self.tell(action["to"], action["prompt"]))
        elif do == "notify":
            self.notify(action["to"], action["event"])
        elif do == "after":
            self.timer = self.send_after(action["seconds"], action["message"])
        elif do == "cancel_timer":
            self._record("cancelled", was_pending=self.cancel_timer(self.timer))
        elif do == "spawn":
            self.start_agent(
                Minimal, name=action["name"], backend="scripted", script=action["script"]
            )
        elif do == "stop":
            self.stop_agent(action["name"])
        elif do == "watch":
            self.watch_agent(action["name"])
        elif do == "whoami":
            self._record("whoami", name=self.name)

    def handle_info(self, message: Any) -> Any:
        response = getattr(message, "response", None)
        error = getattr(message, "error", None)
        self._record(
            "handle_info",
            type=type(message).__name__,
            text=getattr(response, "text", None),
            error=type(error).__name__ if error is not None else None,
            message=message if isinstance(message, str | int) else repr(message),
        )
        if isinstance(message, str) and message.startswith("then:"):
            return Prompt(message.removeprefix("then:"))
        return None

    def post_turn(self, ref: str, outcome: Any) -> None:
        self._record("post_turn", ref=ref, outcome=type(outcome).__name__)
        if self.post_turn_rule == "raise":
            raise RuntimeError("post_turn told to raise")

    def post_run(self) -> None:
        self._record("post_run")

    def terminate_agent(self, reason: str) -> None:
        self._record("terminate_agent", reason=reason)


class Minimal(GenAgent):
    """Implements only what is required: every default callback is exercised."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"script": options.get("script", [])}

    def handle_response(self, ref: str, response: Response) -> None:
        return None


class Strict(Recorder):
    """A Recorder that declares the option keys it accepts."""

    accepted_options = frozenset({"log", "script"})


class NotAnAgent:
    """Not a GenAgent subclass."""


class FailsOnRestart(Recorder):
    """Starts once; every later start fails while the file named ``poison`` exists."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        backend_options = super().init_agent(options)
        poison = options.get("poison")
        if poison and os.path.exists(poison):
            raise RuntimeError("poisoned start")
        if poison:
            Path(poison).touch()
        return backend_options


class Counter(Recorder):
    """A Recorder that counts its responses in its state (to check state survives restarts)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        self.responses_seen = 0
        return super().init_agent(options)

    def handle_response(self, ref: str, response: Response) -> Any:
        self.responses_seen += 1
        self._record("count", value=self.responses_seen)
        return super().handle_response(ref, response)


class Passthrough(GenAgent):
    """Hands its ``backend_options`` to the backend unchanged; keeps the texts it got."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        self.texts: list[str] = []
        return dict(options.get("backend_options", {}))

    def handle_response(self, ref: str, response: Response) -> None:
        self.texts.append(response.text)


class HoldsALock(Recorder):
    """Keeps an unpicklable object in its state (a durable agent must refuse to start)."""

    def init_agent(self, options: Mapping[str, Any]) -> dict[str, Any]:
        import threading

        self.lock = threading.Lock()
        return super().init_agent(options)


def deaf_until_gate(prompt: str) -> str:
    """Scripted item (a function of the prompt): block, deaf to cancellation, until the file
    named by ``prompt`` exists (60 s at most), then reply ``"late"``. A turn its backend
    cannot stop, as a hung provider call would be."""
    deadline = time.monotonic() + 60.0
    while not os.path.exists(prompt) and time.monotonic() < deadline:
        time.sleep(0.01)  # the backend under test polls its gate; no test waits on this
    return "late"
