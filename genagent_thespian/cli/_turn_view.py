"""How ``genagent ask`` shows one turn to a person: text, tool calls, retries, waiting.

:class:`TurnView` takes the turn's events one by one (:meth:`TurnView.event`), whatever
feeds them: today the CLI's own ``Watch`` subscription, tomorrow a ``stream`` call. The
reply's text goes to stdout as it streams, unchanged, so ``genagent ask a "..." > out.txt``
captures exactly the reply; everything else goes to stderr: one line per tool call and its
result, one per provider retry, and, on a terminal, a spinner with the elapsed time that
says what the turn is waiting for (queued behind another turn, halted, the model, a tool).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from .._core.turn import Event, EventKind

__all__ = ["TurnView", "summarize"]


def summarize(value: object, limit: int = 60) -> str:
    """One line of at most ``limit`` characters for a tool's input or output."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))  # {"command": "ls"} reads better as ls
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            value = repr(value)
    line = " ".join(str(value).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class _Elapsed:
    """A spinner label that shows the seconds since ``started`` each time it is drawn."""

    def __init__(self, view: TurnView) -> None:
        self.view = view

    def __rich__(self) -> RenderableType:
        """The spinner's text: what is awaited, seconds so far, and how to detach."""
        seconds = time.monotonic() - self.view.started
        return Text.assemble(
            (self.view.label, "bold"), (f"  {seconds:.1f}s", "cyan"), ("  Ctrl-C: detach", "dim")
        )


class TurnView:
    """Renders one turn's events for a person (see the module docstring).

    Args:
        agent: The agent's name, for the messages.
        out: Where the reply's text goes (stdout).
        console: A rich console on stderr for everything else.
    """

    def __init__(self, agent: str, *, out: IO[str] | None = None, console: Console) -> None:
        """Prepare to show a turn; nothing is drawn until the first event."""
        self.agent = agent
        self.out = out or sys.stdout
        self.console = console
        self.started = time.monotonic()
        self.label = f"waiting for {agent}"
        self.text_started = False
        self.at_line_start = True
        self.turn_started = False
        self.tools = 0
        self.retries = 0
        self._live: Live | None = None

    # ------------------------------------------------------------------ the spinner

    @property
    def interactive(self) -> bool:
        """Whether stderr is a terminal (spinners only there; lines everywhere)."""
        return self.console.is_terminal

    def waiting(self, label: str) -> None:
        """Say what the turn waits for; on a terminal, spin with the elapsed time."""
        self.label = label
        if not self.interactive or self._live is not None:
            return
        self._live = Live(
            Spinner("dots", text=_Elapsed(self)),
            console=self.console,
            refresh_per_second=8,
            transient=True,
        )
        self._live.start()

    def _pause_spinner(self) -> None:
        """Stop the live spinner before text is written, so the two never interleave on a line."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def close(self) -> None:
        """Remove the spinner and end a reply line left open."""
        self._pause_spinner()
        if not self.at_line_start:
            self.out.write("\n")
            self.out.flush()
            self.at_line_start = True

    # ------------------------------------------------------------------ events

    def note(self, markup: str) -> None:
        """Print one line on stderr (the spinner steps aside and comes back)."""
        spinning = self._live is not None
        self._pause_spinner()
        if not self.at_line_start:
            self.out.write("\n")
            self.out.flush()
            self.at_line_start = True
        self.console.print(markup, highlight=False, soft_wrap=True)
        if spinning:
            self.waiting(self.label)

    def event(self, event: Event) -> None:
        """Show one event of the turn.

        Text deltas go to stdout as they come (the spinner steps aside first, so it never
        lands inside the reply); tool calls, their results, retries and warnings become one
        line each on stderr; thinking only changes the spinner's label. Other kinds (usage,
        the terminal event) show nothing here: the command prints the summary at the end.
        """
        kind = event.kind
        data = event.data
        if not self.turn_started:
            self.turn_started = True
            self.label = f"{self.agent} is working"
        if kind == EventKind.TEXT_DELTA:
            text = str(data.get("text", ""))
            if not text:
                return
            self._pause_spinner()
            self.out.write(text)
            self.out.flush()
            self.text_started = True
            self.at_line_start = text.endswith("\n")
        elif kind == EventKind.TOOL_USE:
            self.tools += 1
            name = str(data.get("name") or "tool")
            detail = summarize(data.get("input", ""))
            self.note(f"[cyan]→ {_escape(name)}[/] [dim]{_escape(detail)}[/]")
            self.waiting(f"{self.agent} is running {name}")
        elif kind == EventKind.TOOL_RESULT:
            output = summarize(data.get("output", ""))
            if data.get("is_error"):
                self.note(f"  [red]✗ {_escape(output) or 'the tool failed'}[/]")
            else:
                self.note(f"  [green]✓[/] [dim]{_escape(output)}[/]")
            self.waiting(f"{self.agent} is working")
        elif kind == EventKind.RETRY:
            self.retries += 1
            attempt = data.get("attempt")
            delay = data.get("delay_ms")
            when = f" in {float(delay) / 1000:.1f}s" if delay is not None else ""
            why = summarize(data.get("message") or data.get("status_code") or "", 80)
            number = f" {attempt}" if attempt is not None else ""
            self.note(f"[yellow]↻ the provider retries{number}{when}[/] [dim]{_escape(why)}[/]")
            self.waiting(f"{self.agent} waits for the provider (retry{number})")
        elif kind in (EventKind.THINKING_DELTA, EventKind.THINKING):
            self.waiting(f"{self.agent} is thinking")
        elif kind == EventKind.WARNING:
            self.note(f"[yellow]! {_escape(summarize(data.get('message', ''), 100))}[/]")


def _escape(text: str) -> str:
    """Escape ``[`` so rich prints the model's text as it is instead of reading it as markup."""
    return text.replace("[", r"\[")
