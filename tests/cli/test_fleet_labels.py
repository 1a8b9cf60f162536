"""The state a person reads in ``genagent ls``/``top`` for sleeping and waiting agents."""

from __future__ import annotations

import pytest

from genagent_thespian.cli._fleet import render_top, sessions_label, state_label


@pytest.mark.parametrize(
    ("row", "label"),
    [
        ({"state": "idle"}, "idle"),
        ({"state": "idle", "hibernated": True}, "hibernated"),
        ({"state": "idle", "hibernated": True, "halted": True}, "halted"),
        ({"state": "processing", "waiting_for_session": True}, "waiting for a session"),
        ({"state": "processing", "waiting_for_session": False}, "processing"),
    ],
)
def test_sleeping_and_waiting_agents_are_labelled(row: dict[str, object], label: str) -> None:
    assert state_label(row) == label


def test_the_sessions_line_says_the_cap_and_the_queue() -> None:
    figures = {
        "max_live_sessions": 20,
        "live": 20,
        "busy": 18,
        "retiring": 1,
        "queued": 3,
        "oldest_wait": 4.25,
    }
    label = "sessions 20/20 live, 18 busy, 1 retiring, 3 waiting (oldest 4.2s)"
    assert sessions_label(figures) == label
    quiet = dict(figures, live=2, busy=0, retiring=0, queued=0, oldest_wait=None)
    assert sessions_label(quiet) == "sessions 2/20 live, 0 busy"
    # Nobody waits, so the governor does not hear of turns: busy is left out, not shown as 0.
    assert sessions_label(dict(quiet, busy=None)) == "sessions 2/20 live"
    assert sessions_label(None) == ""  # nothing capped: no line
    frame = render_top([], node="127.0.0.1:1", width=80, now=0.0, sessions=figures)
    assert frame.splitlines()[1] == label
    assert render_top([], node="127.0.0.1:1", width=80, now=0.0).splitlines()[1] == ""
