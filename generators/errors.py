"""Typed errors of the generators package.

Callers (the CLI, the pipelines' tests) catch these to tell a bad argument from a bug. Each one is a
``ValueError`` so code that already catches ``ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class GeneratorConfigError(ValueError):
    """An argument given to a generator, injector or writer is not valid."""


class UnknownOptionError(GeneratorConfigError):
    """A named option (method, generator, profile, ...) is not one of the valid ones."""


def check_option(kind: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``, else raise an error listing the valid options.

    Parameters
    ----------
    kind : str
        What is being chosen, used in the message (e.g. ``"method"``).
    value : str
        The value given by the caller.
    valid : iterable of str
        The accepted values.

    Raises
    ------
    UnknownOptionError
        If ``value`` is not in ``valid``.

    Examples
    --------
    >>> check_option("method", "cart", ["cart", "rf"])
    'cart'
    """
    options = sorted(valid)
    if value not in options:
        raise UnknownOptionError(f"unknown {kind} {value!r}; valid options: {', '.join(options)}")
    return value
