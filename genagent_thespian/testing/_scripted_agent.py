"""``ScriptedAgent``: the scripted backend, usable from the command line.

On the command line options arrive as JSON, so script items that are not strings are
written as objects: ``--option script='["hi", {"slow": "a slow reply", "seconds": 30}]'``.
The agent is re-exported as ``genagent_thespian.cli:ScriptedAgent`` for ``genagent start``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._core.behaviour import GenAgent
from .._core.errors import InvalidOption
from .._core.turn import Event, EventKind, Response, Usage
from .._core.types import Options, OptionValue, UserTerm, WireMapping, WireValue
from ._scripted import Fail, Gate, ScriptedItem, Slow

__all__ = ["ScriptedAgent", "script_from_json", "tool_turn"]


def tool_turn(tools: list[WireMapping], text: str) -> list[Event]:
    """Return the events of a turn that calls ``tools`` in order, then replies ``text``.

    Each tool is ``{"name": n, "input": {...}, "output": text, "error": False}``; the turn
    streams a ``tool_use`` and a ``tool_result`` per tool, the way the CLI backends report
    tools the provider ran, so UIs and telemetry can be exercised without a provider.
    """
    events: list[Event] = []
    for index, tool in enumerate(tools, start=1):
        if not isinstance(tool, Mapping) or not tool.get("name"):
            raise InvalidOption(f"tool {index} needs a name, got {tool!r:.60}")
        call_id = f"toolu_{index:02d}"
        events.append(
            Event(
                EventKind.TOOL_USE,
                {"id": call_id, "name": str(tool["name"]), "input": dict(tool.get("input", {}))},
            )
        )
        events.append(
            Event(
                EventKind.TOOL_RESULT,
                {
                    "tool_use_id": call_id,
                    "output": str(tool.get("output", "")),
                    "is_error": bool(tool.get("error", False)),
                },
            )
        )
    words = text.split(" ")
    events.extend(Event.text_delta(w if i == 0 else " " + w) for i, w in enumerate(words))
    events.append(Event(EventKind.TEXT, {"text": text}))
    usage = Usage(input_tokens=len(tools) + 1, output_tokens=len(text.split()), model="scripted")
    events.append(Event(EventKind.USAGE, {"usage": usage}))
    events.append(Event.result(text, stop_reason="end_turn", model="scripted"))
    return events


def script_from_json(items: WireValue) -> list[ScriptedItem]:
    """Turn a JSON script into scripted-backend items.

    Strings stay replies; ``{"slow": text, "seconds": s, "hold": path}`` becomes ``Slow``,
    ``{"fail": kind, "message": m}`` becomes ``Fail``, ``{"gate": path, "then": item}`` becomes
    ``Gate``,
    and ``{"tools": [{"name": n, "input": {...}, "output": text, "error": false}], "text":
    reply}`` becomes a turn that calls those tools, then replies (see :func:`tool_turn`).

    Raises:
        InvalidOption: an item has another shape.
    """
    if not isinstance(items, list):
        raise InvalidOption(f"script must be a JSON list, got {type(items).__name__}")
    return [_item(item) for item in items]


def _item(item: WireValue) -> ScriptedItem:
    """Turn a JSON script item (from the command line) into the item the scripted backend plays."""
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
        if "tools" in item and isinstance(item["tools"], list):
            return tool_turn(item["tools"], str(item.get("text", "done")))
    raise InvalidOption(
        f"unsupported script item {item!r:.60}: use a string, {{'slow': text, 'seconds': s}}, "
        "{'fail': kind}, {'gate': path} or {'tools': [...], 'text': reply}"
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

    def init_agent(self, options: Options) -> Options:
        """Translate the JSON options into the scripted backend's session options."""
        forward = options.get("forward_to", [])
        self.forward_to = [forward] if isinstance(forward, str) else list(forward)
        session: dict[str, OptionValue] = {
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

    def handle_event(self, event: UserTerm) -> None:
        """Take notifications silently (they are visible in telemetry)."""
        return None
