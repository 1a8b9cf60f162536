"""Agent implementations used by the tests (importable by module, as actor classes must be).

``Recorder`` agents append one JSON line per callback to a file named by the ``log``
option, so a test in another process can assert exactly which callbacks ran, in which
order, with which arguments, whatever the actor system base.
"""

from __future__ import annotations

import json
import os
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

    def init_agent(self, options: dict[str, Any]) -> dict[str, Any]:
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
        key = event if isinstance(event, str) else json.dumps(event, default=repr)
        return _directive(self.events.get(key))

    def handle_info(self, message: Any) -> Any:
        self._record("handle_info", type=type(message).__name__, message=repr(message))
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

    def init_agent(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"script": options.get("script", [])}

    def handle_response(self, ref: str, response: Response) -> None:
        return None


class Strict(Recorder):
    """A Recorder that declares the option keys it accepts."""

    accepted_options = frozenset({"log", "script"})


class NotAnAgent:
    """Not a GenAgent subclass."""
