"""The fleet view shared by ``genagent ls``, ``genagent top`` and the web console.

:func:`fleet_rows` asks the registry for every agent and each agent for its status (the
agent answers at once, even mid-turn); :func:`top_table` draws the rows as a rich table that
fits the terminal: at 80 columns the agent, its state, queue, running turn, turns, failed
turns, provider retries and the last error; from 120 columns also tokens, cost, restarts,
backend and node. :func:`fleet_sessions` adds the session governor's figures, which the
header of ``top`` shows. :func:`render_top` returns one frame as text (for ``--once`` and
pipes).
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .._api.client import list_agents, sessions, status
from .._api.system import AgentSystem
from .._core.errors import GenAgentError
from .._core.types import Document
from ..messages import AgentStatus

__all__ = [
    "fleet_rows",
    "fleet_sessions",
    "format_age",
    "render_top",
    "sessions_label",
    "state_label",
    "status_dict",
    "top_frame",
]

WIDE = 120  # from this many columns, top shows the wide set of columns


def status_dict(snapshot: AgentStatus) -> Document:
    """Return an ``AgentStatus`` as a JSON-ready dict (names rendered with ``str``)."""
    data = asdict(snapshot)
    data["name"] = str(data["name"])
    return data


def fleet_rows(system: AgentSystem) -> list[Document]:
    """Return one status dict per registered agent, sorted by name.

    An agent that vanishes between the listing and its status call is left out; one that
    does not answer gets a row with ``error`` set.
    """
    rows = []
    for name in list_agents(system=system):
        try:
            rows.append(status_dict(status(name, system=system)))
        except GenAgentError as exc:
            if exc.reason_kind == "not_found":
                continue
            rows.append({"name": str(name), "error": f"{type(exc).__name__}: {exc.message}"})
    rows.sort(key=lambda row: row["name"])
    return rows


def fleet_sessions(system: AgentSystem) -> Document | None:
    """The session governor's figures as a JSON-ready dict; ``None`` when nothing is capped."""
    figures = sessions(system=system)
    return None if figures is None else asdict(figures)


def sessions_label(figures: Document | None) -> str:
    """``sessions 3/20 live, 1 busy, 2 waiting (oldest 4.2s)``; empty when nothing is capped.

    Busy sessions are counted only while the governor has the agents report their turns
    (a turn waits, or an idle timeout is set); otherwise the label leaves them out."""
    if not figures:
        return ""
    label = f"sessions {figures['live']}/{figures['max_live_sessions']} live"
    if figures.get("busy") is not None:
        label += f", {figures['busy']} busy"
    if figures["retiring"]:
        label += f", {figures['retiring']} retiring"
    if figures["queued"]:
        oldest = figures.get("oldest_wait")
        label += f", {figures['queued']} waiting"
        if oldest is not None:
            label += f" (oldest {oldest:.1f}s)"
    return label


def format_age(row: Document) -> str:
    """Return the running turn's age against the watchdog, e.g. ``12.0s/600s`` or ``-``."""
    elapsed = row.get("current_elapsed")
    watchdog = row.get("watchdog")
    if elapsed is None:
        return "-"
    limit = f"{watchdog:g}s" if watchdog is not None else "none"
    return f"{elapsed:.1f}s/{limit}"


def _late(row: Document) -> bool:
    """Whether the running turn has used 80% of its watchdog: ``top`` shows its age in red."""
    elapsed, watchdog = row.get("current_elapsed"), row.get("watchdog")
    return elapsed is not None and watchdog is not None and elapsed >= 0.8 * watchdog


def state_label(row: Document) -> str:
    """The state a person reads: ``idle``, ``processing``, ``halted``, ``hibernated``...

    The most urgent condition wins: an agent that cannot be asked, or whose session is
    lost, needs a person, and showing it as merely "processing" would hide that. Then the
    states a person caused (halted, halting), then the quiet ones.
    """
    if "error" in row:
        return "unreachable"
    if row.get("session_lost"):
        return "session lost"
    if row.get("halted"):
        return "halted"
    if row.get("halt_pending"):
        return "halting"
    if row.get("hibernated"):
        return "hibernated"
    if row.get("waiting_for_session"):
        return "waiting for a session"
    return str(row["state"])


_STATE_STYLE = {
    "processing": "green",
    "halted": "yellow",
    "halting": "yellow",
    "session lost": "bold red",
    "unreachable": "bold red",
    "idle": "",
}


def top_table(rows: list[Document], *, width: int) -> Table:
    """The fleet as a table for a terminal ``width`` columns wide (see the module doc).

    The table never wraps a row: names and the last error are cut with an ellipsis, so one
    agent is always one line and a fleet of fifty still fits a screen. Failures, retries
    and a turn near its watchdog are coloured, since they are what a person scans for.
    """
    wide = width >= WIDE
    table = Table(
        box=None, padding=(0, 2, 0, 0) if wide else (0, 1, 0, 0), header_style="bold", width=width
    )
    table.add_column("AGENT", no_wrap=True, overflow="ellipsis", max_width=24 if wide else 16)
    table.add_column("STATE", no_wrap=True)
    table.add_column("Q", justify="right", no_wrap=True)
    table.add_column("TURN", justify="right", no_wrap=True)
    table.add_column("TURNS", justify="right", no_wrap=True)
    table.add_column("FAIL", justify="right", no_wrap=True)
    table.add_column("RETRY", justify="right", no_wrap=True)
    if wide:
        table.add_column("TOKENS IN/OUT", justify="right", no_wrap=True)
        table.add_column("COST", justify="right", no_wrap=True)
        table.add_column("RESTARTS", justify="right", no_wrap=True)
        table.add_column("BACKEND", no_wrap=True)
        table.add_column("NODE", no_wrap=True)
    table.add_column("LAST ERROR", no_wrap=True, overflow="ellipsis", ratio=1, min_width=10)
    for row in rows:
        label = state_label(row)
        if "error" in row:
            cells = [row["name"], Text(label, _STATE_STYLE[label]), "", "", "", "", ""]
            if wide:
                cells += ["", "", "", "", ""]
            table.add_row(*cells, Text(row["error"], "red"))
            continue
        failures = int(row.get("failures") or 0)
        retries = int(row.get("retries") or 0)
        cells = [
            row["name"],
            Text(label, _STATE_STYLE.get(label, "")),
            str(row["queued"]),
            Text(format_age(row), "bold red" if _late(row) else ""),
            str(row["turns"]),
            Text(str(failures), "bold red" if failures else "dim"),
            Text(str(retries), "yellow" if retries else "dim"),
        ]
        if wide:
            cost = row.get("cost_usd")
            cells += [
                f"{row['input_tokens']}/{row['output_tokens']}",
                f"${cost:.4f}" if cost is not None else "-",
                str(row["restarts"]),
                str(row.get("backend", "")),
                str(row.get("node", "")),
            ]
        error = row.get("session_lost") or row.get("last_error") or ""
        table.add_row(*cells, Text(str(error) or "-", "red" if error else "dim"))
    return table


def top_frame(
    rows: list[Document],
    *,
    node: str,
    width: int,
    now: float | None = None,
    stopped: bool = False,
    sessions: Document | None = None,
) -> Group:
    """One frame of ``genagent top``: the header, the live sessions line and the fleet table."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    busy = sum(1 for row in rows if row.get("state") == "processing")
    halted = sum(1 for row in rows if row.get("halted"))
    failed = sum(int(row.get("failures") or 0) for row in rows)
    header = Text.assemble(
        ("genagent top", "bold"),
        f" {stamp} - {node} - {len(rows)} agents: {busy} busy, {halted} halted, ",
        (f"{failed} failed", "bold red" if failed else ""),
        no_wrap=True,
        overflow="ellipsis",
    )
    parts: list[RenderableType] = [header]
    label = sessions_label(sessions)
    if label:
        waiting = bool(sessions and sessions["queued"])
        parts.append(
            Text(label, "bold yellow" if waiting else "", no_wrap=True, overflow="ellipsis")
        )
    parts.append(Text(""))
    if stopped:
        parts.append(
            Text(f"node stopped: nothing answers on {node} (the last rows follow)", "bold red")
        )
    parts.append(top_table(rows, width=width) if rows else Text("(no agents)", "dim"))
    return Group(*parts)


def render_top(
    rows: list[Document],
    *,
    node: str,
    colour: bool = False,
    width: int = 80,
    now: float | None = None,
    stopped: bool = False,
    sessions: Document | None = None,
) -> str:
    """Return one frame of ``genagent top`` as text, ``width`` columns wide.

    Used by ``top --once`` and when stdout is not a terminal: no cursor movement, no
    colour unless asked, trailing spaces removed, so the output diffs and greps cleanly.
    """
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        color_system="standard" if colour else None,
        force_terminal=colour,
        highlight=False,
    )
    frame = top_frame(rows, node=node, width=width, now=now, stopped=stopped, sessions=sessions)
    console.print(frame)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
