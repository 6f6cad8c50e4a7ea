"""One way to report a problem in a file or a spec, for both halves: the key path, what is wrong
and what to do, and the line when it is known. Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

PathPart = str | int
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(parts: Iterable[PathPart]) -> str:
    """`profiles[2].choices.cpu.default`; keys that are not plain words are quoted in brackets."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, at key path `parts` (line in the file when known)."""

    parts: tuple[PathPart, ...]
    message: str
    line: int | None = None

    @property
    def path(self) -> str:
        return format_path(self.parts)

    def sort_key(self) -> tuple:
        # Index 10 sorts after index 2, and ints never get compared with strings.
        parts = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.parts)
        return (parts, self.message)

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path}: {self.message}{where}"

    def to_dict(self) -> dict:
        return {"path": self.path, "message": self.message, "line": self.line}
