"""Nodes: the local node the CLI attaches to, and several hosts joined in a convention.

::

    node.py         ``genagent node start|stop``: one long-lived system, its state file
    convention.py   ``start_node``: leader, members, labels, capacity, joining, heartbeats
    membership.py   NodeWatcher on the leader: which nodes live (NodesChanged, NodeLost)
    leadership.py   Elector on each leader candidate: the store elects who runs the services

Nothing in ``_core`` or ``_actors`` imports these modules: a single-host system never loads
them, and the actors learn about nodes only through messages (``NodesChanged``, ``Lead``).
"""
