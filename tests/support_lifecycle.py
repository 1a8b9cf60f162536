"""A script that owns an actor system, for the tests of every way such a script can end.

Run as ``python tests/support_lifecycle.py MODE STORE GATE``. It starts a system on the
SQLite file ``STORE``, starts a durable agent ``keeper``, has one turn answered, queues a
tell, prints one JSON line (``pid``, ``pgid``, ``system_id``), and then ends as ``MODE``
says: ``exit`` (normal end), ``raise`` (uncaught exception), ``with-raise`` (an exception
inside ``with start_system() as system:``) or ``wait`` (blocked in an ``ask`` whose turn
waits on the file ``GATE``, for the test to send a signal; the prompts the agent
received are recorded in ``GATE.history``).
"""

from __future__ import annotations

import json
import os
import sys

from support_agents import Recorder  # this file's folder is first on sys.path

import genagent_thespian as g
from genagent_thespian.testing import Gate


def _use(system: g.AgentSystem, mode: str, gate: str) -> None:
    g.start_agent(
        Recorder,
        name="keeper",
        backend="scripted",
        durable=True,
        script=["first", Gate(gate, "second"), "third"],
        backend_options={"record_to": gate + ".history"},
        system=system,
    )
    assert g.ask("keeper", "hello", system=system).text == "first"
    print(json.dumps({"pid": os.getpid(), "pgid": system.pgid, "system_id": system.system_id}))
    sys.stdout.flush()
    if mode == "exit":
        return
    if mode in ("raise", "with-raise"):
        raise RuntimeError("the script failed")
    g.ask("keeper", "wait for the gate", timeout=None, system=system)


def main(mode: str, store: str, gate: str) -> None:
    if mode == "with-raise":
        with g.start_system(store_path=store) as system:
            _use(system, mode, gate)
    else:
        _use(g.start_system(store_path=store), mode, gate)


if __name__ == "__main__":
    main(*sys.argv[1:4])
