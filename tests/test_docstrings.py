"""The docstring share of the three packages never falls below the level reached.

Issue 18 sets a target of 25% of lines (pykka's docstrings are 41% of its lines); the floors
here are the shares reached so far, raised as docstrings are written and never lowered. The
share is measured exactly as ``.ci/docstring_share.py`` reports it (that script is loaded,
not copied), so the figure a reviewer prints is the figure this test holds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Package folder -> the lowest docstring share (docstring lines / all lines) allowed: the
#: share reached (25.3%, 18.4%, 21.9% on 2026-12-03, from 20.4%, 17.8%, 21.3% earlier that
#: day and 17.7%, 12.3%, 18.9% before), rounded down to half a point so that a branch merged
#: beside this one does not trip it by a line. ``genagent_thespian`` meets issue 18's target.
FLOORS = {
    "genagent_thespian": 0.250,
    "backends": 0.180,
    "patterns": 0.215,
}


def _share_script() -> ModuleType:
    """``.ci/docstring_share.py`` as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location(
        "docstring_share", ROOT / ".ci" / "docstring_share.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _share(folder: Path) -> float:
    """Docstring lines over all lines of the ``.py`` files under ``folder``."""
    count = _share_script().docstring_lines
    documented = total = 0
    for path in sorted(folder.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        documented += count(source)
        total += len(source.splitlines())
    return documented / max(total, 1)


def test_the_measure_counts_module_class_and_function_docstrings() -> None:
    source = (
        '"""Module."""\n\n\nclass A:\n    """Two\n    lines."""\n\n    def f(self):\n        pass\n'
    )
    assert _share_script().docstring_lines(source) == 3


@pytest.mark.parametrize("folder", sorted(FLOORS))
def test_docstring_share_does_not_fall(folder: str) -> None:
    share = _share(ROOT / folder)
    assert share >= FLOORS[folder], (
        f"{folder}: {share:.1%} of lines are docstrings, below the floor of "
        f"{FLOORS[folder]:.1%}; document the why of what you added (python "
        f".ci/docstring_share.py {folder} lists the least documented files)"
    )
