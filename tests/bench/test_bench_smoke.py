"""Smoke check of the benchmarks: ``bench/run.py --quick`` runs and reports every figure.

No timing is asserted here (the machine is shared and noisy); the figures themselves are
in ``docs/performance.md``. What must hold: the run succeeds, leaves no process behind (it
checks that itself and fails otherwise), and writes every benchmark's JSON with every
figure, each with a finite ratio to its floor, or an explicit skip where durability is not
available yet.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "overhead": {
        "tcp_ask_p50",
        "tcp_ask_p99",
        "tcp_ask_instant_p50",
        "tcp_design_floor_p50",
        "tcp_ask_vs_design_p50",
        "simple_ask_p50",
        "simple_ask_p99",
        "tcp_ask_drift",
        "tcp_timer_cost",
        "simple_ask_drift",
    },
    "throughput": {"turns_per_second", "tell_issue_per_second", "drain_turns_per_second"},
    "scale": {
        "pss_per_idle_agent",
        "start_per_agent",
        "ask_warm_many_vs_one",
        "ask_cold_many_vs_one",
        "raw_ask_many_vs_one",
        "ask_warm_connected_client",
        "raw_ask_connected_client",
        "warm_ask_vs_raw_many",
        "processes_per_idle_agent",
    },
    "recovery": {
        "worker_kill_p50",
        "worker_kill_max",
        "interrupt_group_p50",
        "interrupt_group_max",
        "restart_by_hand_p50",
        "durable_restart_p50",
    },
    "durability": {"durable_ask_p50", "durable_ask_p99"},
    "hibernation": {
        "processes_all_asleep",
        "pss_per_sleeping_agent",
        "wake_ask_p50",
        "wake_ask_p99",
        "wake_wave_per_second",
    },
    "streaming": {
        "watch_p50",
        "watch_p99",
        "telemetry_p50",
        "telemetry_p99",
        "design_floor_p50",
        "watch_vs_design_p50",
    },
}

#: Figures that may be skipped, and only with this reason.
MAY_SKIP = {"durable_restart_p50", "durable_ask_p50", "durable_ask_p99"}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--results-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return out, completed.stdout


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_figure_is_reported_with_a_finite_ratio(
    quick_results: tuple[Path, str], name: str
) -> None:
    out, _ = quick_results
    document = json.loads((out / f"{name}.json").read_text())
    assert document["benchmark"] == name
    assert document["quick"] is True
    figures = {figure["key"]: figure for figure in document["figures"]}
    assert EXPECTED[name] <= figures.keys()
    for key, figure in figures.items():
        if figure["skipped"] is not None:
            assert key in MAY_SKIP, f"{key} skipped: {figure['skipped']}"
            assert figure["skipped"].startswith("durability not available")
            continue
        assert isinstance(figure["ratio"], float), key
        assert math.isfinite(figure["ratio"]), key
        assert figure["ratio"] > 0, key
        assert figure["samples"] > 0, key
        assert math.isfinite(figure["value"]) and math.isfinite(figure["floor"]), key


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_run_prints_every_benchmark_and_leaves_no_process(
    quick_results: tuple[Path, str],
) -> None:
    _, stdout = quick_results
    for name in EXPECTED:
        assert f"== {name} (" in stdout
    assert "processes left behind: 0" in stdout


CLI_TURNS = {
    "claude_turn_p50",
    "claude_turn_p99",
    "claude_turn_p50_vs_bare",
    "claude_turn_p99_vs_bare",
    "claude_framework_pss_per_agent",
    "claude_tree_pss_per_agent",
    "claude_cold_start",
    "claude_fleet_wall_s",
    "claude_fleet_cpu_s",
    "claude_fleet_peak_pss_mib",
    "claude_turn_p50_claude_code_prompt",
    "claude_turn_p99_claude_code_prompt",
    "claude_fleet_wall_s_claude_code_prompt",
    "claude_fleet_cpu_s_claude_code_prompt",
    "claude_small_fleet_wall_s",
    "claude_small_fleet_cpu_s",
    "codex_turn_p50",
    "codex_turn_p99",
}


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.timeout(420)
def test_cli_turns_quick_run_reports_every_figure(tmp_path: Path) -> None:
    """``bench/cli_turns.py`` against the real CLIs and the official SDK (the bench extra)."""
    pytest.importorskip("claude_agent_sdk", reason="the bench extra is not installed")
    pytest.importorskip("psutil", reason="the bench extra is not installed")
    for program in ("claude", "codex"):
        if not (ROOT / ".ci" / "tools" / "node_modules" / ".bin" / program).exists():
            pytest.skip(f"{program} CLI not installed (run .ci/install_clis.sh)")
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--only",
            "cli_turns",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    assert "processes left behind: 0" in completed.stdout
    document = json.loads((tmp_path / "cli_turns.json").read_text())
    figures = {figure["key"]: figure for figure in document["figures"]}
    assert figures.keys() >= CLI_TURNS
    for key in CLI_TURNS:
        figure = figures[key]
        assert figure["skipped"] is None, key
        assert isinstance(figure["ratio"], float) and math.isfinite(figure["ratio"]), key
        assert figure["ratio"] > 0 and figure["samples"] > 0, key
