"""The runnable examples of ``docs/async.md`` and ``docs/mcp.md`` run, in a fresh interpreter.

The ```python blocks of one guide are joined in order into one script; a small runner
records every system the script starts, shuts each down afterwards (even when the script
fails half way) and checks that no process of it is left. The guide's ```toml allow-list
must load.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genagent_thespian._mcp.config import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
PYTHON = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
TOML = re.compile(r"^```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)

RUNNER = textwrap.dedent(
    """
    import runpy, sys, traceback
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
        runpy.run_path(sys.argv[1], run_name="__guide__")
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
    sys.exit(status if started else 4)
    """
)


@pytest.mark.parametrize("guide", ["async.md", "mcp.md"])
def test_the_guide_runs_as_written(guide: str, tmp_path: Path) -> None:
    if guide == "mcp.md":
        pytest.importorskip("mcp")
    blocks = PYTHON.findall((DOCS / guide).read_text("utf-8"))
    assert blocks, f"{guide} has no python example"
    script = tmp_path / "guide.py"
    script.write_text("\n\n".join(blocks), "utf-8")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_mcp_guides_allow_list_loads(tmp_path: Path) -> None:
    (block,) = TOML.findall((DOCS / "mcp.md").read_text("utf-8"))
    path = tmp_path / "mcp.toml"
    path.write_text(block, "utf-8")
    config = load_config(path)
    assert set(config.profiles) == {"scripted", "coder"}
    assert config.profiles["coder"].cwds == ("/srv/repos/app", "/srv/repos/docs")
    assert config.ask_wait == 30.0
