"""What the policy answers with: frozen values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..config.model import Choice, Mount
from ..config.units import format_memory

LIMIT_NAMES = ("max_servers", "max_cpu", "max_memory", "max_gpus")
# The limits that bound one server of a profile (the rest bound only the totals).
PROFILE_LIMIT_NAMES = ("max_cpu", "max_memory", "max_gpus")


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Limits:
    """Limits from a set of groups: for each, the largest value over them; `source` names the
    group giving it. A user's totals come from all their groups, a profile's from the groups
    granting it."""

    max_servers: int
    max_cpu: float
    max_memory_bytes: int
    max_gpus: int
    source: Mapping[str, str]  # limit name (LIMIT_NAMES) -> the group that gave it

    def value(self, name: str) -> int | float:
        return self.max_memory_bytes if name == "max_memory" else getattr(self, name)

    def shown(self, name: str) -> int | float | str:
        """The limit as written in the file (memory as a size such as "32G")."""
        return format_memory(self.max_memory_bytes) if name == "max_memory" else self.value(name)


@dataclass(frozen=True)
class ProfileOffer:
    """A profile as one user may start it: only the options within that user's limits."""

    name: str
    display_name: str
    description: str
    backend: str
    granted_by: tuple[str, ...]  # the user's groups that may use it, sorted
    choices: Mapping[str, Choice]
    mounts: tuple[Mount, ...] = ()
    environment: Mapping[str, str] = field(default_factory=_empty)
    limits: Limits | None = None  # from the granting groups only: they cut `choices`

    def limits_dict(self) -> dict:
        """{limit name: {"value", "from"}} for the limits bounding one server of this profile."""
        if self.limits is None:
            return {}
        return {
            name: {"value": self.limits.shown(name), "from": self.limits.source[name]}
            for name in PROFILE_LIMIT_NAMES
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "backend": self.backend,
            "from": self.granted_by[0],
            "granted_by": list(self.granted_by),
            "choices": {name: c.to_dict() for name, c in self.choices.items()},
            "mounts": [m.to_dict() for m in self.mounts],
            "environment": dict(self.environment),
            "limits": self.limits_dict(),
        }


@dataclass(frozen=True)
class Resources:
    """Exactly what one server gets. Mount paths still hold `{username}` (Mount.expand); group
    buckets of groups the user is not in are already left out."""

    backend: str
    image: str
    cpu: float
    memory_bytes: int
    gpus: int = 0
    gpu_model: str | None = None
    time_limit: str | None = None
    mounts: tuple[Mount, ...] = ()
    environment: Mapping[str, str] = field(default_factory=_empty)
    # The profile's own settings for its backend (e.g. node_selector and tolerations for
    # kubernetes): site data, never from the form.
    backend_options: Mapping = field(default_factory=_empty)


@dataclass(frozen=True)
class Allowed:
    profile: str
    resources: Resources
    allowed = True


@dataclass(frozen=True)
class Refused:
    reason: str
    field: str | None = None  # the form field at fault, when there is one
    allowed = False


Decision = Allowed | Refused
