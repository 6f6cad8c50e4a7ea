"""Is a submitted spawn form allowed, with exactly which resources, or why not.

The form comes from a POST, so nothing in it is trusted: every value must be one the user is
offered (allowed_profiles: within the limits of the groups granting the profile), of the right
type, the new server as a whole must fit the limits of one group that grants its profile, and the
new server together with the user's running ones must stay within their totals (the largest
limits over all their groups).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..config.model import CHOICE_NAMES, Config
from ..config.schema import show
from ..config.units import format_memory, parse_memory
from .entitlement import review_profiles, user_groups, user_limits
from .types import Allowed, Decision, Limits, Refused, Resources

FORM_FIELDS = ("profile", *CHOICE_NAMES)
_TEXT_CHOICES = ("image", "memory", "gpu_model", "time_limit")


def decide(
    cfg: Config, groups: Iterable[str], form: Mapping, running: Iterable[Resources] = ()
) -> Decision:
    """Allowed(profile, resources) or Refused(reason). Missing fields take the offered defaults.

    `form` maps field names (FORM_FIELDS) to values; a one-item list counts as its item, as in
    JupyterHub's form data. Fields starting with "_" (such as _xsrf) are ignored.
    """
    groups = list(groups) if not isinstance(groups, str) else groups
    mine = user_groups(cfg, groups)
    if not mine:
        given = ", ".join(sorted(g for g in groups if isinstance(g, str))) or "none"
        return Refused(
            f"none of your groups ({given}) may use this hub; ask the hub's administrators "
            "for access"
        )
    values = _read_form(form)
    if isinstance(values, Refused):
        return values
    offers, unavailable = review_profiles(cfg, mine)
    name = values.pop("profile", None)
    if name is None:
        if not offers:
            return Refused("no profile is available to your groups; ask the hub's administrators")
        name = offers[0].name
    if not isinstance(name, str):
        return Refused(f"profile must be a profile name, got {show(name)}", "profile")
    profile = cfg.profile(name)
    if profile is None:
        return Refused(f"unknown profile {show(name)}; choose one offered on the page", "profile")
    offer = next((o for o in offers if o.name == name), None)
    if offer is None:
        if name in unavailable:
            return Refused(f"profile {name} is not available to you: {unavailable[name]}", "profile")
        return Refused(
            f"profile {name} is not for your groups ({', '.join(mine)}); it is for: "
            f"{', '.join(profile.groups)}",
            "profile",
        )
    chosen: dict[str, Any] = {}
    totals = user_limits(cfg, mine)
    for field in CHOICE_NAMES:
        full, offered = profile.choices.get(field), offer.choices.get(field)
        if field not in values:
            chosen[field] = offered.default if offered else None
            continue
        if offered is None:
            why = "" if full is None else " with your limits (no GPU)"
            return Refused(f"profile {name} has no {field} choice{why}; leave it out", field)
        value = _coerce(field, values[field])
        if value is None:
            kind = "text" if field in _TEXT_CHOICES else "a number"
            return Refused(f"{field} must be {kind}, got {show(values[field])}", field)
        match = next((o for o in full.options if o == value), None)
        if match is None:
            listed = ", ".join(str(o) for o in full.options)
            return Refused(
                f"{field} {show(values[field])} is not a choice of profile {name} "
                f"(choices: {listed})",
                field,
            )
        if match not in offered.options:
            limit = {"cpu": "max_cpu", "memory": "max_memory", "gpus": "max_gpus"}[field]
            cut = offer.limits
            return Refused(
                f"{field} {match} is above your {limit} of {cut.shown(limit)} for profile "
                f"{name} (from group {cut.source[limit]}, which grants it); choose at most that",
                field,
            )
        chosen[field] = match
    gpus = chosen["gpus"]
    resources = Resources(
        backend=profile.backend,
        image=chosen["image"],
        cpu=chosen["cpu"],
        memory_bytes=parse_memory(chosen["memory"]),
        gpus=gpus,
        gpu_model=chosen["gpu_model"] if gpus > 0 else None,
        time_limit=chosen["time_limit"],
        mounts=offer.mounts,
        environment=profile.environment,
        backend_options=profile.backend_options,
    )
    refusal = _within_one_granting_group(cfg, offer, resources) or _over_limits(resources, list(running), totals)
    return refusal or Allowed(profile=name, resources=resources)


def _within_one_granting_group(cfg: Config, offer, new: Resources) -> Refused | None:
    """One server must fit the limits of ONE group granting its profile: a user in A (64 CPUs, no
    GPU) and B (1 CPU, 4 GPUs), both granting a profile, may have 64 CPUs or 4 GPUs, not both."""
    granting = [cfg.groups[g] for g in offer.granted_by if g in cfg.groups]
    if len(granting) < 2 or any(
        round(new.cpu, 6) <= g.max_cpu and new.memory_bytes <= g.max_memory_bytes and new.gpus <= g.max_gpus
        for g in granting
    ):
        return None
    each = "; ".join(f"{g.group}: {_number(g.max_cpu)} CPUs, {g.max_memory} memory, {g.max_gpus} GPUs"
                     for g in granting)
    return Refused(
        f"no single group granting profile {offer.name} allows {_number(new.cpu)} CPUs, "
        f"{format_memory(new.memory_bytes)} memory and {new.gpus} GPUs together ({each}); "
        "choose a combination within one of them",
        "cpu",
    )


def _read_form(form: Any) -> dict | Refused:
    if not isinstance(form, Mapping):
        return Refused("the form must be a set of named fields")
    values = {}
    for key, raw in form.items():
        if isinstance(key, str) and key.startswith("_"):
            continue
        if key not in FORM_FIELDS:
            return Refused(
                f"unknown form field {show(key)}; the fields are: {', '.join(FORM_FIELDS)}", None
            )
        if isinstance(raw, list | tuple):
            if len(raw) != 1:
                return Refused(f"{key} must be one value, got {len(raw)}", key)
            raw = raw[0]
        if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
            return Refused(f"{key} must be a single value, got {show(raw)}", key)
        values[key] = raw
    return values


def _coerce(field: str, raw: str | int | float) -> Any:
    """The value in the type of the choice's options, or None when it cannot be."""
    if field in _TEXT_CHOICES:
        return raw if isinstance(raw, str) else None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if not math.isfinite(raw):
        return None
    if field == "gpus" and raw != int(raw):
        return None
    return raw


def _over_limits(new: Resources, running: list[Resources], limits: Limits) -> Refused | None:
    if len(running) + 1 > limits.max_servers:
        return Refused(
            f"you have {len(running)} server(s) running and may run {limits.max_servers} at "
            f"once (max_servers, from group {limits.source['max_servers']}); stop one first"
        )
    totals = (
        ("cpu", "max_cpu", "CPUs", lambda r: r.cpu, _number),
        ("memory", "max_memory", "memory", lambda r: r.memory_bytes, format_memory),
        ("gpus", "max_gpus", "GPUs", lambda r: r.gpus, _number),
    )
    for field, limit, what, measure, fmt in totals:
        used = sum(measure(r) for r in running)
        # Rounded: 0.1 + 0.2 CPUs must not exceed a limit of 0.3.
        if round(used + measure(new), 6) > limits.value(limit):
            return Refused(
                f"this server's {what} ({fmt(measure(new))}) with your running servers' "
                f"({fmt(used)}) would be {fmt(used + measure(new))}, above your {limit} of "
                f"{limits.shown(limit)} (from group {limits.source[limit]}); choose less or "
                "stop a server",
                field,
            )
    return None


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
