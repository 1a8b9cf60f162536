"""The built-in backends, one public module each, imported by short name on first use.

``start_agent(..., backend="claude")`` resolves the name through ``BUILTIN_BACKENDS`` in the
core and imports the module then, so an extra that is not installed (``anthropic``,
``openai``) costs nothing until an agent asks for it::

    claude            the Claude Code CLI, stream-json over pipes (a kept process by default)
    codex             the Codex CLI: ``codex app-server`` by default, ``codex exec`` per turn
    anthropic         the Messages API on the ``anthropic`` SDK; the session holds the history
    openai            the Responses API on the ``openai`` SDK; the provider holds the history
    _process          CLI child processes: own process group, framed stdout, escalating stop
    _options          option checking for the CLI backends
    _http             what the HTTP backends share: secrets, option specs, the stream pump
    _codex_app        codex's app-server mode (JSON-RPC on stdio)
    _codex_common     what both codex modes share (error classification, usage, budgets)
    _session_files    where each CLI keeps a session's files, to move them with the agent

Every backend passes the same conformance suite (``BackendConformance`` in
``genagent_thespian/testing/_conformance.py``); ``docs/backends.md`` is the guide.
"""
