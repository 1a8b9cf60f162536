"""The library's own logging: small bound loggers over standard ``logging`` loggers.

Nothing here configures logging: each logger wraps ``logging.getLogger(name)``, so records go
wherever the application's handlers send them (in actor processes, Thespian forwards them
to its logger process). Context can be bound (``log.bind(agent=name)``) and is rendered as
``key=value`` after the message, as are keyword arguments of one call; ``%``-style arguments
are applied first, and only when the level is enabled.

This used to be structlog's ``BoundLogger``. Importing structlog loads its development
renderer, and with it ``rich``, ``pygments`` and ``asyncio`` when they are installed: about
9 MiB of heap in the process that imports the package, inherited by every actor process it
forks, for a formatting step of a few lines. The records are the same plain ``logging``
records, so an application that formats with structlog's ``ProcessorFormatter`` (or anything
else) sees no difference.
"""

from __future__ import annotations

import logging
from typing import cast

from .types import Metadata

__all__ = ["BoundLogger", "get_logger"]


class BoundLogger:
    """A ``logging.Logger`` with bound context, rendered as ``key=value`` after each message."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: Metadata | None = None) -> None:
        self._logger = logger
        self._context = context or {}

    def bind(self, **context: object) -> BoundLogger:
        """Return a logger that adds ``context`` to every message (this one is unchanged)."""
        return BoundLogger(self._logger, {**self._context, **context})

    def debug(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at DEBUG."""
        self._log(logging.DEBUG, event, args, kw)

    def info(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at INFO."""
        self._log(logging.INFO, event, args, kw)

    def warning(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at WARNING."""
        self._log(logging.WARNING, event, args, kw)

    def error(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at ERROR."""
        self._log(logging.ERROR, event, args, kw)

    def exception(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at ERROR with the exception being handled."""
        kw.setdefault("exc_info", True)
        self._log(logging.ERROR, event, args, kw)

    def critical(self, event: str, *args: object, **kw: object) -> None:
        """Log ``event % args`` at CRITICAL."""
        self._log(logging.CRITICAL, event, args, kw)

    def _log(self, level: int, event: str, args: tuple[object, ...], kw: Metadata) -> None:
        if not self._logger.isEnabledFor(level):
            return
        # What ``logging`` accepts as ``exc_info``; the caller passes it as a keyword.
        exc_info = cast("bool | BaseException | None", kw.pop("exc_info", None))
        message = str(event) % args if args else str(event)
        pairs = {**self._context, **kw}
        if pairs:
            message += " " + " ".join(f"{key}={value!r}" for key, value in pairs.items())
        # stacklevel 3: the record names the caller of debug()/info()..., not this module.
        self._logger.log(level, message, exc_info=exc_info, stacklevel=3)


def get_logger(name: str) -> BoundLogger:
    """Return a bound logger writing through ``logging.getLogger(name)``."""
    return BoundLogger(logging.getLogger(name))
