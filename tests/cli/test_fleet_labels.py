"""The state a person reads in ``genagent ls``/``top`` for sleeping and waiting agents."""

from __future__ import annotations

import pytest

from genagent_thespian.cli._fleet import state_label


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
