"""Which groups count, the limits they give, and the profiles a user is offered.

Several groups combine the same way every time:
- a user may use every profile that any of their allowed groups may use (the groups that
  *grant* it);
- one server of a profile is cut by the limits of the groups that grant that profile, and only
  those: for each of max_cpu, max_memory and max_gpus the largest value over the granting groups.
  A user in A (64 CPUs, no GPU) and B (1 CPU, 4 GPUs) gets B's GPU profile with at most 1 CPU;
  when several groups grant a profile, the page offers each choice up to the largest of them, and
  decide() checks that the server as a whole fits the limits of one of them;
- the totals over all of a user's running servers (max_servers, and CPUs, memory and GPUs added
  up) are the largest value of each limit over all their allowed groups.
The group named as a limit's source is the first, in sorted order, giving that value. Groups not
in auth.allowed_groups count for nothing, and a user with no allowed group gets nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from ..config.model import Choice, Config, Profile
from ..config.units import parse_memory
from .types import LIMIT_NAMES, Limits, ProfileOffer

# Which limit bounds which choice for a single server, and how to measure an option.
CHOICE_LIMITS = {"cpu": ("max_cpu", float), "memory": ("max_memory", parse_memory),
                 "gpus": ("max_gpus", int)}


def user_groups(cfg: Config, groups: Iterable[str]) -> tuple[str, ...]:
    """The user's groups that count: those in auth.allowed_groups, sorted, once each."""
    if isinstance(groups, str):
        # "physics,cms" would otherwise be read one letter at a time.
        raise TypeError("groups must be a list of group names, not one string")
    allowed = set(cfg.allowed_groups)
    return tuple(sorted({g for g in groups if isinstance(g, str) and g in allowed}))


def is_admin(cfg: Config, groups: Iterable[str]) -> bool:
    return bool(set(user_groups(cfg, groups)) & set(cfg.admin_groups))


def user_limits(cfg: Config, groups: Iterable[str]) -> Limits | None:
    """The totals over all of a user's running servers: the largest of each limit over their
    allowed groups; None when no group of theirs has limits."""
    return limits_of(cfg, user_groups(cfg, groups))


def limits_of(cfg: Config, names: Iterable[str]) -> Limits | None:
    """The largest of each limit over the named groups that have limits (None if none has)."""
    mine = [cfg.groups[g] for g in sorted(set(names)) if g in cfg.groups]
    if not mine:
        return None
    values, source = {}, {}
    for name in LIMIT_NAMES:
        attr = "max_memory_bytes" if name == "max_memory" else name
        best = max(mine, key=lambda lim, a=attr: getattr(lim, a))  # first of equals: sorted order
        values[attr], source[name] = getattr(best, attr), best.group
    return Limits(**values, source=MappingProxyType(source))


def allowed_profiles(cfg: Config, groups: Iterable[str]) -> list[ProfileOffer]:
    """What the spawn page shows this user, in the order of the configuration."""
    return review_profiles(cfg, groups)[0]


def review_profiles(cfg: Config, groups: Iterable[str]) -> tuple[list[ProfileOffer], dict]:
    """(offers, {profile name: why not offered}) for the profiles the user's groups may use."""
    mine = user_groups(cfg, groups)
    offers, unavailable = [], {}
    for profile in cfg.profiles:
        granted = tuple(g for g in mine if g in profile.groups)
        # Only the groups granting this profile bound it, never another group of the user.
        limits = limits_of(cfg, granted)
        if limits is None:
            continue
        choices, why_not = fit_choices(profile, limits)
        if choices is None:
            unavailable[profile.name] = why_not
            continue
        offers.append(ProfileOffer(
            name=profile.name,
            display_name=profile.display_name,
            description=profile.description,
            backend=profile.backend,
            granted_by=granted,
            choices=MappingProxyType(choices),
            # A group's bucket only for its members.
            mounts=tuple(m for m in profile.mounts if m.for_groups(mine)),
            environment=profile.environment,
            limits=limits,
        ))
    return offers, unavailable


def fit_choices(profile: Profile, limits: Limits) -> tuple[dict | None, str]:
    """The profile's choices cut to what one server may have within `limits` (or None, why)."""
    out = {}
    for name, choice in profile.choices.items():
        if name not in CHOICE_LIMITS:
            out[name] = choice
            continue
        limit, measure = CHOICE_LIMITS[name]
        fits = tuple(o for o in choice.options if measure(o) <= limits.value(limit))
        if not fits:
            smallest = min(choice.options, key=measure)
            return None, (
                f"its smallest {name} ({smallest}) is above your {limit} of "
                f"{limits.shown(limit)} (from group {limits.source[limit]}, which grants it)"
            )
        # A default cut off becomes the largest option still allowed, nearest to the intent.
        default = choice.default if choice.default in fits else max(fits, key=measure)
        out[name] = Choice(fits, default)
    if "gpu_model" in out and not any(n > 0 for n in out["gpus"].options):
        del out["gpu_model"]  # no GPU to choose a model of
    return out, ""
