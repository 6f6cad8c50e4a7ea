"""The validated configuration as frozen objects, with the raw sections at hand for the hub."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .units import parse_memory

# The order choices are shown and explained in.
CHOICE_NAMES = ("image", "cpu", "memory", "gpus", "gpu_model", "time_limit")
# Where secret references live, as (section, key).
SECRET_KEYS = (("hub", "crypt_key"), ("auth", "client_secret"), ("metrics", "scrape_token"))


@dataclass(frozen=True)
class Choice:
    """Values offered for one choice, in the order shown, and the one preselected."""

    options: tuple
    default: Any

    def to_dict(self) -> dict:
        return {"options": list(self.options), "default": self.default}


@dataclass(frozen=True)
class Mount:
    """A bucket mounted as a folder; `{username}` is left for the caller to fill in."""

    bucket: str
    path: str
    read_only: bool = False
    group: str | None = None  # mounted only for members of this group; None: for everyone

    def for_groups(self, groups) -> bool:
        """Whether a user in `groups` gets this mount."""
        return self.group is None or self.group in groups

    def expand(self, username: str) -> Mount:
        return replace(
            self,
            bucket=self.bucket.replace("{username}", username),
            path=self.path.replace("{username}", username),
        )

    def to_dict(self) -> dict:
        return {"bucket": self.bucket, "path": self.path, "read_only": self.read_only,
                "group": self.group}


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str
    backend: str
    groups: tuple[str, ...]
    choices: Mapping[str, Choice]  # keys in CHOICE_NAMES order; gpus always present
    mounts: tuple[Mount, ...] = ()
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The profile's settings for its own backend (its `kubernetes:` block), read-only.
    backend_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class GroupLimits:
    """What the members of one group may run at once (all their servers together)."""

    group: str
    max_servers: int
    max_cpu: float
    max_memory: str
    max_memory_bytes: int
    max_gpus: int


@dataclass(frozen=True, eq=False)
class Config:
    """A validated configuration. Secret references are kept, not resolved (see resolve_secret)."""

    data: Mapping[str, Any]  # the whole validated file, defaults filled in; read-only view
    profiles: tuple[Profile, ...]
    groups: Mapping[str, GroupLimits]
    source: str | None = None

    @property
    def hub(self) -> dict:
        return copy.deepcopy(self.data["hub"])

    @property
    def auth(self) -> dict:
        return copy.deepcopy(self.data["auth"])

    @property
    def backends(self) -> dict:
        return copy.deepcopy(self.data["backends"])

    @property
    def storage(self) -> dict | None:
        """The site's S3/STS settings (defaults filled in), or None when it has no storage."""
        return copy.deepcopy(self.data.get("storage"))

    @property
    def allowed_groups(self) -> tuple[str, ...]:
        return tuple(self.data["auth"]["allowed_groups"])

    @property
    def admin_groups(self) -> tuple[str, ...]:
        return tuple(self.data["auth"]["admin_groups"])

    def raw(self) -> dict:
        """A copy of the whole validated configuration as plain dicts and lists."""
        return copy.deepcopy(dict(self.data))

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def secret_refs(self) -> dict[str, dict]:
        """Key path -> secret reference, for every secret the configuration names."""
        out = {}
        for section, key in SECRET_KEYS:
            ref = self.data[section].get(key)
            if ref is not None:
                out[f"{section}.{key}"] = dict(ref)
        return out


def build_config(data: dict, source: str | None = None) -> Config:
    """Objects from validated data whose defaults are filled in (see loader.load)."""
    groups = {
        name: GroupLimits(
            group=name,
            max_servers=limits["max_servers"],
            max_cpu=limits["max_cpu"],
            max_memory=limits["max_memory"],
            max_memory_bytes=parse_memory(limits["max_memory"]),
            max_gpus=limits["max_gpus"],
        )
        for name, limits in sorted(data["groups"].items())
    }
    profiles = tuple(_profile(p) for p in data["profiles"])
    return Config(
        data=MappingProxyType(copy.deepcopy(data)),
        profiles=profiles,
        groups=MappingProxyType(groups),
        source=source,
    )


def _profile(p: dict) -> Profile:
    choices = {
        name: Choice(tuple(c["options"]), c.get("default", c["options"][0]))
        for name in CHOICE_NAMES
        if (c := p["choices"].get(name)) is not None
    }
    return Profile(
        name=p["name"],
        display_name=p["display_name"],
        description=p["description"],
        backend=p["backend"],
        groups=tuple(p["groups"]),
        choices=MappingProxyType(choices),
        mounts=tuple(
            Mount(m["bucket"], m["path"], m["read_only"], m["group"]) for m in p["mounts"]
        ),
        environment=MappingProxyType(dict(p["environment"])),
        backend_options=MappingProxyType(copy.deepcopy(p.get(p["backend"]) or {})),
    )
