"""The PostgreSQL server fixtures (``tests/support_postgres.py``) for the fleet tests."""

from support_postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
