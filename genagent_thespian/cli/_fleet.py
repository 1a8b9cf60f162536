"""The fleet view shared by ``genagent ls``, ``genagent top`` and the web console.

:func:`fleet_rows` asks the registry for every agent and each agent for its status (the
agent answers at once, even mid-turn); :func:`render_top` draws the rows as a plain ANSI
table (no curses), coloured only when asked to.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from .._api.client import list_agents, status
from .._api.system import AgentSystem
from .._core.errors import GenAgentError

__all__ = ["fleet_rows", "format_age", "render_top", "status_dict"]

_RESET = "\x1b[0m"
_COLOURS = {"processing": "\x1b[32m", "halted": "\x1b[33m", "late": "\x1b[31m", "dim": "\x1b[2m"}


def status_dict(snapshot: Any) -> dict[str, Any]:
    """Return an ``AgentStatus`` as a JSON-ready dict (names rendered with ``str``)."""
    data = asdict(snapshot)
    data["name"] = str(data["name"])
    return data


def fleet_rows(system: AgentSystem) -> list[dict[str, Any]]:
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


def format_age(row: dict[str, Any]) -> str:
    """Return the running turn's age against the watchdog, e.g. ``12.0s/600s`` or ``-``."""
    elapsed = row.get("current_elapsed")
    watchdog = row.get("watchdog")
    if elapsed is None:
        return "-"
    limit = f"{watchdog:g}s" if watchdog is not None else "none"
    return f"{elapsed:.1f}s/{limit}"


def _late(row: dict[str, Any]) -> bool:
    elapsed, watchdog = row.get("current_elapsed"), row.get("watchdog")
    return elapsed is not None and watchdog is not None and elapsed >= 0.8 * watchdog


_COLUMNS = (
    ("AGENT", "<"),
    ("STATE", "<"),
    ("HALTED", "<"),
    ("QUEUE", ">"),
    ("TURN AGE/WATCHDOG", ">"),
    ("TURNS", ">"),
    ("TOKENS IN/OUT", ">"),
    ("COST", ">"),
    ("RESTARTS", ">"),
    ("NODE", "<"),
)


def _cells(row: dict[str, Any]) -> list[str]:
    if "error" in row:
        return [row["name"], "?", "?", "", "", "", "", "", "", row["error"]]
    cost = row.get("cost_usd")
    return [
        row["name"],
        row["state"],
        "halted" if row["halted"] else ("pending" if row.get("halt_pending") else "no"),
        str(row["queued"]),
        format_age(row),
        str(row["turns"]),
        f"{row['input_tokens']}/{row['output_tokens']}",
        f"${cost:.4f}" if cost is not None else "-",
        str(row["restarts"]),
        row["node"],
    ]


def render_top(
    rows: list[dict[str, Any]], *, node: str, colour: bool = False, now: float | None = None
) -> str:
    """Return one frame of ``genagent top``: a header line and the fleet table."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    busy = sum(1 for row in rows if row.get("state") == "processing")
    header = f"genagent top - node {node} - {len(rows)} agent(s), {busy} busy - {stamp}"
    table = [[title for title, _ in _COLUMNS], *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = [header, ""]
    for index, line in enumerate(table):
        text = "  ".join(
            cell.ljust(width) if align == "<" else cell.rjust(width)
            for cell, width, (_, align) in zip(line, widths, _COLUMNS, strict=True)
        ).rstrip()
        if colour and index > 0:
            row = rows[index - 1]
            if _late(row):
                text = _COLOURS["late"] + text + _RESET
            elif row.get("halted"):
                text = _COLOURS["halted"] + text + _RESET
            elif row.get("state") == "processing":
                text = _COLOURS["processing"] + text + _RESET
        elif colour:
            text = _COLOURS["dim"] + text + _RESET
        lines.append(text)
    if not rows:
        lines.append("(no agents)")
    return "\n".join(lines) + "\n"
