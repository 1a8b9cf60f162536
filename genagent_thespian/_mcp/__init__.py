"""The fleet as an MCP server (``genagent mcp``); needs the ``mcp`` extra."""
