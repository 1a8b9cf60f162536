"""Start a test's subprocess as a terminal would, whatever the suite itself ignores.

A suite started in the background (``&`` in a non-interactive shell, ``nohup``) runs with
SIGINT or SIGHUP ignored, and an ignored signal stays ignored in every child across
``exec``. A test that ends its subprocess with Ctrl-C or a hang-up would then wait for an
exit that never comes. Passing :func:`as_from_a_terminal` as ``preexec_fn`` gives the
child the default action for those signals, as a program started from a terminal has.
"""

from __future__ import annotations

import signal

_TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM)


def as_from_a_terminal() -> None:
    """Between fork and exec: the default action for the signals a terminal sends."""
    for signum in _TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
