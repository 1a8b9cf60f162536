"""Every telemetry event the package emits is a declared name (``EVENT_NAMES``).

``attach(..., event_names=[...])`` refuses names outside ``EVENT_NAMES`` with
``InvalidEvent``, so an emitted but undeclared name is an event nobody can subscribe to by
name. The state machine's events are checked by tests/core/test_machine.py; this reads every
``emit("...")`` / ``_emit("...")`` call in the source, where the actors emit theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

from genagent_thespian._actors.telemetry import EVENT_NAMES

ROOT = Path(__file__).resolve().parent.parent
EMIT = re.compile(r"emit\(\s*\"([a-z_.]+)\"")


def test_every_emitted_event_name_is_declared() -> None:
    sources = [
        path
        for folder in ("genagent_thespian", "backends", "patterns")
        for path in (ROOT / folder).rglob("*.py")
    ]
    emitted = {
        (name, path.relative_to(ROOT).as_posix())
        for path in sources
        for name in EMIT.findall(path.read_text("utf-8"))
    }
    assert len(emitted) > 15, "the pattern no longer finds the emit calls"
    assert sorted(item for item in emitted if item[0] not in EVENT_NAMES) == []
