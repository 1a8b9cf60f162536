"""Where a CLI keeps a session's files on this host, for moving them with a durable agent.

Both CLIs keep the conversation in files under a folder of the user's home (claude:
``~/.claude/projects/<cwd, munged>/<session id>.jsonl``; codex:
``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<thread id>.jsonl``). A file is named by
its path relative to that folder, so the same name finds its place on another host whose
home differs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["files_under", "home_of", "path_under"]


def home_of(env: Mapping[str, str]) -> Path:
    """The home folder a CLI process with environment ``env`` uses."""
    return Path(env.get("HOME") or os.path.expanduser("~"))


def files_under(base: Path, pattern: str) -> dict[str, Path]:
    """The files under ``base`` matching ``pattern``, by their path relative to ``base``."""
    if not base.is_dir():
        return {}
    return {
        path.relative_to(base).as_posix(): path for path in base.glob(pattern) if path.is_file()
    }


def path_under(base: Path, name: str) -> Path | None:
    """``base / name`` if it stays inside ``base`` (a stored name never escapes), else None."""
    target = (base / name).resolve()
    root = base.resolve()
    return target if target.is_relative_to(root) and target != root else None
