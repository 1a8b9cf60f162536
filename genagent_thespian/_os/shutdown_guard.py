"""Only the process that started an actor system may shut it down.

In Thespian any client of a ``multiprocTCPBase`` system can call ``ActorSystem.shutdown()``
and the admin obeys: a raw client that tidies up after itself, as Thespian's own examples
do, would stop every agent of the node. With the guard installed (in the starting process,
before the admin is forked, so the admin inherits it), the admin accepts ``SystemShutdown``
only from its starter or from the system's own processes (its process group: the supervisor
ends a system whose owner died). Any other local client gets ``SystemShutdownCompleted`` at
once, so its ``shutdown()`` returns and just closes its own endpoint, and the node logs the
refusal and keeps running.

The starter is the ``ActorSystem`` endpoint that started the admin: Thespian gives the admin
its address (``addrOfStarter``). Not its process: a raw client opened in the same program
(``ActorSystem(..., transientUnique=True)``, tidied up with ``shutdown()``) is another
endpoint and is refused like any other. Nor the admin's parent: Thespian forks twice to
detach the admin, whose parent is then init.

Any other sender is identified by the local process listening on its address (psutil). A
sender that is not on this host, or whose process cannot be found, is obeyed as before: the
guard protects a node from its local clients, the transport's secret from everyone else.
"""

from __future__ import annotations

import logging
import os

from thespian.system.admin.convention import ConventioneerAdmin
from thespian.system.messages.admin import SystemShutdownCompleted
from thespian.system.transport import TransmitIntent

from .._core.types import ActorAddress, ThespianInternal
from .ports import listener_pid

__all__ = ["install_shutdown_guard"]

_log = logging.getLogger("genagent_thespian.shutdown_guard")
_original = ConventioneerAdmin.h_SystemShutdown


def install_shutdown_guard() -> None:
    """Make this process's (and its forked admin's) Thespian admin refuse foreign shutdowns."""
    if ConventioneerAdmin.h_SystemShutdown is not _guarded:
        ConventioneerAdmin.h_SystemShutdown = _guarded


def _guarded(admin: ThespianInternal, envelope: ThespianInternal) -> ThespianInternal:
    """The admin's ``SystemShutdown`` handler, refusing requests from foreign processes.

    A refused request is answered ``SystemShutdownCompleted`` so the foreign client does not
    hang in ``shutdown()``; the system keeps running, and the refusal is logged.
    """
    starter = getattr(admin, "addrOfStarter", None)
    if starter is not None and envelope.sender == starter:
        return _original(admin, envelope)
    pid = _local_pid(envelope.sender)
    if pid is None or _may_shut_down(pid):
        return _original(admin, envelope)
    _log.warning(
        "refused a shutdown request from client process %d (%s): only the endpoint that "
        "started this system (%s) can shut it down",
        pid,
        envelope.sender,
        starter,
    )
    admin._send_intent(TransmitIntent(envelope.sender, SystemShutdownCompleted()))
    return True


def _may_shut_down(pid: int) -> bool:
    """Whether process ``pid`` may shut this system down: the admin or one of the system's
    own processes (same process group). A pid already gone is allowed: the request cannot be
    a live foreign client's.
    """
    if pid == os.getpid():
        return True
    try:
        return os.getpgid(pid) == os.getpgid(0)
    except OSError:
        return True  # gone already: nothing to protect against


def _local_pid(address: ActorAddress) -> int | None:
    """The pid of the local process listening on ``address`` (``None``: not found/not local)."""
    try:
        host, port = address.addressDetails.connectArgs[0][:2]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return listener_pid(port, frozenset({"127.0.0.1", "0.0.0.0", "::1", "localhost", host}))
