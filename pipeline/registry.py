"""One registry per kind of extension (flow estimators, source datasets): the one list the CLIs, the plan and the
readers take their choices from.

An entry is a frozen dataclass with a `name`. The built-in entries are registered where their kind is defined
(`pipeline/flow/estimators.py`, `pipeline/sources/registry.py`); a plugin registers its own once. A Ray actor runs in
another process, so the prep job hands it the entries its driver holds (`adopt`): a plugin registered by a driver
script reaches every worker that can import the plugin's module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from pipeline.errors import InputError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Named entries of one kind, in registration order; `flag` names the command-line option that picks one."""

    def __init__(self, kind: str, flag: str):
        self.kind, self.flag = kind, flag
        self._entries: dict[str, Entry] = {}

    def register(self, entry: Entry) -> Entry:
        """Add `entry` under `entry.name`; another entry already holding that name is a ValueError (a programming
        error, not bad input)."""
        held = self._entries.get(entry.name)
        if held is not None and held != entry:
            raise ValueError(f"a {self.kind} named {entry.name!r} is registered already")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove the entry `name` (a plugin's, or a test's toy) if it is there."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry:
        """The entry `name`; an unknown name is the one-line InputError `--flag NAME: expected one of ...`."""
        if name not in self._entries:
            raise InputError(f"{self.flag} {name}: expected one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order (the order `--help` lists them in)."""
        return tuple(self._entries)

    def entries(self) -> tuple[Entry, ...]:
        """The registered entries, in registration order."""
        return tuple(self._entries.values())

    def adopt(self, entries: Iterable[Entry]) -> None:
        """Register the entries another process holds and this one lacks (a Ray actor adopting its driver's)."""
        for entry in entries:
            if entry.name not in self._entries:
                self.register(entry)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
