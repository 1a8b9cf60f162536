"""``ServiceDirectory``: where a node's clients find the framework's services.

A Thespian ``globalName`` is local to one admin: a client attaching to a convention member
and creating the registry by its global name would get a new, private registry on the member
(empty, and left running after the client goes). So every node keeps one small directory
actor under :data:`DIRECTORY_NAME` that knows the services its clients must use: its own on a
single system or a convention leader, the leader's on a member.

A client attaching to a node asks the directory first. A directory it had to create itself
(a node from an older release, which kept none) answers :class:`NoServices` and leaves: the
client then boots the services itself, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

__all__ = [
    "DIRECTORY_NAME",
    "NoServices",
    "ServiceDirectory",
    "Services",
    "SetServices",
    "WhereAreServices",
]

DIRECTORY_NAME = "genagent_thespian.directory"

#: Seconds an unconfigured directory stays after its answer, so the answer is delivered first.
_LINGER = 2.0


@dataclass(frozen=True, slots=True)
class Services:
    """The addresses a node's clients use, and the node they run on."""

    registry: Any
    telemetry: Any
    supervisor: Any
    watcher: Any  # the convention's node watcher (``None`` outside a convention)
    node: str  # the name of the node whose directory answered


@dataclass(frozen=True, slots=True)
class WhereAreServices:
    """Client -> directory: answered with :class:`Services` or :class:`NoServices`."""


@dataclass(frozen=True, slots=True)
class NoServices:
    """Directory -> client: nobody configured this node; the client boots the services."""


@dataclass(frozen=True, slots=True)
class SetServices:
    """Node starter -> directory: the services its clients must use from now on."""

    services: Services


class ServiceDirectory(Actor):
    """Answers :class:`WhereAreServices` for one node (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._services: Services | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if isinstance(message, SetServices):
            self._services = message.services
            self.send(sender, message.services)
        elif isinstance(message, WhereAreServices):
            if self._services is not None:
                self.send(sender, self._services)
            else:
                self.send(sender, NoServices())
                self.wakeupAfter(_LINGER)
        elif isinstance(message, WakeupMessage) and self._services is None:
            self.send(self.myAddress, ActorExitRequest())
