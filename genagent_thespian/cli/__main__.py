"""``python -m genagent_thespian.cli``: the ``genagent`` command."""

from genagent_thespian.cli import _entry

_entry()
