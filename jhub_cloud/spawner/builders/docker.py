"""Resources -> DockerSpawner settings. Pure: no Docker call, no file read.

What a container gets (docs/backends.md explains each choice):
- the profile's image, `cpu_limit` (CFS quota) and `mem_limit` (swap capped at the same value);
- GPUs as a device request: a count, or device ids pinned by the site (`gpu_device_ids`);
- `/dev/fuse`, CAP_SYS_ADMIN and the site's AppArmor profile, only when the profile mounts
  buckets (sts-wire needs FUSE); never a privileged container;
- a named volume per user for the home folder (kept when the server stops);
- `remove=True`: a stopped server leaves no container, and a profile change always takes effect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ...policy.types import Resources
from ..target import SpawnTarget

HOST_NETWORK = "host"
NAME_PREFIX = "jhub-"
LABEL_PREFIX = "org.jhub-cloud."
# The same as the schema's patterns: re-checked because a builder may be called with any mapping.
_VOLUME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_ABS_PATH = re.compile(r"^/[^\s:,{}]*$")

DEFAULTS = {
    "network": None,
    "host_ip": "127.0.0.1",
    "pull_policy": "ifnotpresent",
    "gpu_device_ids": None,
    "apparmor_profile": "unconfined",
    "home_volume": "jhub-home-{username}",
    "home_path": "/home/jovyan",
    "binds": [],
}


class DockerSettingsError(ValueError):
    """The backend section or the resources cannot be turned into a container."""


def container_name(target: SpawnTarget) -> str:
    return NAME_PREFIX + target.safe_server


def home_volume_name(template: str, target: SpawnTarget) -> str:
    # The safe user name, not the raw one: volume names allow only [a-zA-Z0-9_.-].
    name = template.replace("{username}", target.safe_user)
    if not _VOLUME.fullmatch(name):
        raise DockerSettingsError(
            f"backends.docker.home_volume {template!r} gives {name!r}, not a Docker volume name: "
            "use letters, digits, '_', '.', '-' and {username}")
    return name


def gpu_request(resources: Resources, device_ids) -> list[dict]:
    """Docker device requests (docker.types.DeviceRequest fields) for the server's GPUs."""
    n = resources.gpus
    if n <= 0:
        return []
    if device_ids is None:
        # The NVIDIA runtime picks N GPUs; Docker does not track who uses which.
        return [{"driver": "nvidia", "count": n, "capabilities": [["gpu"]]}]
    if isinstance(device_ids, Mapping):
        model = resources.gpu_model
        if model not in device_ids:
            raise DockerSettingsError(
                f"backends.docker.gpu_device_ids has no devices for GPU model {model!r}: "
                f"add it (models listed: {', '.join(sorted(device_ids)) or 'none'})")
        device_ids = device_ids[model]
    ids = [str(i) for i in device_ids]
    if n > len(ids):
        raise DockerSettingsError(
            f"the profile asks for {n} GPUs but backends.docker.gpu_device_ids names only "
            f"{len(ids)} ({', '.join(ids) or 'none'}): add devices or lower the profile's gpus")
    return [{"driver": "nvidia", "device_ids": ids[:n], "capabilities": [["gpu"]]}]


def fuse_host_config(apparmor_profile: str) -> dict:
    """The least a container needs to mount FUSE (rclone via fusermount3).

    CAP_SYS_ADMIN lets Docker's default seccomp profile allow mount(2); the AppArmor profile
    must allow mounts too (docker-default denies them). The image's user is not root, so the
    capability is only usable through the setuid fusermount3.
    """
    if not _VOLUME.fullmatch(apparmor_profile):
        raise DockerSettingsError(f"backends.docker.apparmor_profile {apparmor_profile!r} is not an "
                                  "AppArmor profile name: use letters, digits, '_', '.', '-'")
    return {
        "devices": ["/dev/fuse:/dev/fuse:rwm"],
        "cap_add": ["SYS_ADMIN"],
        "security_opt": [f"apparmor={apparmor_profile}"],
    }


def _literal(text: str) -> str:
    """DockerSpawner str.format()s every string of extra_create_kwargs: keep braces literal."""
    return text.replace("{", "{{").replace("}", "}}")


def _volumes(cfg: Mapping, target: SpawnTarget) -> dict:
    volumes = {}
    if cfg["home_volume"]:
        if not _ABS_PATH.fullmatch(cfg["home_path"]):
            raise DockerSettingsError(f"backends.docker.home_path {cfg['home_path']!r} is not an absolute path")
        volumes[home_volume_name(cfg["home_volume"], target)] = {"bind": cfg["home_path"], "mode": "rw"}
    for b in cfg["binds"]:
        for key in ("source", "target"):
            if not _ABS_PATH.fullmatch(b[key]):
                raise DockerSettingsError(f"backends.docker.binds: {key} {b[key]!r} is not an absolute path")
        volumes[b["source"]] = {"bind": b["target"], "mode": "ro" if b.get("read_only", True) else "rw"}
    return volumes


def child_settings(resources: Resources, target: SpawnTarget, backend: Mapping,
                   cmd: list[str], env: Mapping[str, str]) -> dict:
    """Trait name -> value for jhub_cloud.spawner.backends.docker.DockerChild."""
    cfg = {**DEFAULTS, **backend}
    host_net = cfg["network"] == HOST_NETWORK
    memory = int(resources.memory_bytes)

    host_config: dict = {
        # Without this the container may use as much swap again as its memory limit.
        "memswap_limit": memory,
        # Keep an exited container until poll has read why it ended; poll and stop remove it.
        "auto_remove": False,
    }
    requests = gpu_request(resources, cfg["gpu_device_ids"])
    if requests:
        host_config["device_requests"] = requests
    if resources.mounts:
        host_config.update(fuse_host_config(cfg["apparmor_profile"]))

    settings = {
        "image": resources.image,
        "pull_policy": cfg["pull_policy"],
        "cpu_limit": float(resources.cpu),
        "mem_limit": memory,
        "cmd": list(cmd),
        "environment": {**resources.environment, **env},
        # The hub's PATH and the like mean nothing in the image (a site's c.Spawner.env_keep
        # would otherwise reach the container too).
        "env_keep": [],
        "remove": True,
        "name_template": container_name(target),
        "volumes": _volumes(cfg, target),
        "extra_host_config": host_config,
        "extra_create_kwargs": {"labels": {
            LABEL_PREFIX + "user": _literal(target.username),
            LABEL_PREFIX + "server": _literal(target.server_name),
        }},
        "network_name": cfg["network"] or "bridge",
        "host_ip": cfg["host_ip"],
    }
    if host_net:
        # Every container shares the host's ports: the adapter picks a free one per container
        # and the server listens on host_ip only, so the hub connects to host_ip:port.
        settings["use_internal_ip"] = True  # no port bindings (Docker discards them on host)
        settings["ip"] = cfg["host_ip"]
        settings["host_networking"] = True
    return settings
