"""What an MCP client may do: the allow-list of agent profiles, read from a TOML file.

An MCP client is another program (often another LLM) acting on the fleet. It may start
agents only from *profiles* the operator wrote into the config file: a profile fixes the
implementation class, the backend and the options, and lists the working directories a
client may choose from. Nothing the client sends is ever imported or used as a class name.

Example ``mcp.toml``::

    ask_wait = 30            # seconds the ask tool waits before returning a request id
    max_ask_wait = 300       # the most a client may ask it to wait

    [profiles.scripted]
    class = "genagent_thespian.cli:ScriptedAgent"
    backend = "scripted"
    options = { default = "hello from a scripted agent" }

    [profiles.coder]
    class = "myproject.agents:Coder"
    backend = "claude"
    cwds = ["/srv/repos/app", "/srv/repos/docs"]   # the client picks one (default: the first)
    cwd_option = "cwd"                             # the init_agent option that receives it
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._core.errors import InvalidOption
from .._core.types import ActorAddress, OptionValue

__all__ = ["McpConfig", "Profile", "load_config"]


@dataclass(frozen=True, slots=True)
class Profile:
    """One kind of agent an MCP client may start."""

    name: str
    impl: str  # "module:Class", written by the operator
    backend: str
    options: dict[str, OptionValue] = field(default_factory=dict)
    cwds: tuple[str, ...] = ()
    cwd_option: str = "cwd"

    def load_impl(self) -> type:
        """Import the profile's class (the operator named it; clients never do)."""
        module_name, _, attr = self.impl.partition(":")
        try:
            target: ActorAddress = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise InvalidOption(
                f"profile {self.name!r}: cannot load {self.impl!r}: {exc}"
            ) from None
        if not isinstance(target, type):
            raise InvalidOption(f"profile {self.name!r}: {self.impl!r} is not a class")
        return target

    def options_for(self, cwd: str | None) -> dict[str, OptionValue]:
        """The init options for a start in ``cwd`` (which must be one of :attr:`cwds`)."""
        options = dict(self.options)
        if cwd is None and not self.cwds:
            return options
        chosen = self.cwds[0] if cwd is None else os.path.normpath(cwd)
        if chosen not in self.cwds:
            raise InvalidOption(
                f"profile {self.name!r} does not allow cwd {cwd!r}; allowed: {list(self.cwds)}"
            )
        options[self.cwd_option] = chosen
        return options


@dataclass(frozen=True, slots=True)
class McpConfig:
    """The MCP server's settings and allow-list."""

    profiles: dict[str, Profile] = field(default_factory=dict)
    ask_wait: float = 30.0
    max_ask_wait: float = 300.0


def load_config(path: str | os.PathLike[str] | None) -> McpConfig:
    """Read ``path`` (no file: no profiles, so no client can start agents).

    Raises:
        InvalidOption: the file is not valid TOML or a setting is wrong (named).
    """
    if path is None:
        return McpConfig()
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise InvalidOption(f"cannot read the MCP config {os.fspath(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidOption(f"the MCP config {os.fspath(path)!r} is not TOML: {exc}") from None
    unknown = set(data) - {"ask_wait", "max_ask_wait", "profiles"}
    if unknown:
        raise InvalidOption(f"unknown MCP setting(s) {sorted(unknown)}")
    profiles = {}
    for name, entry in (data.get("profiles") or {}).items():
        profiles[name] = _profile(name, entry)
    ask_wait = _seconds(data, "ask_wait", 30.0)
    max_ask_wait = _seconds(data, "max_ask_wait", max(300.0, ask_wait))
    return McpConfig(profiles=profiles, ask_wait=ask_wait, max_ask_wait=max_ask_wait)


def _profile(name: str, entry: object) -> Profile:
    """Check one ``[profiles.NAME]`` table; an unknown key is an error, never ignored.

    A profile bounds what an MCP client may start, so a misspelt key must fail at load
    instead of silently leaving its setting at the default.
    """
    if not isinstance(entry, dict):
        raise InvalidOption(f"profile {name!r} must be a table")
    unknown = set(entry) - {"class", "backend", "options", "cwds", "cwd_option"}
    if unknown:
        raise InvalidOption(f"profile {name!r}: unknown key(s) {sorted(unknown)}")
    impl, backend = entry.get("class"), entry.get("backend")
    if not isinstance(impl, str) or ":" not in impl:
        raise InvalidOption(f"profile {name!r}: class must be 'module:Class'")
    if not isinstance(backend, str) or not backend:
        raise InvalidOption(f"profile {name!r}: backend must be a backend name")
    options = entry.get("options", {})
    cwds = entry.get("cwds", [])
    if not isinstance(options, dict):
        raise InvalidOption(f"profile {name!r}: options must be a table")
    if not isinstance(cwds, list) or not all(isinstance(c, str) and c for c in cwds):
        raise InvalidOption(f"profile {name!r}: cwds must be a list of paths")
    return Profile(
        name=name,
        impl=impl,
        backend=backend,
        options=options,
        cwds=tuple(os.path.normpath(c) for c in cwds),
        cwd_option=str(entry.get("cwd_option", "cwd")),
    )


def _seconds(data: Mapping[str, object], key: str, default: float) -> float:
    """A positive duration setting; ``bool`` is refused although Python counts it an int."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidOption(f"{key} must be a positive number of seconds, got {value!r}")
    return float(value)
