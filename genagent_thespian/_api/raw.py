"""What a plain Thespian client needs to talk to agents: the node's secret and its address.

The actor protocol (``genagent_thespian.messages``) is public, but a node's transport only
accepts frames authenticated with the node secret, and Thespian finds a running system by
its admin port. Two calls give a raw client both, with public names only::

    import genagent_thespian as g
    from thespian.actors import ActorSystem
    from genagent_thespian.messages import Prompt

    g.use_node_secret()                      # this process speaks the node's frames
    asys = ActorSystem("multiprocTCPBase", g.client_capabilities())   # or (admin_port)
    reply = asys.ask(g.whereis("my-coder"), Prompt("What does foo.py do?"), 60)

A client's ``ActorSystem`` is the node's system seen from this process: its ``shutdown()``
would stop the node. The node refuses it (``_os/shutdown_guard.py``): only the process that
started the system can shut it down; a client just lets its object go.
"""

from __future__ import annotations

import os

from .._core.errors import SystemNotRunning
from .._core.types import Capabilities
from .._os.security import harden_transport
from .client import current_system
from .system import AgentSystem

__all__ = ["client_capabilities", "use_node_secret"]


def use_node_secret(
    *,
    bind_host: str = "127.0.0.1",
    secret_path: str | os.PathLike[str] | None = None,
) -> None:
    """Make this process's Thespian transport speak the node's authenticated frames.

    Call it before creating an ``ActorSystem("multiprocTCPBase", ...)`` client. The secret is
    the one the node uses (``GENAGENT_SECRET``, ``GENAGENT_SECRET_FILE``, else ``node.secret``
    in the default node's home, shared by every node of this user); a process that started a
    system has it installed already, and the call is then a no-op.

    Args:
        bind_host: The node's bind host (loopback unless it was configured otherwise).
        secret_path: A secret file to use instead.

    Raises:
        SecurityConfigError: the secret is unusable, or another one is installed already.
    """
    harden_transport(bind_host=bind_host, secret_path=secret_path)


def client_capabilities(target: AgentSystem | int | None = None) -> Capabilities:
    """Return the Thespian capabilities that reach a running system as a client.

    Args:
        target: An :class:`AgentSystem` (its admin port), an admin port (a ``genagent``
            node's: ``genagent node info``), or ``None`` for the current system of this
            process.

    Raises:
        SystemNotRunning: ``None`` was given and this process has no current system, or
            the system has no admin port (``simpleSystemBase`` has no clients).
    """
    if isinstance(target, int):
        return {"Admin Port": target}
    system = target if target is not None else current_system()
    if system.admin_port is None:
        raise SystemNotRunning("this system has no admin port (simpleSystemBase has no clients)")
    return {"Admin Port": system.admin_port}
