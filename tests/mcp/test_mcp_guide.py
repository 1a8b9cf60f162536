"""The allow-list shown in ``docs/mcp.md`` loads as the server would load it.

The guide's Python example runs with every other documented example (``tests/test_docs.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from genagent_thespian._mcp.config import load_config

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
TOML = re.compile(r"^```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_the_mcp_guides_allow_list_loads(tmp_path: Path) -> None:
    (block,) = TOML.findall(GUIDE.read_text("utf-8"))
    path = tmp_path / "mcp.toml"
    path.write_text(block, "utf-8")
    config = load_config(path)
    assert set(config.profiles) == {"scripted", "coder"}
    assert config.profiles["coder"].cwds == ("/srv/repos/app", "/srv/repos/docs")
    assert config.ask_wait == 30.0
