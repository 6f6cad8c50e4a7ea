"""Group claims to hub group names (pure)."""

import pytest

from jhub_cloud.auth.groups import admin_from_groups, claim_value, groups_from_claims, is_allowed, normalise_groups


@pytest.mark.parametrize("claims, claim, expected", [
    ({"wlcg.groups": ["/cms", "/physics"]}, "wlcg.groups", ["cms", "physics"]),           # INDIGO IAM
    ({"groups": ["/physics/cms", "/admins"]}, "groups", ["admins", "physics/cms"]),        # Keycloak full path
    ({"groups": ["physics"]}, "groups", ["physics"]),                                     # Keycloak short names
    ({"realm_access": {"roles": ["cms", "cms"]}}, "realm_access.roles", ["cms"]),           # nested, duplicates
    ({"groups": "physics"}, "groups", ["physics"]),                                       # a single string
    ({"other": ["cms"]}, "groups", []),                                                  # claim missing
    ({"groups": {"cms": True}}, "groups", []),                                           # malformed: no groups
    ({"groups": ["cms", 7, None, "", "/"]}, "groups", ["cms"]),                           # junk entries dropped
])
def test_groups_from_claims(claims, claim, expected):
    assert groups_from_claims(claims, claim) == expected


def test_rename_applies_to_raw_and_normalised_names():
    assert normalise_groups(["/cms/users", "/atlas", "physics"],
                            {"cms/users": "cms", "/atlas": "atlas-vo"}) == ["atlas-vo", "cms", "physics"]


def test_literal_dotted_claim_name_wins_over_nesting():
    assert claim_value({"wlcg.groups": ["/a"], "wlcg": {"groups": ["/b"]}}, "wlcg.groups") == ["/a"]
    assert claim_value({"wlcg": {"groups": ["/b"]}}, "wlcg.groups") == ["/b"]


def test_admin_and_allowed():
    assert admin_from_groups(["physics", "admins"], {"admins"})
    assert not admin_from_groups(["physics"], {"admins"})
    assert is_allowed(["cms"], {"physics", "cms"})
    assert not is_allowed(["visitors"], {"physics", "cms"})
    assert not is_allowed([], {"physics"})
