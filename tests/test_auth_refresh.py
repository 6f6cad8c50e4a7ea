"""Refresh against the real IdP: which answers log a user out and which do not.

The user is JupyterHub's part; here a small stand-in holds the auth_state (the hub-level tests,
test_auth_hub.py and test_token_api.py, run the same code inside a real JupyterHub).
"""

import time

import pytest

from jhub_cloud.auth.authenticator import IAMAuthenticator
from jhub_cloud.auth.refresh import Outcome


class StoredUser:
    """What the authenticator uses of jupyterhub.user.User: a name and the stored auth_state."""

    def __init__(self, name: str, auth_state: dict):
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


def authenticator(idp, **settings) -> IAMAuthenticator:
    return IAMAuthenticator(issuer=idp.issuer, client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)},
                            allowed_groups={"physics", "cms", "admins"}, admin_groups={"admins"}, **settings)


async def logged_in(auth, idp, user: str, **login) -> StoredUser:
    model = await auth._token_to_auth_model(idp.login(user, **login))
    return StoredUser(model["name"], model["auth_state"])


@pytest.fixture(scope="module")
def no_id_token_idp(idp_factory):
    return idp_factory("egi", refresh_id_token=False)


@pytest.fixture(scope="module")
def keycloak(idp_factory):
    return idp_factory("keycloak")


async def test_fresh_token_is_not_refreshed(idp):
    auth = authenticator(idp)
    u = await logged_in(auth, idp, "alice")
    t = time.time()
    assert (await auth.refresh_tokens(u)).outcome is Outcome.FRESH
    assert idp.refreshes("alice", since=t) == 0


async def test_refresh_without_id_token_keeps_the_user_with_userinfo_groups(no_id_token_idp):
    idp = no_id_token_idp
    auth = authenticator(idp, groups_source="userinfo", groups_claim="eduperson_entitlement",
                         group_rename={f"urn:mace:egi.eu:group:{g}:role=member#aai.egi.eu": g
                                       for g in ("physics", "cms", "admins")})
    u = await logged_in(auth, idp, "carol")
    idp.set_groups("carol", ["physics"])
    try:
        r = await auth.refresh_tokens(u, force=True)
    finally:
        idp.set_groups("carol", ["admins", "physics"])
    assert r.outcome is Outcome.REFRESHED, r.reason
    assert r.model["name"] == "carol"
    assert r.model["groups"] == ["physics"] and r.model["admin"] is False  # the new userinfo answer
    assert r.state["access_token"] != u.auth_state["access_token"]
    assert r.state["id_token"] == u.auth_state["id_token"]  # the last one is kept


async def test_refresh_without_id_token_groups_from_the_new_access_token(idp_factory):
    idp = idp_factory("default", refresh_id_token=False)
    auth = authenticator(idp)
    u = await logged_in(auth, idp, "bob")
    idp.set_groups("bob", ["physics", "cms"])
    r = await auth.refresh_tokens(u, force=True)
    assert r.outcome is Outcome.REFRESHED, r.reason
    assert r.model["groups"] == ["cms", "physics"]


async def test_refresh_without_id_token_and_id_token_groups_keeps_the_last_verified(no_id_token_idp):
    idp = no_id_token_idp
    auth = authenticator(idp, groups_source="id_token", groups_claim="sub", group_rename={"bob": "physics"})
    u = await logged_in(auth, idp, "bob")
    r = await auth.refresh_tokens(u, force=True)
    assert r.outcome is Outcome.REFRESHED, r.reason
    assert r.model["name"] == "bob" and r.model["groups"] == ["physics"]


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"delay": 4}])
async def test_idp_in_trouble_keeps_the_current_state(idp, fault):
    auth = authenticator(idp, idp_timeout=1.5)
    u = await logged_in(auth, idp, "alice")
    with idp.fault("/token", **fault):
        r = await auth.refresh_tokens(u, force=True)
        assert r.outcome is Outcome.UNAVAILABLE, r.reason
        assert r.state is u.auth_state
        # What JupyterHub sees: True, the user stays as they are (not False, a new login).
        u.auth_state = {**u.auth_state, "expires_at": time.time() + 5}
        assert await auth.refresh_user(u) is True


@pytest.mark.parametrize("why", ["revoked", "garbage"])
async def test_a_refusal_logs_the_user_out(idp, why):
    auth = authenticator(idp)
    u = await logged_in(auth, idp, "bob")
    if why == "revoked":
        idp.revoke(u.auth_state["refresh_token"])
    else:
        u.auth_state = {**u.auth_state, "refresh_token": "not-a-refresh-token"}
    r = await auth.refresh_tokens(u, force=True)
    assert r.outcome is Outcome.REFUSED and "HTTP 400" in r.reason
    u.auth_state = {**u.auth_state, "expires_at": time.time() + 5}
    assert await auth.refresh_user(u) is False


async def test_blocked_users_still_apply_on_refresh(idp):
    auth = authenticator(idp)
    u = await logged_in(auth, idp, "bob")
    auth.blocked_users = {"bob"}
    r = await auth.refresh_tokens(u, force=True)
    assert r.outcome is Outcome.REFUSED and "blocked" in r.reason


async def test_leaving_the_allowed_groups_ends_the_session_on_refresh(idp):
    auth = authenticator(idp)
    u = await logged_in(auth, idp, "bob")
    idp.set_groups("bob", ["visitors"])
    try:
        r = await auth.refresh_tokens(u, force=True)
    finally:
        idp.set_groups("bob", ["physics"])
    assert r.outcome is Outcome.REFUSED and "no longer log in" in r.reason


async def test_rotating_idp_old_refresh_token_refused_and_no_second_use(keycloak):
    auth = authenticator(keycloak, access_token_audiences=["account"])
    u = await logged_in(auth, keycloak, "alice")
    old = u.auth_state["refresh_token"]
    r = await auth.refresh_tokens(u, force=True)
    assert r.outcome is Outcome.REFRESHED, r.reason
    assert r.state["refresh_token"] != old
    # JupyterHub has not stored the new state yet: a second refresh must use the new refresh
    # token (from memory), not the spent one.
    r2 = await auth.refresh_tokens(u, force=True)
    assert r2.outcome is Outcome.REFRESHED, r2.reason
    assert r2.state["refresh_token"] not in (old, r.state["refresh_token"])
    with pytest.raises(Exception, match="400"):
        keycloak.refresh(old)  # the IdP rotates: the old one is refused


def test_default_scopes_are_the_schemas_and_include_offline_access():
    from jhub_cloud.config.schema import load_schema

    schema_default = load_schema()["properties"]["auth"]["properties"]["scopes"]["default"]
    assert IAMAuthenticator(client_id="x").scope == schema_default
    assert "offline_access" in schema_default
