"""The hub's token endpoint (contract C1) in a real JupyterHub with the real IdP.

GET /hub/api/jhub-cloud/users/<name>/token gives a server its user's current access token and
its expiry, refreshed first when near expiry (one refresh per user at a time), and nothing more.
Every test sets up the state it needs (logins, the running server), so they pass in any order.
"""

import concurrent.futures
import time

import jwt
import pytest

from tests.testbed.hub import Hub, server_environ, spawn

AT_TTL = 20    # seconds an access token lives at this IdP
MARGIN = 15    # the hub refreshes when less than this is left: 5 s after a login


@pytest.fixture(scope="module")
def tidp(idp_factory):
    return idp_factory("default", at_ttl=AT_TTL)


@pytest.fixture(scope="module")
def hub(tidp, run_dir):
    h = Hub(tidp, run_dir / "hub-token-api", auth={"refresh_margin_seconds": MARGIN, "auth_refresh_age": 1},
            extra_config="c.IAMAuthenticator.idp_timeout = 2\n").start()
    yield h
    h.api("DELETE", "/users/alice/server")
    time.sleep(1)
    h.stop()


@pytest.fixture(scope="module")
def alice_server(hub):
    """alice is logged in and her server runs; its $JUPYTERHUB_API_TOKEN."""
    s, r = hub.login("alice")
    assert r.status_code == 302, r.text[:300]
    spawn(hub, s, "alice")
    return server_environ(hub, "alice")["JUPYTERHUB_API_TOKEN"]


def token_of(hub, user: str, token: str):
    return hub.api("GET", f"/jhub-cloud/users/{user}/token", token=token)


def fresh_login(hub, user: str):
    """A new login: new tokens that live AT_TTL seconds from now."""
    s, r = hub.login(user)
    assert r.status_code == 302, r.text[:300]
    return s, hub.user(user)["auth_state"]


def wait_until_near_expiry(state):
    time.sleep(max(0.0, state["expires_at"] - MARGIN - time.time()) + 0.5)


def claims(idp, token: str) -> dict:
    jwks = jwt.PyJWKClient(idp.issuer + "/jwks", ssl_context=__import__("ssl").create_default_context(
        cafile=str(idp.pki.ca_cert)))
    return jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience="jupyterhub",
                      issuer=idp.issuer)


def test_server_token_gets_the_access_token_and_nothing_more(hub, tidp, alice_server):
    r = token_of(hub, "alice", alice_server)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "expires_at"}
    c = claims(tidp, body["access_token"])
    assert c["sub"] == "alice" and body["expires_at"] == pytest.approx(c["exp"])
    # It can no longer read auth_state: the refresh token and the ID token stay in the hub.
    state = hub.user("alice")["auth_state"]
    r = hub.api("GET", "/users/alice", token=alice_server)
    assert state["refresh_token"] not in r.text and state["id_token"] not in r.text
    assert r.status_code in (403, 404) or "auth_state" not in r.json()
    me = hub.api("GET", "/user", token=alice_server).json()
    assert "custom:jhub-cloud:access-token!user=alice" in me["scopes"]
    assert not [s for s in me["scopes"] if s.startswith("admin:auth_state")]


def test_server_token_cannot_get_another_logged_in_users_token(hub, alice_server):
    fresh_login(hub, "bob")
    bob = hub.user("bob")
    assert bob["auth_state"]["access_token"]  # bob exists and is logged in
    r = token_of(hub, "bob", alice_server)
    assert r.status_code == 403, r.text
    assert bob["auth_state"]["access_token"] not in r.text
    assert token_of(hub, "nobody", alice_server).status_code == 403  # existence is not revealed


def test_users_own_token_needs_the_scope(hub):
    fresh_login(hub, "alice")
    r = hub.api("POST", "/users/alice/tokens", json={"scopes": ["read:users!user"], "expires_in": 600})
    assert r.status_code in (200, 201), r.text
    assert token_of(hub, "alice", r.json()["token"]).status_code == 403
    r = hub.api("POST", "/users/alice/tokens", json={"scopes": ["custom:jhub-cloud:access-token!user"],
                                                      "expires_in": 600})
    assert r.status_code in (200, 201), r.text
    assert token_of(hub, "alice", r.json()["token"]).status_code == 200  # control: with the scope it works


def test_unknown_user_is_404_for_a_caller_allowed_for_any_user(hub):
    r = token_of(hub, "nobody", hub.api_token)
    assert r.status_code == 404


def test_near_expiry_concurrent_callers_cause_one_refresh(hub, tidp, alice_server):
    _, state = fresh_login(hub, "alice")
    wait_until_near_expiry(state)
    t = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: token_of(hub, "alice", alice_server), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    tokens = {a.json()["access_token"] for a in answers}
    assert len(tokens) == 1 and state["access_token"] not in tokens
    assert tidp.refreshes("alice", since=t) == 1
    assert hub.user("alice")["auth_state"]["access_token"] in tokens  # stored by the hub


@pytest.mark.parametrize("fault", [{"status": 503}, {"delay": 5}])
def test_idp_in_trouble_while_the_token_is_valid_gives_the_current_one(hub, tidp, alice_server, fault):
    s, state = fresh_login(hub, "alice")
    wait_until_near_expiry(state)
    with tidp.fault("/token", **fault):
        r = token_of(hub, "alice", alice_server)
        assert r.status_code == 200, r.text
        assert r.json()["access_token"] == state["access_token"]
        # and alice stays logged in in her browser
        assert s.get(hub.url + "/hub/home", allow_redirects=False).status_code == 200


def test_idp_down_and_token_expired_is_503(hub, tidp, alice_server):
    _, state = fresh_login(hub, "alice")
    time.sleep(max(0.0, state["expires_at"] - time.time()) + 0.5)
    with tidp.fault("/token", status=503):
        r = token_of(hub, "alice", alice_server)
    assert r.status_code == 503 and "cannot be reached" in r.json()["message"]
    assert token_of(hub, "alice", alice_server).status_code == 200  # the IdP is back


def test_idp_refusal_is_401(hub, tidp, alice_server):
    _, state = fresh_login(hub, "alice")
    tidp.revoke(state["refresh_token"])
    wait_until_near_expiry(state)
    r = token_of(hub, "alice", alice_server)
    assert r.status_code == 401 and "log in again" in r.json()["message"]
    fresh_login(hub, "alice")
    assert token_of(hub, "alice", alice_server).status_code == 200
