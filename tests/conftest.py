"""Shared test configuration: the package's own pytest fixtures (agent_system, any_agent_system).

Systems the tests start without a home of their own get one under a folder private to this
run (``XDG_STATE_HOME``), never the user's real ``~/.local/state/genagent-thespian`` nor
another run's: one home serves one running system at a time.
"""

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from support_api import Api
from support_postgres import postgres_server, postgres_url  # the store and fleet tests' server

pytest_plugins = ["genagent_thespian.testing"]

__all__ = ["postgres_server", "postgres_url"]

_STATE = tempfile.mkdtemp(prefix="genagent-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)


@pytest.fixture(params=["sync", "aio"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """``genagent_thespian`` or ``genagent_thespian.aio``, behind the same calls."""
    client = Api(request.param)
    try:
        yield client
    finally:
        client.close()
