"""Agent implementations for the operator-tool tests (importable by actor processes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genagent_thespian import GenAgent, Prompt, Response
from genagent_thespian.testing._scripted_agent import script_from_json

__all__ = ["Relay", "Scripted"]


class Scripted(GenAgent):
    """Plays a JSON script; a notification ``{"say": text}`` self-chains ``text`` as a turn."""

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        return {
            "script": script_from_json(options.get("script", [])),
            "default": options.get("default", "ok"),
        }

    def handle_response(self, ref: str, response: Response) -> None:
        return None

    def handle_event(self, event: Any) -> Prompt | None:
        if isinstance(event, dict) and "say" in event:
            return Prompt(str(event["say"]))
        return None


class Relay(Scripted):
    """After each reply, notifies the agents named in option ``to`` with ``{"say": reply}``."""

    def init_agent(self, options: Mapping[str, Any]) -> Mapping[str, Any]:
        self.targets = list(options.get("to", []))
        return super().init_agent({k: v for k, v in options.items() if k != "to"})

    def handle_response(self, ref: str, response: Response) -> None:
        for target in self.targets:
            self.notify(target, {"say": f"from {self.name}: {response.text}"})
