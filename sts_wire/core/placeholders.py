"""The one placeholder syntax of the suite: `{username}`, in the hub's config (mounts) and in
sts-wire's mount specs alike. Pure."""

from __future__ import annotations

import re

PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
KNOWN = ("username",)


def unknown_placeholder_messages(value: str | None) -> list[str]:
    """A message for each placeholder in ``value`` other than {username}."""
    out = []
    for name in PLACEHOLDER_RE.findall(value or ""):
        if name not in KNOWN:
            hint = " (write {username})" if name in ("user", "name", "login") else ""
            out.append(f"unknown placeholder {{{name}}}; only {{username}} is replaced{hint}")
    return out


def has_placeholder(value: str | None) -> bool:
    return bool(PLACEHOLDER_RE.search(value or ""))


def fill(value: str, username: str) -> str:
    """``value`` with every {username} replaced (other braces are left as they are)."""
    return value.replace("{username}", username)
