"""Who a server is for: the inputs every backend builder shares. Pure."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SAFE = re.compile(r"^[a-z][a-z0-9]{0,31}$")


def safe_name(name: str) -> str:
    """A form of `name` fit for container, job, pod and volume names: [a-z0-9-], at most 47 chars.

    A name that is already safe (lower-case letters and digits, letter first, short) stays as it
    is; any other gets its cleaned form plus a hash of the original, so two different names can
    never map to the same safe name (a cleaned form always ends in '-' and 8 hex digits, which a
    safe name, having no '-', never does). No safe name contains '--', so user and server names
    can be joined with '--' without ambiguity.
    """
    if _SAFE.match(name):
        return name
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower())[:31].strip("-") or "x"
    if not cleaned[0].isalpha():
        cleaned = "x" + cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned}-{digest}"


@dataclass(frozen=True)
class SpawnTarget:
    """One server of one user."""

    username: str          # the hub's user name, exactly
    server_name: str = ""  # "" for the default server
    groups: tuple[str, ...] = ()  # the user's hub groups (already renamed by the authenticator)

    @property
    def safe_user(self) -> str:
        return safe_name(self.username)

    @property
    def safe_server(self) -> str:
        """User and server together, e.g. for a container name: alice, alice--gpu."""
        return self.safe_user + (f"--{safe_name(self.server_name)}" if self.server_name else "")
