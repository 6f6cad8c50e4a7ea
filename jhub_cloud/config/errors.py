"""Configuration problems: each names its key path and says what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterable

# One problem type for both halves (the shared core in the sts-wire distribution).
from sts_wire.core.problems import PathPart, Problem, format_path

__all__ = ["ConfigError", "PathPart", "Problem", "SecretError", "format_path"]


class ConfigError(Exception):
    """Every problem found in a configuration, sorted by key path."""

    def __init__(self, problems: Iterable[Problem], source: str | None = None):
        self.problems: list[Problem] = sorted(set(problems), key=Problem.sort_key)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{self.source or 'configuration'}: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class SecretError(ConfigError):
    """A secret reference that cannot be read (unset variable, missing or unsafe file)."""
