"""The web console: a live fleet table, per-agent transcripts, controls and the comms graph.

``genagent console`` attaches to a node and serves, with Starlette on uvicorn (the
``console`` extra: ``pip install 'genagent-thespian[console]'``):

* ``/``: the fleet table (polled from ``/api/fleet`` a few times a second) with failure
  markers, the last error, and interrupt / halt / resume / stop buttons enabled by each
  agent's state (stop asks for confirmation), and the communication graph
  (``/api/graph.svg``). When the node stops answering, ``/api/fleet`` says so within 2 s
  (``503``) and the page shows "node unreachable";
* ``/agent?name=N``: one agent's status and its transcript, one entry per turn assembled
  from the turn's events (text as text, each tool call a collapsible block with its input
  and output, retries and errors highlighted), the running turn updated live from
  Server-Sent Events (``/api/agent/stream?name=N``);
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

The threads and the path of what a browser sees::

    agents --telemetry--> TelemetryHub --> bridge thread --> _Observer.handle (under a lock)
                                                              |- transcripts, graph edges
                                                              '- per-viewer queues
    browser <--SSE-- api_stream (event loop) <-- to_thread(queue.get, 0.5 s) <-'
    browser --GET /api/fleet--> event loop --> call threads (4) --> list_agents, status
    browser --POST control + token--> event loop --> call threads --> interrupt/halt/...

Why a small pool of call threads: every thread that talks to the actor system keeps its
own Thespian endpoint (``_api/system.py``), so a thread per request would leak endpoints;
and no actor call may run on the event loop, which would freeze every page while one
node call waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import math
import queue
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar, cast

from .._api.client import halt, interrupt, resume, stop
from .._api.system import AgentSystem
from .._api.telemetry import attach, detach
from .._core.errors import GenAgentError, InvalidOption, SystemNotRunning
from .._core.turn import Event, Usage
from .._core.types import Document, Metadata
from .._nodes.node import port_open
from ._fleet import fleet_rows, state_label
from ._turn_view import summarize

if TYPE_CHECKING:  # the console extra: imported for real only when a console starts
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Console", "assemble", "render_graph_svg"]

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
_PARTS_PER_TURN = 500
_TEXT_LIMIT = 20_000
_FIELD_LIMIT = 4000
_OPERATOR = "(operator)"
_NODE_DEADLINE = 2.0  # seconds before a fleet request says "node unreachable"

#: What a console call returns (the client function's own result).
T = TypeVar("T")


def _clip(value: object, limit: int = _FIELD_LIMIT) -> str:
    """A value as text of at most ``limit`` characters, so one huge prompt cannot bloat a page."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def event_json(event: object) -> Document:
    """Return the displayable part of a turn event (kind, text, tool name, message).

    Every value is cut to a size a page can hold (a tool's output can be megabytes) and
    made JSON-safe; anything else in the event stays out of the browser.
    """
    if not isinstance(event, Event):
        return {"kind": "unknown", "text": _clip(event)}
    data = event.data
    shown: Document = {"kind": str(event.kind)}
    for key in ("text", "name", "message", "stop_reason", "model", "id", "tool_use_id"):
        value = data.get(key)
        if value is not None:
            shown[key] = _clip(value)
    for key in ("attempt", "delay_ms", "status_code", "is_error", "exit_code"):
        if data.get(key) is not None:
            shown[key] = data[key]
    if "input" in data:
        shown["input"] = _clip(json.dumps(data["input"], default=str, ensure_ascii=False))
        shown["summary"] = summarize(data["input"], 80)
    if "output" in data:
        shown["output"] = _clip(data["output"])
    return shown


def assemble(parts: list[Document], shown: Document) -> None:
    """Fold one displayable event into a turn's parts, the way a reader wants the turn.

    Consecutive text fragments become one ``text`` part; a ``tool_use`` becomes a ``tool``
    part that its ``tool_result`` completes; ``retry``, ``warning`` and ``error`` events are
    parts of their own. Everything else (session, usage, result bookkeeping) is left out.
    """
    kind = shown.get("kind")
    if kind == "text_delta":
        if parts and parts[-1]["type"] == "text":
            if len(parts[-1]["text"]) < _TEXT_LIMIT:
                parts[-1]["text"] += shown.get("text", "")
        elif len(parts) < _PARTS_PER_TURN:
            parts.append({"type": "text", "text": shown.get("text", "")})
    elif kind == "tool_use" and len(parts) < _PARTS_PER_TURN:
        parts.append(
            {
                "type": "tool",
                "id": shown.get("id"),
                "name": shown.get("name", "tool"),
                "summary": shown.get("summary", ""),
                "input": shown.get("input", ""),
                "output": None,
                "is_error": False,
            }
        )
    elif kind == "tool_result":
        for part in reversed(parts):
            if part["type"] == "tool" and part["id"] == shown.get("tool_use_id"):
                part["output"] = shown.get("output", "")
                part["is_error"] = bool(shown.get("is_error"))
                break
    elif kind in ("retry", "warning", "error") and len(parts) < _PARTS_PER_TURN:
        parts.append({"type": kind, "text": _describe(shown)})


def _describe(shown: Document) -> str:
    """One line for a retry, warning or error in a transcript: what happened, and for a retry,
    which attempt and how long until it.
    """
    if shown.get("kind") == "retry":
        attempt = shown.get("attempt")
        delay = shown.get("delay_ms")
        when = f" in {float(delay) / 1000:.1f}s" if delay is not None else ""
        return f"the provider retries{f' {attempt}' if attempt else ''}{when}: " + str(
            shown.get("message") or shown.get("status_code") or ""
        )
    return str(shown.get("message") or shown.get("text") or shown.get("kind"))


class _Observer:
    """Builds transcripts, current-turn events and the comms graph from telemetry."""

    def __init__(self) -> None:
        """The console's view of telemetry: recent turns per agent, the notify graph, live
        streams.
        """
        self._lock = threading.Lock()
        self.transcripts: dict[str, deque[Document]] = {}
        self.edges: Counter[tuple[str, str]] = Counter()
        self._subscribers: dict[str, list[queue.Queue[Document]]] = {}

    def handle(self, name: str, measurements: dict[str, float], metadata: Metadata) -> None:
        """Fold one telemetry event into the transcripts and graph, and push it to live viewers.

        It runs for every telemetry event of the fleet, so it only updates in-memory
        structures under a lock; the browser streams read from per-viewer queues.
        """
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
                started: Document = {
                    "ref": ref,
                    "prompt": _clip(metadata.get("prompt", "")),
                    "origin": metadata.get("origin"),
                    "text": "",
                    "state": "running",
                    "started": time.time(),
                    "parts": [],
                }
                turns.append(started)
                self._publish(agent, {"type": "turn_start", "turn": _summary(started)})
                return
            turn: Document | None = next((t for t in reversed(turns) if t["ref"] == ref), None)
            if name == "turn.event" and turn is not None:
                shown = event_json(metadata.get("event"))
                assemble(turn["parts"], shown)
                if shown["kind"] == "text_delta" and len(turn["text"]) < _TEXT_LIMIT:
                    turn["text"] += shown.get("text", "")
                self._publish(agent, {"type": "event", "ref": ref, "event": shown})
            elif name in ("prompt.stop", "prompt.error") and turn is not None:
                turn["state"] = "completed" if name == "prompt.stop" else "failed"
                turn["duration_ms"] = measurements.get("duration_ms")
                if name == "prompt.error":
                    turn["error"] = f"{metadata.get('reason')}: {_clip(metadata.get('error'))}"
                usage = cast("Usage | None", metadata.get("usage"))  # prompt.stop carries one
                if usage is not None:
                    turn["tokens"] = [usage.input_tokens, usage.output_tokens]
                self._publish(agent, {"type": "turn_end", "turn": _summary(turn)})
            elif name not in ("turn.event", "prompt.stop", "prompt.error"):
                self._publish(agent, {"type": name})

    def _publish(self, agent: str, item: Document) -> None:
        """Offer an item to every viewer of ``agent``; a viewer whose queue is full misses it.

        Dropping for a slow browser is better than blocking telemetry delivery, which would
        delay every other viewer and every other telemetry handler.
        """
        for subscriber in self._subscribers.get(agent, []):
            with contextlib.suppress(queue.Full):
                subscriber.put_nowait(item)

    def subscribe(self, agent: str) -> tuple[queue.Queue[Document], Document | None]:
        """Return a queue of the agent's live items and its running turn (with its events)."""
        subscriber: queue.Queue[Document] = queue.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.setdefault(agent, []).append(subscriber)
            turns = self.transcripts.get(agent)
            current = turns[-1] if turns and turns[-1]["state"] == "running" else None
            snapshot = _copy(current) if current else None
        return subscriber, snapshot

    def unsubscribe(self, agent: str, subscriber: queue.Queue[Document]) -> None:
        """Drop a viewer's queue; a viewer already gone is not an error."""
        with self._lock, contextlib.suppress(ValueError, KeyError):
            self._subscribers[agent].remove(subscriber)

    def transcript(self, agent: str) -> list[Document]:
        """Copies of the agent's recent turns, taken under the lock (the telemetry thread
        writes).
        """
        with self._lock:
            return [_copy(turn) for turn in self.transcripts.get(agent, [])]

    def graph(self) -> dict[tuple[str, str], int]:
        """A copy of the notify graph's edge counts, taken under the lock."""
        with self._lock:
            return dict(self.edges)


def _summary(turn: Document) -> Document:
    """A turn without its parts: what the fleet and turn-end messages need (small)."""
    return {k: v for k, v in turn.items() if k != "parts"}


def _copy(turn: Document) -> Document:
    """A copy of ``turn`` deep enough to read outside the lock while the observer appends."""
    return dict(turn, parts=[dict(part) for part in turn["parts"]])


def render_graph_svg(agents: list[str], edges: dict[tuple[str, str], int]) -> str:
    """Draw who notified whom as an SVG: agents on a circle, arrows labelled with counts.

    Names are written under their circle (on a white backing, cut at 18 characters with the
    full name as a tooltip), so long names never spill over circles or arrows.
    """
    names = sorted(set(agents) | {n for edge in edges for n in edge})
    width, height = 600, 420
    centre_x, centre_y = width / 2, height / 2 - 8
    radius = min(width, height) / 2 - 70
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
    node_radius = 16
    for (source, target), count in sorted(edges.items()):
        (x1, y1), (x2, y2) = positions[source], positions[target]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        ux, uy = (x2 - x1) / length, (y2 - y1) / length
        # Offset both directions of a pair sideways so A->B and B->A do not overlap.
        ox, oy = -uy * 6, ux * 6
        sx, sy = x1 + ux * node_radius + ox, y1 + uy * node_radius + oy
        ex, ey = x2 - ux * (node_radius + 2) + ox, y2 - uy * (node_radius + 2) + oy
        parts.append(
            f'<line class="edge" data-from="{html.escape(source)}" '
            f'data-to="{html.escape(target)}" x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" '
            f'y2="{ey:.1f}" stroke="#5b6b7f" stroke-width="{min(6, 1 + count):.0f}" '
            'marker-end="url(#arrow)"/>'
        )
        mx, my = (sx + ex) / 2 + ox * 2, (sy + ey) / 2 + oy * 2
        parts.append(
            f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="9" fill="#fff" stroke="#5b6b7f"/>'
            f'<text class="count" x="{mx:.1f}" y="{my + 4:.1f}" font-size="11" '
            f'text-anchor="middle" fill="#334">{count}</text>'
        )
    for name, (x, y) in positions.items():
        fill = "#f3e6c4" if name == _OPERATOR else "#dbe8f6"
        label = name if len(name) <= 18 else name[:17] + "…"
        parts.append(
            f'<g class="node" data-agent="{html.escape(name)}"><title>{html.escape(name)}</title>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{node_radius}" fill="{fill}" '
            f'stroke="#4a6fa5" stroke-width="2"/>'
            f'<text class="label" x="{x:.1f}" y="{y + node_radius + 15:.1f}" font-size="12" '
            f'text-anchor="middle" paint-order="stroke" stroke="#fff" stroke-width="4" '
            f'fill="#1d2733">{html.escape(label)}</text></g>'
        )
    if not names:
        parts.append('<text x="20" y="30" fill="#667">no agents yet</text>')
    parts.append("</svg>")
    return "".join(parts)


class Console:
    """The console's web server (Starlette on uvicorn, in a thread), attached to one node.

    Example:
        >>> console = Console(system, port=0)   # doctest: +SKIP
        >>> console.start(); print(console.url); console.close()
    """

    def __init__(
        self,
        system: AgentSystem,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        node_host: str = "127.0.0.1",
    ) -> None:
        """Bind the console's socket now, so the port is known (and taken) before serving starts.

        A fresh token is made for each run: control actions need it, and it is only put in the page
        served to a browser on the bound address. ``node_host`` is the address the node listens on
        (checked to tell a stopped node at once).
        """
        try:
            import uvicorn
        except ImportError:
            raise InvalidOption(
                "the web console needs the console extra: pip install 'genagent-thespian[console]'"
            ) from None
        self.system = system
        self._node_host = node_host
        self.token = secrets.token_urlsafe(32)
        self.observer = _Observer()
        self._handler_id = f"genagent-console-{secrets.token_hex(6)}"
        # Actor calls run on a few long-lived threads: each thread that talks to the system
        # keeps its own endpoint, so one thread per HTTP request would leak endpoints.
        self._calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="console-call")
        self._closing = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)  # connections wait in the backlog until uvicorn serves
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        loopback = host in ("127.0.0.1", "localhost", "::1")
        self.allowed_hosts: frozenset[str] | None = (
            frozenset(f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]"))
            if loopback
            else None
        )
        config = uvicorn.Config(
            _build_app(self), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The console's address."""
        shown = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{shown}:{self.port}/"

    def start(self) -> None:
        """Subscribe to telemetry and serve in a background thread.

        Telemetry first: a turn that starts while the server comes up is already in the
        transcripts. The socket was bound in ``__init__``, so a browser that connects
        early waits in the backlog instead of being refused.
        """
        attach(self._handler_id, _TELEMETRY, self.observer.handle, system=self.system)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="genagent-console",
            daemon=True,
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until :meth:`close` (or Ctrl-C in the main thread)."""
        while not self._closing.wait(0.5):
            pass

    def close(self) -> None:
        """Stop serving and detach from telemetry (idempotent).

        Detaching needs the node; when it is gone the step is skipped, so closing the
        console after its node stopped is immediate. Calls still queued are cancelled.
        """
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self._socket.close()
        # Unsubscribing needs the node; when it is gone, waiting for it only delays the exit.
        port = self.system.admin_port
        if port is None or port_open(port, host=self._node_host):
            with contextlib.suppress(GenAgentError):
                detach(self._handler_id, system=self.system)
        self._calls.shutdown(wait=False, cancel_futures=True)

    @property
    def closing(self) -> bool:
        """Whether the console is shutting down (streams end)."""
        return self._closing.is_set()

    def node_answers(self) -> bool:
        """Whether the node accepts connections (refused at once when it is down)."""
        port = self.system.admin_port
        return port is None or port_open(port, host=self._node_host, timeout=0.5)

    async def call(
        self, fn: Callable[..., T], *args: object, timeout: float = 60.0, **kwargs: object
    ) -> T:
        """Run an actor-system call on the console's call threads and await its result.

        Bounded by ``timeout``: a page waiting on a node that stopped answering gets an
        error rather than a request that never ends.
        """
        future = self._calls.submit(fn, *args, system=self.system, **kwargs)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def fleet(self) -> list[Document]:
        """The fleet table's rows.

        Raises:
            _NodeUnreachable: the node refused the connection, did not answer within 2 s, or
                is stopping (its port still open, its admin gone).
        """
        if not await asyncio.to_thread(self.node_answers):
            raise _NodeUnreachable("the node refuses connections (stopped?)")
        future = self._calls.submit(fleet_rows, self.system)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), _NODE_DEADLINE)
        except TimeoutError:
            raise _NodeUnreachable(f"the node did not answer within {_NODE_DEADLINE:g}s") from None
        except SystemNotRunning as exc:  # a stopping node still accepts, then refuses the call
            raise _NodeUnreachable(exc.message) from None


class _NodeUnreachable(Exception):
    """The node does not answer: the fleet table cannot be refreshed."""


_ACTIONS: dict[str, Callable[[str], object]] = {
    "interrupt": interrupt,
    "halt": halt,
    "resume": resume,
    "stop": stop,
}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    ),
}


def _build_app(console: Console) -> ASGIApp:
    """The Starlette application: pages, the JSON API, the event stream, the controls."""
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    def json_reply(data: object, status: int = 200) -> Response:
        """A JSON response with the console's security headers on every reply."""
        body = json.dumps(data, default=str)
        return Response(body, status, headers=_SECURITY_HEADERS, media_type="application/json")

    def page(body: str, kind: str) -> Response:
        """An HTML page carrying this console's token, which the page's scripts send back with
        control actions (see :func:`control`).
        """
        text = _PAGE.replace("{token}", console.token).replace("{kind}", kind)
        return HTMLResponse(text.replace("{body}", body), headers=_SECURITY_HEADERS)

    async def fleet_page(request: Request) -> Response:
        """The fleet page: static HTML; its script polls ``/api/fleet``."""
        return page(_FLEET_BODY, "fleet")

    async def agent_page(request: Request) -> Response:
        """One agent's page; the name is HTML-escaped since it comes from the URL."""
        name = request.query_params.get("name", "")
        return page(_AGENT_BODY.replace("{name}", html.escape(name)), "agent")

    async def script(request: Request) -> Response:
        """The page script, served from the console itself so the CSP can forbid inline scripts."""
        return Response(_SCRIPT, headers=_SECURITY_HEADERS, media_type="text/javascript")

    async def api_fleet(request: Request) -> Response:
        """The fleet as JSON; 503 when the node cannot be reached, so the page can say so."""
        node = f"127.0.0.1:{console.system.admin_port}"
        try:
            rows = await console.fleet()
        except _NodeUnreachable as exc:
            return json_reply({"ok": False, "node": node, "error": f"node unreachable: {exc}"}, 503)
        # The state a person reads is decided once, for `top` and the console alike.
        labelled = [{**row, "label": state_label(row)} for row in rows]
        return json_reply({"ok": True, "node": node, "agents": labelled})

    async def api_graph(request: Request) -> Response:
        """The notify graph as JSON edges (from, to, count)."""
        edges = console.observer.graph()
        listed = [{"from": a, "to": b, "count": n} for (a, b), n in edges.items()]
        return json_reply({"edges": listed})

    async def api_graph_svg(request: Request) -> Response:
        """The notify graph drawn as SVG; with the node unreachable, the edges seen so far."""
        try:
            agents = [row["name"] for row in await console.fleet()]
        except _NodeUnreachable:
            agents = []
        svg = render_graph_svg(agents, console.observer.graph())
        return Response(svg, headers=_SECURITY_HEADERS, media_type="image/svg+xml")

    async def api_agent(request: Request) -> Response:
        """One agent's status row and recent transcript; 404 for an unknown name."""
        name = request.query_params.get("name")
        if not name:
            return json_reply({"ok": False, "error": "name is required"}, 400)
        try:
            row = next((r for r in await console.fleet() if r["name"] == name), None)
        except _NodeUnreachable as exc:
            return json_reply({"ok": False, "error": f"node unreachable: {exc}"}, 503)
        data = {
            "ok": row is not None,
            "status": row,
            "transcript": console.observer.transcript(name),
        }
        return json_reply(data, 200 if row else 404)

    async def api_stream(request: Request) -> Response:
        """Server-sent events of one agent's turns: a snapshot of the current turn, then each event.

        The queue is read on a worker thread with a short timeout so the stream notices the console
        closing; the viewer is unsubscribed however the stream ends.
        """
        name = request.query_params.get("name")
        if not name:
            return json_reply({"ok": False, "error": "name is required"}, 400)
        subscriber, current = console.observer.subscribe(name)

        async def items() -> AsyncIterator[dict[str, str]]:
            """The event stream: the snapshot first, then each queued item, until the console
            closes.
            """
            try:
                yield {"data": json.dumps({"type": "snapshot", "turn": current}, default=str)}
                while not console.closing:
                    try:
                        item = await asyncio.to_thread(subscriber.get, True, 0.5)
                    except queue.Empty:
                        continue
                    yield {"data": json.dumps(item, default=str)}
            finally:
                console.observer.unsubscribe(name, subscriber)

        return EventSourceResponse(items(), ping=15, headers={"Cache-Control": "no-store"})

    async def control(request: Request) -> Response:
        """Run a control action (interrupt, halt, resume, stop) after checking the token.

        The token header defeats cross-site requests: another site's page can neither read the token
        nor send the header without a CORS preflight, which the console never grants.
        """
        sent = request.headers.get("x-genagent-token", "")
        if not hmac.compare_digest(sent.encode(), console.token.encode()):
            return json_reply({"ok": False, "error": "missing or wrong token"}, 403)
        action = request.path_params["action"]
        name = request.query_params.get("name")
        if action not in _ACTIONS or not name:
            return json_reply({"ok": False, "error": "no such action"}, 404)
        try:
            result: object = await console.call(_ACTIONS[action], name)
        except GenAgentError as exc:
            return json_reply(_error(exc), 404 if exc.reason_kind == "not_found" else 409)
        return json_reply({"ok": True, "action": action, "agent": name, "ref": result})

    async def not_found(request: Request, exc: Exception) -> Response:
        """Any unknown path: a JSON 404 with the security headers, not Starlette's page."""
        return json_reply({"ok": False, "error": "no such page"}, 404)

    app = Starlette(
        routes=[
            Route("/", fleet_page),
            Route("/agent", agent_page),
            Route("/static/console.js", script),
            Route("/api/fleet", api_fleet),
            Route("/api/graph", api_graph),
            Route("/api/graph.svg", api_graph_svg),
            Route("/api/agent", api_agent),
            Route("/api/agent/stream", api_stream),
            Route("/api/agent/{action}", control, methods=["POST"]),
        ],
        exception_handlers={404: not_found},
    )

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse requests for another Host (DNS rebinding) before they reach a route."""
        if scope["type"] == "http" and console.allowed_hosts is not None:
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            if host not in console.allowed_hosts:
                refused = json_reply({"ok": False, "error": "unexpected Host"}, 403)
                await refused(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def _error(exc: GenAgentError) -> Document:
    """A control's failure as JSON: the error's type and message (they carry no secret)."""
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
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e7ec; text-align: left; }
th { background: #eef2f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.processing td.state { color: #1b7f3b; font-weight: 600; }
tr.halted td.state { color: #a86b00; font-weight: 600; }
tr.hibernated td.state { color: #667; font-style: italic; }
tr.late td.age { color: #b3261e; font-weight: 600; }
td.failures.bad { color: #fff; background: #b3261e; font-weight: 700; border-radius: 3px; }
td.retries.some { color: #8a5a00; font-weight: 600; }
th { white-space: nowrap; }
td.last_error { max-width: 15em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
  color: #b3261e; }
button { font: inherit; font-size: 12px; padding: 1px 6px; margin-right: 2px; cursor: pointer; }
button:disabled { cursor: default; opacity: .35; }
button[data-action="stop"]:not(:disabled) { color: #b3261e; }
td.controls { white-space: nowrap; }
#unreachable { display: none; background: #b3261e; color: #fff; padding: 6px 12px;
  border-radius: 4px; margin-bottom: .8em; font-weight: 600; }
body.down #unreachable { display: block; }
body.down #fleet tbody { opacity: .45; }
.cols { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2.5em; }
#status th, #status td { padding: 2px 10px; }
#flash { min-height: 1.3em; color: #4a6fa5; }
#flash.failed { color: #b3261e; }
#turns { list-style: none; padding: 0; margin: 0; max-width: 60em; }
.turn { border: 1px solid #e3e7ec; border-left: 4px solid #9bb0c9; border-radius: 4px;
  background: #fff; margin: 0 0 .8em; padding: .5em .8em; }
.turn.running { border-left-color: #1b7f3b; }
.turn.failed { border-left-color: #b3261e; }
.turn .prompt { color: #4a6fa5; font-weight: 600; white-space: pre-wrap; }
.turn .meta { color: #667; font-size: 12px; margin-top: .3em; }
.part.text { white-space: pre-wrap; margin: .4em 0; line-height: 1.45; }
details.tool { margin: .3em 0; border: 1px solid #dfe5ec; border-radius: 4px; background: #f6f8fa; }
details.tool > summary { cursor: pointer; padding: 2px 8px; font-family: ui-monospace, monospace; }
details.tool.error > summary { color: #b3261e; }
details.tool pre { margin: 0; padding: 4px 10px; white-space: pre-wrap; font-size: 12px;
  border-top: 1px solid #dfe5ec; }
.part.error, .turn .error { background: #fdecea; color: #8c1d18; border: 1px solid #f3b8b3;
  border-radius: 4px; padding: 4px 8px; margin: .4em 0; white-space: pre-wrap; }
.part.retry, .part.warning { background: #fff6e0; color: #7a5200; border-radius: 4px;
  padding: 2px 8px; margin: .3em 0; }
#graph { border: 1px solid #e3e7ec; background: #fff; display: inline-block; }
</style></head>
<body>{body}<script src="/static/console.js"></script></body></html>
"""

_FLEET_BODY = """<h1>genagent console</h1>
<div class="sub">node <span id="node">?</span> &middot; <span id="count">0</span> agent(s)
&middot; updated <span id="updated">never</span></div>
<div id="unreachable">node unreachable</div>
<div id="flash"></div>
<table id="fleet"><thead><tr><th>agent</th><th>state</th><th>queue</th>
<th title="the running turn's age / its watchdog">turn</th><th>turns</th><th>failed</th>
<th>retries</th><th>last error</th><th title="tokens in / out">tokens</th>
<th>restarts</th><th>node</th><th>controls</th></tr></thead>
<tbody></tbody></table>
<h2>Who notified whom</h2><div id="graph"></div>
"""

_AGENT_BODY = """<h1>agent <span id="agent-name">{name}</span></h1>
<div class="sub"><a href="/">&larr; fleet</a></div>
<div id="unreachable">node unreachable</div>
<div id="flash"></div>
<div id="controls"></div>
<div class="cols"><div><h2>Status</h2><table id="status"><tbody></tbody></table></div>
<div><h2>Transcript <span class="sub">(turns seen by this console; the running turn
updates live)</span></h2><ol id="turns"></ol></div></div>
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

// Which controls make sense in which state: the others are disabled, not hidden.
function allowed(row, action) {
  if (!row || row.error) return action === "stop";
  if (action === "interrupt") return row.state === "processing";
  if (action === "halt") return !row.halted && !row.halt_pending;
  if (action === "resume") return !!(row.halted || row.halt_pending);
  return true;
}

async function act(action, name) {
  if (action === "stop" && !window.confirm("Stop agent " + name + " for good? "
      + "Its queued prompts are answered with AgentStopped.")) return;
  const flash = document.getElementById("flash");
  const url = "/api/agent/" + action + "?name=" + encodeURIComponent(name);
  const reply = await fetch(url, {method: "POST", headers: {"X-Genagent-Token": token}});
  const data = await reply.json();
  flash.textContent = data.ok ? action + " " + name + ": done" : data.error;
  flash.className = data.ok ? "" : "failed";
  refresh();
}

function buttons(holder, name) {
  for (const action of ACTIONS) {
    const button = el("button", {class: "action", "data-action": action}, action);
    button.addEventListener("click", () => act(action, name));
    holder.appendChild(button);
  }
}

function enableButtons(holder, row) {
  for (const button of holder.querySelectorAll("button.action")) {
    button.disabled = !allowed(row, button.dataset.action);
  }
}

const COLUMNS = [
  ["state", r => r.label, ""],
  ["queued", r => String(r.queued), "num"], ["age", age, "num"],
  ["turns", r => String(r.turns), "num"],
  ["failures", r => String(r.failures), "num"],
  ["retries", r => String(r.retries || 0), "num"],
  ["last_error", r => r.session_lost || r.last_error || "", ""],
  ["tokens", r => r.input_tokens + "/" + r.output_tokens, "num"],
  ["restarts", r => String(r.restarts), "num"], ["node", r => r.node, ""],
];

function renderFleet(data) {
  document.body.classList.remove("down");
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
      const cell = el("td", {class: "controls"}); buttons(cell, row.name); tr.appendChild(cell);
      body.appendChild(tr);
    }
    enableButtons(tr, row);
    if (row.error) {
      tr.querySelector("td.state").textContent = "unreachable";
      tr.querySelector("td.last_error").textContent = row.error;
      continue;
    }
    for (const [cls, value] of COLUMNS) tr.querySelector("td." + cls).textContent = value(row);
    const lastError = tr.querySelector("td.last_error");
    lastError.title = lastError.textContent;
    tr.querySelector("td.failures").classList.toggle("bad", row.failures > 0);
    tr.querySelector("td.retries").classList.toggle("some", (row.retries || 0) > 0);
    tr.classList.toggle("processing", row.state === "processing");
    tr.classList.toggle("halted", !!(row.halted || row.halt_pending));
    tr.classList.toggle("hibernated", row.label === "hibernated");
    tr.classList.toggle("late", row.watchdog !== null && row.current_elapsed !== null
                        && row.current_elapsed >= 0.8 * row.watchdog);
  }
  for (const tr of Array.from(body.querySelectorAll("tr"))) {
    if (!seen.has(tr.dataset.agent)) tr.remove();
  }
}

function nodeDown(message) {
  document.body.classList.add("down");
  document.getElementById("unreachable").textContent = message || "node unreachable";
  for (const button of document.querySelectorAll("button.action")) button.disabled = true;
}

async function getJSON(url) {
  // Two seconds at most: a node that does not answer is shown as unreachable, not waited for.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 2000);
  try {
    const reply = await fetch(url, {signal: controller.signal});
    return [reply.status, await reply.json()];
  } finally { clearTimeout(timer); }
}

async function refreshGraph() {
  const reply = await fetch("/api/graph.svg");
  if (reply.ok) document.getElementById("graph").innerHTML = await reply.text();
}

// ---------------------------------------------------------------- transcript

function toolBlock(part) {
  const details = el("details", {class: "tool", "data-id": part.id || "",
                                 "data-name": part.name, "data-summary": part.summary || ""});
  const summary = el("summary", {}, "");
  details.appendChild(summary);
  details.appendChild(el("pre", {class: "input"}, "input: " + (part.input || "")));
  details.appendChild(el("pre", {class: "output"}, ""));
  fillTool(details, part);
  return details;
}

function fillTool(details, part) {
  const mark = part.output === null || part.output === undefined ? "…"
    : (part.is_error ? "✗" : "✓");
  const summary = details.dataset.summary;
  details.querySelector("summary").textContent =
    mark + " " + details.dataset.name + (summary ? "  " + summary : "");
  details.classList.toggle("error", !!part.is_error);
  details.querySelector("pre.output").textContent =
    part.output === null || part.output === undefined ? "(running)" : "output: " + part.output;
}

function partNode(part) {
  if (part.type === "text") return el("div", {class: "part text"}, part.text);
  if (part.type === "tool") return toolBlock(part);
  return el("div", {class: "part " + part.type}, part.text);
}

function turnMeta(turn) {
  let line = turn.state;
  if (turn.origin) line += " · " + turn.origin;
  if (turn.duration_ms) line += " · " + (turn.duration_ms / 1000).toFixed(2) + "s";
  if (turn.tokens) line += " · " + turn.tokens[0] + " in / " + turn.tokens[1] + " out";
  return line;
}

function turnCard(turn) {
  const li = el("li", {class: "turn " + turn.state, "data-ref": turn.ref || ""});
  li.appendChild(el("div", {class: "prompt"}, "> " + turn.prompt));
  const parts = el("div", {class: "parts"});
  for (const part of turn.parts || []) parts.appendChild(partNode(part));
  li.appendChild(parts);
  if (turn.error) li.appendChild(el("div", {class: "error"}, turn.error));
  li.appendChild(el("div", {class: "meta"}, turnMeta(turn)));
  return li;
}

function cardFor(ref) {
  return document.querySelector('#turns li.turn[data-ref="' + CSS.escape(ref || "") + '"]');
}

// The live counterpart of the server's assemble(): fold one event into a turn card.
function applyEvent(card, event) {
  const parts = card.querySelector(".parts");
  const last = parts.lastElementChild;
  if (event.kind === "text_delta") {
    if (last && last.classList.contains("text")) last.textContent += event.text || "";
    else parts.appendChild(partNode({type: "text", text: event.text || ""}));
  } else if (event.kind === "tool_use") {
    parts.appendChild(toolBlock({id: event.id, name: event.name || "tool",
      summary: event.summary || "", input: event.input || "", output: null}));
  } else if (event.kind === "tool_result") {
    const id = CSS.escape(event.tool_use_id || "");
    const block = parts.querySelector('details.tool[data-id="' + id + '"]');
    if (block) fillTool(block, {output: event.output || "", is_error: !!event.is_error});
  } else if (event.kind === "retry" || event.kind === "warning" || event.kind === "error") {
    let text = event.message || event.kind;
    if (event.kind === "retry") {
      const when = event.delay_ms ? " in " + (event.delay_ms / 1000).toFixed(1) + "s" : "";
      text = "the provider retries" + (event.attempt ? " " + event.attempt : "") + when
        + ": " + (event.message || "");
    }
    parts.appendChild(el("div", {class: "part " + event.kind}, text));
  }
}

function agentName() { return new URLSearchParams(location.search).get("name") || ""; }

function renderStatus(data) {
  document.body.classList.remove("down");
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
  enableButtons(document.getElementById("controls"), data.status);
}

function renderTranscript(turns) {
  const list = document.getElementById("turns");
  list.textContent = "";
  for (const turn of turns) list.appendChild(turnCard(turn));
}

function streamAgent() {
  const list = document.getElementById("turns");
  const source = new EventSource("/api/agent/stream?name=" + encodeURIComponent(agentName()));
  source.onmessage = (message) => {
    const item = JSON.parse(message.data);
    if (item.type === "snapshot") {
      if (item.turn && !cardFor(item.turn.ref)) list.appendChild(turnCard(item.turn));
    } else if (item.type === "turn_start") {
      if (!cardFor(item.turn.ref)) list.appendChild(turnCard(item.turn));
    } else if (item.type === "event") {
      const card = cardFor(item.ref);
      if (card) applyEvent(card, item.event);
    } else if (item.type === "turn_end") {
      const card = cardFor(item.turn.ref);
      if (card) {
        card.className = "turn " + item.turn.state;
        if (item.turn.error) card.insertBefore(el("div", {class: "error"}, item.turn.error),
                                               card.querySelector(".meta"));
        card.querySelector(".meta").textContent = turnMeta(item.turn);
      }
      refresh();
    }
  };
}

async function refresh() {
  try {
    if (page === "fleet") {
      const [status, data] = await getJSON("/api/fleet");
      if (status === 503) nodeDown(data.error); else renderFleet(data);
    } else {
      const [status, data] = await getJSON("/api/agent?name=" + encodeURIComponent(agentName()));
      if (status === 503) nodeDown(data.error); else renderStatus(data);
      return data;
    }
  } catch (error) {
    nodeDown(error.name === "AbortError" ? "node unreachable (no answer within 2s)"
             : "console unreachable: " + error);
  }
  return null;
}

if (page === "fleet") {
  refresh(); refreshGraph();
  setInterval(refresh, 500); setInterval(refreshGraph, 1000);
} else {
  const holder = document.getElementById("controls");
  buttons(holder, agentName());
  refresh().then(data => { if (data) renderTranscript(data.transcript); streamAgent(); });
  setInterval(refresh, 1000);
}
"""
