"""The ``genagent`` command line: run a node, start agents on it, talk to them, watch them.

Usage (``genagent --help`` and ``genagent COMMAND --help`` say more)::

    genagent node start [--port 19500] [--foreground]     start a node (detached by default)
    genagent node stop                                     stop it, leaving no process behind
    genagent start pkg.mod:Class --name a [--backend scripted] [--watchdog 600]
                   [--option key=value ...]               start an agent on the node
    genagent ask a "prompt" [--interrupt]   run a turn, streaming its text, tool calls and
                                    retries (Ctrl-C detaches; --interrupt: Ctrl-C interrupts)
    genagent tell a "prompt"        queue a turn, print its ref
    genagent poll a REF [--wait S]  where a told turn stands
    genagent notify a '{"json": 1}' deliver an event to handle_event
    genagent interrupt a [--ref R] | halt a | resume a | stop a | status a | ls
    genagent top [--once]           a live view of the fleet that fits the terminal
    genagent console [--host 127.0.0.1] [--http-port 19580]   the web console
    genagent demo [--backend scripted|claude|codex|anthropic]  a fleet end to end

Commands find the node through ``--port``, then ``GENAGENT_PORT``, then the state file
``genagent node start`` wrote (see :mod:`genagent_thespian._nodes.node`). Every command takes
``--json`` and then prints one JSON document on stdout. Errors are one line on stderr,
``genagent: error: AgentNotFound: no agent has that name (agent='x')``, with the exit code
telling the kind: 1 failure, 2 usage (bad arguments or options), 3 not found (no such
agent, ref or node), 4 timeout. With ``--json`` the error is also printed on stdout as
``{"ok": false, "error": {...}}``. Set ``GENAGENT_DEBUG=1`` to see the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from types import FrameType
from typing import NoReturn, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from .. import __version__
from .._api.client import (
    halt,
    interrupt,
    notify,
    poll,
    resume,
    start_agent,
    status,
    stop,
    stream_prompt,
    tell,
)
from .._api.system import AgentSystem
from .._core.backend import resolve_backend
from .._core.errors import (
    AgentNotFound,
    AskTimeout,
    GenAgentError,
    InvalidEvent,
    InvalidOption,
    InvalidPrompt,
    RequestNotFound,
    SystemNotRunning,
)
from .._core.turn import Event, Response, Usage
from .._core.types import Document, OptionValue
from .._core.validate import RESTART_TYPES, SPEC_DEFAULTS, check_prompt
from .._nodes import node as _node
from ..messages import Prompt
from ..testing._scripted_agent import ScriptedAgent
from ._fleet import fleet_rows, fleet_sessions, render_top, status_dict, top_frame
from ._turn_view import TurnView

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "ScriptedAgent",
    "UsageError",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4

DEFAULT_CONSOLE_PORT = 19580


class UsageError(Exception):
    """Bad command-line input detected after argparse (exit code 2)."""


def exit_code_for(error: BaseException) -> int:
    """Return the exit code for ``error`` (see the module docstring)."""
    if isinstance(error, AgentNotFound | RequestNotFound | SystemNotRunning):
        return EXIT_NOT_FOUND
    if isinstance(error, TimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, InvalidOption | InvalidPrompt | InvalidEvent | UsageError):
        return EXIT_USAGE
    return EXIT_FAILURE


# ============================================================================ output


class _Output:
    """Where a command's results go: human lines, or one JSON document with ``--json``."""

    def __init__(self, *, as_json: bool) -> None:
        """Show progress only on a terminal and never with ``--json``: a spinner in a pipe or in
        JSON output would corrupt what a script reads.
        """
        self.as_json = as_json
        self.progress_enabled = not as_json and sys.stderr.isatty()

    def line(self, text: str = "") -> None:
        """Print a human line; nothing with ``--json``, whose output is one document only."""
        if not self.as_json:
            print(text, flush=True)

    def document(self, data: object) -> None:
        """Print the command's JSON document (with ``--json`` only), keys sorted for stable
        diffs.
        """
        if self.as_json:
            print(json.dumps(data, default=_json_default, sort_keys=True), flush=True)

    def progress(self, text: str) -> None:
        """Show transient progress on a terminal's stderr (nothing when piped)."""
        if self.progress_enabled:
            sys.stderr.write(f"\r\x1b[2K{text}")
            sys.stderr.flush()

    def clear_progress(self) -> None:
        """Erase the spinner line, so an error message starts at the beginning of a clean line."""
        if self.progress_enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _json_default(value: object) -> object:  # whatever JSON can encode
    """Make the values a command prints JSON-serialisable: usage as a dict, errors by type and
    message, anything else as its text (never a failed ``--json`` run).
    """
    if isinstance(value, Usage):
        return asdict(value)
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    return str(value)


@contextlib.contextmanager
def _spinner(out: _Output, label: str) -> Iterator[Callable[[str], None]]:
    """Show ``label`` and the seconds spent while a block runs (on a terminal only).

    The block is usually one blocking call to the node (start an agent, stop one), so the
    spinner redraws from a daemon thread; the caller may change the label through the
    yielded function. The line is erased afterwards, so an error starts on a clean line.
    """
    started = time.monotonic()
    stopped = threading.Event()
    current = [label]

    def spin() -> None:
        """Redraw the label with the elapsed seconds every 0.2 s until the block ends."""
        while not stopped.wait(0.2):
            out.progress(f"{current[0]} ({time.monotonic() - started:.1f}s)")

    thread = threading.Thread(target=spin, daemon=True) if out.progress_enabled else None
    if thread is not None:
        thread.start()
    try:
        yield lambda text: current.__setitem__(0, text)
    finally:
        stopped.set()
        if thread is not None:
            thread.join()
            out.clear_progress()


# ============================================================================ parsing


def _common() -> argparse.ArgumentParser:
    """The options every subcommand takes, so they work after the subcommand name too.

    ``SUPPRESS`` keeps a subcommand's unset option from overwriting the same option given before the
    subcommand (``genagent --json ls`` and ``genagent ls --json`` both work).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
    )
    common.add_argument(
        "--port",
        type=int,
        default=argparse.SUPPRESS,
        help=f"the node's admin port (default: $GENAGENT_PORT, the state file, "
        f"or {_node.DEFAULT_PORT} for `node start`)",
    )
    common.add_argument(
        "--bind-host",
        default=argparse.SUPPRESS,
        help=f"the address the node listens on, as given to genagent-node --bind-host "
        f"(default: ${_node.BIND_HOST_ENV} or 127.0.0.1)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """Return the ``genagent`` argument parser."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="genagent",
        description="Run and steer a fleet of long-running LLM agents.",
        parents=[common],
    )
    parser.add_argument(
        "--version", action="version", version=f"genagent {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = commands.add_parser("node", help="start or stop a node", parents=[common])
    node_commands = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    node_start = node_commands.add_parser(
        "start",
        parents=[common],
        help=f"start a node on 127.0.0.1 (admin port {_node.DEFAULT_PORT} unless --port)",
    )
    node_start.add_argument(
        "--foreground", action="store_true", help="run attached until Ctrl-C or SIGTERM"
    )
    node_commands.add_parser("stop", parents=[common], help="stop the node")
    node_commands.add_parser("info", parents=[common], help="show the recorded node")

    start = commands.add_parser("start", parents=[common], help="start an agent")
    start.add_argument("impl", metavar="MODULE:CLASS", help="the GenAgent subclass")
    start.add_argument("--name", required=True, help="the agent's name")
    start.add_argument("--backend", default="scripted", help="backend name (default: scripted)")
    start.add_argument(
        "--watchdog",
        type=float,
        default=SPEC_DEFAULTS.watchdog,
        help=f"per-turn deadline in seconds ({SPEC_DEFAULTS.watchdog:g})",
    )
    start.add_argument(
        "--restart",
        choices=RESTART_TYPES,
        default=SPEC_DEFAULTS.restart,
        help=f"restart type ({SPEC_DEFAULTS.restart})",
    )
    start.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an init_agent option; VALUE is parsed as JSON when it parses, else a string",
    )

    ask = commands.add_parser("ask", parents=[common], help="run a turn, streaming its text")
    ask.add_argument("name")
    ask.add_argument("prompt")
    ask.add_argument("--timeout", type=float, default=None, help="give up after S seconds")
    ask.add_argument(
        "--interrupt",
        action="store_true",
        help="Ctrl-C interrupts the turn (default: Ctrl-C detaches and the turn keeps running)",
    )

    tell_cmd = commands.add_parser("tell", parents=[common], help="queue a turn, print its ref")
    tell_cmd.add_argument("name")
    tell_cmd.add_argument("prompt")

    poll_cmd = commands.add_parser("poll", parents=[common], help="where a told turn stands")
    poll_cmd.add_argument("name")
    poll_cmd.add_argument("ref")
    poll_cmd.add_argument(
        "--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the end"
    )

    notify_cmd = commands.add_parser("notify", parents=[common], help="send a JSON event")
    notify_cmd.add_argument("name")
    notify_cmd.add_argument("event", help="the event as JSON")

    interrupt_cmd = commands.add_parser("interrupt", parents=[common], help="end a running turn")
    interrupt_cmd.add_argument("name")
    interrupt_cmd.add_argument("--ref", default=None, help="only if this turn is running")

    for command, text in (
        ("halt", "freeze the mailbox after the current turn"),
        ("resume", "unfreeze a halted agent"),
        ("stop", "stop an agent for good"),
        ("status", "show an agent's status"),
    ):
        commands.add_parser(command, parents=[common], help=text).add_argument("name")

    commands.add_parser("ls", parents=[common], help="list the agents")

    top = commands.add_parser("top", parents=[common], help="a live view of the fleet")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames")

    console = commands.add_parser("console", parents=[common], help="serve the web console")
    console.add_argument(
        "--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1)"
    )
    console.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_CONSOLE_PORT,
        help=f"HTTP port ({DEFAULT_CONSOLE_PORT}; 0 picks a free one)",
    )

    mcp = commands.add_parser("mcp", parents=[common], help="serve the fleet over MCP")
    mcp.add_argument("--config", default=None, help="the TOML allow-list (docs/mcp.md)")
    mcp.add_argument(
        "--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http"
    )
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP interface (default 127.0.0.1)")
    mcp.add_argument("--http-port", type=int, default=8765, help="HTTP port (8765)")
    mcp.add_argument(
        "--token-file", default=None, help="bearer token file (default: $GENAGENT_MCP_TOKEN)"
    )

    demo = commands.add_parser("demo", parents=[common], help="run a fleet end to end")
    demo.add_argument(
        "--backend", default="scripted", help="scripted (default), claude, codex, anthropic"
    )
    demo.add_argument("--agents", type=int, default=3, help="how many workers (3)")
    return parser


def parse_options(pairs: Sequence[str]) -> dict[str, OptionValue]:
    """Parse ``key=value`` pairs; values are JSON when they parse, else strings.

    So ``--option count=3`` passes an int and ``--option tags='["a", "b"]'`` a list, as
    the Python API would, while a plain word needs no quoting.
    """
    options: dict[str, OptionValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def load_impl(target: str) -> type:
    """Import ``module:Class`` (the current directory counts, as for ``python -m``)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:CLASS, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidOption(
            f"cannot import {module_name!r} here: {exc}; this command's working directory is "
            f"{os.getcwd()} and its sys.path is {sys.path}; run it from your project folder, "
            "or set PYTHONPATH to the folder that holds the module"
        ) from None
    impl: object = module
    for part in attr.split("."):
        impl = getattr(impl, part, None)
        if impl is None:
            raise InvalidOption(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(impl, type):
        raise InvalidOption(f"{target!r} is not a class")
    return impl


# ============================================================================ commands


def _attach(args: argparse.Namespace) -> AgentSystem:
    """Connect to the node the command names (``--port``, ``$GENAGENT_PORT`` or the state file)
    on the address it listens on (``--bind-host``, ``$GENAGENT_BIND_HOST`` or loopback)."""
    port = _node.find_port(getattr(args, "port", None))
    return _node.connect(port, bind_host=_node.find_bind_host(getattr(args, "bind_host", None)))


def _cmd_node(args: argparse.Namespace, out: _Output) -> int:
    """``genagent node start|stop|status``: manage the local node the other commands talk to.

    ``start`` detaches the node (it outlives the command) unless ``--foreground``, and waits until
    it answers, so the next command can use it at once.
    """
    if args.node_command == "start":
        port = getattr(args, "port", None)
        if port is None:
            from_env = os.environ.get(_node.PORT_ENV)
            port = int(from_env) if from_env else _node.DEFAULT_PORT
        if args.foreground:

            def ready(state: _node.NodeState) -> None:
                out.line(f"node running on 127.0.0.1:{state.port} (pid {state.pid}); Ctrl-C stops")
                out.document({"ok": True, "node": _node.state_as_dict(state)})

            return _node.run_node(port, ready=ready, say=out.line)
        with _spinner(out, f"starting a node on port {port}"):
            state = _node.start_node(port)
        out.line(f"node started on 127.0.0.1:{state.port} (pid {state.pid})")
        out.line(f"state: {_node.state_path()}  log: {state.log}")
        out.document({"ok": True, "node": _node.state_as_dict(state)})
        return EXIT_OK
    if args.node_command == "stop":
        with _spinner(out, "stopping the node"):
            state, killed = _node.stop_node(getattr(args, "port", None))
        if killed:
            # Stopped all the same (durable agents keep their records), but not in order:
            # callers may have got no answer, and the log says which step held the node.
            print(
                f"genagent: the node on 127.0.0.1:{state.port} (pid {state.pid}) did not stop "
                f"within {_node.STOP_TIMEOUT:g} s of SIGTERM and was killed; see {state.log}",
                file=sys.stderr,
            )
        else:
            out.line(f"node on 127.0.0.1:{state.port} stopped (pid {state.pid})")
        out.document({"ok": not killed, "killed": killed, "node": _node.state_as_dict(state)})
        return EXIT_FAILURE if killed else EXIT_OK
    recorded = _node.read_state()
    if recorded is None:
        raise SystemNotRunning(f"no running node is recorded in {_node.state_path()}")
    out.line(f"node on 127.0.0.1:{recorded.port} (pid {recorded.pid}), log {recorded.log}")
    out.document({"ok": True, "node": _node.state_as_dict(recorded)})
    return EXIT_OK


def _cmd_start(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent start``: start an agent on the node, from ``module:Class`` and ``key=value``
    options parsed the way the Python API receives them.
    """
    impl = load_impl(args.impl)
    options = parse_options(args.option)
    with _spinner(out, f"starting {args.name}"):
        start_agent(
            impl,
            name=args.name,
            backend=args.backend,
            watchdog=args.watchdog,
            restart=args.restart,
            system=system,
            **options,
        )
    out.line(f"started {args.name} ({impl.__qualname__}, backend {args.backend})")
    out.document({"ok": True, "agent": args.name, "impl": args.impl, "backend": args.backend})
    return EXIT_OK


def retry_line(event: Event) -> str:
    """One line for a ``retry`` event: ``[retry 2/10 in 1.2s: 529 overloaded]``."""
    data = event.data
    attempt, budget = data.get("attempt"), data.get("max_retries")
    count = f" {attempt}/{budget}" if attempt and budget else f" {attempt}" if attempt else ""
    delay = data.get("delay_ms")
    wait = f" in {float(delay) / 1000:.1f}s" if isinstance(delay, int | float) else ""
    why = " ".join(str(data[k]) for k in ("status_code", "message") if data.get(k) is not None)
    return f"[retry{count}{wait}{': ' + why if why else ''}]"


def _ask_turn(
    system: AgentSystem,
    name: str,
    text: str,
    on_event: Callable[[Event], None],
    *,
    timeout: float | None = None,
    on_sent: Callable[[str], None] | None = None,
) -> Response:
    """Run a turn of agent ``name`` and call ``on_event`` with each event of that turn.

    The turn runs through the library's one streaming path (:func:`stream`); ``on_sent``
    gets the prompt's ref before it is sent, so Ctrl-C can say which turn to interrupt.

    Raises:
        AgentNotFound, AskTimeout (saying whether the turn runs or is still queued),
        AgentStopped, or the turn's error.
    """
    check_prompt(text, agent=name)
    prompt = Prompt(text)
    if on_sent is not None:
        on_sent(prompt.ref)
    running = False
    try:
        for item in stream_prompt(system, name, prompt, timeout):
            if isinstance(item, Response):
                return item
            running = True
            on_event(item)
    except AskTimeout:
        where = (
            f"the turn keeps running; end it with: genagent interrupt {name} --ref {prompt.ref}"
            if running
            else "the prompt is still queued and runs when the agent is free"
        )
        raise AskTimeout(
            f"no answer within {timeout or 0:g}s ({where})", agent=name, ref=prompt.ref
        ) from None
    raise AssertionError("unreachable: a stream ends with its Response or raises")


def _response_dict(name: str, response: Response) -> Document:
    """A response as the JSON the CLI prints: the fields a script needs, not the full event list."""
    return {
        "ok": True,
        "agent": name,
        "ref": response.ref,
        "text": response.text,
        "usage": response.usage,
        "duration_ms": response.duration_ms,
        "session_id": response.session_id,
        "model": response.model,
        "stop_reason": response.stop_reason,
    }


def _cmd_ask(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent ask``: send a prompt and stream the turn as it happens.

    With ``--json`` nothing is streamed and one document is printed at the end. Ctrl-C cancels
    the turn only with ``--interrupt``; otherwise it detaches (see :func:`_detach`), so an
    impatient user does not throw away work the agent is doing.
    """
    console = Console(stderr=True, highlight=False)
    view = TurnView(args.name, console=console)
    sent: list[str] = []
    quiet = out.as_json
    if not quiet:
        _explain_queue(args.name, system, view)
    try:
        response = _ask_turn(
            system,
            args.name,
            args.prompt,
            (lambda event: None) if quiet else view.event,
            timeout=args.timeout,
            on_sent=sent.append,
        )
    except KeyboardInterrupt:
        view.close()
        return _detach(args, system, console, view, sent[0] if sent else None)
    finally:
        view.close()
    if not out.as_json:
        if not view.text_started:
            out.line(response.text)
        usage = response.usage
        tokens = f", {usage.input_tokens} in / {usage.output_tokens} out" if usage else ""
        extra = "".join(
            f", {count} {what}"
            for count, what in ((view.tools, "tool call(s)"), (view.retries, "retry(ies)"))
            if count
        )
        if console.is_terminal:
            console.print(f"[dim]\\[{response.duration_ms / 1000:.2f}s{tokens}{extra}][/]")
    out.document(_response_dict(args.name, response))
    return EXIT_OK


def _explain_queue(name: str, system: AgentSystem, view: TurnView) -> None:
    """Say at once when the prompt will wait: the agent is halted, or busy with a turn.

    Asked before the prompt is sent (a status is answered at once, even mid-turn), so a
    person knows why nothing streams yet. A failed status is ignored: the ask itself will
    report what is wrong, with the right exit code.
    """
    with contextlib.suppress(GenAgentError):
        state = status(name, system=system)
        if state.halted or state.halt_pending:
            view.note(
                f"[yellow]{name} is halted[/]: your prompt waits in its mailbox until "
                f"[bold]genagent resume {name}[/]"
            )
            view.waiting(f"queued at {name} (halted)")
        elif state.state == "processing":
            ahead = state.queued + 1
            view.note(
                f"[yellow]{name} is busy[/] with another turn "
                f"({state.current_elapsed or 0:.0f}s so far); your prompt is queued "
                f"behind {ahead} turn(s)"
            )
            view.waiting(f"queued at {name}")
        else:
            view.waiting(f"waiting for {name}")


def _detach(
    args: argparse.Namespace,
    system: AgentSystem,
    console: Console,
    view: TurnView,
    ref: str | None,
) -> int:
    """Ctrl-C during ``ask``: say where the turn stands, or interrupt it (``--interrupt``)."""
    name = args.name
    if ref is None:
        console.print("[yellow]Ctrl-C[/]: nothing was sent.")
        return 130
    if args.interrupt and view.turn_started:
        try:
            interrupt(name, ref, system=system)
            console.print(f"[yellow]Ctrl-C[/]: interrupted {name}'s turn {ref}.")
        except GenAgentError as exc:
            console.print(f"[yellow]Ctrl-C[/]: could not interrupt: {exc}")
        return 130
    if view.turn_started:
        console.print(
            f"[yellow]Ctrl-C[/]: stopped watching. [bold]The turn keeps running[/] on {name} "
            f"(ref {ref}).\n  end it:      genagent interrupt {name} --ref {ref}\n"
            f"  next time:   genagent ask --interrupt ... ends the turn on Ctrl-C"
        )
    else:
        console.print(
            f"[yellow]Ctrl-C[/]: stopped waiting. [bold]The prompt stays queued[/] at {name} "
            f"(ref {ref}) and runs when the agent is free"
            + (f" (it is halted: genagent resume {name})" if _halted(name, system) else "")
            + f".\n  once it runs, end it with: genagent interrupt {name} --ref {ref}"
        )
    return 130


def _halted(name: str, system: AgentSystem) -> bool:
    """Whether the agent is halted or about to be; ``False`` when it cannot be asked."""
    try:
        state = status(name, system=system)
        return bool(state.halted or state.halt_pending)
    except GenAgentError:
        return False


def _cmd_tell(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent tell``: queue a prompt and print its ref, for a later ``poll``."""
    ref = tell(args.name, args.prompt, system=system)
    out.line(ref)
    out.document({"ok": True, "agent": args.name, "ref": ref})
    return EXIT_OK


def _cmd_poll(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent poll``: the state of a told prompt, waiting up to ``--wait`` for it to finish.

    A failed prompt makes the document's ``ok`` false, so a script can test one field.
    """
    deadline = time.monotonic() + max(0.0, args.wait)
    with _spinner(out, f"waiting for {args.ref[:8]} at {args.name}"):
        result = poll(args.name, args.ref, system=system)
        while not result.done and time.monotonic() < deadline:
            time.sleep(0.05)
            result = poll(args.name, args.ref, system=system)
    data: Document = {"ok": True, "agent": args.name, "ref": args.ref}
    data["state"] = result.state.value
    if result.response is not None:
        data["response"] = _response_dict(args.name, result.response)
        out.line(f"completed: {result.response.text}")
    elif result.error is not None:
        data["ok"] = False
        data["error"] = _error_dict(result.error)
        out.line(f"failed: {type(result.error).__name__}: {result.error}")
    else:
        out.line("pending")
    out.document(data)
    return EXIT_OK if result.error is None else exit_code_for(result.error)


def _cmd_notify(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent notify``: send an event, given as JSON so it reaches the agent as data."""
    try:
        event = json.loads(args.event)
    except ValueError as exc:
        raise UsageError(f"the event must be JSON: {exc}") from None
    notify(args.name, event, system=system)
    out.line(f"notified {args.name}")
    out.document({"ok": True, "agent": args.name})
    return EXIT_OK


def _cmd_interrupt(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent interrupt``: cancel the running turn (or the given one) and print its ref."""
    ref = interrupt(args.name, args.ref, system=system)
    out.line(f"interrupted {args.name} turn {ref}")
    out.document({"ok": True, "agent": args.name, "ref": ref})
    return EXIT_OK


class _Action(Protocol):
    """A client call that acts on one agent by name (``halt``, ``resume``, ``stop``)."""

    def __call__(self, name: str, *, system: AgentSystem | None = None) -> object: ...


#: A ``genagent`` sub-command: runs with its parsed arguments and returns the exit status.
_Command = Callable[[argparse.Namespace, "_Output", AgentSystem], int]


def _simple(action: _Action, doing: str, past: str) -> _Command:
    """A command that calls ``action(name)``, shows ``doing`` meanwhile, then reports ``past``.

    ``halt``, ``resume`` and ``stop`` differ only in the call and the words, so each is one entry
    in the command table instead of three copies of the same function.
    """

    def command(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
        """Run the action with a spinner, then report it as a line or a JSON document."""
        with _spinner(out, f"{doing} {args.name}"):
            action(args.name, system=system)
        out.line(f"{past} {args.name}")
        out.document({"ok": True, "agent": args.name})
        return EXIT_OK

    return command


def _cmd_status(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent status``: one agent's status as aligned ``key value`` lines."""
    data = status_dict(status(args.name, system=system))
    width = max(len(key) for key in data)
    for key, value in data.items():
        out.line(f"{key.ljust(width)}  {value}")
    out.document({"ok": True, "status": data})
    return EXIT_OK


def _cmd_ls(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent ls``: one line per agent; an agent that cannot be asked shows its error.

    One unreachable agent does not fail the listing: the others are still worth seeing,
    and the row says what went wrong with that one.
    """
    rows = fleet_rows(system)
    if not out.as_json:
        if not rows:
            out.line("(no agents)")
        width = max((len(row["name"]) for row in rows), default=0)
        for row in rows:
            name = row["name"].ljust(width)
            if "error" in row:
                out.line(f"{name}  ?  {row['error']}")
                continue
            state = row["state"] + (" halted" if row["halted"] else "")
            out.line(
                f"{name}  {state:<17}  queued={row['queued']:<3}  turns={row['turns']:<4}  "
                f"backend={row['backend']}  node={row['node']}"
            )
    out.document({"ok": True, "agents": rows})
    return EXIT_OK


def _cmd_top(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent top``: a live table of the fleet until Ctrl-C or until the node stops.

    Rows come from a :class:`_FleetFeed` thread, so a slow node delays the figures but never the
    screen. A port probe between frames notices a stopped node at once (a refused connection returns
    immediately), and ``top`` then exits with an error rather than showing stale rows.
    """
    node = f"127.0.0.1:{system.admin_port}"
    console = Console(highlight=False)
    if args.once or out.as_json:
        snapshot: list[Document] = fleet_rows(system)
        figures: Document | None = fleet_sessions(system)
        if out.as_json:
            out.document({"ok": True, "node": node, "agents": snapshot, "sessions": figures})
        else:
            sys.stdout.write(
                render_top(
                    snapshot,
                    node=node,
                    colour=console.is_terminal,
                    width=console.width,
                    sessions=figures,
                )
            )
            sys.stdout.flush()
        return EXIT_OK
    interval = max(0.1, args.interval)
    port = system.admin_port or 0
    feed = _FleetFeed(system)
    rows: list[Document] = []
    figures = None
    stopped = False
    live = Live(console=console, screen=console.is_terminal, auto_refresh=False)
    if console.is_terminal:
        live.start()
    try:
        while True:
            stopped = not _node.port_open(port, timeout=0.5)  # refused at once when down
            if not stopped:
                rows, figures = feed.latest(timeout=interval) or (rows, figures)
            frame = top_frame(
                rows, node=node, width=console.width, stopped=stopped, sessions=figures
            )
            if console.is_terminal:
                live.update(Group(frame, Text("Ctrl-C quits", "dim")), refresh=True)
            else:
                console.print(frame)
                console.print()
            if stopped:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if console.is_terminal:
            live.stop()
        feed.close()
    console.print(frame)
    raise SystemNotRunning(f"the node on {node} stopped")


class _FleetFeed:
    """Fetches fleet rows on a thread, so a slow or vanishing node never freezes ``top``."""

    def __init__(self, system: AgentSystem) -> None:
        """Start the fetching thread; it waits until :meth:`latest` asks for rows.

        It is a daemon so a fetch stuck on a vanished node never holds the command at exit.
        """
        self._system = system
        self._lock = threading.Lock()
        self._rows: tuple[list[Document], Document | None] | None = None
        self._wanted = threading.Event()
        self._ready = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="genagent-top-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Fetch rows on each request; a failed fetch leaves ``None`` so ``top`` keeps its last
        rows.
        """
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            if self._closed:
                return
            rows: tuple[list[Document], Document | None] | None
            try:
                rows = fleet_rows(self._system), fleet_sessions(self._system)
            except GenAgentError:
                rows = None
            with self._lock:
                self._rows = rows
            self._ready.set()

    def latest(self, *, timeout: float) -> tuple[list[Document], Document | None] | None:
        """Ask for fresh rows and session figures; ``None`` if none came within ``timeout``."""
        self._ready.clear()
        self._wanted.set()
        if not self._ready.wait(timeout):
            return None
        with self._lock:
            return self._rows

    def close(self) -> None:
        """Stop the feed thread: wake it so it sees ``_closed`` and returns."""
        self._closed = True
        self._wanted.set()


def _cmd_console(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """``genagent console``: serve the web console until Ctrl-C, then close it."""
    from ._console import Console

    node_host = _node.find_bind_host(getattr(args, "bind_host", None))
    console = Console(system, host=args.host, port=args.http_port, node_host=node_host)
    console.start()
    out.line(f"console on {console.url} (node {node_host}:{system.admin_port}); Ctrl-C stops")
    out.document({"ok": True, "url": console.url})
    try:
        console.wait()
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    """``genagent demo``: run the three-act demo and exit with its result.

    The framework's own log lines are silenced for the run: the demo reports every failure itself,
    and the actor processes forked from this one would repeat them on stderr.
    """
    lines: list[str] = []

    def emit(text: str = "") -> None:
        """Print a demo line and keep it for the ``--json`` document."""
        lines.append(text)
        out.line(text)

    from genagent_thespian.patterns.demo import run_demo

    resolve_backend(args.backend)  # an unknown name is a usage error, before any process starts
    # The demo reports failures itself; the framework's log lines (from its own actor
    # processes, forked from this one) would only repeat them on stderr.
    framework_log = logging.getLogger("genagent_thespian")
    framework_log.addHandler(logging.NullHandler())
    framework_log.propagate = False
    code = int(run_demo(backend=args.backend, agents=args.agents, out=emit))
    out.document({"ok": code == 0, "exit_code": code, "output": lines})
    return code


def _cmd_mcp(args: argparse.Namespace, out: _Output, system: AgentSystem) -> int:
    """Serve the fleet over MCP (``genagent_thespian._mcp``; the ``mcp`` extra).

    With ``stdio`` the process's stdout is the protocol, so nothing else may be printed
    there (the token file's path, for HTTP, goes to stderr). The attached system is made
    the default, since the MCP tools call the API without a ``system=`` argument.
    """
    try:
        from .._mcp import server as mcp_server
        from .._mcp.config import load_config
    except ImportError as exc:
        raise UsageError(
            f"genagent mcp needs the mcp extra: pip install 'genagent-thespian[mcp]' ({exc})"
        ) from None
    from .._api.client import _set_default

    _set_default(system)
    server = mcp_server.build_server(load_config(args.config))
    if args.transport == "stdio":
        mcp_server.run_stdio(server)  # stdout is the protocol: nothing else is printed there
        return EXIT_OK
    token, token_file = mcp_server.load_token(args.token_file)
    if token_file is not None:
        sys.stderr.write(f"genagent mcp: bearer token in {token_file}\n")
    mcp_server.run_http(server, host=args.host, port=args.http_port, token=token)
    return EXIT_OK


_AGENT_COMMANDS: dict[str, Callable[[argparse.Namespace, _Output, AgentSystem], int]] = {
    "start": _cmd_start,
    "ask": _cmd_ask,
    "tell": _cmd_tell,
    "poll": _cmd_poll,
    "notify": _cmd_notify,
    "interrupt": _cmd_interrupt,
    "halt": _simple(halt, "halting", "halted"),
    "resume": _simple(resume, "resuming", "resumed"),
    "stop": _simple(stop, "stopping", "stopped"),
    "status": _cmd_status,
    "ls": _cmd_ls,
    "top": _cmd_top,
    "console": _cmd_console,
    "mcp": _cmd_mcp,
}


def _error_dict(error: BaseException) -> Document:
    """An error as JSON: its type, message and, for our errors, the agent, ref and reason kind.

    The reason kind is what a script should branch on; the message is for people.
    """
    data: Document = {"type": type(error).__name__}
    if isinstance(error, GenAgentError):
        data["message"] = error.message
        data["agent"] = None if error.agent is None else str(error.agent)
        data["ref"] = error.ref
        data["reason"] = error.reason_kind
    else:
        data["message"] = str(error)
    return data


def _fail(error: BaseException, out: _Output) -> int:
    """Report an error on stderr (and as JSON with ``--json``) and return its exit code.

    Each error type maps to its own exit code (:func:`exit_code_for`), so shell scripts can tell "no
    such agent" from "the node is down" without parsing text.
    """
    code = exit_code_for(error)
    out.clear_progress()
    sys.stderr.write(f"genagent: error: {type(error).__name__}: {error}\n")
    sys.stderr.flush()
    if out.as_json:
        print(json.dumps({"ok": False, "exit_code": code, "error": _error_dict(error)}))
    return code


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Treat SIGTERM like Ctrl-C, so the command cleans up the same way; a second one is fatal."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``genagent`` command line and return its exit code.

    ``SIGTERM`` ends a command like Ctrl-C does (the console and ``top`` shut down cleanly;
    a background job of a non-interactive shell ignores ``SIGINT``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    out = _Output(as_json=getattr(args, "json", False))
    system: AgentSystem | None = None
    if (
        args.command in ("console", "top", "mcp")
        and threading.current_thread() is threading.main_thread()
    ):
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        if args.command == "node":
            return _cmd_node(args, out)
        if args.command == "demo":
            return _cmd_demo(args, out)
        system = _attach(args)
        return _AGENT_COMMANDS[args.command](args, out, system)
    except (GenAgentError, UsageError) as exc:
        return _fail(exc, out)
    except OSError as exc:  # e.g. the console's HTTP port is taken
        return _fail(exc, out)
    except Exception as exc:  # a bug or an unexpected failure: still one line, unless debugging
        if os.environ.get("GENAGENT_DEBUG"):
            raise
        return _fail(exc, out)
    except KeyboardInterrupt:
        out.clear_progress()
        return 130
    finally:
        if system is not None:
            system.shutdown()


def _entry() -> NoReturn:
    """The console script's entry point (``genagent``): exit with ``main``'s code."""
    sys.exit(main())
