"""Nodes: the local node the CLI attaches to, and several hosts joined in a convention."""
