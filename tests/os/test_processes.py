"""The one place that signals processes: ``_os/processes.py`` (the runtime's semantics)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from genagent_thespian._core.errors import InvalidOption
from genagent_thespian._os.processes import (
    children_of,
    kill_process,
    kill_process_group,
    process_alive,
    wait_for_exit,
)


def test_never_signals_the_caller_its_group_or_init() -> None:
    assert kill_process(os.getpid(), 0) is False
    assert kill_process(1, 0) is False
    assert kill_process(0, 0) is False
    assert kill_process_group(os.getpgrp(), 0) is False
    assert kill_process_group(1, 0) is False


@pytest.mark.parametrize("bad", ["12", True, 1.5, None])
def test_a_pid_that_is_not_an_int_is_a_typed_error(bad: object) -> None:
    with pytest.raises(InvalidOption):
        kill_process(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        kill_process_group(bad)  # type: ignore[arg-type]


def test_kills_a_process_and_its_group_and_reports_a_gone_one() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        assert child.pid in children_of(os.getpid())
        assert process_alive(child.pid)
        assert kill_process_group(child.pid, signal.SIGKILL) is True
        assert wait_for_exit(child.pid, 10)
        assert not process_alive(child.pid)  # a zombie until reaped: counts as dead
        assert child.wait(10) == -signal.SIGKILL  # wait_for_exit did not reap it
        assert kill_process(child.pid) is False
        assert kill_process_group(child.pid) is False
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_terminating_the_callers_group_is_refused_not_waited_for() -> None:
    from genagent_thespian._os.processes import terminate_process_group

    with pytest.raises(InvalidOption, match="refusing"):
        terminate_process_group(os.getpgrp(), grace=0.1)
    with pytest.raises(InvalidOption):
        terminate_process_group(1, grace=0.1)
