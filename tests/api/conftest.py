"""The ``api`` fixture: each client test runs once on the sync API and once on ``aio``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support_api import Api


@pytest.fixture(params=["sync", "aio"])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    """``genagent_thespian`` or ``genagent_thespian.aio``, behind the same calls."""
    client = Api(request.param)
    try:
        yield client
    finally:
        client.close()
