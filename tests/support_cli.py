"""Shared helpers of the CLI backend tests: where the real programs are, a quiet environment,
a turn runner that applies ``update_session`` like the worker does, and fake CLI scripts."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from genagent_thespian.backends._process import group_members

from genagent_thespian import Event, EventKind, TurnContext, testing

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO_ROOT / ".ci" / "tools" / "node_modules" / ".bin"


def cli_binary(name: str) -> str:
    """Path of the real ``claude``/``codex``: ``GENAGENT_<NAME>_BIN`` or ``.ci/tools``."""
    return os.environ.get(f"GENAGENT_{name.upper()}_BIN") or str(TOOLS_BIN / name)


def require_cli(name: str) -> str:
    """Return the real program's path, or skip the test when it is not installed."""
    path = cli_binary(name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"{name} CLI not installed at {path} (run .ci/install_clis.sh)")
    return path


def quiet_env(home: Path) -> dict[str, str]:
    """Environment overrides that keep a real CLI off the network and out of the real HOME."""
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CODEX_HOME": str(home / ".codex"),
        "NO_COLOR": "1",
    }


class Tracker:
    """The ``on_process_group`` callback of a TurnContext: records tracked groups."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, pgid: int, tracked: bool) -> None:
        self.calls.append((pgid, tracked))

    @property
    def groups(self) -> list[int]:
        """Every group id ever tracked, in order, without repeats."""
        seen: list[int] = []
        for pgid, tracked in self.calls:
            if tracked and pgid not in seen:
                seen.append(pgid)
        return seen

    def context(self, ref: str = "r") -> TurnContext:
        return TurnContext(agent="t", ref=ref, on_process_group=self)


def run_turn(
    backend: Any,
    session: Any,
    prompt: str,
    ctx: TurnContext | None = None,
    *,
    on_event: Callable[[Event], None] | None = None,
) -> tuple[list[Event], Any]:
    """Run one turn to its end, applying ``update_session`` as the worker does."""
    ctx = ctx or TurnContext(agent="t", ref="r")
    events = []
    for event in backend.prompt(session, prompt, ctx):
        events.append(event)
        if event.kind in (EventKind.SESSION_STARTED, EventKind.RESULT):
            session = backend.update_session(session, event)
        if on_event is not None:
            on_event(event)
    return events, session


def terminal(events: list[Event]) -> Event:
    """Assert exactly one terminal event, last, and return it."""
    terminals = [e for e in events if e.terminal]
    assert len(terminals) == 1, [e.kind for e in events]
    assert events[-1] is terminals[0]
    return terminals[0]


def kinds(events: list[Event]) -> list[str]:
    return [str(e.kind) for e in events]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    message = f"timed out after {timeout}s waiting for {what}"
    return testing.wait_until(predicate, timeout=timeout, interval=0.02, message=message)


def assert_groups_gone(groups: list[int], timeout: float = 10.0) -> None:
    """Assert that no live process remains in any of ``groups``."""
    wait_until(
        lambda: not any(group_members(g) for g in groups),
        timeout,
        f"process groups {groups} to end: {[group_members(g) for g in groups]}",
    )


def fake_cli(directory: Path, body: str, name: str = "fake-cli") -> str:
    """Write an executable Python script ``name`` (running ``body``) and return its path."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def strace_wrapper(directory: Path, program: str) -> tuple[str, Path]:
    """Write a wrapper that runs ``program`` under ``strace -f -e trace=connect``.

    Returns the wrapper's path and the trace file. Skips the test without strace.
    """
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    log = directory / "connect.trace"
    wrapper = directory / "traced-cli"
    wrapper.write_text(
        f'#!/bin/sh\nexec {strace} -f -qq -e trace=connect -o {log} {program} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper), log


def outside_connections(log: Path) -> list[str]:
    """The ``connect`` calls of a trace to anything but loopback or a local socket."""
    outside = []
    for line in log.read_text().splitlines():
        if "connect(" not in line or "AF_UNIX" in line or "AF_NETLINK" in line:
            continue
        if '"127.0.0.1"' in line or '"::1"' in line or "::ffff:127.0.0.1" in line:
            continue
        outside.append(line)
    return outside
