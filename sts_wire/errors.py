"""Exit codes and the one exception type every sts-wire failure is turned into.

Every code is documented in docs/sts-wire.md; a message always says what failed and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import IntEnum

from .core.problems import Problem
from .core.yamlfile import Lines, line_of


class Exit(IntEnum):
    OK = 0
    FAILURE = 1          # an unexpected internal error (a bug: please report it)
    USAGE = 2            # bad command line (argparse uses 2 as well)
    SPEC = 3             # the mount spec is missing, unreadable or invalid
    IDP_UNREACHABLE = 4  # the identity provider (or the hub API) cannot be reached
    TOKEN = 5            # no usable token: refused, expired refresh token, device flow denied
    STS_UNREACHABLE = 6  # the STS endpoint cannot be reached
    STS_REFUSED = 7      # the STS refused the token (wrong role, audience, issuer, expired token)
    S3_UNREACHABLE = 8   # the S3 endpoint cannot be reached
    S3_DENIED = 9        # a bucket does not exist or the keys may not list it
    FUSE = 10            # FUSE is missing: no /dev/fuse, no fusermount3
    MOUNT_PATH = 11      # a mount path is invalid, busy, not empty or not creatable
    MOUNT_FAILED = 12    # rclone could not mount (see the message: rclone's reason)
    RCLONE = 13          # the rclone binary is missing or does not run
    PROBLEMS = 14        # `check`: several different problems (each one is listed)


class StsWireError(Exception):
    """A failure with a plain message for people and the exit code that goes with it."""

    def __init__(self, message: str, code: Exit = Exit.FAILURE, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = Exit(code)
        self.hint = hint

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class SpecError(StsWireError):
    """The mount spec is invalid: ``items`` holds each problem (key path, message, line when known),
    ``problems`` the same as text, 'key.path: what is wrong (line N)'."""

    def __init__(self, problems: Iterable[Problem | str], source: str = "mount spec", lines: Lines | None = None):
        self.items = [_with_line(p if isinstance(p, Problem) else problem_from_text(p), lines) for p in problems]
        self.problems = [str(p) for p in self.items]
        text = f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text, Exit.SPEC)


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def problem_from_text(text: str) -> Problem:
    """'mounts[1].path: message' -> Problem(("mounts", 1, "path"), "message")."""
    where, sep, message = text.partition(": ")
    if not sep or " " in where:
        return Problem((), text)
    if where == "(top level)":
        return Problem((), message)
    parts = tuple(int(i) if i else k for k, i in _PART.findall(where))
    return Problem(parts, message)


def _with_line(p: Problem, lines: Lines | None) -> Problem:
    if p.line is not None or not lines or not p.parts:
        return p
    return Problem(p.parts, p.message, line_of(lines, p.parts))
