"""Checks the schema cannot express: names that must refer to something defined elsewhere.

They run on the raw data next to the schema check (so all problems come out at once), and skip
any part the schema already found wrong, so one mistake is reported once.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from sts_wire.core.placeholders import PLACEHOLDER_RE, unknown_placeholder_messages
from sts_wire.spec import check_flags
from sts_wire.urls import insecure_problem

from .errors import PathPart, Problem
from .schema import show
from .units import parse_memory

Path = tuple[PathPart, ...]
BATCH_BACKENDS = ("slurm",)
# MIG profiles as NVIDIA names them (1g.10gb, 3g.40gb+me): requested by resource name.
_MIG_PROFILE = re.compile(r"^[0-9]+g\.[0-9]+gb(\+me)?$")
# Which group limit bounds which choice, and how to compare values.
_LIMITED = {"cpu": ("max_cpu", float), "memory": ("max_memory", parse_memory), "gpus": ("max_gpus", int)}


def crossref_problems(data: Any, schema_problems: Iterable[Problem]) -> list[Problem]:
    if not isinstance(data, dict):
        return []
    broken = [p.parts for p in schema_problems]

    def clean(parts: Path) -> bool:
        """No schema problem at, inside or above `parts`."""
        n = len(parts)
        return not any(b[:n] == parts or parts[: len(b)] == b for b in broken)

    auth, groups = _dict(data.get("auth")), _dict(data.get("groups"))
    out: list[Problem] = []
    out += _auth_problems(auth, clean)
    allowed = auth.get("allowed_groups") if clean(("auth", "allowed_groups")) else None
    if isinstance(allowed, list):
        for name in groups:
            if name not in allowed:
                out.append(Problem(("groups", name), (
                    f"group {name!r} has limits but is not in auth.allowed_groups, so its members "
                    "cannot log in; add it there or remove these limits")))
    backends = data.get("backends") if clean(("backends",)) else None
    if isinstance(backends, dict) and isinstance(backends.get("kubernetes"), dict):
        out += _kubernetes_problems(backends["kubernetes"])
    storage = data.get("storage")
    if isinstance(storage, dict) and clean(("storage",)):
        out += _storage_problems(storage)
    elif storage is not None:
        storage = False  # broken: the schema said why; skip the mount checks that depend on it
    profiles = data.get("profiles")
    if isinstance(profiles, list):
        out += _unique_names(profiles, clean)
        for i, profile in enumerate(profiles):
            if isinstance(profile, dict):
                out += _profile_problems(("profiles", i), profile, backends, groups, clean)
                if clean(("profiles", i, "mounts")) and storage is not False:
                    out += _mounts_vs_storage(
                        ("profiles", i, "mounts"), _list(profile.get("mounts")), storage,
                        allowed if isinstance(allowed, list) else None)
        if isinstance(storage, dict) and any(isinstance(p, dict) and p.get("mounts") for p in profiles):
            out += _hub_url_problems(_dict(data.get("hub")), storage, clean)
    return out


def _hub_url_problems(hub: dict, storage: dict, clean) -> list[Problem]:
    """Servers with storage send their API token to the hub for the user's access token, and
    sts-wire refuses plain http off loopback: say so here rather than at every spawn."""
    key = "hub_connect_url" if hub.get("hub_connect_url") else "hub_bind_url"
    url = hub.get(key) or "http://127.0.0.1:8081"
    if not clean(("hub", key)) or not isinstance(url, str):
        return []
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("0.0.0.0", "::"):  # noqa: S104 (reading a setting, not binding)
        why = (f"servers reach the hub at this machine's name over plain http ({url}), and sts-wire "
               "refuses to send their token there")
    else:
        why = insecure_problem(url, key, storage.get("allow_plain_http") or [])
        why = why and why.removeprefix(f"{key}: ") + "; sts-wire refuses to send servers' tokens there"
    if not why:
        return []
    return [Problem(("hub", key), (
        f"{why}. Set hub.hub_connect_url to the hub's public https URL (the proxy forwards /hub/), or "
        "list the hub's host in storage.allow_plain_http for a private link you trust"))]


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _auth_problems(auth: dict, clean) -> list[Problem]:
    out = []
    allowed = auth.get("allowed_groups")
    if clean(("auth", "allowed_groups")) and isinstance(allowed, list):
        for j, name in enumerate(_list(auth.get("admin_groups"))):
            if clean(("auth", "admin_groups", j)) and name not in allowed:
                out.append(Problem(("auth", "admin_groups", j), (
                    f"{name!r} is not in auth.allowed_groups, so its members could not log in; "
                    "add it to allowed_groups")))
    if auth.get("client_secret") is None and auth.get("pkce") is False:
        out.append(Problem(("auth", "pkce"), (
            "a public client (no client_secret) must use PKCE; set pkce: true or give a "
            "client_secret")))
    return out


def _unique_names(profiles: list, clean) -> list[Problem]:
    out, first = [], {}
    for i, profile in enumerate(profiles):
        name = profile.get("name") if isinstance(profile, dict) else None
        if not isinstance(name, str) or not clean(("profiles", i, "name")):
            continue
        if name in first:
            out.append(Problem(("profiles", i, "name"), (
                f"duplicate profile name {name!r} (also profiles[{first[name]}]); "
                "give each profile its own name")))
        else:
            first[name] = i
    return out


def _profile_problems(p: Path, profile: dict, backends, groups: dict, clean) -> list[Problem]:
    out = []
    backend = profile.get("backend")
    if isinstance(backends, dict) and clean((*p, "backend")) and backend not in backends:
        enabled = ", ".join(sorted(backends)) or "none"
        out.append(Problem((*p, "backend"), (
            f"backend {backend!r} is not enabled (enabled: {enabled}); add it under backends "
            "or pick an enabled one")))
    profile_groups = []
    for j, name in enumerate(_list(profile.get("groups"))):
        if not clean((*p, "groups", j)):
            continue
        if name in groups:
            profile_groups.append(name)
        else:
            known = ", ".join(sorted(groups)) or "none"
            out.append(Problem((*p, "groups", j), (
                f"group {name!r} is not defined under groups (defined: {known}); "
                "define its limits there or remove it from this profile")))
    raw_choices = _dict(profile.get("choices"))
    # Only choices the schema found sound; a broken gpus choice also silences the gpu_model check.
    choices = {
        name: choice
        for name, choice in raw_choices.items()
        if clean((*p, "choices", name)) and isinstance(choice, dict)
    }
    if "gpu_model" in choices and "gpus" in raw_choices and "gpus" not in choices:
        del choices["gpu_model"]
    settings = backends.get(backend) if isinstance(backends, dict) else None
    out += _choice_problems((*p, "choices"), choices, backend, _dict(settings))
    out += _beyond_limits((*p, "choices"), choices, profile_groups, groups, clean)
    if "kubernetes" in profile and backend != "kubernetes" and isinstance(backend, str):
        out.append(Problem((*p, "kubernetes"), (
            f"a kubernetes block applies only to profiles on the kubernetes backend, not "
            f"{backend}; remove it or set backend: kubernetes")))
    mounts = profile.get("mounts")
    if isinstance(mounts, list) and clean((*p, "mounts")):
        out += _mount_problems((*p, "mounts"), mounts)
    return out


def _choice_problems(c: Path, choices: dict, backend, settings: dict) -> list[Problem]:
    out = []
    for name, choice in choices.items():
        options = choice.get("options", [])
        if "default" in choice and choice["default"] not in options:
            listed = ", ".join(show(o) for o in options)
            out.append(Problem((*c, name, "default"), (
                f"{show(choice['default'])} is not one of the options ({listed}); "
                "pick the default from the options or add it to them")))
    if "time_limit" in choices and backend not in BATCH_BACKENDS and isinstance(backend, str):
        out.append(Problem((*c, "time_limit"), (
            f"time_limit applies only to batch backends ({', '.join(BATCH_BACKENDS)}), not to "
            f"{backend}; remove it or use a batch backend")))
    if "gpu_model" in choices:
        gpus = choices.get("gpus", {}).get("options", [0])
        if not any(n > 0 for n in gpus):
            out.append(Problem((*c, "gpu_model"), (
                "gpu_model is offered but no gpus option is above 0; add a gpus option "
                "such as 1, or remove gpu_model")))
        known = settings.get("gpu_models")
        if isinstance(known, list):
            for k, model in enumerate(choices["gpu_model"].get("options", [])):
                if model not in known:
                    out.append(Problem((*c, "gpu_model", "options", k), (
                        f"{model!r} is not in backends.{backend}.gpu_models "
                        f"({', '.join(known)}); add it there or remove it here")))
    return out


def _beyond_limits(c: Path, choices: dict, names: list, groups: dict, clean) -> list[Problem]:
    """An option above the limit of every group allowed the profile could never be started."""
    out = []
    if not names or not all(clean(("groups", n)) for n in names):
        return out
    for choice, (limit, measure) in _LIMITED.items():
        if choice not in choices:
            continue
        # max() keeps the first of equals: the first group in sorted order, as everywhere.
        best = max(sorted(names), key=lambda n: measure(groups[n].get(limit, 0)))
        top = groups[best].get(limit, 0)
        for k, option in enumerate(choices[choice].get("options", [])):
            if measure(option) > measure(top):
                out.append(Problem((*c, choice, "options", k), (
                    f"{show(option)} is more than {limit} of every group allowed this profile "
                    f"(largest: {show(top)}, group {best}), so nobody could start it; "
                    f"lower it or raise that group's {limit}")))
    return out


def _kubernetes_problems(k8s: dict) -> list[Problem]:
    out = []
    models = k8s.get("gpu_models")
    for model in k8s.get("gpu_products") or {}:
        where = ("backends", "kubernetes", "gpu_products", model)
        if _MIG_PROFILE.match(model):
            out.append(Problem(where, (
                f"{model!r} is a MIG profile: it is requested as nvidia.com/mig-{model} and "
                "needs no product label; remove it here")))
        elif isinstance(models, list) and model not in models:
            out.append(Problem(where, (
                f"{model!r} is not in backends.kubernetes.gpu_models ({', '.join(models)}); "
                "add it there or remove it here")))
    return out


def _storage_problems(storage: dict) -> list[Problem]:
    out = []
    plain = storage.get("allow_plain_http") or []
    for key in ("s3_endpoint", "sts_endpoint"):
        url = storage.get(key)
        if isinstance(url, str) and (why := insecure_problem(url, key, plain)):
            out.append(Problem(("storage", key), why.removeprefix(f"{key}: ")))
    provider, arn = storage.get("provider"), storage.get("role_arn")
    if provider in ("Ceph", "AWS") and arn is None:
        out.append(Problem(("storage", "role_arn"), (
            f"{provider} needs the role to assume; write role_arn, such as "
            "arn:aws:iam:::role/notebooks")))
    out += [Problem(("storage", "role_arn"), why) for why in unknown_placeholder_messages(arn)]
    flags = storage.get("rclone_flags") or []
    for problem in check_flags(flags, "@"):
        # check_flags names the item as "@[i]: ..." (a value may be the next item).
        index, _, why = problem.removeprefix("@[").partition("]: ")
        out.append(Problem(("storage", "rclone_flags", int(index)), why))
    return out


def _mounts_vs_storage(m: Path, mounts: list, storage: dict | None, allowed) -> list[Problem]:
    """Mounts need storage, live below a mount root, and name groups that may log in."""
    if mounts and storage is None:
        return [Problem(m, (
            "mounts need the storage section (S3 and STS endpoints); add it, or remove the "
            "mounts"))]
    out = []
    roots = storage.get("mount_roots", ["/s3"]) if storage else []
    for k, mount in enumerate(mounts):
        path = mount.get("path")
        if isinstance(path, str) and not PLACEHOLDER_RE.sub("x", path).startswith(
                tuple(r.rstrip("/") + "/" for r in roots)):
            out.append(Problem((*m, k, "path"), (
                f"{path!r} is not below a mount root ({', '.join(roots)}); move it there or "
                "add its folder to storage.mount_roots")))
        group = mount.get("group")
        if isinstance(group, str) and allowed is not None and group not in allowed:
            out.append(Problem((*m, k, "group"), (
                f"group {group!r} is not in auth.allowed_groups, so nobody could get this mount; "
                "add it there or fix the name")))
    return out


def _mount_problems(m: Path, mounts: list) -> list[Problem]:
    out, used = [], {}
    for k, mount in enumerate(mounts):
        path = mount.get("path")
        if isinstance(path, str) and (
            any(part in ("", ".", "..") for part in path[1:].split("/"))
        ):
            out.append(Problem((*m, k, "path"), (
                f"{path!r} has an empty, '.' or '..' part; write a plain absolute folder such "
                "as /s3/{username}")))
            continue
        for other, j in used.items():
            if isinstance(path, str) and path != other and posixpath.commonpath(
                    [path, other]) in (path, other):
                out.append(Problem((*m, k, "path"), (
                    f"{path!r} and mounts[{j}] ({other!r}) are nested; a mount would hide "
                    "the other")))
        for field in ("bucket", "path"):
            out += [Problem((*m, k, field), why)
                    for why in unknown_placeholder_messages(str(mount.get(field, "")))]
        if path in used:
            out.append(Problem((*m, k, "path"), (
                f"{path!r} is already the folder of mounts[{used[path]}]; "
                "give each mount its own folder")))
        else:
            used[path] = k
    return out
