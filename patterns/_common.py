"""Small helpers shared by the pattern modules (not public API)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from genagent_thespian import AskTimeout

__all__ = ["backend_options", "wait_for"]


def backend_options(options: Mapping[str, Any], own: frozenset[str] | set[str]) -> dict[str, Any]:
    """Return the options meant for the backend: everything but the pattern's ``own`` keys.

    This is how a pattern takes any backend: ``script=[...]`` reaches the scripted backend,
    ``model=...``/``cwd=...`` reach ``claude``, and the pattern never needs to know which.
    """
    return {key: value for key, value in options.items() if key not in own}


def wait_for(
    condition: Callable[[], Any], *, timeout: float | None, what: str, agent: Any = None
) -> Any:
    """Return ``condition()``'s first truthy value, checking until ``timeout`` seconds.

    Raises:
        AskTimeout: the condition stayed false (``what`` says what was awaited).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.002
    while True:
        value = condition()
        if value:
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise AskTimeout(f"timed out after {timeout}s waiting for {what}", agent=agent)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
