"""The test OpenID provider: headless login, verified JWT claims, refresh, device flow."""

import jwt
import pytest

from tests.testbed.idp import AUDIENCE


def verified_claims(idp, token: str) -> dict:
    jwks = jwt.PyJWKClient(idp.issuer + "/jwks", ssl_context=_ssl(idp))
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=idp.issuer)


def _ssl(idp):
    import ssl

    return ssl.create_default_context(cafile=str(idp.pki.ca_cert))


def test_login_gives_jwt_access_token_with_groups(idp):
    tok = idp.login("alice")
    assert {"access_token", "refresh_token", "id_token"} <= set(tok)
    claims = verified_claims(idp, tok["access_token"])
    assert claims["preferred_username"] == "alice"
    assert sorted(claims["groups"]) == ["cms", "physics"]


def test_wrong_password_is_refused(idp):
    with pytest.raises(RuntimeError, match="login of bob failed"):
        idp.login("bob", password="not-bobs")


def test_refresh_returns_new_token_with_current_groups(idp):
    tok = idp.login("bob")
    idp.set_groups("bob", ["physics", "atlas"])
    try:
        new = idp.refresh(tok["refresh_token"])
        assert new["access_token"] != tok["access_token"]
        assert sorted(verified_claims(idp, new["access_token"])["groups"]) == ["atlas", "physics"]
    finally:
        idp.set_groups("bob", ["physics"])


def test_device_code_flow(idp):
    s = idp.session()
    r = s.post(idp.issuer + "/device/auth", data={"client_id": "sts-wire-public", "scope": "openid groups"})
    r.raise_for_status()
    dev = r.json()
    assert dev["verification_uri"].startswith(idp.issuer)
    pending = s.post(idp.token_endpoint, data={"client_id": "sts-wire-public", "device_code": dev["device_code"],
                                               "grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
    assert pending.json()["error"] == "authorization_pending"
    idp.approve_device(dev["user_code"], "carol")
    r = s.post(idp.token_endpoint, data={"client_id": "sts-wire-public", "device_code": dev["device_code"],
                                         "grant_type": "urn:ietf:params:oauth:grant-type:device_code"})
    r.raise_for_status()
    assert "admins" in verified_claims(idp, r.json()["access_token"])["groups"]


# --- the shapes of real IdPs ----------------------------------------------------------------------
def claims_any_aud(idp, token: str) -> dict:
    jwks = jwt.PyJWKClient(idp.issuer + "/jwks", ssl_context=_ssl(idp))
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], issuer=idp.issuer, options={"verify_aud": False})


def userinfo(idp, access_token: str) -> dict:
    r = idp.session().get(idp.issuer + "/me", headers={"Authorization": f"Bearer {access_token}"})
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def keycloak(idp_factory):
    return idp_factory("keycloak")


@pytest.fixture(scope="module")
def iam(idp_factory):
    return idp_factory("iam")


@pytest.fixture(scope="module")
def egi(idp_factory):
    return idp_factory("egi", refresh_id_token=False)


def test_keycloak_shape(keycloak):
    tok = keycloak.login("alice")
    at = claims_any_aud(keycloak, tok["access_token"])
    assert at["aud"] == "account" and at["azp"] == "jupyterhub" and at["typ"] == "Bearer"
    assert sorted(at["groups"]) == ["/cms", "/physics"]
    assert {"cms", "physics", "offline_access"} <= set(at["realm_access"]["roles"])
    idt = claims_any_aud(keycloak, tok["id_token"])
    assert idt["aud"] == "jupyterhub" and sorted(idt["groups"]) == ["/cms", "/physics"]
    assert sorted(userinfo(keycloak, tok["access_token"])["groups"]) == ["/cms", "/physics"]


def test_keycloak_rotates_refresh_tokens_and_refuses_the_old_one(keycloak):
    tok = keycloak.login("bob")
    new = keycloak.refresh(tok["refresh_token"])
    assert new["refresh_token"] != tok["refresh_token"]
    assert "id_token" in new
    r = keycloak.session().post(keycloak.token_endpoint, auth=("jupyterhub", "jupyterhub-secret"),
                                data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_default_shape_does_not_rotate(idp):
    tok = idp.login("bob")
    new = idp.refresh(tok["refresh_token"])
    assert new["refresh_token"] == tok["refresh_token"]
    assert idp.refresh(tok["refresh_token"])["access_token"]


def test_iam_shape(iam):
    tok = iam.login("alice", scope="openid profile email offline_access wlcg.groups")
    at = claims_any_aud(iam, tok["access_token"])
    assert "aud" not in at and "groups" not in at
    assert sorted(at["wlcg.groups"]) == ["/cms", "/physics"]
    assert "groups" not in claims_any_aud(iam, tok["id_token"]) and "wlcg.groups" not in tok["id_token"]
    info = userinfo(iam, tok["access_token"])
    assert info["sub"] == "alice" and "groups" not in info and "wlcg.groups" not in info


def test_iam_gives_an_audience_only_when_asked_and_keeps_it_on_refresh(iam):
    tok = iam.login("alice", scope="openid offline_access wlcg.groups", audience="jupyterhub")
    assert claims_any_aud(iam, tok["access_token"])["aud"] == "jupyterhub"
    assert claims_any_aud(iam, iam.refresh(tok["refresh_token"])["access_token"])["aud"] == "jupyterhub"


def test_iam_refresh_token_only_with_offline_access(iam):
    assert "refresh_token" not in iam.login("bob", scope="openid wlcg.groups")
    assert "refresh_token" in iam.login("bob", scope="openid offline_access wlcg.groups")


def test_egi_shape_groups_only_from_userinfo(egi):
    tok = egi.login("carol", scope="openid profile email offline_access eduperson_entitlement")
    for t in (tok["access_token"], tok["id_token"]):
        c = claims_any_aud(egi, t)
        assert not {"groups", "wlcg.groups", "eduperson_entitlement"} & set(c)
    assert claims_any_aud(egi, tok["access_token"])["aud"] == "jupyterhub"
    info = userinfo(egi, tok["access_token"])
    assert sorted(info["eduperson_entitlement"]) == [
        "urn:mace:egi.eu:group:admins:role=member#aai.egi.eu", "urn:mace:egi.eu:group:physics:role=member#aai.egi.eu"]


def test_userinfo_refuses_a_forged_or_foreign_token(egi, idp):
    tok = egi.login("carol")
    forged = tok["access_token"][:-4] + ("AAAA" if not tok["access_token"].endswith("AAAA") else "BBBB")
    for bad in (forged, idp.login("carol")["access_token"]):  # the second is signed right, but by another issuer
        r = egi.session().get(egi.issuer + "/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401


def test_refresh_without_id_token(egi):
    tok = egi.login("bob")
    new = egi.refresh(tok["refresh_token"])
    assert new["access_token"] and "id_token" not in new


def test_faults_and_events(egi):
    import time

    t = time.time()
    tok = egi.login("bob")
    with egi.fault("/token", status=503):
        r = egi.session().post(egi.token_endpoint, auth=("jupyterhub", "jupyterhub-secret"),
                               data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]})
        assert r.status_code == 503
    assert egi.refresh(tok["refresh_token"])["access_token"]
    assert egi.refreshes("bob", since=t) == 1
