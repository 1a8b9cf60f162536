"""The PostgreSQL server fixtures for the store tests (``tests/support_postgres.py``)."""

from support_postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
