"""The demo (``genagent_thespian.patterns.demo.run_demo``) runs a Supervisor fan-out end to end."""

from __future__ import annotations

import contextlib
import os

from genagent_thespian.patterns.demo import run_demo

from genagent_thespian.testing import wait_until


def _live_children() -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == os.getpid():
            if fields[0] == "Z":
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(int(entry), os.WNOHANG)
            else:
                children.add(int(entry))
    return children


def test_demo_fans_out_prints_progress_and_cleans_up() -> None:
    before = _live_children()
    lines: list[str] = []
    assert run_demo(agents=3, out=lines.append) == 0
    done = [line for line in lines if "] demo-coordinator-r1-w" in line and " done: " in line]
    assert len(done) == 3
    assert any("synthesis: Synthesis of 3 results" in line for line in lines)
    assert any("workers stopped: 3/3" in line for line in lines)
    text = "\n".join(lines)
    # Act 2: the worker dies mid-turn, the agent does not.
    assert "the turn failed, and said so: TurnCrashed" in text
    assert "unchanged" in text.split("the agent stayed up: ")[1].splitlines()[0]
    assert "next turn, on a fresh worker: review done" in text
    # Act 3: the durable agent dies, comes back, resumes its session, loses nothing.
    assert "restarts=1" in text
    assert "queue intact: 2 queued prompts answered after the restart: " in text
    assert "['entry two written', 'entry three written']" in text
    assert "answered with AgentRestarted: it is never run twice" in text
    assert "resumed: yes" in text
    assert lines[-7] == "what next:"
    wait_until(lambda: _live_children() <= before, timeout=15)


def test_demo_rejects_a_bad_agent_count() -> None:
    lines: list[str] = []
    assert run_demo(agents=0, out=lines.append) == 1
    assert "positive int" in lines[0]
