"""A client process on one "host" of the namespace fleet: attaches to that host's node.

Started with ``ip netns exec`` (``tests/support_fleet.py``), it attaches with
:meth:`genagent_thespian.AgentSystem.attach` to the node listening on ``--bind-host`` and
``--admin-port``, prints ``{"node": ...}`` (the node whose directory answered), then answers
one JSON line per command: ``{"op": "ask", "name": ..., "prompt": ..., "timeout": s}`` or
``{"op": "status", "name": ...}``. Closing stdin detaches (the node keeps running).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--bind-host", required=True)
    args = parser.parse_args()

    import genagent_thespian as g

    system = g.AgentSystem.attach(args.admin_port, bind_host=args.bind_host)
    print(json.dumps({"node": system.node}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "ask":
                text = g.ask(
                    command["name"], command["prompt"], timeout=command["timeout"], system=system
                ).text
                reply: dict[str, Any] = {"text": text}
            else:
                status = g.status(command["name"], system=system)
                reply = {"pid": status.pid, "node": status.node, "restarts": status.restarts}
        except g.GenAgentError as exc:
            reply = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(reply), flush=True)
    system.shutdown()


if __name__ == "__main__":
    main()
