"""What a user with given groups gets, and which group gave each part: for `jhub-cloud explain`.

"limits" are the user's totals (all running servers together); each profile carries its own
"limits", from the groups that grant it, which cut its choices.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config.model import Config
from .entitlement import review_profiles, user_groups, user_limits
from .types import LIMIT_NAMES

RULE = (
    "A user may use every profile any of their allowed groups may use. One server of a profile "
    "gets at most, for each of max_cpu, max_memory and max_gpus, the largest value over the "
    "user's groups that grant that profile (no other group counts), and the server as a whole "
    "must fit the limits of one of those groups. All of a user's running "
    "servers together stay within the largest of each limit over all their allowed groups "
    "(max_servers, and CPUs, memory and GPUs added up). A limit's source is the first group, in "
    "sorted order, giving its value."
)


def explain(cfg: Config, groups: Iterable[str]) -> dict:
    """Plain data (JSON-ready), built from the same functions the spawn page and decide use."""
    if isinstance(groups, str):
        raise TypeError("groups must be a list of group names, not one string")
    given = sorted(set(groups))
    mine = user_groups(cfg, given)
    admin_from = next((g for g in mine if g in cfg.admin_groups), None)
    limits = user_limits(cfg, mine)
    offers, unavailable = review_profiles(cfg, mine)
    return {
        "groups": given,
        "allowed_groups": list(mine),
        "ignored_groups": [g for g in given if g not in mine],
        "can_log_in": bool(mine),
        "admin": {"value": admin_from is not None, "from": admin_from},
        "limits": {
            name: {"value": limits.shown(name), "from": limits.source[name]}
            for name in LIMIT_NAMES
        }
        if limits
        else {},
        "profiles": [offer.to_dict() for offer in offers],
        "unavailable_profiles": [
            {"name": name, "reason": why} for name, why in unavailable.items()
        ],
        "rule": RULE,
    }
