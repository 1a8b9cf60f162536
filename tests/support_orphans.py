"""A script whose whole system is SIGKILLed with asks and a tell pending (the test kills it).

Run as ``python tests/support_orphans.py STORE GATE``. It starts a system on ``STORE``, a
durable agent ``keeper`` whose second turn waits on the file ``GATE``, sends one ask that
holds that turn, queues two more asks and a tell behind it, prints one JSON line (``pid``,
``pgid``, ``tell``: the tell's ref) once all of them are queued, and waits to be killed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading

from support_agents import Recorder  # this file's folder is first on sys.path

import genagent_thespian as g
from genagent_thespian.testing import Gate, wait_until


def main(store: str, gate: str) -> None:
    system = g.start_system(store_path=store)
    g.start_agent(
        Recorder,
        name="keeper",
        backend="scripted",
        durable=True,
        script=["first", Gate(gate, "held")],
        default="later",
        backend_options={"record_to": gate + ".history"},
    )
    assert g.ask("keeper", "hello").text == "first"
    for text in ("held ask", "queued ask 1", "queued ask 2"):
        threading.Thread(target=g.ask, args=("keeper", text), daemon=True).start()
        wait_until(functools.partial(_seen, text), timeout=30.0)
    ref = g.tell("keeper", "queued tell")
    wait_until(lambda: g.status("keeper").queued == 3, timeout=30.0)
    print(json.dumps({"pid": os.getpid(), "pgid": system.pgid, "tell": ref}), flush=True)
    threading.Event().wait()


def _seen(text: str) -> bool:
    status = g.status("keeper")
    # The held ask is running; each later one is queued behind it.
    wanted = {"held ask": 0, "queued ask 1": 1, "queued ask 2": 2}[text]
    return status.state == "processing" and status.queued >= wanted


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
