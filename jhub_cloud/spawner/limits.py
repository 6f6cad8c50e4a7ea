"""Per-user limits across servers: one lock per user around check-and-reserve, and Resources
kept as JSON in each server's state, so that the limits still hold after a hub restart.

JupyterHub runs in one process with one event loop, so an asyncio.Lock per user name is enough
to make two spawns of the same user arriving together take turns: the second one sees the first
one's reservation.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping

from ..config.model import Mount
from ..policy.types import Resources

_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


def user_lock(username: str) -> asyncio.Lock:
    return _locks[username]


def resources_to_json(r: Resources) -> dict:
    return {
        "backend": r.backend, "image": r.image, "cpu": r.cpu, "memory_bytes": r.memory_bytes,
        "gpus": r.gpus, "gpu_model": r.gpu_model, "time_limit": r.time_limit,
        "mounts": [m.to_dict() for m in r.mounts], "environment": dict(r.environment),
        "backend_options": _plain(r.backend_options),
    }


def _plain(value):
    """Read-only mappings (the config's frozen values) as plain JSON data."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def resources_from_json(d: dict) -> Resources:
    return Resources(
        backend=d["backend"], image=d["image"], cpu=d["cpu"], memory_bytes=d["memory_bytes"],
        gpus=d.get("gpus", 0), gpu_model=d.get("gpu_model"), time_limit=d.get("time_limit"),
        mounts=tuple(Mount(m["bucket"], m["path"], m.get("read_only", False), m.get("group"))
                     for m in d.get("mounts", ())),
        environment=dict(d.get("environment", {})),
        backend_options=dict(d.get("backend_options", {})),
    )


# A running server whose resources are unknown (started before jhub-cloud kept them) still counts
# as one server.
UNKNOWN = Resources(backend="unknown", image="", cpu=0, memory_bytes=0)


def running_resources(spawners, me) -> list[Resources]:
    """Resources of a user's other servers that are running, starting or reserved."""
    out = []
    for sp in spawners:
        if sp is me:
            continue
        reserved = getattr(sp, "reserved", None)
        if sp.active or reserved is not None and getattr(sp, "_start_pending", False):
            out.append(reserved or UNKNOWN)
    return out
