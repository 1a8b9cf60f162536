"""Every ```python block of every pattern guide runs, in order, against a real system.

The blocks of one guide are joined into one module and imported in a fresh interpreter
(so classes a guide defines are importable by actor processes, as agent classes must be).
A small runner records every system the guide starts, shuts each one down afterwards
(even when the guide fails half way) and checks that no process of it is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "patterns"
GUIDES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

RUNNER = textwrap.dedent(
    """
    import importlib, sys, traceback
    import genagent_thespian as g
    from genagent_thespian.testing import system_processes, wait_until

    started = []
    original = g.start_system

    def recording_start_system(*args, **kwargs):
        system = original(*args, **kwargs)
        started.append(system)
        return system

    g.start_system = recording_start_system
    status = 0
    try:
        importlib.import_module(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        status = 1
    for system in started:
        g.shutdown_system(system)

    for system in started:
        try:
            wait_until(lambda: not system_processes(system), timeout=15)
        except AssertionError:
            print("processes left:", system_processes(system), file=sys.stderr)
            sys.exit(3)
    if not started:
        print("the guide started no system", file=sys.stderr)
        sys.exit(4)
    print("no process left", file=sys.stderr)
    sys.exit(status)
    """
)


def guide_code(path: Path) -> str:
    """The guide's ```python blocks, joined in order."""
    return "\n\n".join(block for block in BLOCK.findall(path.read_text("utf-8")))


def test_every_pattern_has_a_guide_with_code() -> None:
    names = {p.stem for p in GUIDES}
    expected = {
        "overview",
        "switchboard",
        "research",
        "debate",
        "pipeline",
        "supervisor",
        "pool",
        "watcher",
        "heartbeat",
        "checkpointer",
        "retry",
        "workspace",
        "consensus",
    }
    assert expected <= names
    assert all(guide_code(p).strip() for p in GUIDES if p.stem != "overview")


@pytest.mark.parametrize(
    "guide", [p for p in GUIDES if BLOCK.search(p.read_text("utf-8"))], ids=lambda p: p.stem
)
def test_guide_code_runs(guide: Path, tmp_path: Path) -> None:
    module = f"guide_{guide.stem}"
    (tmp_path / f"{module}.py").write_text(guide_code(guide), "utf-8")
    (tmp_path / "run_guide.py").write_text(RUNNER, "utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore::ResourceWarning",
    }
    done = subprocess.run(
        [sys.executable, "run_guide.py", module],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, (
        f"{guide.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )


def test_a_broken_guide_fails_and_still_leaves_no_process(tmp_path: Path) -> None:
    broken = "import genagent_thespian as g\nsystem = g.start_system()\nassert 1 + 1 == 3\n"
    (tmp_path / "guide_broken.py").write_text(broken, "utf-8")
    (tmp_path / "run_guide.py").write_text(RUNNER, "utf-8")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore::ResourceWarning"}
    done = subprocess.run(
        [sys.executable, "run_guide.py", "guide_broken"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 1 and "AssertionError" in done.stderr
    assert "no process left" in done.stderr
