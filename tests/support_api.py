"""The client API under test, sync or asyncio, behind one interface.

``Api("sync")`` is the ``genagent_thespian`` module itself. ``Api("aio")`` runs each
coroutine of ``genagent_thespian.aio`` to completion on an event loop of its own, and steps
its async iterators (``stream``, ``watch``) one item at a time, so one test body checks
that both APIs behave the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import genagent_thespian as g
from genagent_thespian import aio


class _SyncIterator:
    """A sync view of an async iterator, stepped on ``loop``; ``close()`` closes it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, items: AsyncIterator[Any]) -> None:
        self._loop = loop
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.run_until_complete(self._items.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._loop.run_until_complete(self._items.aclose())  # type: ignore[attr-defined]


class Api:
    """``genagent_thespian`` (``kind="sync"``) or ``genagent_thespian.aio`` made callable."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "aio" else None

    def __getattr__(self, name: str) -> Any:
        if self.loop is None:
            return getattr(g, name)
        function = getattr(aio, name)
        loop = self.loop
        if name == "stream":

            def iterate(*args: Any, **kwargs: Any) -> _SyncIterator:
                return _SyncIterator(loop, function(*args, **kwargs))

            return iterate
        if name == "watch":

            def subscribe(*args: Any, **kwargs: Any) -> _SyncIterator:
                context = function(*args, **kwargs)
                items = loop.run_until_complete(context.__aenter__())
                return _Watching(loop, items, context)

            return subscribe

        def call(*args: Any, **kwargs: Any) -> Any:
            return loop.run_until_complete(function(*args, **kwargs))

        return call

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


class _Watching(_SyncIterator):
    """The events of an entered ``aio.watch`` block; ``close()`` leaves the block."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, items: AsyncIterator[Any], context: Any
    ) -> None:
        super().__init__(loop, items)
        self._context = context

    def close(self) -> None:
        super().close()
        self._loop.run_until_complete(self._context.__aexit__(None, None, None))


async def until(condition: Callable[[], Awaitable[Any]], *, timeout: float = 30.0) -> Any:
    """Await ``condition()`` until it is truthy and return it; fail after ``timeout`` seconds.

    The asyncio twin of ``genagent_thespian.testing.wait_until``, for conditions that are
    themselves ``aio`` calls (a coroutine cannot be awaited inside a sync predicate).
    """
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
    return value
