"""sts-wire's hub token source against a real JupyterHub (the suite's authenticator and config):
alice's running server's own API token reads her current access token from the hub, and
sts-wire mounts her bucket with it."""

import time

import pytest

from tests.sts_wire_helpers import Secrets, Wire, fuse_mounts_under, write_spec
from tests.testbed.hub import Hub, server_environ


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    h = Hub(idp, run_dir / "hub-sts-wire").start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def alice_server_env(hub):
    """Log alice in and start her server; return its environment (as the server sees it)."""
    s, _ = hub.login("alice")
    r = s.get(hub.url + "/hub/spawn/alice", allow_redirects=False)
    assert r.status_code in (200, 302, 303), r.text[:300]
    for _ in range(120):
        if hub.user("alice")["servers"].get("", {}).get("ready"):
            break
        time.sleep(0.5)
    return server_environ(hub, "alice")


def test_run_with_the_servers_own_hub_token(hub, alice_server_env, seaweedfs, tmp_path):
    env = {k: alice_server_env[k] for k in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER")}
    wire = Wire(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", seaweedfs,
                      [{"remote": "{user}", "path": f"{wire.root}/{{user}}"},
                       {"remote": "scratch", "path": f"{wire.root}/scratch"}],
                      {"source": "hub"}, role_arn=seaweedfs.role_arn_for("alice"))
    r = wire.run("check", ["--spec", str(spec)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "token from JupyterHub API" in r.stdout and "user alice" in r.stdout
    r = wire.run("run", ["--spec", str(spec), "--", "sh", "-c",
                         f"echo via-hub > {wire.root}/alice/hub.txt && cat {wire.root}/alice/hub.txt"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "via-hub" and "2 of 2 mounts ready" in r.stderr
    assert fuse_mounts_under(wire.root) == []
    sec = Secrets()
    sec.add(env["JUPYTERHUB_API_TOKEN"], hub.user("alice")["auth_state"]["access_token"])
    sec.look_at("out", r.stdout + r.stderr)
    sec.look_at_files(wire.logs, "log ")
    assert sec.leaks() == []


def test_a_token_of_another_user_cannot_read_alice(hub, alice_server_env, tmp_path):
    """The server token reads only its own user's auth_state: asking for bob's is refused."""
    from sts_wire.errors import Exit, StsWireError
    from sts_wire.tokens import HubSource

    src = HubSource(alice_server_env["JUPYTERHUB_API_URL"], alice_server_env["JUPYTERHUB_API_TOKEN"], True,
                    user="bob")
    with pytest.raises(StsWireError) as e:
        src.fetch()
    assert e.value.code in (Exit.TOKEN, Exit.IDP_UNREACHABLE)
