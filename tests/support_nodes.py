"""A convention member node in its own process, for tests/nodes/test_nodes.py.

Run as a script: starts a member with
:func:`genagent_thespian._nodes.convention.start_node`, prints one
JSON line (``node``, ``admin_port``, ``pgid``: the admin's process group) and keeps the node
until stdin closes, then shuts it down. Meanwhile each stdin line ``ask <name> <prompt>``
asks agent ``name`` through this member (the leader's registry resolves the name) and
prints the answer as one JSON line. Killing the process group and this process with
SIGKILL takes the whole node down at once.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leader", required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--miss-max", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--max-live-sessions", default="auto")
    args = parser.parse_args()

    from genagent_thespian._nodes.convention import start_node

    host, port = args.leader.rsplit(":", 1)
    labels: dict[str, object] = dict(label.split("=", 1) for label in args.label)
    if args.capacity is not None:
        labels["capacity"] = args.capacity
    system = start_node(
        leader=(host, int(port)),
        admin_port=args.admin_port,
        capabilities=labels,
        secret_path=args.secret,
        reregistration_period=args.period,
        registration_miss_max=args.miss_max,
        max_live_sessions=(
            "auto" if args.max_live_sessions == "auto" else int(args.max_live_sessions)
        ),
    )
    info = {"node": system.node, "admin_port": system.admin_port, "pgid": system.pgid}
    print(json.dumps(info), flush=True)
    import genagent_thespian as g

    for line in sys.stdin:
        command, name, prompt = line.rstrip("\n").split(" ", 2)
        assert command == "ask", command
        try:
            reply = {"text": g.ask(name, prompt, timeout=30, system=system).text}
        except g.GenAgentError as exc:
            reply = {"error": type(exc).__name__}
        print(json.dumps(reply), flush=True)
    system.shutdown()


if __name__ == "__main__":
    main()
