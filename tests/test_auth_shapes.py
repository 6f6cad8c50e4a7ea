"""The authenticator against each IdP shape (tests/testbed/idp.py): the settings that
docs/identity-providers.md gives for Keycloak, INDIGO IAM and EGI Check-in really log users in."""

import pytest
from tornado.web import HTTPError

from jhub_cloud.auth.authenticator import IAMAuthenticator


def authenticator(idp, **settings) -> IAMAuthenticator:
    return IAMAuthenticator(issuer=idp.issuer, client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)},
                            allowed_groups={"physics", "cms", "admins"}, admin_groups={"admins"}, **settings)


@pytest.fixture(scope="module")
def keycloak(idp_factory):
    return idp_factory("keycloak")


@pytest.fixture(scope="module")
def keycloak_no_aud(idp_factory):
    return idp_factory("keycloak", at_audience="-")


@pytest.fixture(scope="module")
def iam(idp_factory):
    return idp_factory("iam")


@pytest.fixture(scope="module")
def egi(idp_factory):
    return idp_factory("egi")


EGI_RENAME = {f"urn:mace:egi.eu:group:{g}:role=member#aai.egi.eu": g for g in ("physics", "cms", "admins")}


async def test_keycloak_groups_with_account_audience(keycloak):
    auth = authenticator(keycloak, groups_claim="groups", access_token_audiences=["account"])
    model = await auth._token_to_auth_model(keycloak.login("carol"))
    assert model["name"] == "carol" and model["groups"] == ["admins", "physics"] and model["admin"] is True


async def test_keycloak_roles_claim(keycloak):
    auth = authenticator(keycloak, groups_claim="realm_access.roles", access_token_audiences=["account"])
    model = await auth._token_to_auth_model(keycloak.login("alice"))
    assert {"cms", "physics"} <= set(model["groups"])


async def test_keycloak_aud_account_is_refused_when_only_the_client_id_is_accepted(keycloak):
    auth = authenticator(keycloak, groups_claim="groups")
    with pytest.raises(HTTPError) as e:
        await auth._token_to_auth_model(keycloak.login("alice"))
    assert e.value.status_code == 403 and "audience is none of ['jupyterhub']" in e.value.log_message


async def test_keycloak_without_aud_needs_the_explicit_setting(keycloak_no_aud):
    with pytest.raises(HTTPError, match="403"):
        await authenticator(keycloak_no_aud, access_token_audiences=["account"])._token_to_auth_model(
            keycloak_no_aud.login("alice"))
    auth = authenticator(keycloak_no_aud, access_token_audience_unchecked=True)
    model = await auth._token_to_auth_model(keycloak_no_aud.login("alice"))
    assert model["groups"] == ["cms", "physics"]


def test_audiences_and_unchecked_exclude_each_other(keycloak):
    with pytest.raises(ValueError, match="exclude each other"):
        authenticator(keycloak, access_token_audiences=["account"], access_token_audience_unchecked=True)


async def test_iam_wlcg_groups_without_audience(iam):
    auth = authenticator(iam, groups_claim="wlcg.groups", access_token_audience_unchecked=True)
    model = await auth._token_to_auth_model(iam.login("alice", scope="openid profile email offline_access wlcg.groups"))
    assert model["name"] == "alice" and model["groups"] == ["cms", "physics"]
    assert model["auth_state"]["refresh_token"]


async def test_iam_with_requested_audience(iam):
    auth = authenticator(iam, groups_claim="wlcg.groups")  # the client id is the accepted audience
    tok = iam.login("bob", scope="openid profile offline_access wlcg.groups", audience="jupyterhub")
    assert (await auth._token_to_auth_model(tok))["groups"] == ["physics"]
    with pytest.raises(HTTPError, match="403"):
        await auth._token_to_auth_model(iam.login("bob", scope="openid profile offline_access wlcg.groups"))


async def test_iam_groups_are_not_in_the_id_token(iam):
    auth = authenticator(iam, groups_claim="wlcg.groups", groups_source="id_token")
    model = await auth._token_to_auth_model(iam.login("alice", scope="openid profile offline_access wlcg.groups"))
    assert model["groups"] == []  # then check_allowed refuses the login


async def test_egi_groups_from_userinfo_really_call_userinfo(egi):
    import time

    auth = authenticator(egi, groups_source="userinfo", groups_claim="eduperson_entitlement",
                         group_rename=EGI_RENAME)
    t = time.time()
    model = await auth._token_to_auth_model(egi.login("carol", scope="openid profile email offline_access "
                                                                       "eduperson_entitlement"))
    assert model["groups"] == ["admins", "physics"] and model["admin"] is True
    calls = [e for e in egi.events(since=t) if e["path"] == "/me"]
    assert calls == [{**calls[0], "sub": "carol", "status": 200}]
    # The ID token carries no entitlements: the groups came from the userinfo answer.
    assert (await authenticator(egi, groups_source="id_token", groups_claim="eduperson_entitlement",
                                group_rename=EGI_RENAME)._token_to_auth_model(egi.login("carol")))["groups"] == []


async def test_egi_userinfo_failure_refuses_the_login(egi):
    auth = authenticator(egi, groups_source="userinfo", groups_claim="eduperson_entitlement")
    tok = egi.login("alice")
    with pytest.raises(HTTPError) as e:
        await auth._token_to_auth_model({**tok, "access_token": tok["access_token"][:-6] + "AAAAAA"})
    assert e.value.status_code == 403 and "userinfo endpoint refused the access token (HTTP 401)" in e.value.log_message
