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
