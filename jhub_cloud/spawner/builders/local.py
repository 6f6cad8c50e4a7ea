"""Local backend: the server as a process of the user on the hub's machine. Pure.

The process runs the hub's own Python environment (the profile's `image` is only a label here),
with the profile's CPUs and memory given to the adapter, which enforces them with cgroups.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...policy.types import Resources
from ..target import SpawnTarget


def child_settings(resources: Resources, target: SpawnTarget, backend: Mapping, cmd: list[str],
                   env: Mapping[str, str]) -> dict:
    """Trait name -> value for backends.local.LocalChild."""
    if resources.gpus:
        raise ValueError("the local backend has no GPUs; a profile on it must offer gpus: [0]")
    return {
        "cmd": list(cmd),
        "environment": {**resources.environment, **env},
        "cpu_limit": float(resources.cpu),
        "mem_limit": int(resources.memory_bytes),
        "cgroup_prefix": target.safe_server,
        # sts-wire may mount only below these (the spawner sets them with the mount spec).
        "mount_roots": [r for r in env.get("STS_WIRE_ALLOWED_ROOTS", "").split(":") if r],
    }
