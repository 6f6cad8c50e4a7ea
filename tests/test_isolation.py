"""Isolation between users, against the real services: alice cannot mount, list or read bob's
bucket (refused by the S3 server, with her own STS keys and through an sts-wire mount), only
members of a group see its bucket, and alice's tokens and browser session get nothing of bob's
through the hub: not his access token, not his auth_state, not his server, and no change to
anything of his (a corpus of cross-user hub API requests, each refused)."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from tests.sts_wire_helpers import Wire, fuse_mounts_under, refresh_token_setup, wait_until, write_spec
from tests.test_secrets_e2e import local_hub, own_dir  # noqa: F401 (fixtures: local servers with mounts)
from tests.test_spawner_storage import fuse_for_users  # noqa: F401 (fixture)
from tests.testbed.cloudhub import user_processes
from tests.testbed.hub import Hub, server_environ, spawn
from tests.testbed.s3 import assume_role, error_code, s3_client
from tests.testbed.secrets import sts_wire_files

DENIED = ("AccessDenied", "403", "Forbidden")


def keys_of(seaweedfs, idp, user: str) -> object:
    """An S3 client with `user`'s own STS keys, from a real login of `user` at the IdP."""
    login = idp.login(user)
    creds = assume_role(seaweedfs.endpoint, seaweedfs.role_arn_for(user), login["access_token"], f"iso-{user}")
    return s3_client(seaweedfs.endpoint, creds, seaweedfs.region)


def refused(call) -> str:
    """The S3 error code of a call that must be refused (fails the test if it is not)."""
    try:
        call()
    except ClientError as e:
        return error_code(e)
    raise AssertionError("the S3 server allowed it")


def s3_refusals(client, bucket: str, key: str) -> dict[str, str]:
    """List, read, write, delete and head in `bucket`: each operation's error code."""
    return {
        "list": refused(lambda: client.list_objects_v2(Bucket=bucket)),
        "get": refused(lambda: client.get_object(Bucket=bucket, Key=key)),
        "put": refused(lambda: client.put_object(Bucket=bucket, Key="from-intruder.txt", Body=b"x")),
        "delete": refused(lambda: client.delete_object(Bucket=bucket, Key=key)),
        "head": refused(lambda: client.head_object(Bucket=bucket, Key=key)),
    }


def mount_with_sts_wire(tmp_path, seaweedfs, idp, user: str, buckets: list[str]) -> tuple[Wire, dict]:
    """sts-wire run as `user` (a refresh-token login) with a mount per bucket; returns once every
    mount is mounted or explained as failed; (wire, state of each mount by bucket)."""
    wire = Wire(tmp_path, name=user)
    token, _ = refresh_token_setup(idp, user, tmp_path / f"{user}-secrets")
    spec = write_spec(tmp_path / f"{user}-spec.yaml", seaweedfs,
                      [{"remote": b, "path": f"{wire.root}/{b}"} for b in buckets], token,
                      role_arn=seaweedfs.role_arn)
    wire.start("run", ["--spec", str(spec), "--", "sleep", "300"])

    def settled():
        st = wire.instance()
        states = {m["path"].rsplit("/", 1)[1]: m["state"] for m in st["mounts"]}
        return states if len(states) == len(buckets) and "pending" not in states.values() \
            and all(s in ("ready", "failed") for s in states.values()) else None
    return wire, wait_until(settled, 60, f"{user}'s mounts settled", 0.2)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30)


def bobs_server_seen_by_alice(storage_hub, seaweedfs) -> int:
    """bob's server with his bucket mounted runs on the same machine: alice, logged in there,
    can read neither its environment, nor its S3 keys, nor his mounted bucket (bob can: the
    paths are right). Returns how many attempts were refused."""
    seaweedfs.admin_s3().put_object(Bucket="bob", Key="mounted.txt", Body=b"bob's\n")
    r = storage_hub.spawn("bob", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text
    try:
        storage_hub.wait_ready("bob", timeout=120)
        port = f":{storage_hub.hub_port}/"
        procs = [p for p in user_processes("bob") if port in p.environ().get("JUPYTERHUB_API_URL", "")]
        wire = next(p.pid for p in procs if any(a.endswith("sts-wire") for a in p.cmdline()[:2]))
        (keys,) = sts_wire_files(wire, "keys.json")
        keys = Path(str(keys).replace(f"/proc/{wire}/root", "", 1))
        mounted = f"/proc/{wire}/root{storage_hub.root}/bob/mounted.txt"  # in his mount namespace
        attempts = {("cat", f"/proc/{wire}/environ"): "JUPYTERHUB_API_TOKEN", ("cat", str(keys)): "SecretAccessKey",
                    ("ls", str(keys.parent.parent)): keys.parent.name, ("cat", mounted): "bob's"}
        for argv, content in attempts.items():
            assert wait_until(lambda a=argv, c=content: c in as_user("bob", *a).stdout, 20, f"bob: {argv}")
            r = as_user("alice", *argv)
            assert r.returncode != 0 and content not in r.stdout, (argv, r)
            assert "Permission denied" in r.stderr, (argv, r.stderr)
        # and his mount is not on the machine, where alice could find it
        assert not Path(f"{storage_hub.root}/bob/mounted.txt").exists()
        return len(attempts)
    finally:
        storage_hub.stop_server("bob")


def test_alice_cannot_mount_list_or_read_bobs_bucket(seaweedfs, idp, tmp_path, local_hub, reliability):  # noqa: F811
    secret = secrets.token_bytes(64)
    seaweedfs.admin_s3().put_object(Bucket="bob", Key="private.bin", Body=secret)
    alice = keys_of(seaweedfs, idp, "alice")
    alice.put_object(Bucket="alice", Key="own.txt", Body=b"mine")  # control: her keys work
    assert alice.get_object(Bucket="alice", Key="own.txt")["Body"].read() == b"mine"
    codes = s3_refusals(alice, "bob", "private.bin")
    assert set(codes.values()) <= set(DENIED), codes
    # Nothing changed in bob's bucket.
    objs = seaweedfs.admin_s3().list_objects_v2(Bucket="bob").get("Contents", [])
    assert "from-intruder.txt" not in [o["Key"] for o in objs]
    assert seaweedfs.admin_s3().get_object(Bucket="bob", Key="private.bin")["Body"].read() == secret

    # Through sts-wire: a mount spec naming bob's bucket is refused, hers is mounted.
    wire, states = mount_with_sts_wire(tmp_path, seaweedfs, idp, "alice", ["alice", "bob"])
    try:
        assert states == {"alice": "ready", "bob": "failed"}, states
        assert fuse_mounts_under(wire.root) == [str(wire.root / "alice")]
        note = (wire.root / "bob.sts-wire-error.txt").read_text()
        assert "denied" in note.lower(), note
        assert not (wire.root / "bob" / "private.bin").exists()
        assert (wire.root / "alice" / "own.txt").read_bytes() == b"mine"
    finally:
        wire.cleanup()
    why = next(line for line in note.splitlines() if line.startswith("reason:"))[len("reason:"):].strip()
    on_machine = bobs_server_seen_by_alice(local_hub, seaweedfs)
    reliability.record("isolation.buckets", f"alice's own STS keys on bob's bucket: {len(codes)} operations "
                       f"refused ({', '.join(sorted(set(codes.values())))}), bob's object unchanged (64 B, equal); "
                       f"sts-wire mount of bob's bucket: {states['bob']} (note: '{why[:80]}'), hers {states['alice']}; "
                       f"beside bob's running server: {on_machine} reads of its environment, S3 keys and mounted "
                       "bucket by alice refused")


def test_only_members_of_a_group_see_its_bucket(seaweedfs, idp, tmp_path, reliability):
    seaweedfs.admin_s3().put_object(Bucket="cms", Key="members.txt", Body=b"cms only\n")
    alice, bob = keys_of(seaweedfs, idp, "alice"), keys_of(seaweedfs, idp, "bob")  # cms: alice only
    assert alice.get_object(Bucket="cms", Key="members.txt")["Body"].read() == b"cms only\n"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket="cms")["Contents"]] == ["members.txt"]
    codes = s3_refusals(bob, "cms", "members.txt")
    assert set(codes.values()) <= set(DENIED), codes
    # A group both are in: both see it.
    seaweedfs.admin_s3().put_object(Bucket="physics", Key="p.txt", Body=b"physics\n")
    for client in (alice, bob):
        assert client.get_object(Bucket="physics", Key="p.txt")["Body"].read() == b"physics\n"

    # Mounted for a member, refused for a non-member.
    mounted = {}
    for user in ("alice", "bob"):
        wire, states = mount_with_sts_wire(tmp_path / user, seaweedfs, idp, user, ["cms"])
        try:
            mounted[user] = states["cms"]
            if states["cms"] == "ready":
                assert (wire.root / "cms" / "members.txt").read_bytes() == b"cms only\n"
            else:
                assert not (wire.root / "cms" / "members.txt").exists()
        finally:
            wire.cleanup()
    assert mounted == {"alice": "ready", "bob": "failed"}, mounted
    reliability.record("isolation.group-buckets",
                       f"cms bucket: member alice reads it and mounts it ({mounted['alice']}); non-member bob "
                       f"refused on {len(codes)} S3 operations ({', '.join(sorted(set(codes.values())))}) and "
                       f"his mount {mounted['bob']}; physics bucket readable by both members")


# --- through the hub ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def iso_hub(idp, run_dir):
    h = Hub(idp, run_dir / "hub-isolation").start()
    yield h
    for user in ("alice", "bob"):
        h.api("DELETE", f"/users/{user}/server")
    time.sleep(1)
    h.stop()


@pytest.fixture(scope="module")
def two_servers(iso_hub):
    """alice and bob logged in through the IdP, each with a running server; bob's holds a marker
    file. Returns alice's browser session and tokens, and what must stay bob's."""
    sessions = {}
    for user in ("alice", "bob"):
        s, r = iso_hub.login(user)
        assert r.status_code == 302, r.text[:300]
        spawn(iso_hub, s, user)
        sessions[user] = s
    bob_token = server_environ(iso_hub, "bob")["JUPYTERHUB_API_TOKEN"]
    marker = f"bob-only-{secrets.token_hex(8)}"
    r = requests.put(f"{iso_hub.url}/user/bob/api/contents/{marker}.txt", timeout=30,
                     headers={"Authorization": f"token {bob_token}"},
                     json={"type": "file", "format": "text", "content": marker})
    assert r.status_code in (200, 201), r.text
    r = iso_hub.api("POST", "/users/alice/tokens", json={"note": "alice's own", "expires_in": 3600})
    assert r.status_code in (200, 201), r.text
    return {"session": sessions["alice"], "server_token": server_environ(iso_hub, "alice")["JUPYTERHUB_API_TOKEN"],
            "user_token": r.json()["token"], "marker": marker, "bob_token": bob_token}


def bob_snapshot(iso_hub) -> dict:
    """What of bob's must not change: his model, server, tokens, login."""
    bob = iso_hub.user("bob")
    server = bob["servers"][""]
    tokens = iso_hub.api("GET", "/users/bob/tokens").json()
    return {"admin": bob["admin"], "groups": sorted(bob["groups"]), "server": (server["ready"], server["started"]),
            "servers": sorted(bob["servers"]), "auth_state": bob["auth_state"]["access_token"],
            "tokens": sorted(t["id"] for t in tokens["api_tokens"])}


def test_alice_cannot_get_bobs_token_or_auth_state(iso_hub, two_servers, reliability):
    bob = iso_hub.user("bob")["auth_state"]
    tries, codes = 0, []
    for name in ("server_token", "user_token"):
        token = two_servers[name]
        mine = iso_hub.api("GET", "/jhub-cloud/users/alice/token", token=token)
        if name == "server_token":  # control: her server gets her own token
            assert mine.status_code == 200 and mine.json()["access_token"] != bob["access_token"]
        for path in ("/jhub-cloud/users/bob/token", "/users/bob", "/users/bob?include_stopped_servers=1",
                     "/users"):
            r = iso_hub.api("GET", path, token=token)
            tries += 1
            codes.append(r.status_code)
            for value in (bob["access_token"], bob["refresh_token"], bob["id_token"]):
                assert value not in r.text, (name, path)
            assert "auth_state" not in r.text, (name, path, r.text[:300])
            if path.startswith("/jhub-cloud"):
                assert r.status_code == 403 and "bob" in r.json()["message"], r.text
    by_code = ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes)))
    reliability.record("isolation.token-api", f"{tries} requests with alice's server token and her own API "
                       f"token for bob's access token and his model/auth_state ({by_code}; the token "
                       "endpoint 403 'may not read the access token of bob'): none returned his access, "
                       "refresh or ID token or any auth_state")


def test_alice_cannot_reach_bobs_server(iso_hub, two_servers, reliability):
    marker = two_servers["marker"]
    answers = []
    for path in ("/user/bob/api/contents", f"/user/bob/api/contents/{marker}.txt", "/user/bob/lab",
                 "/user/bob/api/status", "/user/bob/files/" + marker + ".txt"):
        for how in ("server_token", "user_token", "session"):
            if how == "session":
                r = two_servers["session"].get(iso_hub.url + path, allow_redirects=True, timeout=30)
            else:
                r = requests.get(iso_hub.url + path, headers={"Authorization": f"token {two_servers[how]}"},
                                 allow_redirects=True, timeout=30)
            assert marker not in r.text, (how, path)
            assert r.status_code in (403, 404) or "/user/bob" not in r.url, (how, path, r.status_code, r.url)
            answers.append(r.status_code)
    # Control: bob's own token reads it.
    r = requests.get(f"{iso_hub.url}/user/bob/api/contents/{marker}.txt", timeout=30,
                     headers={"Authorization": f"token {two_servers['bob_token']}"})
    assert r.status_code == 200 and r.json()["content"] == marker
    codes = ", ".join(f"{c}: {answers.count(c)}" for c in sorted(set(answers)))
    reliability.record("isolation.servers", f"{len(answers)} requests to bob's server with alice's server "
                       f"token, her API token and her browser session: {codes}; bob's marker file in none")


# Hub API requests on bob's things with alice's token: (method, path, JSON body).
CROSS_USER = [
    ("POST", "/users/bob/server", None),
    ("DELETE", "/users/bob/server", None),
    ("POST", "/users/bob/servers/second", None),
    ("DELETE", "/users/bob/servers/", None),
    ("DELETE", "/users/bob/servers/second", {"remove": True}),
    ("GET", "/users/bob/server/progress", None),
    ("GET", "/users/bob", None),
    ("PATCH", "/users/bob", {"admin": True}),
    ("PATCH", "/users/bob", {"name": "mallory"}),
    ("DELETE", "/users/bob", None),
    ("POST", "/users/bob/activity", {"last_activity": "2020-01-01T00:00:00Z"}),
    ("GET", "/users/bob/tokens", None),
    ("POST", "/users/bob/tokens", {"expires_in": 600}),
    ("POST", "/users/bob/tokens", {"scopes": ["custom:jhub-cloud:access-token!user=bob"]}),
    ("DELETE", "/users/bob/tokens/a1", None),
    ("GET", "/jhub-cloud/users/bob/token", None),
    ("GET", "/jhub-cloud/users/BOB/token", None),
    ("GET", "/jhub-cloud/users/bob%2F..%2Falice/token", None),
    ("PATCH", "/users/alice", {"admin": True}),
    ("POST", "/users/alice/tokens", {"scopes": ["admin:auth_state"]}),
    ("POST", "/users/alice/tokens", {"scopes": ["custom:jhub-cloud:access-token"]}),
    ("POST", "/groups/physics/users", {"users": ["alice"]}),
    ("DELETE", "/groups/physics/users", {"users": ["bob"]}),
    ("POST", "/users", {"usernames": ["mallory"]}),
    ("GET", "/proxy", None),
    ("POST", "/proxy", None),
    ("POST", "/shutdown", None),
]


def test_cross_user_api_requests_are_refused_and_change_nothing(iso_hub, two_servers, reliability):
    before = bob_snapshot(iso_hub)
    alice_before = iso_hub.user("alice")
    refused_n, codes = 0, []
    for token_name in ("server_token", "user_token"):
        for method, path, body in CROSS_USER:
            r = iso_hub.api(method, path, token=two_servers[token_name], json=body)
            assert r.status_code in (400, 403, 404), (token_name, method, path, r.status_code, r.text[:300])
            # A clear answer: JupyterHub's JSON error naming the missing permission or the reason.
            assert r.json().get("message"), (method, path, r.text[:300])
            refused_n += 1
            codes.append(r.status_code)
    # The same with her browser session (cookie and XSRF token, as the hub's own pages send them).
    session = two_servers["session"]
    session.get(f"{iso_hub.url}/hub/home", timeout=30)
    xsrf = {"X-XSRFToken": session.cookies.get("_xsrf", "")}
    me = session.get(f"{iso_hub.url}/hub/api/user", headers=xsrf, timeout=30)
    assert me.status_code == 200 and me.json()["name"] == "alice", me.text  # control: the session works
    for method, path, body in CROSS_USER:
        r = session.request(method, f"{iso_hub.url}/hub/api{path}", json=body, headers=xsrf, timeout=30)
        assert r.status_code in (400, 403, 404), ("session", method, path, r.status_code, r.text[:300])
        refused_n += 1
        codes.append(r.status_code)
    for method, page in (("GET", "/hub/spawn/bob"), ("POST", "/hub/spawn/bob"), ("GET", "/hub/spawn-pending/bob")):
        r = session.request(method, iso_hub.url + page, headers=xsrf, allow_redirects=False, timeout=30,
                            data={"_xsrf": xsrf["X-XSRFToken"], "profile": "physics-cpu"})
        assert r.status_code in (403, 404), (page, r.status_code, r.headers.get("location"))
        refused_n += 1
        codes.append(r.status_code)
    time.sleep(1)  # a start or stop that slipped through would show by now
    assert bob_snapshot(iso_hub) == before
    alice_after = iso_hub.user("alice")
    assert alice_after["admin"] == alice_before["admin"] is False
    assert sorted(alice_after["groups"]) == sorted(alice_before["groups"])
    users = [u["name"] for u in iso_hub.api("GET", "/users").json()]
    assert "mallory" not in users and "bob" in users
    by_code = ", ".join(f"{c}: {codes.count(c)}" for c in sorted(set(codes)))
    reliability.record("bad.cross-user-api", f"{refused_n} requests ({len(CROSS_USER)} kinds x alice's server "
                       f"token, API token and browser session, and bob's spawn pages) on bob's server, model, "
                       f"tokens, token endpoint, groups, admin: all refused ({by_code}); bob's server, tokens, "
                       "groups, login unchanged")
