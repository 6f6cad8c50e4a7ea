"""A real hub logging in against each IdP shape with the settings docs/identity-providers.md gives."""

import time

import pytest

from tests.testbed.hub import Hub

EGI_RENAME = {f"urn:mace:egi.eu:group:{g}:role=member#aai.egi.eu": g for g in ("physics", "cms", "admins")}
AT_TTL, MARGIN = 20, 12


@pytest.fixture(scope="module")
def keycloak(idp_factory):
    return idp_factory("keycloak", at_ttl=AT_TTL)


@pytest.fixture(scope="module")
def iam(idp_factory):
    return idp_factory("iam", at_ttl=AT_TTL)


@pytest.fixture(scope="module")
def egi(idp_factory):
    return idp_factory("egi", at_ttl=AT_TTL, refresh_id_token=False)


def start_hub(idp, run_dir, name, **auth):
    return Hub(idp, run_dir / name, auth={"refresh_margin_seconds": MARGIN, "auth_refresh_age": 1, **auth}).start()


@pytest.fixture(scope="module")
def keycloak_hub(keycloak, run_dir):
    h = start_hub(keycloak, run_dir, "hub-keycloak", groups_claim="groups", access_token_audiences=["account"])
    yield h
    h.stop()


@pytest.fixture(scope="module")
def iam_hub(iam, run_dir):
    h = start_hub(iam, run_dir, "hub-iam", groups_claim="wlcg.groups", access_token_audience_unchecked=True,
                  scopes=["openid", "profile", "email", "offline_access", "wlcg.groups"])
    yield h
    h.stop()


@pytest.fixture(scope="module")
def egi_hub(egi, run_dir):
    h = start_hub(egi, run_dir, "hub-egi", groups_source="userinfo", groups_claim="eduperson_entitlement",
                  group_rename=EGI_RENAME,
                  scopes=["openid", "profile", "email", "offline_access", "eduperson_entitlement"])
    yield h
    h.stop()


def near_expiry(h, user):
    time.sleep(max(0.0, h.user(user)["auth_state"]["expires_at"] - MARGIN - time.time()) + 0.5)


def test_keycloak_login_and_rotating_refresh(keycloak_hub, keycloak):
    s, r = keycloak_hub.login("carol")
    assert r.status_code == 302, r.text[:300]
    model = keycloak_hub.user("carol")
    assert sorted(model["groups"]) == ["admins", "physics"] and model["admin"] is True
    old = model["auth_state"]["refresh_token"]
    near_expiry(keycloak_hub, "carol")
    assert s.get(keycloak_hub.url + "/hub/home", allow_redirects=False).status_code == 200
    new = keycloak_hub.user("carol")["auth_state"]
    assert new["refresh_token"] != old and new["expires_at"] > time.time() + MARGIN
    # The IdP rotated: the old refresh token is refused from now on.
    r = keycloak.session().post(keycloak.token_endpoint, auth=("jupyterhub", "jupyterhub-secret"),
                                data={"grant_type": "refresh_token", "refresh_token": old})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_iam_login_with_wlcg_groups(iam_hub):
    _, r = iam_hub.login("alice")
    assert r.status_code == 302, r.text[:300]
    state = iam_hub.user("alice")
    assert sorted(state["groups"]) == ["cms", "physics"] and state["auth_state"]["refresh_token"]


def test_egi_login_groups_from_userinfo_and_refresh_without_id_token(egi_hub, egi):
    t = time.time()
    s, r = egi_hub.login("carol")
    assert r.status_code == 302, r.text[:300]
    assert egi_hub.user("carol")["admin"] is True
    assert [e["sub"] for e in egi.events(since=t) if e["path"] == "/me"] == ["carol"]
    egi.set_groups("carol", ["physics"])
    try:
        near_expiry(egi_hub, "carol")
        t = time.time()
        assert s.get(egi_hub.url + "/hub/home", allow_redirects=False).status_code == 200  # still logged in
        model = egi_hub.user("carol")
        assert egi.refreshes("carol", since=t) == 1
        assert model["admin"] is False and model["groups"] == ["physics"]  # from the new userinfo answer
    finally:
        egi.set_groups("carol", ["admins", "physics"])


@pytest.fixture(scope="module")
def iam_audience_hub(iam, run_dir):
    h = start_hub(iam, run_dir, "hub-iam-aud", groups_claim="wlcg.groups",
                  scopes=["openid", "profile", "email", "offline_access", "wlcg.groups"],
                  extra_authorize_params={"prompt": "consent", "audience": "jupyterhub"})
    yield h
    h.stop()


def test_iam_with_an_audience_asked_for_and_checked(iam_audience_hub, iam):
    s, r = iam_audience_hub.login("bob")
    assert r.status_code == 302, r.text[:300]
    assert iam_audience_hub.user("bob")["groups"] == ["physics"]
    near_expiry(iam_audience_hub, "bob")
    t = time.time()
    assert s.get(iam_audience_hub.url + "/hub/home", allow_redirects=False).status_code == 200
    assert iam.refreshes("bob", since=t) == 1  # the refreshed token kept its audience: still logged in
    assert iam_audience_hub.user("bob")["auth_state"]["expires_at"] > time.time() + MARGIN
