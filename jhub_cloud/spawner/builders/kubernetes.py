"""Resources -> KubeSpawner settings. Pure: no API call, no file read.

What a pod gets (docs/configuration.md, `backends.kubernetes`, explains each setting):
- the profile's image and the site's pull policy;
- CPU and memory requested at exactly the profile's values, with limits equal to them: the
  scheduler reserves what the profile promises, and the server cannot take more;
- GPUs as an extended resource, request == limit (Kubernetes refuses anything else):
  `nvidia.com/gpu` for whole GPUs, placed by the node label `nvidia.com/gpu.product` when the site
  maps the model in `gpu_products`; `nvidia.com/mig-<profile>` for a MIG profile such as 1g.10gb
  (the device plugin's "mixed" strategy). Never both in one container;
- node selector and tolerations: the backend's, then the profile's own (`kubernetes:` block), then
  `gpu_tolerations` when the pod asks for GPUs;
- the user's home on a PersistentVolumeClaim `jhub-home-<safe user>`, created at the first start
  and kept when the server stops (all of a user's servers share it: ReadWriteOnce, so named
  servers of one user land on the same node or need a ReadWriteMany class);
- FUSE, only when the server mounts buckets (STS_WIRE_SPEC in its environment): /dev/fuse from a
  device plugin resource (`smarter-devices/fuse`, the default) or a hostPath, the capability
  SYS_ADMIN and privilege escalation for the setuid `fusermount3`, and the site's AppArmor
  profile. Never a privileged pod;
- no Kubernetes API token (automountServiceAccountToken: false): the server has no use for one.
  The only secret in the pod is the hub's own API token, which KubeSpawner puts there itself.

KubeSpawner expands `{...}` templates in the environment, volumes and mounts it is given, so
every value placed there is escaped: the JSON mount spec and any text from the configuration
reach the pod exactly as written.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from ...policy.types import Resources
from ..target import SpawnTarget

SPEC_ENV = "STS_WIRE_SPEC"
POD_PREFIX = "jupyter-"
HOME_PREFIX = "jhub-home-"
HOME_VOLUME = "home"
FUSE_VOLUME = "dev-fuse"
WHOLE_GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
# A MIG profile name as NVIDIA writes them: 1g.10gb, 3g.40gb, 1g.10gb+me, 7g.80gb.
MIG_PROFILE = re.compile(r"^[0-9]+g\.[0-9]+gb(\+me)?$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DEFAULTS = {
    "namespace": "jhub",
    "gpu_products": {},
    "node_selector": {},
    "tolerations": [],
    "gpu_tolerations": [{"key": WHOLE_GPU, "operator": "Exists", "effect": "NoSchedule"}],
    "image_pull_policy": "IfNotPresent",
    "uid": 1000,
    "gid": 100,
    "home_size": "10Gi",
    "home_storage_class": None,
    "home_path": "/home/jovyan",
    "fuse": "device-plugin",
    "fuse_resource": "smarter-devices/fuse",
    "apparmor_profile": None,
    "start_timeout": 600,
}


class KubernetesSettingsError(ValueError):
    """The backend section or the resources cannot be turned into a pod."""


def dns_label(name: str) -> str:
    """`name` as a DNS label (at most 63 characters): cut, with a hash of the whole when cut."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def pod_name(target: SpawnTarget) -> str:
    return dns_label(POD_PREFIX + target.safe_server)


def home_claim_name(target: SpawnTarget) -> str:
    return dns_label(HOME_PREFIX + target.safe_user)


def gpu_resource(model: str | None) -> str:
    """The extended resource that gives one GPU of `model` (None: any model)."""
    if model and MIG_PROFILE.match(model):
        return MIG_PREFIX + model
    return WHOLE_GPU


def child_settings(resources: Resources, target: SpawnTarget, backend: Mapping,
                   cmd: list[str], env: Mapping[str, str]) -> dict:
    """KubeSpawner trait name -> value for this server."""
    b = {**DEFAULTS, **backend}
    if not _LABEL.match(str(b["namespace"])):
        raise KubernetesSettingsError(
            f"backends.kubernetes.namespace {b['namespace']!r} is not a namespace name")
    profile = resources.backend_options or {}
    claim = home_claim_name(target)
    limits, requests = {}, {}
    node_selector = {**b["node_selector"], **(profile.get("node_selector") or {})}
    tolerations = [*b["tolerations"], *(profile.get("tolerations") or [])]
    if resources.gpus > 0:
        name = gpu_resource(resources.gpu_model)
        # Extended resources cannot be overcommitted: the request must equal the limit.
        limits[name] = requests[name] = str(int(resources.gpus))
        product = (b["gpu_products"] or {}).get(resources.gpu_model)
        if name == WHOLE_GPU and product:
            node_selector["nvidia.com/gpu.product"] = product
        tolerations += [t for t in b["gpu_tolerations"] if t not in tolerations]
    volumes = [{"name": HOME_VOLUME, "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": HOME_VOLUME, "mountPath": _literal(b["home_path"])}]
    security = {}
    if SPEC_ENV in env and b["fuse"] != "none":
        fuse_volumes, fuse_mounts, fuse_resources, security = _fuse(b)
        volumes += fuse_volumes
        mounts += fuse_mounts
        limits.update(fuse_resources)
        requests.update(fuse_resources)
    return {
        "namespace": b["namespace"],
        "pod_name_template": pod_name(target),
        "pvc_name_template": claim,
        "image": resources.image,
        "image_pull_policy": b["image_pull_policy"],
        "cmd": list(cmd),
        "environment": {k: _literal(v) for k, v in {**resources.environment, **env}.items()},
        "cpu_limit": float(resources.cpu),
        "cpu_guarantee": float(resources.cpu),
        "mem_limit": int(resources.memory_bytes),
        "mem_guarantee": int(resources.memory_bytes),
        "extra_resource_limits": limits,
        "extra_resource_guarantees": requests,
        "node_selector": node_selector,
        "tolerations": tolerations,
        "storage_pvc_ensure": True,
        "storage_capacity": b["home_size"],
        "storage_class": b["home_storage_class"],
        "storage_access_modes": ["ReadWriteOnce"],
        "volumes": volumes,
        "volume_mounts": mounts,
        "uid": int(b["uid"]),
        "gid": int(b["gid"]),
        "fs_gid": int(b["gid"]),
        "privileged": False,
        "allow_privilege_escalation": bool(security),
        "container_security_context": security,
        "automount_service_account_token": False,
        "start_timeout": int(b["start_timeout"]),
        # No profile_list: the profile was chosen and checked by the policy, not by KubeSpawner.
        "profile_list": [],
    }


def _literal(text: str) -> str:
    """`text` as a KubeSpawner template that expands to exactly `text`."""
    return text.replace("{", "{{").replace("}", "}}")


def _fuse(b: Mapping) -> tuple[list, list, dict, dict]:
    """Volumes, mounts, extended resources and container security context for FUSE."""
    volumes, mounts, extra = [], [], {}
    if b["fuse"] == "device-plugin":
        extra[b["fuse_resource"]] = "1"
    elif b["fuse"] == "hostpath":
        volumes.append({"name": FUSE_VOLUME, "hostPath": {"path": "/dev/fuse", "type": "CharDevice"}})
        mounts.append({"name": FUSE_VOLUME, "mountPath": "/dev/fuse"})
    else:
        raise KubernetesSettingsError(
            f"backends.kubernetes.fuse {b['fuse']!r}: use device-plugin, hostpath or none")
    # mount() needs CAP_SYS_ADMIN; the setuid fusermount3 gains it only with escalation allowed.
    security = {"allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    profile = b.get("apparmor_profile")
    if profile:
        kind, _, local = profile.partition("/")
        security["appArmorProfile"] = {"type": kind, **({"localhostProfile": local} if local else {})}
    return volumes, mounts, extra, security
