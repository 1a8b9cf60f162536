"""Opening the durable store a location names: a SQLite file or a PostgreSQL URL.

Systems, agents and the supervisor pass the store around as one string (it travels in
actor messages): a path opens :class:`~genagent_thespian._durable.store.SQLiteAgentStore`,
``postgresql://...`` opens :class:`~genagent_thespian._durable.postgres.PostgresAgentStore`.
"""

from __future__ import annotations

from .postgres import PostgresAgentStore, is_postgres_url, safe_location
from .store import AgentStore, SQLiteAgentStore

__all__ = ["describe_store", "is_postgres_url", "open_store"]


def open_store(location: str) -> AgentStore:
    """Open the store at ``location`` (a SQLite file path or a ``postgresql://`` URL)."""
    if is_postgres_url(location):
        return PostgresAgentStore(location)
    return SQLiteAgentStore(location)


def describe_store(location: str) -> str:
    """``location`` fit for logs and errors (a URL loses its password)."""
    return safe_location(location) if is_postgres_url(location) else location
