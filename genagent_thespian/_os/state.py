"""Where this user's genagent state lives on disk (the folder of every node's home).

``$GENAGENT_STATE_DIR/<name>/`` when ``GENAGENT_STATE_DIR`` is set, else
``$XDG_STATE_HOME/genagent-thespian/<name>/`` (``XDG_STATE_HOME`` defaults to
``~/.local/state``). Only the path: a node's name is checked, and its home created and
locked, by ``_api/home.py``; the transport reads the node secret from here.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STATE_DIR_ENV", "state_folder"]

#: Overrides the folder that holds every node's home (tests, several users per account).
STATE_DIR_ENV = "GENAGENT_STATE_DIR"


def state_folder(name: str) -> Path:
    """Return the folder of node ``name`` (not created, ``name`` not checked)."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit) / name
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "genagent-thespian" / name
