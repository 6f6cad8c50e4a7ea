"""Login through a real JupyterHub + configurable-http-proxy with the real IdP."""

import time

import jwt
import pytest
import requests

from tests.testbed.hub import CLIENT_SECRET, Hub, server_environ, spawn
from tests.testbed.idp import IdP


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    h = Hub(idp, run_dir / "hub-auth").start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def short_idp(pki, run_dir):
    """An IdP whose access tokens live 20 s, to see refreshes happen."""
    p = IdP(pki, run_dir / "idp-short", at_ttl=20).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def short_hub(short_idp, run_dir):
    h = Hub(short_idp, run_dir / "hub-short",
            auth={"refresh_margin_seconds": 8, "auth_refresh_age": 2}).start()
    yield h
    for user in ("alice", "carol"):
        h.api("DELETE", f"/users/{user}/server")
    time.sleep(1)
    h.stop()


def _exp(token: str) -> float:
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def stop_server(h, user: str) -> None:
    h.api("DELETE", f"/users/{user}/server")
    for _ in range(120):
        r = h.api("GET", f"/users/{user}")
        if r.status_code == 404 or not r.json()["servers"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server of {user} did not stop")


@pytest.fixture
def alice_running(short_hub):
    """alice logged in with her server running, whatever ran before."""
    s, _ = short_hub.login("alice")
    if not short_hub.user("alice")["servers"].get("", {}).get("ready"):
        spawn(short_hub, s, "alice")
    return s


@pytest.mark.parametrize("user, groups, admin", [
    ("alice", ["cms", "physics"], False),
    ("bob", ["physics"], False),
    ("carol", ["admins", "physics"], True),
])
def test_login_sets_groups_and_admin(hub, user, groups, admin):
    s, r = hub.login(user)
    assert r.status_code == 302, r.text[:300]
    assert s.cookies.get("jupyterhub-session-id")
    model = hub.user(user)
    assert sorted(model["groups"]) == groups
    assert model["admin"] is admin
    hub_groups = {g["name"] for g in hub.api("GET", "/groups").json()}
    assert set(groups) <= hub_groups


def test_user_outside_allowed_groups_is_refused_at_login(hub):
    s, r = hub.login("dave")
    assert r.status_code == 403
    assert "not a member of any group allowed on this hub" in r.text
    assert "ask your group manager" in r.text
    assert hub.api("GET", "/users/dave").status_code == 404  # never became a hub user


def test_admin_follows_idp_group_at_next_login(hub, idp):
    hub.login("carol")
    assert hub.user("carol")["admin"] is True
    idp.set_groups("carol", ["physics"])
    try:
        hub.login("carol")
        model = hub.user("carol")
        assert model["admin"] is False
        assert model["groups"] == ["physics"]
    finally:
        idp.set_groups("carol", ["admins", "physics"])
    hub.login("carol")
    assert hub.user("carol")["admin"] is True


def test_auth_state_holds_tokens_and_expiry(hub):
    hub.login("bob")
    state = hub.user("bob")["auth_state"]
    assert state["access_token"] and state["refresh_token"]
    assert state["expires_at"] == pytest.approx(_exp(state["access_token"]))


def test_refresh_takes_admin_away_when_idp_group_goes(short_hub, short_idp):
    s, _ = short_hub.login("carol")
    assert short_hub.user("carol")["admin"] is True
    short_idp.set_groups("carol", ["physics"])
    try:
        time.sleep(13)  # the 20 s token is now within the 8 s refresh margin
        assert s.get(short_hub.url + "/hub/home").status_code == 200  # a request refreshes
        model = short_hub.user("carol")
        assert model["admin"] is False
        assert model["groups"] == ["physics"]
    finally:
        short_idp.set_groups("carol", ["admins", "physics"])


def test_refresh_refused_by_idp_sends_user_to_login(short_hub, short_idp):
    s, _ = short_hub.login("bob")
    assert s.get(short_hub.url + "/hub/home", allow_redirects=False).status_code == 200
    short_idp.revoke(short_hub.user("bob")["auth_state"]["refresh_token"])
    time.sleep(13)  # within the refresh margin: the next request tries to refresh, and the IdP says no
    r = s.get(short_hub.url + "/hub/home", allow_redirects=False)
    assert r.status_code == 302 and "/hub/login" in r.headers["location"]
    assert "refuse" in short_hub.log.read_text()


def test_spawn_after_expiry_uses_fresh_token_and_server_reads_only_its_own(short_hub):
    if short_hub.api("GET", "/users/alice").ok:
        stop_server(short_hub, "alice")  # this test starts it
    s, _ = short_hub.login("alice")
    old = short_hub.user("alice")["auth_state"]["access_token"]
    time.sleep(21)  # the access token is now expired
    assert _exp(old) < time.time()
    # The spawn page, as her browser would: the hub refreshes her tokens before spawning.
    asked = time.time()
    r = s.get(short_hub.url + "/hub/spawn/alice", allow_redirects=False)
    assert r.status_code in (200, 302, 303), r.text[:300]
    for _ in range(120):
        if short_hub.user("alice")["servers"].get("", {}).get("ready"):
            break
        time.sleep(0.5)
    state = short_hub.user("alice")["auth_state"]
    assert state["access_token"] != old
    assert _exp(state["access_token"]) > asked  # (it lives 20 s: the spawn itself may outlast it)

    token = server_environ(short_hub, "alice")["JUPYTERHUB_API_TOKEN"]
    # The server gets its user's current access token from the hub's token endpoint, nothing more.
    r = short_hub.api("GET", "/jhub-cloud/users/alice/token", token=token)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "expires_at"}
    assert _exp(r.json()["access_token"]) > time.time()
    # It can no longer read auth_state (the refresh token, the ID token).
    r = short_hub.api("GET", "/users/alice", token=token)
    assert r.status_code in (403, 404) or "auth_state" not in r.json()
    assert state["refresh_token"] not in r.text
    # The server's token is no admin: it cannot read the user list either.
    assert short_hub.api("GET", "/users", token=token).status_code == 403


def test_server_environment_holds_no_hub_secret(short_hub, alice_running):
    env = server_environ(short_hub, "alice")
    assert CLIENT_SECRET not in "\n".join(f"{k}={v}" for k, v in env.items())
    assert "JHUB_CLOUD_CLIENT_SECRET" not in env and "JUPYTERHUB_CRYPT_KEY" not in env


def test_hub_logs_hold_no_token_or_secret(hub, short_hub):
    # Logins on both hubs, and a refresh on the short one (its tokens live 20 s, margin 8 s).
    for h in (hub, short_hub):
        for user in ("alice", "bob"):
            h.login(user)
    s, _ = short_hub.login("carol")
    time.sleep(13)
    assert s.get(short_hub.url + "/hub/home").status_code == 200
    secrets_seen = {CLIENT_SECRET}
    for h in (hub, short_hub):
        for user in ("alice", "bob", "carol"):
            r = h.api("GET", f"/users/{user}")
            if r.ok and r.json().get("auth_state"):
                st = r.json()["auth_state"]
                secrets_seen |= {st["access_token"], st["refresh_token"], st["id_token"]}
    assert len(secrets_seen) > 3
    for h in (hub, short_hub):
        text = h.log.read_text()
        assert "Refreshed the access token of carol" in text or h is hub
        for secret in secrets_seen:
            assert secret not in text


def test_hub_serves_through_the_proxy(hub):
    r = requests.get(hub.url + "/hub/api/", timeout=5)
    assert r.ok and "version" in r.json()


def test_alice_logs_in_with_chromium(hub, browser):
    from tests.test_smoke_browser import png_size
    from tests.testbed.paths import ARTIFACTS

    page = browser.new_page()
    try:
        page.goto(hub.url + "/hub/oauth_login?next=/hub/home")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "alice-pw")
        with page.expect_navigation(url="**/hub/home"):
            page.click("button[type=submit]")
        text = page.inner_text("body")
        assert "alice" in text  # the hub's menu bar names the logged-in user
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "login-alice-hub-home.png"
        page.screenshot(path=str(shot))
        width, height = png_size(shot)
        assert width >= 800 and height >= 600
    finally:
        page.close()
    assert sorted(hub.user("alice")["groups"]) == ["cms", "physics"]


def test_profiles_offered_follow_hub_groups(hub):
    """The groups the hub learned at login decide the profiles, through the one policy function."""
    from jhub_cloud.config import load
    from jhub_cloud.policy import allowed_profiles

    cfg = load(hub.config_file)
    expected = {"alice": {"physics-cpu", "cms-cpu"}, "bob": {"physics-cpu"},
                "carol": {"physics-cpu", "admin-cpu"}}
    for user, names in expected.items():
        hub.login(user)
        groups = hub.user(user)["groups"]
        assert {offer.name for offer in allowed_profiles(cfg, groups)} == names


def test_dave_sees_why_he_is_refused_in_chromium(hub, browser):
    from tests.testbed.paths import ARTIFACTS

    context = browser.new_context()  # a fresh cookie jar: nobody logged in
    page = context.new_page()
    try:
        page.goto(hub.url + "/hub/oauth_login")
        page.fill("input[name=login]", "dave")
        page.fill("input[name=password]", "dave-pw")
        with page.expect_navigation(url="**/hub/oauth_callback**"):
            page.click("button[type=submit]")
        assert "not a member of any group allowed on this hub" in page.inner_text("body")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "login-dave-refused.png"))
    finally:
        context.close()


def test_hub_refuses_to_start_on_a_bad_config(idp, run_dir):
    from tests.testbed.procs import ServiceError

    h = Hub(idp, run_dir / "hub-bad", auth={"allowed_groups": "physics", "groups_source": "telepathy"})
    with pytest.raises(ServiceError) as e:
        h.start(timeout=30)
    h.stop()
    message = str(e.value)
    assert "auth.allowed_groups" in message and "auth.groups_source" in message


def test_hub_with_a_wrong_issuer_stops_at_start_with_the_reason(idp, run_dir):
    from tests.testbed.procs import ServiceError

    # The same IdP under another name: its discovery document names a different issuer.
    wrong = idp.issuer.replace("localhost", "127.0.0.1")
    h = Hub(idp, run_dir / "hub-wrong-issuer", auth={"issuer": wrong})
    with pytest.raises(ServiceError) as e:
        h.start(timeout=30)
    h.stop()
    message = str(e.value)
    assert "the identity provider (auth.issuer) cannot be used" in message
    assert f"names issuer '{idp.issuer}', not '{wrong}'" in message


def test_every_spawn_refreshes_at_the_idp_and_takes_the_groups_it_gives(hub, idp):
    """The token is far from expiry (600 s), yet the spawn asks the IdP: a group left at the IdP
    is gone before the server starts (the spawner's policy reads the hub groups)."""
    if hub.api("GET", "/users/alice").ok:
        stop_server(hub, "alice")
    s, _ = hub.login("alice")
    assert sorted(hub.user("alice")["groups"]) == ["cms", "physics"]
    old = hub.user("alice")["auth_state"]["access_token"]
    idp.set_groups("alice", ["physics"])
    try:
        t = time.time()
        spawn(hub, s, "alice")
        assert idp.refreshes("alice", since=t) >= 1
        model = hub.user("alice")
        assert model["groups"] == ["physics"]
        assert model["auth_state"]["access_token"] != old
    finally:
        idp.set_groups("alice", ["physics", "cms"])
        stop_server(hub, "alice")
