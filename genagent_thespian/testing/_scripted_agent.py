"""``ScriptedAgent``: the scripted backend, usable from the command line.

On the command line options arrive as JSON, so script items that are not strings are
written as objects: ``--option script='["hi", {"slow": "a slow reply", "seconds": 30}]'``.
The agent is re-exported as ``genagent_thespian.cli:ScriptedAgent`` for ``genagent start``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.behaviour import GenAgent
from .._core.errors import InvalidOption
from .._core.turn import Response
from ._scripted import Fail, Gate, Slow

__all__ = ["ScriptedAgent", "script_from_json"]


def script_from_json(items: Any) -> list[Any]:
    """Turn a JSON script into scripted-backend items.

    Strings stay replies; ``{"slow": text, "seconds": s, "hold": path}`` becomes ``Slow``,
    ``{"fail": kind, "message": m}`` becomes ``Fail``, ``{"gate": path, "then": item}`` becomes
    ``Gate``.

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
            hold = item.get("hold")
            return Slow(
                str(item["slow"]),
                float(item.get("seconds", 1.0)),
                hold=None if hold is None else str(hold),
            )
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
