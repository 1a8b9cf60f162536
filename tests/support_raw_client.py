"""A plain Thespian client of a running node, for the raw-protocol tests.

Run as ``python tests/support_raw_client.py PORT NAME``: it finds agent ``NAME`` through the
node's API, asks it one prompt with raw Thespian, calls ``shutdown()`` on its client
``ActorSystem`` as a tidy Thespian script would, and prints one JSON line with the answer.
"""

from __future__ import annotations

import json
import sys

from thespian.actors import ActorSystem

import genagent_thespian as g
from genagent_thespian.messages import Prompt


def main(port: int, name: str) -> None:
    g.use_node_secret()
    address = g.whereis(name, system=g.attach_system(port))
    asys = ActorSystem("multiprocTCPBase", g.client_capabilities(port))
    reply = asys.ask(address, Prompt("from a raw client"), 60)
    asys.shutdown()  # the node refuses it: only its starter can shut it down
    print(json.dumps({"type": type(reply).__name__, "text": getattr(reply, "text", None)}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
