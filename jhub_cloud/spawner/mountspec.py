"""The sts-wire mount spec of one server, from its profile's mounts and the site's `storage`. Pure.

`mount_spec(resources, target, storage)` returns the spec as data (JSON-ready), or None when
there is nothing to mount (no `storage` section, or a profile without mounts): then the server
starts without sts-wire. The spawner hands it to `sts-wire run --spec env:STS_WIRE_SPEC`.

Every value is fully expanded here (`{username}` in buckets, paths and the role ARN), so the
spec holds no placeholder, and it is checked before any server starts: a user name, bucket or
path that would leave its place (`..`, a `/` in a name, a path outside `storage.mount_roots`,
two mounts on one folder or one inside another) raises MountSpecError naming what is wrong.
The spec holds no secret: the token comes from the hub (token source `hub`, the server's own
API token) and the keys from the STS, at run time.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from ..policy.types import Resources
from .target import SpawnTarget

# Bucket names as S3 (and sts-wire) accept them: 3-63 of [a-z0-9.-], alphanumeric at both ends.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# The user names sts-wire accepts (its spec's `user`), without '/' or leading dots.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


class MountSpecError(ValueError):
    """The mounts cannot be given to this user safely; the message says which and why."""


def mount_spec(resources: Resources, target: SpawnTarget, storage: Mapping | None) -> dict | None:
    """The sts-wire spec (as data) for this server, or None when it mounts nothing."""
    if not storage:
        return None
    mounts = [m for m in resources.mounts if m.for_groups(target.groups)]
    if not mounts:
        return None
    user = target.username
    if not _USER.fullmatch(user) or ".." in user:
        raise MountSpecError(
            f"user name {user!r} cannot name buckets or folders (letters, digits, '_', '.', "
            "'@', '-'; no '/' or '..'); remove {username} from this profile's mounts or rename "
            "the user")
    roots = [posixpath.normpath(r) for r in storage.get("mount_roots") or ["/s3"]]
    cache_mode = storage.get("cache_mode") or "writes"
    out_mounts = []
    for i, mount in enumerate(mounts):
        expanded = mount.expand(user)
        out_mounts.append({
            "remote": _bucket(expanded.bucket, i),
            "path": _path(expanded.path, roots, i),
            "read_only": bool(expanded.read_only),
            "cache_mode": cache_mode,
        })
    _no_overlaps(out_mounts)
    return {
        "version": 1,
        "user": user,
        "token": _token(storage),
        "sts": _sts(storage, user),
        "rclone": {"flags": list(storage.get("rclone_flags") or [])},
        "allow_plain_http": list(storage.get("allow_plain_http") or []),
        "mounts": out_mounts,
    }


def roots_env(storage: Mapping | None) -> dict[str, str]:
    """Environment for `sts-wire run` that allows exactly the site's mount roots (its own
    defaults are wider); empty without storage."""
    if not storage:
        return {}
    roots = [posixpath.normpath(r) for r in storage.get("mount_roots") or ["/s3"]]
    return {"STS_WIRE_ALLOWED_ROOTS": ":".join(roots)}


def _token(storage: Mapping) -> dict:
    token = {"source": "hub"}
    if storage.get("audience"):
        token["audience"] = storage["audience"]
    return token


def _sts(storage: Mapping, user: str) -> dict:
    s3 = storage["s3_endpoint"]
    sts = {
        "endpoint": storage.get("sts_endpoint") or s3,
        "s3_endpoint": s3,
        "region": storage.get("region") or "us-east-1",
        "provider": storage.get("provider") or "Other",
    }
    if storage.get("role_arn"):
        sts["role_arn"] = storage["role_arn"].replace("{username}", user)
        if _PLACEHOLDER.search(sts["role_arn"]):
            raise MountSpecError(
                f"storage.role_arn {storage['role_arn']!r}: only {{username}} is replaced")
    if storage.get("ca_file"):
        sts["ca_file"] = storage["ca_file"]
    if storage.get("session_seconds"):
        sts["duration"] = int(storage["session_seconds"])
    return sts


def _bucket(bucket: str, i: int) -> str:
    # No prefix: a profile names whole buckets, so '/' (and with it '..' parts) cannot appear.
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise MountSpecError(
            f"mounts[{i}].bucket {bucket!r} is not a bucket name (3-63 lower-case letters, "
            "digits, '.' and '-', no '..'); fix the profile's mount or the user name")
    return bucket


def _path(path: str, roots: list[str], i: int) -> str:
    parts = path.split("/")
    if (not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:])
            or _PLACEHOLDER.search(path) or any(c in path for c in "\n\r\x00")):
        raise MountSpecError(
            f"mounts[{i}].path {path!r} is not a plain absolute folder (no '.', '..', empty "
            "parts or placeholders left)")
    if not any(path.startswith(r.rstrip("/") + "/") for r in roots):
        raise MountSpecError(
            f"mounts[{i}].path {path!r} is not below a mount root ({', '.join(roots)}); see "
            "storage.mount_roots")
    return path


def _no_overlaps(mounts: list[dict]) -> None:
    for i, a in enumerate(mounts):
        for j in range(i):
            b = mounts[j]
            if a["path"] == b["path"] or posixpath.commonpath([a["path"], b["path"]]) in (
                    a["path"], b["path"]):
                raise MountSpecError(
                    f"mounts[{i}].path {a['path']} and mounts[{j}].path {b['path']} overlap "
                    "for this user (one would hide the other); give them separate folders")
