"""sts-wire's hub token source against a real JupyterHub (the suite's authenticator and config).

alice's running server's own API token reads her current access token from the hub's token
endpoint (`$JUPYTERHUB_API_URL/jhub-cloud/users/alice/token`) and nothing else; sts-wire mounts her
bucket with it. A token the identity provider refuses to refresh means "log in again" (401); an
identity provider the hub cannot reach means "try again later" (503).
"""

import contextlib
import time

import pytest

from sts_wire.errors import Exit, StsWireError
from sts_wire.idp import verified_claims
from sts_wire.spec import TokenSpec
from sts_wire.tokens import HubSource, make_source
from tests.sts_wire_helpers import Secrets, Wire, fuse_mounts_under, wait_until, write_spec
from tests.testbed.hub import Hub, server_environ
from tests.testbed.idp import IdP
from tests.testbed.seaweedfs import SeaweedFS

ENV_KEYS = ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER")


def start_server(hub: Hub, user: str) -> dict:
    """Log ``user`` in, start their server, return its environment (as the server sees it)."""
    s, _ = hub.login(user)
    r = s.get(hub.url + f"/hub/spawn/{user}", allow_redirects=False)
    assert r.status_code in (200, 302, 303), r.text[:300]
    for _ in range(120):
        if hub.user(user)["servers"].get("", {}).get("ready"):
            break
        time.sleep(0.5)
    env = server_environ(hub, user)
    return {k: env[k] for k in ENV_KEYS}


def stop_server(hub: Hub, user: str) -> None:
    hub.api("DELETE", f"/users/{user}/server")
    for _ in range(60):
        if not hub.user(user)["servers"]:
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    h = Hub(idp, run_dir / "hub-sts-wire").start()
    yield h
    for user in ("alice", "bob"):
        with contextlib.suppress(Exception):
            stop_server(h, user)
    h.stop()


@pytest.fixture(scope="module")
def alice_env(hub):
    return start_server(hub, "alice")


def test_hub_source_gets_the_current_access_token_and_nothing_else(hub, idp, alice_env):
    src = make_source(TokenSpec(source="hub"), env=alice_env)
    assert isinstance(src, HubSource)
    tok = src.fetch()
    state = hub.user("alice")["auth_state"]          # what the hub holds (read with the admin service)
    assert tok.access_token == state["access_token"] and tok.user == "alice"
    assert verified_claims(tok.access_token, idp.issuer, str(idp.pki.ca_cert))["preferred_username"] == "alice"
    assert tok.expires_at is not None and 0 < tok.remaining() <= idp.at_ttl
    # the server's token reads no auth_state (no refresh token, no ID token) any more
    r = hub.api("GET", "/users/alice", token=alice_env["JUPYTERHUB_API_TOKEN"])
    assert r.status_code in (200, 403) and "auth_state" not in (r.json() if r.status_code == 200 else {})
    assert state["refresh_token"] not in r.text


def test_run_with_the_servers_own_hub_token(hub, alice_env, seaweedfs, tmp_path):
    wire = Wire(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", seaweedfs,
                      [{"remote": "{username}", "path": f"{wire.root}/{{username}}"},
                       {"remote": "scratch", "path": f"{wire.root}/scratch"}],
                      {"source": "hub"}, role_arn=seaweedfs.role_arn_for("alice"))
    try:
        r = wire.run("check", ["--spec", str(spec)], env=alice_env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "token from JupyterHub API" in r.stdout and "user alice" in r.stdout
        r = wire.run("run", ["--spec", "env:STS_WIRE_SPEC", "--", "sh", "-c",
                             f"echo via-hub > {wire.root}/alice/hub.txt && cat {wire.root}/alice/hub.txt"],
                     env={**alice_env, "STS_WIRE_SPEC": spec.read_text()})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "via-hub" and "2 of 2 mounts ready" in r.stderr
        assert fuse_mounts_under(wire.root) == []
        sec = Secrets()
        state = hub.user("alice")["auth_state"]
        sec.add(alice_env["JUPYTERHUB_API_TOKEN"], state["access_token"], state["refresh_token"])
        sec.look_at("out", r.stdout + r.stderr)
        sec.look_at_files(wire.logs, "log ")
        assert sec.leaks() == []
    finally:
        wire.cleanup()


def test_alices_server_token_is_refused_bobs_access_token(hub, alice_env):
    """bob exists and is logged in (his token is there to take); only the hub's refusal counts."""
    hub.login("bob")
    assert hub.user("bob")["auth_state"]["access_token"]
    src = HubSource(alice_env["JUPYTERHUB_API_URL"], alice_env["JUPYTERHUB_API_TOKEN"], True, user="bob")
    with pytest.raises(StsWireError) as e:
        src.fetch()
    assert e.value.code == Exit.TOKEN and "HTTP 403" in e.value.message
    assert "custom:jhub-cloud:access-token" in e.value.hint


def test_a_wrong_user_name_is_named(hub, alice_env):
    src = HubSource(alice_env["JUPYTERHUB_API_URL"], alice_env["JUPYTERHUB_API_TOKEN"], True, user="nobody")
    with pytest.raises(StsWireError) as e:
        src.fetch()
    assert e.value.code == Exit.TOKEN and ("HTTP 403" in e.value.message or "HTTP 404" in e.value.message)


def test_hub_source_needs_its_environment():
    with pytest.raises(StsWireError, match="JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN") as e:
        make_source(TokenSpec(source="hub"), env={})
    assert e.value.code == Exit.SPEC


def test_refused_refresh_says_log_in_again_and_unreachable_idp_says_later(pki, run_dir, tmp_path):
    """A hub of its own, with an IdP of its own whose access tokens live 20 s (the hub refreshes
    them near expiry). alice's running sts-wire: once her refresh token is revoked, the hub
    answers 401 and a note beside her mounted folder tells her to log in again while the keys
    still work. bob: an IdP that is down once his token has expired gives 503 -> retried
    later (IDP_UNREACHABLE)."""
    idp = IdP(pki, run_dir / "idp-hub-short", at_ttl=20).start()
    s3 = SeaweedFS(idp, run_dir / "seaweedfs-hub-short").start()
    hub = Hub(idp, run_dir / "hub-short", auth={"refresh_margin_seconds": 15}).start()
    wire = Wire(tmp_path)
    try:
        env = start_server(hub, "alice")
        spec = write_spec(tmp_path / "spec.yaml", s3, [{"remote": "scratch", "path": f"{wire.root}/scratch"}],
                          {"source": "hub"}, role_arn=s3.role_arn_for("alice"))
        wire.start("run", ["--spec", str(spec), "--", "/bin/sleep", "600"], env=env)
        wire.wait_mounted([wire.root / "scratch"])
        note = wire.root / "scratch.sts-wire-error.txt"
        assert not note.exists()
        # the IdP refuses the refresh: the user must log in again
        idp.revoke(hub.user("alice")["auth_state"]["refresh_token"])
        text = wait_until(lambda: note.exists() and note.read_text(), 40, "the note beside the folder")
        assert "cannot renew access to scratch" in text and "log in to the hub again" in text
        assert "S3 keys stay valid until" in text
        (wire.root / "scratch" / "still-works.txt").write_text("yes\n")     # the keys still work
        # status says so too (its state file is written every 2 s)
        wait_until(lambda: "refused" in (wire.instance()["last_error"] or ""), 10, "the error in status")
        src = HubSource(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], True, user="alice")
        with pytest.raises(StsWireError) as e:
            src.fetch()
        assert e.value.code == Exit.TOKEN and "log in" in e.value.hint
        wire.terminate()
        assert not note.exists()                                     # notes go with the mounts
        # bob: logged in, then the IdP goes away and his token expires: try again later
        envb = start_server(hub, "bob")
        srcb = HubSource(envb["JUPYTERHUB_API_URL"], envb["JUPYTERHUB_API_TOKEN"], True, user="bob")
        tok = srcb.fetch()
        idp.stop()
        time.sleep(max(0.0, tok.remaining() + 1))
        with pytest.raises(StsWireError) as e:
            srcb.fetch()
        assert e.value.code == Exit.IDP_UNREACHABLE and "HTTP 503" in e.value.message
    finally:
        wire.cleanup()
        for user in ("alice", "bob"):
            with contextlib.suppress(Exception):
                stop_server(hub, user)
        hub.stop()
        s3.stop()
        idp.stop()
