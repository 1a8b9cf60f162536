"""``genagent mcp``: the fleet of a running node as an MCP server (the ``mcp`` extra).

Tools (every one a thin call of :mod:`genagent_thespian.aio`): ``list_agents``,
``start_agent`` (from a profile of the allow-list only, see ``config``), ``ask``, ``tell``,
``poll``, ``notify``, ``interrupt``, ``halt``, ``resume``, ``status``, ``stop``.

``ask`` runs the prompt as a *tell* (so its outcome stays pollable), follows the turn's
events, sends each text fragment as an MCP progress notification, and waits at most
``wait_seconds`` (bounded by the config): a turn that ends in time returns its answer; a
longer one returns ``{"status": "pending", "request_id": ...}`` for ``poll``.

A failed call is a tool error whose text starts with our error's type name
(``AgentNotFound: no agent has that name (agent='x')``), so a model can tell a missing
agent from a rate limit.

Transports: stdio (the client starts ``genagent mcp``), or Streamable HTTP bound to
loopback behind a bearer token (compared in constant time; never logged).
"""

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .. import aio
from .._core.errors import GenAgentError, InvalidOption
from .._core.turn import TERMINAL_KINDS, EventKind
from ..messages import PollResult, PollState
from .config import McpConfig

if TYPE_CHECKING:  # starlette comes with mcp; only its ASGI type names are used
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DEFAULT_TOKEN_PATH", "build_server", "load_token", "run_http", "run_stdio"]

DEFAULT_TOKEN_PATH = Path.home() / ".config" / "genagent-thespian" / "mcp.token"
#: Seconds between polls while ``ask`` waits (a turn can end without a terminal event
#: reaching the watcher: skipped by ``pre_turn``, crashed worker).
_POLL_INTERVAL = 1.0


def build_server(config: McpConfig) -> MCPServer:
    """The MCP server with the fleet's tools, for the current system (see ``aio``)."""
    server = MCPServer(
        "genagent",
        instructions=(
            "Drive a fleet of long-running LLM agents: list them, start one from an allowed "
            "profile, ask (returns the answer, or a request_id to poll when the turn runs "
            "long), tell/poll, notify, interrupt, halt/resume, status, stop."
        ),
    )

    @server.tool()
    async def list_agents() -> list[dict[str, Any]]:
        """List every agent: name, state (idle/processing), halted, queued prompts."""
        with _typed_errors():
            rows = []
            for name in await aio.list_agents():
                with contextlib.suppress(GenAgentError):  # stopped meanwhile
                    status = await aio.status(name)
                    rows.append(
                        {
                            "name": str(name),
                            "state": status.state,
                            "halted": status.halted,
                            "queued": status.queued,
                        }
                    )
            return rows

    @server.tool()
    async def start_agent(profile: str, name: str, cwd: str | None = None) -> dict[str, Any]:
        """Start agent `name` from an allowed `profile` (see list in the server's config).

        `cwd` must be one of the profile's allowed working directories (default: its first).
        """
        with _typed_errors():
            chosen = config.profiles.get(profile)
            if chosen is None:
                raise InvalidOption(
                    f"no profile {profile!r}; allowed: {sorted(config.profiles)}", agent=name
                )
            impl = chosen.load_impl()
            await aio.start_agent(
                impl, name=name, backend=chosen.backend, **chosen.options_for(cwd)
            )
            return {"name": name, "profile": profile, "backend": chosen.backend}

    @server.tool()
    async def ask(
        agent: str, prompt: str, ctx: Context, wait_seconds: float | None = None
    ) -> dict[str, Any]:
        """Run `prompt` as a turn of `agent`; stream its text as progress; return the answer.

        Waits at most `wait_seconds` (server default and maximum apply). If the turn is still
        running then, returns status "pending" and a request_id: call poll with it later.
        """
        with _typed_errors():
            wait = min(wait_seconds or config.ask_wait, config.max_ask_wait)
            return await _ask(agent, prompt, wait, ctx)

    @server.tool()
    async def tell(agent: str, prompt: str) -> dict[str, Any]:
        """Queue `prompt` at `agent` without waiting; returns the request_id for poll."""
        with _typed_errors():
            return {"status": "pending", "request_id": await aio.tell(agent, prompt)}

    @server.tool()
    async def poll(agent: str, request_id: str) -> dict[str, Any]:
        """Where request `request_id` of `agent` stands: pending, completed (answer) or failed."""
        with _typed_errors():
            return _result(await aio.poll(agent, request_id))

    @server.tool()
    async def notify(agent: str, event: str) -> dict[str, Any]:
        """Deliver `event` to `agent`'s handle_event (JSON is decoded, else a string)."""
        with _typed_errors():
            try:
                decoded: Any = json.loads(event)
            except ValueError:
                decoded = event
            await aio.notify(agent, decoded)
            return {"ok": True}

    @server.tool()
    async def interrupt(agent: str, request_id: str | None = None) -> dict[str, Any]:
        """End `agent`'s running turn (only if it is `request_id`, when given)."""
        with _typed_errors():
            return {"interrupted": await aio.interrupt(agent, request_id)}

    @server.tool()
    async def halt(agent: str) -> dict[str, Any]:
        """Freeze `agent`'s queue after its current turn."""
        with _typed_errors():
            await aio.halt(agent)
            return {"ok": True}

    @server.tool()
    async def resume(agent: str) -> dict[str, Any]:
        """Unfreeze a halted `agent`."""
        with _typed_errors():
            await aio.resume(agent)
            return {"ok": True}

    @server.tool()
    async def status(agent: str) -> dict[str, Any]:
        """A snapshot of `agent`: state, queue, turns, failures, tokens."""
        with _typed_errors():
            snapshot = await aio.status(agent)
            return {
                "name": str(snapshot.name),
                "state": snapshot.state,
                "halted": snapshot.halted,
                "queued": snapshot.queued,
                "current_request_id": snapshot.current_ref,
                "turns": snapshot.turns,
                "failures": snapshot.failures,
                "input_tokens": snapshot.input_tokens,
                "output_tokens": snapshot.output_tokens,
                "backend": snapshot.backend,
            }

    @server.tool()
    async def stop(agent: str) -> dict[str, Any]:
        """Stop `agent` for good (its queued work is answered with AgentStopped)."""
        with _typed_errors():
            await aio.stop(agent)
            return {"ok": True}

    return server


async def _ask(agent: str, prompt: str, wait: float, ctx: Context) -> dict[str, Any]:
    """Tell the agent, relay text deltas as MCP progress, and answer when the turn ends.

    Waiting is bounded by ``wait``: past it the tool answers with the request still pending, and the
    client polls with the returned id. A failed request raises its error, which becomes a tool error
    naming its type.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    fragments = 0
    async with aio.watch(agent) as events:
        ref = await aio.tell(agent, prompt)
        iterator = aiter(events)
        while (remaining := deadline - loop.time()) > 0:
            try:
                turn_event = await asyncio.wait_for(anext(iterator), min(remaining, _POLL_INTERVAL))
            except TimeoutError:
                if (await aio.poll(agent, ref)).done:
                    break
                continue
            except StopAsyncIteration:
                break  # the agent stopped: poll says how the request ended
            if turn_event.ref != ref:
                continue
            event = turn_event.event
            if event.kind == EventKind.TEXT_DELTA:
                fragments += 1
                await ctx.report_progress(fragments, None, str(event.data.get("text", "")))
            elif event.kind in TERMINAL_KINDS:
                break
    result = await aio.poll(agent, ref)
    if result.state is PollState.FAILED and result.error is not None:
        raise result.error
    return _result(result)


def _result(result: PollResult) -> dict[str, Any]:  # Any: a JSON object for the MCP client
    """A poll result as the JSON a tool returns: only plain values, errors by type and text.

    MCP clients are language models and other programs: they get the error's class name to
    branch on, never a pickled exception.
    """
    answer: dict[str, Any] = {"status": str(result.state), "request_id": result.ref}
    if result.response is not None:
        usage = result.response.usage
        answer["text"] = result.response.text
        if usage is not None:
            answer["usage"] = {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            }
    if result.error is not None:
        answer["error"] = {"type": type(result.error).__name__, "message": str(result.error)}
    return answer


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """Turn our errors into MCP tool errors that start with the error's type name."""
    try:
        yield
    except GenAgentError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from None


# =============================================================================== transports


def run_stdio(server: MCPServer) -> None:
    """Serve over stdin/stdout until the client closes them."""
    import anyio

    anyio.run(server.run_stdio_async)


def load_token(path: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """The bearer token: ``$GENAGENT_MCP_TOKEN``, the file ``path``, or a new one.

    A new token is written to :data:`DEFAULT_TOKEN_PATH` (mode 0600) and its path returned,
    so the operator can hand it to the client; the token itself is never printed.
    """
    from_env = os.environ.get("GENAGENT_MCP_TOKEN")
    if from_env:
        return from_env, None
    file = Path(path) if path else DEFAULT_TOKEN_PATH
    if path and not file.exists():
        raise InvalidOption(f"no token file at {os.fspath(file)!r}")
    if file.exists():
        token = file.read_text("utf-8").strip()
        if len(token) < 16:
            raise InvalidOption(f"the token in {os.fspath(file)!r} is shorter than 16 characters")
        return token, file
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token, file


class _BearerToken:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: "ASGIApp", token: str) -> None:
        """Wrap ``app``; the expected header is built once and compared in constant time."""
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: "Scope", receive: "Receive", send: "Send") -> None:
        """Refuse HTTP requests without the bearer token with 401; other scopes pass through.

        Lifespan events carry no headers and must reach the app, or it would never start.
        """
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = b'{"error": "a valid bearer token is required"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


def run_http(server: MCPServer, *, host: str, port: int, token: str) -> None:
    """Serve Streamable HTTP at ``http://host:port/mcp`` behind the bearer ``token``."""
    import anyio
    import uvicorn

    app = _BearerToken(server.streamable_http_app(host=host), token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    print(f"genagent mcp: serving http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    anyio.run(uvicorn_server.serve)
