"""Durable agents: the store (SQLite, or memory) and one agent's record in it."""
