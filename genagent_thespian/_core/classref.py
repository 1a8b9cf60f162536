"""Agent classes travel by name, so a node that cannot import one says why in one line.

``start_agent(Coder, ...)`` sends ``Coder`` to the node inside an ``AgentSpec``. Pickled as a
plain class reference, a module the node cannot import made Thespian drop the whole message
(``BadPacketError`` for the sender, nothing in the node's log). The spec now carries its
classes as :class:`ClassName` and resolves them where it is unpickled; a class that cannot
be imported there becomes an :class:`UnimportableClass` that knows the node's working
directory, ``sys.path`` and the fix, and the supervisor answers the start with it.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

from .types import ClassSpec

__all__ = ["ClassName", "UnimportableClass", "by_name", "resolve"]


@dataclass(frozen=True, slots=True)
class ClassName:
    """A class named by module and qualified name (what travels instead of the class)."""

    module: str
    qualname: str


@dataclass(frozen=True, slots=True)
class UnimportableClass:
    """Stands in for a class this process could not import; ``problem`` is the one-line why."""

    module: str
    qualname: str
    problem: str

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        """Fail as an instantiation would, with the reason: the agent's start reports it."""
        from .errors import AgentStartFailed

        raise AgentStartFailed(self.problem)


def by_name(value: object) -> object:
    """Return ``value`` with a class replaced by its :class:`ClassName` (anything else as is)."""
    if isinstance(value, type) and value.__module__ != "__main__":
        return ClassName(value.__module__, value.__qualname__)
    return value


def resolve(value: object) -> ClassSpec:
    """Import the class a :class:`ClassName` names (an :class:`UnimportableClass` if it fails)."""
    if not isinstance(value, ClassName):
        return value
    try:
        found: object = importlib.import_module(value.module)
        for part in value.qualname.split("."):
            found = getattr(found, part)
    except Exception as exc:
        return UnimportableClass(value.module, value.qualname, _explain(value, exc))
    return found


def _explain(value: ClassName, exc: Exception) -> str:
    """The one-line reason a node cannot import a class, with what a user checks first.

    Nearly always the node was started from another folder than the project, so its
    working directory and ``sys.path`` are part of the message.
    """
    target = f"{value.module}:{value.qualname}"
    return (
        f"the node (pid {os.getpid()}) cannot import {target}: {type(exc).__name__}: {exc}; "
        f"its working directory is {os.getcwd()} and its sys.path is {sys.path}; start the node "
        "from your project folder, or set PYTHONPATH to the folder that holds the module"
    )
