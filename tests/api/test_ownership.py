"""A script-owned system never outlives its script, however the script ends.

Each test runs ``tests/support_lifecycle.py`` in a subprocess of its own session (as a
shell runs a script), ends it one way, and checks that no process of its actor system
remains and that the durable agent's record was kept for the next run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support_signals import as_from_a_terminal

from genagent_thespian._durable.store import SQLiteAgentStore
from genagent_thespian._os.processes import processes_with_marker
from genagent_thespian.testing import process_group_members, read_history, wait_until

SCRIPT = Path(__file__).resolve().parent.parent / "support_lifecycle.py"


def _system_processes(info: dict[str, object]) -> list[int]:
    pgid = info["pgid"]
    assert isinstance(pgid, int) and pgid != os.getpgid(0)
    return sorted(
        set(process_group_members(pgid)) | set(processes_with_marker(str(info["system_id"])))
    )


def _run(mode: str, tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, object], Path]:
    store = tmp_path / "agents.sqlite3"
    gate = tmp_path / "gate"
    script = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(store), str(gate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,  # noqa: PLW1509 (it only resets signal dispositions)
    )
    assert script.stdout is not None
    line = script.stdout.readline()
    if not line:
        script.wait(timeout=60)
        stderr = script.stderr.read() if script.stderr else ""
        pytest.fail(f"the script ended before starting its agent: {stderr}")
    info = json.loads(line)
    assert _system_processes(info), "the system should be running while the script runs"
    return script, info, store


def _assert_ended(script: subprocess.Popen[str], info: dict[str, object], store: Path) -> None:
    try:
        wait_until(
            lambda: not _system_processes(info),
            timeout=30.0,
            message=f"processes of the script's system remain: {_system_processes(info)}",
        )
    finally:
        for pid in _system_processes(info):
            os.kill(pid, signal.SIGKILL)
        script.communicate(timeout=60)
    kept = SQLiteAgentStore(str(store))
    try:
        assert len(kept.list_agents()) == 1, "the durable agent's record must be kept"
    finally:
        kept.close()


@pytest.mark.parametrize(
    ("mode", "expected_code"),
    [("exit", 0), ("raise", 1), ("with-raise", 1)],
    ids=["normal-exit", "uncaught-exception", "exception-in-with-block"],
)
def test_script_ending_on_its_own_shuts_its_system_down(
    mode: str, expected_code: int, tmp_path: Path
) -> None:
    script, info, store = _run(mode, tmp_path)
    assert script.wait(timeout=60) == expected_code
    _assert_ended(script, info, store)


@pytest.mark.parametrize(
    ("signum", "expected_code"),
    [
        (signal.SIGINT, -signal.SIGINT),  # Ctrl-C: the terminal signals the script's group
        (signal.SIGTERM, 128 + signal.SIGTERM),
        (signal.SIGHUP, 128 + signal.SIGHUP),
    ],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_script_ended_by_a_signal_mid_ask_shuts_its_system_down(
    signum: int, expected_code: int, tmp_path: Path
) -> None:
    script, info, store = _run("wait", tmp_path)
    history = tmp_path / "gate.history"
    wait_until(lambda: "wait for the gate" in read_history(history), timeout=30.0)
    os.killpg(script.pid, signum)
    assert script.wait(timeout=60) == expected_code
    _assert_ended(script, info, store)


def test_sigkilled_script_system_ends_itself(tmp_path: Path) -> None:
    script, info, store = _run("wait", tmp_path)
    wait_until(lambda: "wait for the gate" in read_history(tmp_path / "gate.history"), timeout=30.0)
    script.kill()
    assert script.wait(timeout=60) == -signal.SIGKILL
    _assert_ended(script, info, store)
