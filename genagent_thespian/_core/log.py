"""The library's own logging: structlog bound loggers over standard ``logging`` loggers.

Nothing here configures logging, neither ``logging`` nor structlog's global configuration:
each logger wraps ``logging.getLogger(name)`` with a private processor chain, so records go
wherever the application's handlers send them (in actor processes, Thespian forwards them
to its logger process). Context can be bound (``log.bind(agent=name)``) and is rendered as
``key=value`` after the message. Existing ``%``-style calls keep working.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, cast

import structlog

__all__ = ["get_logger"]


def _to_stdlib(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> tuple[Any, ...]:
    """Render the event for the standard library: message first, then ``key=value`` pairs."""
    exc_info = event_dict.pop("exc_info", None)
    message = str(event_dict.pop("event", ""))
    if event_dict:
        message += " " + " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    kwargs: dict[str, Any] = {"exc_info": exc_info} if exc_info else {}
    return (message,), kwargs


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger writing through ``logging.getLogger(name)``."""
    return cast(
        structlog.stdlib.BoundLogger,
        structlog.wrap_logger(
            logging.getLogger(name),
            processors=[structlog.stdlib.PositionalArgumentsFormatter(), _to_stdlib],
            wrapper_class=structlog.stdlib.BoundLogger,
        ),
    )
