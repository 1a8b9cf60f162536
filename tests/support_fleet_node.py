"""A convention node (leader or member) in its own process, driven by JSON lines on stdin.

For the tests that run a fleet across network namespaces (``tests/nodes/test_fleet_netns.py``):
started with ``ip netns exec``, it starts its node with
:func:`genagent_thespian._nodes.convention.start_node`, prints one JSON line (``node``,
``admin_port``, ``pgid``) and then answers one JSON line per command:

* ``{"op": "start", "name": ..., "script": [...], "placement": {...}, "history": path}``
  starts a permanent scripted ``Recorder``, durable unless ``"durable": false`` (``Slow``
  steps as ``{"slow": text, "seconds": s}``);
* ``{"op": "ask", "name": ..., "prompt": ..., "timeout": s}``;
* ``{"op": "status", "name": ...}``; ``{"op": "nodes"}`` (how many nodes the leader knows);
  ``{"op": "services"}`` (the leader epoch this node's directory names);
* ``{"op": "fanout", "script": [...], "placement": {...}, "worker_placement": {...},
  "timeout": s}`` runs a scripted Supervisor pattern from this node (its facade here, the
  coordinator and its workers placed by label), answers its result, the coordinator's node
  and the agents left afterwards, and stops it;
* ``{"op": "llm", "port": n, "texts": [...]}`` starts a ``FakeLLMServer`` on this host's own
  loopback (each namespace has its own) answering ``texts``; ``{"op": "llm_requests"}``
  answers the bodies of the model requests this host's servers received;
* ``{"op": "start_claude", "name": ..., "binary": ..., "cwd": ..., "env": {...},
  "placement": {...}}`` starts a durable permanent ``Passthrough`` agent on the real claude
  CLI (its HOME is the host's).

Closing stdin shuts the node down.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leader", default=None)
    parser.add_argument("--leaders", default=None, help="HOST:PORT,HOST:PORT (standby leaders)")
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--bind-host", required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--miss-max", type=int, default=3)
    args = parser.parse_args()

    import genagent_thespian as g
    from genagent_thespian._nodes.convention import start_node
    from genagent_thespian.testing import Slow

    leader = None
    if args.leader:
        host, port = args.leader.rsplit(":", 1)
        leader = (host, int(port))
    leaders = None
    if args.leaders:
        leaders = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in args.leaders.split(","))]
    system = start_node(
        leader=leader,
        leaders=leaders,
        admin_port=args.admin_port,
        bind_host=args.bind_host,
        capabilities=dict(label.split("=", 1) for label in args.label),
        store_path=args.store,
        reregistration_period=args.period,
        registration_miss_max=args.miss_max,
    )
    print(
        json.dumps({"node": system.node, "admin_port": system.admin_port, "pgid": system.pgid}),
        flush=True,
    )

    def step(item: Any) -> Any:
        return Slow(item["slow"], item["seconds"]) if isinstance(item, dict) else item

    servers: list[Any] = []
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "llm":
                from genagent_thespian.testing import FakeLLMServer, Text

                server = FakeLLMServer(port=command["port"])
                server.script(*(Text(text) for text in command["texts"]))
                servers.append(server)
                reply: dict[str, Any] = {"url": server.url}
            elif command["op"] == "llm_requests":
                bodies = [json.dumps(r.body) for s in servers for r in s.model_requests]
                reply = {"bodies": bodies}
            elif command["op"] == "start_claude":
                from support_agents import Passthrough

                g.start_agent(
                    Passthrough,
                    name=command["name"],
                    backend="claude",
                    backend_options={
                        "binary": command["binary"],
                        "cwd": command["cwd"],
                        "env": command["env"],
                    },
                    durable=True,
                    restart="permanent",
                    placement=command["placement"],
                    system=system,
                )
                reply = {"ok": True}
            elif command["op"] == "start":
                from support_agents import Recorder

                g.start_agent(
                    Recorder,
                    name=command["name"],
                    backend="scripted",
                    script=[step(item) for item in command["script"]],
                    backend_options={"record_to": command["history"]},
                    durable=command.get("durable", True),
                    restart="permanent",
                    max_restarts=100,
                    restart_window=60.0,
                    placement=command.get("placement"),
                    system=system,
                )
                reply = {"ok": True}
            elif command["op"] == "ask":
                text = g.ask(
                    command["name"], command["prompt"], timeout=command["timeout"], system=system
                ).text
                reply = {"text": text}
            elif command["op"] == "fanout":
                reply = _fan_out(command, system)
            elif command["op"] == "services":
                from genagent_thespian._actors.directory import Services
                from genagent_thespian._api.system import _ask_directory

                services = _ask_directory(system.asys)
                assert isinstance(services, Services)
                reply = {"epoch": services.epoch, "node": services.node}
            elif command["op"] == "nodes":
                from genagent_thespian._nodes.convention import list_nodes

                reply = {"count": len(list_nodes(system))}
            else:
                status = g.status(command["name"], system=system)
                reply = {"pid": status.pid, "node": status.node, "restarts": status.restarts}
        except g.GenAgentError as exc:
            reply = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(reply), flush=True)
    system.shutdown()
    for server in servers:
        server.close()


def _fan_out(command: dict[str, Any], system: Any) -> dict[str, Any]:
    """Run one Supervisor fan-out with the coordinator and the workers placed by label."""
    from genagent_thespian.patterns.supervisor import Supervisor
    from support_patterns import echo_task_and_host

    import genagent_thespian as g
    from genagent_thespian.testing import wait_until

    run = Supervisor.start(
        "topic",
        backend="scripted",
        script=command["script"],
        placement=command["placement"],
        worker_options={"script": [echo_task_and_host], "placement": command["worker_placement"]},
        system=system,
    )
    try:
        coordinator = g.status(run.name, system=system).node
        result = run.result(timeout=command["timeout"])
        # Workers are stopped once they answered: none is left on any host.
        wait_until(
            lambda: not set(g.list_agents(system=system)) & set(result.workers),
            timeout=command["timeout"],
            interval=0.2,
            message="the workers were not stopped",
        )
    finally:
        run.stop()
    return {
        "ok": result.ok,
        "final": result.final_output,
        "results": result.results,
        "coordinator": coordinator,
        "left": sorted(map(str, g.list_agents(system=system))),
    }


if __name__ == "__main__":
    main()
