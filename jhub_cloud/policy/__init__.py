"""The policy: pure functions from a Config and a user's groups to what they may start.

- allowed_profiles(cfg, groups): the profiles (and choices) the spawn page shows;
- decide(cfg, groups, form, running): Allowed(profile, resources) or Refused(reason);
- user_limits(cfg, groups): the totals over all of a user's running servers;
- explain(cfg, groups): everything with its source, including each profile's own limits (from
  the groups that grant it, which cut its choices).
"""

from .decide import FORM_FIELDS, decide
from .entitlement import (
    allowed_profiles,
    is_admin,
    limits_of,
    review_profiles,
    user_groups,
    user_limits,
)
from .explain import RULE, explain
from .types import (
    LIMIT_NAMES,
    PROFILE_LIMIT_NAMES,
    Allowed,
    Decision,
    Limits,
    ProfileOffer,
    Refused,
    Resources,
)

__all__ = [
    "FORM_FIELDS",
    "LIMIT_NAMES",
    "PROFILE_LIMIT_NAMES",
    "RULE",
    "Allowed",
    "Decision",
    "Limits",
    "ProfileOffer",
    "Refused",
    "Resources",
    "allowed_profiles",
    "decide",
    "explain",
    "is_admin",
    "limits_of",
    "review_profiles",
    "user_groups",
    "user_limits",
]
