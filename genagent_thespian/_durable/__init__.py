"""Durable agents: the store (SQLite, PostgreSQL or memory) and one agent's record in it.

::

    store.py      AgentStore (the contract), SQLiteAgentStore, MemoryAgentStore, agent keys,
                  process records and the sweep of a previous run's processes
    postgres.py   PostgresAgentStore: the same contract for several hosts
    location.py   open the store a location string names (a path or a postgresql:// URL)
    record.py     AgentRecord: one agent's record seen from its own process; leases
    redaction.py  secrets are stored as placeholders, filled from the live spec on restore
    pickling.py   unpickle records written before the package moved to folders
    reaper.py     end recorded processes whose owning agent is gone

The store holds bytes and never unpickles; the record decides what is saved and when (a
boundary is saved before any reply or turn start leaves the agent).
"""
