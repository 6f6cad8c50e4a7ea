"""Group claims → JupyterHub group names (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def claim_value(claims: Mapping, dotted: str):
    """The value at a dotted claim path ('realm_access.roles'); a literal key with dots wins
    (IAM names its claim 'wlcg.groups')."""
    if dotted in claims:
        return claims[dotted]
    value = claims
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def normalise_groups(raw, rename: Mapping[str, str] | None = None) -> list[str]:
    """Sorted, de-duplicated group names.

    IAM's `wlcg.groups` say '/cms', Keycloak's full paths say '/physics/cms': the leading '/' goes,
    inner slashes stay ('physics/cms'). `rename` maps a name (with or without its leading '/') to
    the name the hub uses. Anything that is not a list of strings gives no groups at all, since a
    malformed claim must not grant access.
    """
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Iterable) or isinstance(raw, Mapping):
        return []
    rename = rename or {}
    out = set()
    for g in raw:
        if not isinstance(g, str) or not g.strip("/ "):
            continue
        if g in rename:
            out.add(rename[g])
            continue
        name = g.strip().lstrip("/")
        out.add(rename.get(name, name))
    return sorted(out)


def groups_from_claims(claims: Mapping, claim: str, rename: Mapping[str, str] | None = None) -> list[str]:
    return normalise_groups(claim_value(claims, claim), rename)


def admin_from_groups(groups: Iterable[str], admin_groups: Iterable[str]) -> bool:
    return bool(set(groups) & set(admin_groups))


def is_allowed(groups: Iterable[str], allowed_groups: Iterable[str]) -> bool:
    return bool(set(groups) & set(allowed_groups))
