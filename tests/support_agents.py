"""Agent implementations used by the tests (importable by module, as actor classes must be)."""
