"""Validation helpers shared by the CLI backends' option parsing.

Each backend declares its options as a mapping of name to a checker; :func:`validate`
rejects unknown keys and runs the checkers, so every bad option becomes one
:class:`~genagent_thespian.InvalidOption` that names the backend, the key and the problem.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping

from genagent_thespian import BackendError, BackendErrorKind, InvalidOption
from genagent_thespian._core.types import OptionValue, Unchecked

__all__ = [
    "Checker",
    "check_bool",
    "check_choice",
    "check_count",
    "check_env",
    "check_number",
    "check_positive_int",
    "check_str",
    "check_str_list",
    "resolve_binary",
    "resolve_cwd",
    "validate",
]

#: A checker takes (backend, key, value) and returns the normalized value or raises
#: (an ``OptionValue``: each option's value has its own type).
Checker = Callable[[str, str, object], OptionValue]


def validate(
    backend: str, options: Unchecked, checkers: Mapping[str, Checker]
) -> dict[str, OptionValue]:
    """Return ``options`` normalized by ``checkers``; reject unknown keys and bad values.

    Raises:
        InvalidOption: ``options`` is not a mapping, has an unknown key or a bad value.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOption(f"{backend}: options must be a mapping, got {type(options).__name__}")
    unknown = sorted(str(key) for key in options if key not in checkers)
    if unknown:
        known = ", ".join(sorted(checkers))
        raise InvalidOption(f"{backend}: unknown option(s) {', '.join(unknown)}; known: {known}")
    return {key: checkers[key](backend, key, value) for key, value in options.items()}


def _bad(backend: str, key: str, value: object, expected: str) -> InvalidOption:
    """The error for a bad option value; the value of ``env`` is never shown (it holds secrets),
    others are cut to 80 characters so one huge value does not swamp the message.
    """
    shown = type(value).__name__ if key in ("env",) else repr(value)[:80]
    return InvalidOption(f"{backend}: option {key!r} must be {expected}, got {shown}")


def check_str(backend: str, key: str, value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise _bad(backend, key, value, "a non-empty string")
    return value


def check_text(backend: str, key: str, value: object) -> str:
    """Any string, the empty one included (an empty prompt is a choice, not a mistake)."""
    if not isinstance(value, str):
        raise _bad(backend, key, value, "a string")
    return value


def check_bool(backend: str, key: str, value: object) -> bool:
    """A bool (not an int)."""
    if not isinstance(value, bool):
        raise _bad(backend, key, value, "a bool")
    return value


def check_positive_int(backend: str, key: str, value: object) -> int:
    """An int > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(backend, key, value, "a positive int")
    return value


def check_count(backend: str, key: str, value: object) -> int:
    """An int >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(backend, key, value, "an int >= 0")
    return value


def check_number(backend: str, key: str, value: object) -> float:
    """A real number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _bad(backend, key, value, "a positive number")
    return float(value)


def check_str_list(backend: str, key: str, value: object) -> tuple[str, ...]:
    """A list or tuple of non-empty strings (a single string is one item)."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i for i in items):
        raise _bad(backend, key, value, "a list of non-empty strings")
    return tuple(items)


def check_choice(*choices: str) -> Checker:
    """One of ``choices``."""

    def check(backend: str, key: str, value: object) -> str:
        """Accept only one of the listed values, naming them all in the error."""
        if value not in choices:
            raise _bad(backend, key, value, "one of " + ", ".join(choices))
        return str(value)

    return check


def check_env(backend: str, key: str, value: object) -> dict[str, str]:
    """A mapping of str to str (values are never shown in errors)."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(backend, key, value, "a mapping of str to str")
    return dict(value)


def resolve_cwd(backend: str, value: object) -> str:
    """Return the absolute path of an existing directory (default: the current one).

    Raises:
        InvalidOption: ``value`` is not a path or not an existing directory.
    """
    if value is None:
        return os.getcwd()
    if not isinstance(value, str | os.PathLike):
        raise _bad(backend, "cwd", value, "a path")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isdir(path):
        raise InvalidOption(f"{backend}: option 'cwd' is not an existing directory: {path!r}")
    return path


def resolve_binary(backend: str, value: object, *, env_var: str, default_name: str) -> str:
    """Return the absolute path of the program: option, then ``env_var``, then ``PATH``.

    Raises:
        InvalidOption: ``value`` is not a path.
        BackendError: No executable program at the path or on ``PATH`` (kind
            ``process_exit``, not retryable); the message names what was looked for.
    """
    if value is not None and not isinstance(value, str | os.PathLike):
        raise _bad(backend, "binary", value, "a path")
    candidate = os.fspath(value) if value is not None else os.environ.get(env_var) or None
    if candidate is None:
        found = shutil.which(default_name)
        if found is None:
            raise BackendError(
                f"{backend}: program {default_name!r} not found on PATH; install it or set "
                f"the 'binary' option or {env_var}",
                kind=BackendErrorKind.PROCESS_EXIT,
                retryable=False,
                backend=backend,
            )
        return os.path.abspath(found)
    path = shutil.which(candidate) if os.sep not in candidate else candidate
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BackendError(
            f"{backend}: program not found or not executable: {candidate!r}",
            kind=BackendErrorKind.PROCESS_EXIT,
            retryable=False,
            backend=backend,
        )
    return os.path.abspath(path)
