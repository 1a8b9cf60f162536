"""Secrets never reach the durable store: values named like secrets are stored as placeholders.

A durable agent's start spec and its backend session are saved to the store, and both can
hold credentials: an ``api_key`` option, an ``env`` dict with ``ANTHROPIC_API_KEY``, a
backend session's ``api_key`` field. Before either is pickled for the store, every value
whose name says it is a secret, and every credential wrapper (an object with a ``reveal()``
method, such as the HTTP backends' ``Secret``), is replaced by a :class:`Redacted`
placeholder that records only the name.

A secret name is one whose last word (words split by ``_``, ``-`` or ``.``) is ``key``,
``apikey``, ``token``, ``secret``, ``password``, ``passwd``, ``passphrase`` or
``credential(s)``: ``api_key``, ``ANTHROPIC_API_KEY``, ``access_token``, ``client_secret``,
but not ``max_tokens`` or ``keys``.

When a durable agent resumes from the store, each placeholder is filled by name
(:func:`restore`), in this order: the options the agent was (re)started with (they are in
memory, never stored: the supervisor's spec after a crash, the ``start_agent`` call after a
node restart), then the spec's ``secret_resolver(agent_name, option_name)``, else ``None``,
which the HTTP backends read as "use the provider's environment variable"
(``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import pickle
import re
from collections.abc import Callable, Mapping
from typing import TypeAlias, cast

from .._core.types import AgentName, Options, Pickled

__all__ = ["Redacted", "dumps_redacted", "is_secret_name", "lookup_for", "redact", "restore"]

_SECRET_NAME = re.compile(
    r"(?:^|[_.\-])(?:api_?key|key|token|secret|password|passwd|passphrase|credentials?)$",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Redacted:
    """What the store holds instead of a secret.

    Attributes:
        name: The option or field name the secret had.
        wrapper: The class the secret was wrapped in (a backend's ``Secret``), re-applied to
            the value found at restore; ``None`` for a plain value.
    """

    name: str
    wrapper: type | None = None

    def __repr__(self) -> str:
        return f"Redacted({self.name!r})"


def is_secret_name(name: object) -> bool:
    """Whether an option, field or key called *name* holds a secret."""
    return isinstance(name, str) and _SECRET_NAME.search(name) is not None


def _is_wrapper(value: object) -> bool:
    """Whether *value* is a backend's credential wrapper, recognised by duck type.

    Backends define their own ``Secret`` classes (with ``reveal()``) and the store must not
    import them: the store sits below the backends in the import graph.
    """
    return callable(getattr(type(value), "reveal", None))


def _placeholder(name: str, value: object) -> Redacted:
    """The stand-in stored for a secret: its name, and its wrapper class to re-apply later."""
    return Redacted(name, type(value) if _is_wrapper(value) else None)


def redact(value: object, name: str = "?") -> object:
    """Return a copy of *value* with every secret replaced by a :class:`Redacted`.

    Walks dicts, lists, tuples (an ``(name, value)`` pair is an option) and dataclass
    instances; other objects are returned as they are (a credential wrapper inside one is
    still caught by :func:`dumps_redacted`).
    """
    if value is None or isinstance(value, Redacted):
        return value
    if _is_wrapper(value):
        return _placeholder(name, value)
    if isinstance(value, Mapping) and type(value) is dict:
        return {
            key: _placeholder(key, item)
            if is_secret_name(key) and item is not None
            else redact(item, str(key))
            for key, item in value.items()
        }
    if type(value) is list:
        return [redact(item, name) for item in value]
    if type(value) is tuple:
        if len(value) == 2 and is_secret_name(value[0]) and value[1] is not None:
            return (value[0], _placeholder(value[0], value[1]))
        return tuple(redact(item, name) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes: dict[str, object] = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if is_secret_name(field.name) and item is not None:
                changes[field.name] = _placeholder(field.name, item)
            else:
                redacted = redact(item, field.name)
                if redacted is not item:
                    changes[field.name] = redacted
        return _with_fields(value, changes) if changes else value
    return value


def restore(value: Pickled, lookup: Callable[[str], object]) -> Pickled:
    """Return a copy of *value* with every :class:`Redacted` filled from ``lookup(name)``.

    A secret the lookup cannot find comes back as ``None``, never as the placeholder, which
    a backend would otherwise send to its provider as if it were the key. A value that was
    wrapped (a backend's ``Secret``) is wrapped again, so the backend gets the type it saved.
    """
    if isinstance(value, Redacted):
        found = lookup(value.name)
        if found is None or value.wrapper is None or isinstance(found, value.wrapper):
            return found
        return value.wrapper(found)
    if type(value) is dict:
        return {key: restore(item, lookup) for key, item in value.items()}
    if type(value) is list:
        return [restore(item, lookup) for item in value]
    if type(value) is tuple:
        return tuple(restore(item, lookup) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            restored = restore(item, lookup)
            if restored is not item:
                changes[field.name] = restored
        return _with_fields(value, changes) if changes else value
    return value


def _with_fields(instance: object, changes: Mapping[str, object]) -> object:
    """A copy of a dataclass or slotted instance with some fields replaced, without calling its
    ``__init__`` (which may validate, or refuse a placeholder).
    """
    clone = copy.copy(instance)
    for name, item in changes.items():
        object.__setattr__(clone, name, item)  # frozen and slotted dataclasses too
    return clone


#: What ``reducer_override`` returns for a wrapper: rebuild it as ``Redacted("?", its type)``.
_Reduced: TypeAlias = tuple[type[Redacted], tuple[str, type]]


class _RedactingPickler(pickle.Pickler):
    """Pickle that turns any credential wrapper it meets, however deep, into a placeholder."""

    def reducer_override(self, obj: object) -> _Reduced:
        if _is_wrapper(obj) and not isinstance(obj, type):
            return (Redacted, ("?", type(obj)))
        # pickle's "reduce it as usual" (typeshed types NotImplemented as Any)
        return cast(_Reduced, NotImplemented)


def dumps_redacted(value: object) -> bytes:
    """Pickle ``redact(value)`` for the store, credential wrappers included at any depth."""
    buffer = io.BytesIO()
    _RedactingPickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(redact(value))
    return buffer.getvalue()


def lookup_for(
    options: Options, resolver: Callable[[AgentName, str], object] | None, agent: AgentName
) -> Callable[[str], object]:
    """The restore-time lookup: the live options (at any depth), then *resolver*, else None."""

    def lookup(name: str) -> object:
        """The live value of the secret called ``name``, from the options, else the resolver."""
        found = _find(options, name)
        if found is None and resolver is not None:
            found = resolver(agent, name)
        return found

    return lookup


def _find(value: object, name: str) -> object:  # whatever the user put in the options
    """The first non-``None`` value under key *name* at any depth of nested options.

    Secrets often sit inside nested options (``mcp_servers={...: {"env": {"TOKEN": ...}}}``),
    so a restore must find them where the live options keep them, not only at the top level.
    """
    if isinstance(value, Mapping):
        if value.get(name) is not None:
            return value[name]
        for item in value.values():
            found = _find(item, name)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for item in value:
            found = _find(item, name)
            if found is not None:
                return found
    return None
