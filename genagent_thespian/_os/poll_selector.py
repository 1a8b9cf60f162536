"""One ``poll(2)`` per pass of Thespian's transport loop instead of a new epoll instance.

Thespian's TCP transport (4.0.1) waits for its sockets with a selector it builds afresh on
every pass of its loop (``TCPTransport._runWithExpiry``: "creates selector on each loop,
perhaps this could be optimized"): ``selectors.DefaultSelector()`` is an epoll instance on
Linux, so each pass costs ``epoll_create1``, one ``epoll_ctl`` per socket, ``epoll_wait``
and ``close``. Traced on an agent running claude turns: 11 passes per turn, 66 ``epoll_ctl``
calls, 110 system calls of selection per turn, half of the agent's system calls. A poll
selector used once does the same with one ``poll`` call (and builds less in Python), and the
socket count of an actor is small, so epoll's advantage (a long-lived interest set over many
descriptors) never applies here.

:func:`install_poll_selector` points the transport module's ``selectors`` global at a
namespace whose ``DefaultSelector`` is :class:`selectors.PollSelector`; nothing else in the
process is touched (asyncio and the rest keep the real module). It is installed with the
transport security (:func:`~genagent_thespian._os.security.install_transport_security`), so
every actor process, forked from a hardened one, inherits it.
"""

from __future__ import annotations

import selectors
import types

from thespian.system.transport import TCPTransport

__all__ = ["POLL_SELECTORS", "install_poll_selector"]

#: What Thespian's transport module uses of :mod:`selectors`, with poll for the selector.
POLL_SELECTORS = types.SimpleNamespace(
    DefaultSelector=selectors.PollSelector,
    EVENT_READ=selectors.EVENT_READ,
    EVENT_WRITE=selectors.EVENT_WRITE,
)


def install_poll_selector() -> None:
    """Make Thespian's TCP transport select with ``poll`` in this process. Idempotent."""
    TCPTransport.selectors = POLL_SELECTORS
