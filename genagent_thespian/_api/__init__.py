"""The client API: the actor system handle and the functions that talk to agents by name.

This is the code that runs in the user's process (a script, a test, the CLI)::

    system.py         AgentSystem: start or attach to a system, one endpoint per thread,
                      the sync driver's wait (``_exchange``), shutdown and the final sweep
    calls.py          every client call as a *plan*, written once for both drivers
    client.py         the sync API (``ask``, ``tell``, ``start_agent``...) over ``calls``
    aio_transport.py  the asyncio driver: one thread and one endpoint for every task
    telemetry.py      ``attach``/``detach`` of telemetry handlers in this process
    home.py           a node's home folder (store, log, lock), so a rerun finds its agents
    ownership.py      a started system never outlives the process that started it
    raw.py            what plain Thespian code needs to talk to a node (secret, address)

Where to change what: how a call behaves (which reply counts, what a restart means for
it) is ``calls.py``; how a thread or task waits is ``system.py`` or ``aio_transport.py``.
The public names are re-exported by ``genagent_thespian`` and ``genagent_thespian.aio``.
"""
