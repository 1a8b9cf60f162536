"""The fleet as an MCP server (``genagent mcp``); needs the ``mcp`` extra.

::

    server.py   the MCP tools (list, start, ask, tell, poll, notify, control, status) over
                ``genagent_thespian.aio``, on stdio or Streamable HTTP (loopback, token)
    config.py   the allow-list of agent profiles an MCP client may start, from TOML

The server is a client of a node like the CLI: it holds no agent state of its own, and
nothing an MCP client sends is ever imported or used as a class name.
"""
