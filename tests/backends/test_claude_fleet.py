"""Issue 15's claude fleet, small: real ``claude`` CLIs under ``max_live_sessions``.

12 agents share a cap of 3 live sessions; 4 clients send 3 turns to each agent in random
order (see ``bench/claude_fleet.py``, which runs the same at 200 agents and a cap of 20).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support_cli import require_cli

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the agent processes import bench.* by module name

from bench.claude_fleet import fleet  # noqa: E402

pytestmark = pytest.mark.cli


def test_a_claude_fleet_never_exceeds_the_cap_and_every_conversation_goes_on() -> None:
    require_cli("claude")
    report = fleet(agents=12, cap=3, turns=3, clients=4, watchdog=120.0)
    assert report.errors == []
    assert report.wrong_answers == []
    assert report.answered == 12 * 3
    assert report.missing_history == []  # each request carried the agent's earlier turns
    assert report.cli_samples > 10
    assert 1 <= report.peak_live_clis <= 3
    # Random order over 12 agents and 3 slots: conversations went on on a new CLI.
    assert report.cli_processes_started > 12
    assert report.continued_across_eviction >= 1
    assert report.orphans == []
