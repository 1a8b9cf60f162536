"""Unpickle what a store holds, including records written before the package's move to folders.

A durable record holds pickles of the framework's own classes (machine requests, replies,
errors, turn data, the scripted backend's session). A pickle names each class by its module
path, and 0.1.0.dev0 kept every module flat (``genagent_thespian._machine``); since the move to
role folders that module is ``genagent_thespian._core.machine``. :func:`loads` maps the old
paths to the new ones, so a store written by an older build still loads. New pickles name the
new paths, so the table only ever grows when a module moves again.
"""

from __future__ import annotations

import io
import pickle

from .._core.types import Pickled

__all__ = ["MOVED_MODULES", "loads"]

#: Module paths of the flat layout -> where their classes live now.
MOVED_MODULES: dict[str, str] = {
    "genagent_thespian._agent": "genagent_thespian._actors.agent",
    "genagent_thespian._backend": "genagent_thespian._core.backend",
    "genagent_thespian._behaviour": "genagent_thespian._core.behaviour",
    "genagent_thespian._chaos": "genagent_thespian.testing._chaos",
    "genagent_thespian._client": "genagent_thespian._api.client",
    "genagent_thespian._conformance": "genagent_thespian.testing._conformance",
    "genagent_thespian._console": "genagent_thespian.cli._console",
    "genagent_thespian._deadlines": "genagent_thespian._core.deadlines",
    "genagent_thespian._durable": "genagent_thespian._durable.record",
    "genagent_thespian._errors": "genagent_thespian._core.errors",
    "genagent_thespian._fake_llm_server": "genagent_thespian.testing._fake_llm_server",
    "genagent_thespian._fleet": "genagent_thespian.cli._fleet",
    "genagent_thespian._log": "genagent_thespian._core.log",
    "genagent_thespian._machine": "genagent_thespian._core.machine",
    "genagent_thespian._node": "genagent_thespian._nodes.node",
    "genagent_thespian._nodes": "genagent_thespian._nodes.convention",
    "genagent_thespian._processes": "genagent_thespian._os.processes",
    "genagent_thespian._procfs": "genagent_thespian._os.procfs",
    "genagent_thespian._protocol": "genagent_thespian._core.protocol",
    "genagent_thespian._registry": "genagent_thespian._actors.registry",
    "genagent_thespian._restart_policy": "genagent_thespian._core.restart_policy",
    "genagent_thespian._scripted": "genagent_thespian.testing._scripted",
    "genagent_thespian._scripted_agent": "genagent_thespian.testing._scripted_agent",
    "genagent_thespian._security": "genagent_thespian._os.security",
    "genagent_thespian._store": "genagent_thespian._durable.store",
    "genagent_thespian._supervisor": "genagent_thespian._actors.supervisor",
    "genagent_thespian._system": "genagent_thespian._api.system",
    "genagent_thespian._telemetry": "genagent_thespian._actors.telemetry",
    "genagent_thespian._types": "genagent_thespian._core.turn",
    "genagent_thespian._worker": "genagent_thespian._actors.worker",
}

#: Single classes that changed module in the move (checked before ``MOVED_MODULES``).
_MOVED_CLASSES: dict[tuple[str, str], tuple[str, str]] = {
    ("genagent_thespian._scripted", "WorkerExit"): (
        "genagent_thespian._core.backend",
        "WorkerExit",
    ),
}


class _Unpickler(pickle.Unpickler):
    """A standard unpickler whose class lookup knows where moved classes went."""

    def find_class(self, module: str, name: str) -> object:
        """Resolve a class under its current module, so records pickled before the package's
        modules moved (issue 18) still load.
        """
        module, name = _MOVED_CLASSES.get((module, name), (module, name))
        return super().find_class(MOVED_MODULES.get(module, module), name)


def loads(blob: bytes) -> Pickled:  # a pickle holds whatever the runtime stored
    """Unpickle ``blob`` like :func:`pickle.loads`, resolving pre-move module paths."""
    return _Unpickler(io.BytesIO(blob)).load()
