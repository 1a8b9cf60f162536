"""The web console: a live fleet table, per-agent turn streams, controls and the comms graph.

``genagent console`` attaches to a node and serves, with the standard library's
``http.server`` only:

* ``/``: the fleet table (polled from ``/api/fleet`` a few times a second) with interrupt /
  halt / resume / stop buttons, and the communication graph (``/api/graph.svg``);
* ``/agent?name=N``: one agent's status, its current turn's events streamed as Server-Sent
  Events (``/api/agent/stream?name=N``) and the transcript of the turns seen since the
  console started (``/api/agent?name=N``);
* ``POST /api/agent/<interrupt|halt|resume|stop>?name=N``: the controls.

The console serves on ``127.0.0.1`` unless ``--host`` says otherwise. The controls are
protected against cross-site requests: each console makes a random token, embeds it in its
pages, and every POST must send it back in the ``X-Genagent-Token`` header (a cross-site
page can neither read the token nor set the header without a CORS preflight, which the
console never grants); requests whose ``Host`` is not the console's own are refused on
loopback, against DNS rebinding.

Everything the console knows beyond the fleet status comes from telemetry
(``prompt.*``, ``turn.event``, ``event.received``...), so turns that ran before the console
started have no transcript, and the graph counts notifications seen since then.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import math
import queue
import secrets
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .._api.client import halt, interrupt, resume, stop
from .._api.system import AgentSystem
from .._api.telemetry import attach, detach
from .._core.errors import GenAgentError
from .._core.turn import Event
from .._nodes.node import port_open
from ._fleet import fleet_rows

__all__ = ["Console", "render_graph_svg"]

_TELEMETRY = (
    "prompt.start",
    "prompt.stop",
    "prompt.error",
    "turn.event",
    "turn.interrupted",
    "event.received",
    "halted",
    "resumed",
    "agent.started",
    "agent.stopped",
    "agent.crashed",
    "agent.restarted",
)
_TRANSCRIPT_TURNS = 50
_EVENTS_PER_TURN = 500
_TEXT_LIMIT = 4000
_OPERATOR = "(operator)"


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "..."


def event_json(event: Any) -> dict[str, Any]:
    """Return the displayable part of a turn event (kind, text, tool name, message)."""
    if not isinstance(event, Event):
        return {"kind": "unknown", "text": _clip(event)}
    data = event.data
    shown: dict[str, Any] = {"kind": str(event.kind)}
    for key in ("text", "name", "message", "stop_reason", "model"):
        value = data.get(key)
        if value is not None:
            shown[key] = _clip(value)
    if "input" in data:
        shown["input"] = _clip(json.dumps(data["input"], default=str))
    if "output" in data:
        shown["output"] = _clip(data["output"])
    return shown


class _Observer:
    """Builds transcripts, current-turn events and the comms graph from telemetry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.transcripts: dict[str, deque[dict[str, Any]]] = {}
        self.edges: Counter[tuple[str, str]] = Counter()
        self._subscribers: dict[str, list[queue.Queue[dict[str, Any]]]] = {}

    def handle(self, name: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        agent = str(metadata.get("agent"))
        with self._lock:
            if name == "event.received":
                sender = metadata.get("sender")
                self.edges[(_OPERATOR if sender is None else str(sender), agent)] += 1
                self._publish(agent, {"type": "notified", "from": str(sender)})
                return
            turns = self.transcripts.setdefault(agent, deque(maxlen=_TRANSCRIPT_TURNS))
            ref = metadata.get("ref")
            if name == "prompt.start":
                started: dict[str, Any] = {
                    "ref": ref,
                    "prompt": _clip(metadata.get("prompt", "")),
                    "origin": metadata.get("origin"),
                    "text": "",
                    "state": "running",
                    "started": time.time(),
                    "events": [],
                }
                turns.append(started)
                self._publish(agent, {"type": "turn_start", "turn": _summary(started)})
                return
            turn: dict[str, Any] | None = next(
                (t for t in reversed(turns) if t["ref"] == ref), None
            )
            if name == "turn.event" and turn is not None:
                shown = event_json(metadata.get("event"))
                if len(turn["events"]) < _EVENTS_PER_TURN:
                    turn["events"].append(shown)
                if shown["kind"] == "text_delta" and len(turn["text"]) < _TEXT_LIMIT:
                    turn["text"] += shown.get("text", "")
                self._publish(agent, {"type": "event", "ref": ref, "event": shown})
            elif name in ("prompt.stop", "prompt.error") and turn is not None:
                turn["state"] = "completed" if name == "prompt.stop" else "failed"
                turn["duration_ms"] = measurements.get("duration_ms")
                if name == "prompt.error":
                    turn["error"] = f"{metadata.get('reason')}: {_clip(metadata.get('error'))}"
                usage = metadata.get("usage")
                if usage is not None:
                    turn["tokens"] = [usage.input_tokens, usage.output_tokens]
                self._publish(agent, {"type": "turn_end", "turn": _summary(turn)})
            elif name not in ("turn.event", "prompt.stop", "prompt.error"):
                self._publish(agent, {"type": name})

    def _publish(self, agent: str, item: dict[str, Any]) -> None:
        for subscriber in self._subscribers.get(agent, []):
            with contextlib.suppress(queue.Full):
                subscriber.put_nowait(item)

    def subscribe(self, agent: str) -> tuple[queue.Queue[dict[str, Any]], dict[str, Any] | None]:
        """Return a queue of the agent's live items and its running turn (with its events)."""
        subscriber: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.setdefault(agent, []).append(subscriber)
            turns = self.transcripts.get(agent)
            current = turns[-1] if turns and turns[-1]["state"] == "running" else None
            snapshot = dict(current, events=list(current["events"])) if current else None
        return subscriber, snapshot

    def unsubscribe(self, agent: str, subscriber: queue.Queue[dict[str, Any]]) -> None:
        with self._lock, contextlib.suppress(ValueError, KeyError):
            self._subscribers[agent].remove(subscriber)

    def transcript(self, agent: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(turn, events=list(turn["events"])) for turn in self.transcripts.get(agent, [])
            ]

    def graph(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.edges)


def _summary(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in turn.items() if k != "events"}


def render_graph_svg(agents: list[str], edges: dict[tuple[str, str], int]) -> str:
    """Draw who notified whom as an SVG: agents on a circle, arrows labelled with counts."""
    names = sorted(set(agents) | {n for edge in edges for n in edge})
    width, height = 560, 380
    centre_x, centre_y = width / 2, height / 2
    radius = min(width, height) / 2 - 60
    positions = {}
    for index, name in enumerate(names):
        angle = 2 * math.pi * index / max(1, len(names)) - math.pi / 2
        positions[name] = (
            centre_x + radius * math.cos(angle),
            centre_y + radius * math.sin(angle),
        )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="comms-graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="who notified whom">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#5b6b7f"/></marker></defs>',
    ]
    node_radius = 28
    for (source, target), count in sorted(edges.items()):
        (x1, y1), (x2, y2) = positions[source], positions[target]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        # Offset both directions of a pair sideways so A->B and B->A do not overlap.
        ox, oy = -uy * 6, ux * 6
        sx, sy = x1 + ux * node_radius + ox, y1 + uy * node_radius + oy
        ex, ey = x2 - ux * node_radius + ox, y2 - uy * node_radius + oy
        parts.append(
            f'<line class="edge" data-from="{html.escape(source)}" '
            f'data-to="{html.escape(target)}" x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" '
            f'y2="{ey:.1f}" stroke="#5b6b7f" stroke-width="{min(6, 1 + count):.0f}" '
            'marker-end="url(#arrow)"/>'
        )
        parts.append(
            f'<text x="{(sx + ex) / 2 + ox:.1f}" y="{(sy + ey) / 2 + oy:.1f}" '
            f'font-size="12" fill="#334">{count}</text>'
        )
    for name, (x, y) in positions.items():
        fill = "#f3e6c4" if name == _OPERATOR else "#dbe8f6"
        parts.append(
            f'<g class="node" data-agent="{html.escape(name)}"><circle cx="{x:.1f}" '
            f'cy="{y:.1f}" r="{node_radius}" fill="{fill}" stroke="#4a6fa5"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="11" text-anchor="middle">'
            f"{html.escape(name[:14])}</text></g>"
        )
    if not names:
        parts.append('<text x="20" y="30" fill="#667">no agents yet</text>')
    parts.append("</svg>")
    return "".join(parts)


class Console:
    """The console's HTTP server, attached to one node.

    Example:
        >>> console = Console(system, port=0)   # doctest: +SKIP
        >>> console.start(); print(console.url); console.close()
    """

    def __init__(self, system: AgentSystem, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.system = system
        self.token = secrets.token_urlsafe(32)
        self.observer = _Observer()
        self._handler_id = f"genagent-console-{secrets.token_hex(6)}"
        # Actor calls run on a few long-lived threads: each thread that talks to the system
        # keeps its own endpoint, so one thread per HTTP request would leak endpoints.
        self._calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="console-call")
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        loopback = host in ("127.0.0.1", "localhost", "::1")
        self.allowed_hosts: frozenset[str] | None = (
            frozenset(f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]"))
            if loopback
            else None
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The console's address."""
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{shown}:{self.port}/"

    def start(self) -> None:
        """Subscribe to telemetry and serve in a background thread."""
        attach(self._handler_id, _TELEMETRY, self.observer.handle, system=self.system)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="genagent-console", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until :meth:`close` (or Ctrl-C in the main thread)."""
        while not self._closing.wait(0.5):
            pass

    def close(self) -> None:
        """Stop serving and detach from telemetry (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        # Unsubscribing needs the node; when it is gone, waiting for it only delays the exit.
        if self.system.admin_port is None or port_open(self.system.admin_port):
            with contextlib.suppress(GenAgentError):
                detach(self._handler_id, system=self.system)
        self._calls.shutdown(wait=False, cancel_futures=True)

    @property
    def closing(self) -> bool:
        """Whether the console is shutting down (streams end)."""
        return self._closing.is_set()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an actor-system call on the console's call threads and return its result."""
        return self._calls.submit(fn, *args, system=self.system, **kwargs).result(timeout=60.0)

    def fleet(self) -> list[dict[str, Any]]:
        """The fleet table's rows."""
        return self._calls.submit(fleet_rows, self.system).result(timeout=60.0)


_ACTIONS = {"interrupt": interrupt, "halt": halt, "resume": resume, "stop": stop}


def _make_handler(console: Console) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "genagent-console"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # the console is quiet; errors reach the browser

        # ------------------------------------------------------------ plumbing

        def _host_ok(self) -> bool:
            if console.allowed_hosts is None:
                return True
            return self.headers.get("Host", "") in console.allowed_hosts

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            content_type: str,
            *,
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            )
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: HTTPStatus, data: Any) -> None:
            body = json.dumps(data, default=str).encode("utf-8")
            self._send(status, body, "application/json")

        def _name(self, query: dict[str, list[str]]) -> str | None:
            names = query.get("name")
            return names[0] if names else None

        # ------------------------------------------------------------ GET

        def do_GET(self) -> None:
            if not self._host_ok():
                self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "unexpected Host"})
                return
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/":
                    self._page(_FLEET_BODY, "fleet")
                elif url.path == "/agent":
                    name = self._name(query) or ""
                    self._page(_AGENT_BODY.replace("{name}", html.escape(name)), "agent")
                elif url.path == "/static/console.js":
                    self._send(HTTPStatus.OK, _SCRIPT.encode(), "text/javascript; charset=utf-8")
                elif url.path == "/api/fleet":
                    node = f"127.0.0.1:{console.system.admin_port}"
                    self._json(HTTPStatus.OK, {"node": node, "agents": console.fleet()})
                elif url.path == "/api/graph":
                    edges = console.observer.graph()
                    listed = [{"from": a, "to": b, "count": n} for (a, b), n in edges.items()]
                    self._json(HTTPStatus.OK, {"edges": listed})
                elif url.path == "/api/graph.svg":
                    agents = [row["name"] for row in console.fleet()]
                    svg = render_graph_svg(agents, console.observer.graph())
                    self._send(HTTPStatus.OK, svg.encode(), "image/svg+xml")
                elif url.path == "/api/agent":
                    self._agent(self._name(query))
                elif url.path == "/api/agent/stream":
                    self._stream(self._name(query))
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such page"})
            except GenAgentError as exc:
                self._json(HTTPStatus.BAD_GATEWAY, _error(exc))

        def _page(self, body: str, kind: str) -> None:
            page = (
                _PAGE.replace("{token}", console.token)
                .replace("{kind}", kind)
                .replace("{body}", body)
            )
            self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8")

        def _agent(self, name: str | None) -> None:
            if not name:
                self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "name is required"})
                return
            row = next((r for r in console.fleet() if r["name"] == name), None)
            self._json(
                HTTPStatus.OK if row else HTTPStatus.NOT_FOUND,
                {
                    "ok": row is not None,
                    "status": row,
                    "transcript": console.observer.transcript(name),
                },
            )

        def _stream(self, name: str | None) -> None:
            if not name:
                self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "name is required"})
                return
            subscriber, current = console.observer.subscribe(name)
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                self._event({"type": "snapshot", "turn": current})
                idle = 0.0
                while not console.closing:
                    try:
                        item = subscriber.get(timeout=0.5)
                    except queue.Empty:
                        idle += 0.5
                        if idle >= 15.0:
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                            idle = 0.0
                        continue
                    idle = 0.0
                    self._event(item)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                console.observer.unsubscribe(name, subscriber)

        def _event(self, item: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(item, default=str)}\n\n".encode())
            self.wfile.flush()

        # ------------------------------------------------------------ POST

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 65536))
            if not self._host_ok():
                self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "unexpected Host"})
                return
            sent = self.headers.get("X-Genagent-Token", "")
            if not hmac.compare_digest(sent.encode(), console.token.encode()):
                self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "missing or wrong token"})
                return
            url = urlsplit(self.path)
            action = url.path.removeprefix("/api/agent/")
            name = self._name(parse_qs(url.query))
            if not url.path.startswith("/api/agent/") or action not in _ACTIONS or not name:
                self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "no such action"})
                return
            try:
                result = console.call(_ACTIONS[action], name)
            except GenAgentError as exc:
                status = (
                    HTTPStatus.NOT_FOUND if exc.reason_kind == "not_found" else HTTPStatus.CONFLICT
                )
                self._json(status, _error(exc))
                return
            self._json(HTTPStatus.OK, {"ok": True, "action": action, "agent": name, "ref": result})

    return Handler


def _error(exc: GenAgentError) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="genagent-token" content="{token}">
<meta name="genagent-page" content="{kind}">
<title>genagent console</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #1d2733; background: #fbfcfd; }
h1 { font-size: 20px; margin: 0 0 .2em; } h2 { font-size: 16px; margin: 1.4em 0 .5em; }
.sub { color: #667; margin-bottom: 1em; }
table { border-collapse: collapse; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e7ec; text-align: left; }
th { background: #eef2f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.processing td.state { color: #1b7f3b; font-weight: 600; }
tr.halted td.halted { color: #a86b00; font-weight: 600; }
tr.late td.age { color: #b3261e; font-weight: 600; }
button { font: inherit; padding: 2px 8px; margin-right: 2px; cursor: pointer; }
td.controls { white-space: nowrap; }
.cols { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2.5em; }
#status th, #status td { padding: 2px 10px; }
#flash { min-height: 1.3em; color: #4a6fa5; }
#events li, #transcript li {
  font-family: ui-monospace, monospace; margin: 2px 0; white-space: pre-wrap;
}
.kind { color: #4a6fa5; } .failed { color: #b3261e; }
#graph { border: 1px solid #e3e7ec; background: #fff; display: inline-block; }
</style></head>
<body>{body}<script src="/static/console.js"></script></body></html>
"""

_FLEET_BODY = """<h1>genagent console</h1>
<div class="sub">node <span id="node">?</span> &middot; <span id="count">0</span> agent(s)
&middot; updated <span id="updated">never</span></div>
<div id="flash"></div>
<table id="fleet"><thead><tr><th>agent</th><th>state</th><th>halted</th><th>queue</th>
<th>turn age / watchdog</th><th>turns</th><th>tokens in/out</th><th>cost</th>
<th>restarts</th><th>node</th><th>controls</th></tr></thead><tbody></tbody></table>
<h2>Who notified whom</h2><div id="graph"></div>
"""

_AGENT_BODY = """<h1>agent <span id="agent-name">{name}</span></h1>
<div class="sub"><a href="/">&larr; fleet</a></div>
<div id="flash"></div>
<div id="controls"></div>
<div class="cols"><div><h2>Status</h2><table id="status"><tbody></tbody></table></div>
<div><h2>Current turn</h2><div id="current-prompt" class="sub"></div><ol id="events"></ol>
<h2>Transcript (turns seen by this console)</h2><ol id="transcript"></ol></div></div>
"""

_SCRIPT = r"""
"use strict";
const token = document.querySelector('meta[name="genagent-token"]').content;
const page = document.querySelector('meta[name="genagent-page"]').content;
const ACTIONS = ["interrupt", "halt", "resume", "stop"];

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function age(row) {
  if (row.current_elapsed === null || row.current_elapsed === undefined) return "-";
  const limit = row.watchdog === null ? "none" : row.watchdog + "s";
  return row.current_elapsed.toFixed(1) + "s/" + limit;
}

async function act(action, name) {
  const flash = document.getElementById("flash");
  const url = "/api/agent/" + action + "?name=" + encodeURIComponent(name);
  const reply = await fetch(url, {method: "POST", headers: {"X-Genagent-Token": token}});
  const data = await reply.json();
  flash.textContent = data.ok ? action + " " + name + ": done" : data.error;
  flash.className = data.ok ? "" : "failed";
  refresh();
}

function controls(name) {
  const cell = el("td", {class: "controls"});
  for (const action of ACTIONS) {
    const button = el("button", {class: "action", "data-action": action}, action);
    button.addEventListener("click", () => act(action, name));
    cell.appendChild(button);
  }
  return cell;
}

const COLUMNS = [
  ["state", r => r.state, ""],
  ["halted", r => r.halted ? "halted" : (r.halt_pending ? "pending" : "no"), ""],
  ["queued", r => String(r.queued), "num"], ["age", age, "num"],
  ["turns", r => String(r.turns), "num"],
  ["tokens", r => r.input_tokens + "/" + r.output_tokens, "num"],
  ["cost", r => r.cost_usd === null ? "-" : "$" + r.cost_usd.toFixed(4), "num"],
  ["restarts", r => String(r.restarts), "num"], ["node", r => r.node, ""],
];

function renderFleet(data) {
  document.getElementById("node").textContent = data.node;
  document.getElementById("count").textContent = data.agents.length;
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  const body = document.querySelector("#fleet tbody");
  const seen = new Set();
  for (const row of data.agents) {
    seen.add(row.name);
    let tr = body.querySelector('tr[data-agent="' + CSS.escape(row.name) + '"]');
    if (!tr) {
      tr = el("tr", {"data-agent": row.name});
      const link = el("a", {href: "/agent?name=" + encodeURIComponent(row.name)}, row.name);
      const first = el("td", {class: "name"}); first.appendChild(link); tr.appendChild(first);
      for (const [cls, , align] of COLUMNS) tr.appendChild(el("td", {class: cls + " " + align}));
      tr.appendChild(controls(row.name));
      body.appendChild(tr);
    }
    if (row.error) { tr.querySelector("td.state").textContent = row.error; continue; }
    for (const [cls, value] of COLUMNS) tr.querySelector("td." + cls).textContent = value(row);
    tr.classList.toggle("processing", row.state === "processing");
    tr.classList.toggle("halted", !!row.halted);
    tr.classList.toggle("late", row.watchdog !== null && row.current_elapsed !== null
                        && row.current_elapsed >= 0.8 * row.watchdog);
  }
  for (const tr of Array.from(body.querySelectorAll("tr"))) {
    if (!seen.has(tr.dataset.agent)) tr.remove();
  }
}

async function refreshGraph() {
  const reply = await fetch("/api/graph.svg");
  if (reply.ok) document.getElementById("graph").innerHTML = await reply.text();
}

function eventLine(event) {
  const li = el("li");
  li.appendChild(el("span", {class: "kind"}, event.kind + " "));
  const detail = event.text || event.name || event.message || event.output || "";
  li.appendChild(document.createTextNode(detail));
  return li;
}

function agentName() { return new URLSearchParams(location.search).get("name") || ""; }

function renderAgent(data) {
  const body = document.querySelector("#status tbody");
  body.textContent = "";
  if (!data.status) { body.appendChild(el("tr", {}, "no such agent (stopped?)")); }
  else {
    for (const [key, value] of Object.entries(data.status)) {
      const tr = el("tr", {"data-field": key});
      tr.appendChild(el("th", {}, key));
      const shown = value === null ? "-"
        : (typeof value === "number" && !Number.isInteger(value)) ? value.toFixed(2)
        : String(value);
      tr.appendChild(el("td", {class: key}, shown));
      body.appendChild(tr);
    }
  }
  const list = document.getElementById("transcript");
  list.textContent = "";
  for (const turn of data.transcript) {
    const li = el("li", {class: turn.state});
    let line = "> " + turn.prompt + "\n" + (turn.text || "") + "\n[" + turn.state;
    if (turn.duration_ms) line += ", " + (turn.duration_ms / 1000).toFixed(2) + "s";
    if (turn.error) line += ", " + turn.error;
    li.textContent = line + "]";
    list.appendChild(li);
  }
}

function streamAgent() {
  const events = document.getElementById("events");
  const prompt = document.getElementById("current-prompt");
  const source = new EventSource("/api/agent/stream?name=" + encodeURIComponent(agentName()));
  source.onmessage = (message) => {
    const item = JSON.parse(message.data);
    if (item.type === "snapshot") {
      events.textContent = "";
      if (item.turn) {
        prompt.textContent = "> " + item.turn.prompt;
        for (const event of item.turn.events) events.appendChild(eventLine(event));
      } else prompt.textContent = "(idle)";
    } else if (item.type === "turn_start") {
      events.textContent = ""; prompt.textContent = "> " + item.turn.prompt;
    } else if (item.type === "event") {
      events.appendChild(eventLine(item.event));
    } else if (item.type === "turn_end") {
      events.appendChild(el("li", {class: item.turn.state}, "[turn " + item.turn.state + "]"));
      refresh();
    } else {
      const from = item.from ? " from " + item.from : "";
      events.appendChild(el("li", {class: "kind"}, "[" + item.type + from + "]"));
    }
  };
}

async function refresh() {
  try {
    if (page === "fleet") {
      const reply = await fetch("/api/fleet");
      renderFleet(await reply.json());
    } else {
      const reply = await fetch("/api/agent?name=" + encodeURIComponent(agentName()));
      renderAgent(await reply.json());
    }
  } catch (error) {
    document.getElementById("flash").textContent = "console unreachable: " + error;
  }
}

if (page === "fleet") {
  refresh(); refreshGraph();
  setInterval(refresh, 250); setInterval(refreshGraph, 1000);
} else {
  const holder = document.getElementById("controls");
  for (const action of ACTIONS) {
    const button = el("button", {class: "action", "data-action": action}, action);
    button.addEventListener("click", () => act(action, agentName()));
    holder.appendChild(button);
  }
  refresh(); streamAgent(); setInterval(refresh, 1000);
}
"""
