"""Settings' values in the types their fields declare: what a JSON or YAML config file holds, checked and converted.

A config file's values come as YAML or JSON wrote them: PyYAML reads `1e-2` as text (YAML 1.1 wants `1.0e-2`), and
JSON has no tuples. `typed_values` converts what means the declared type (text spelling a number, a whole float for an
integer, a list for a tuple) and names, in one line each, every value that does not.
"""

from __future__ import annotations

import types
import typing

WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "text (a name or a path)"}


def _optional(hint) -> tuple[object, bool]:
    """(the type without None, whether None is allowed) of a hint such as `str | None`."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def expected(hint) -> str:
    """What a type hint asks for, in words ("an integer", "a list of 2 numbers or null", ...)."""
    base, optional = _optional(hint)
    if typing.get_origin(base) is tuple:
        inner = typing.get_args(base)
        words = f"a list of {len(inner)} {'integers' if inner[0] is int else 'numbers'}"
    else:
        words = WORDS[base]
    return words + (" or null" if optional else "")


def typed(hint, value):
    """`value` in the type of `hint`, or ValueError. A number may be text in YAML's spellings ('1e-2'); an integer
    field takes a whole number however it is written ('5e4', 50000.0); true/false are never numbers."""
    hint, optional = _optional(hint)
    if value is None and optional:
        return None
    if typing.get_origin(hint) is tuple:
        inner = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(inner):
            raise ValueError
        return tuple(typed(t, v) for t, v in zip(inner, value))
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ValueError
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = float(value.strip()) if isinstance(value, str) else value  # ValueError for text that is no number
    if hint is int:
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    return float(number)


def typed_values(values: dict, hints: dict, where: str) -> tuple[dict, list[tuple[str, str]]]:
    """-> (the values in the types of `hints`, (key, one-line message) for each value of another type, left out of
    the first). Each message names `where`, the key, the type expected and the value."""
    converted, problems = {}, []
    for key, value in values.items():
        try:
            converted[key] = typed(hints[key], value)
        except (ValueError, TypeError, OverflowError):
            problems.append((key, f"{where}: {key}: expected {expected(hints[key])}, got {value!r}"))
    return converted, problems
