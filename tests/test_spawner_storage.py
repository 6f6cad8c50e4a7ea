"""Storage through the spawner, local backend: alice's server starts as `sts-wire run --spec
env:STS_WIRE_SPEC -- jupyterhub-singleuser`, with her bucket and scratch mounted (SeaweedFS STS
with her token from the hub); a file written through the server's contents API lands in S3,
scratch is readable, and stop leaves no process, mount or cgroup behind. No secret is in the
server's command line or environment."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import psutil
import pytest
import requests

from jhub_cloud.spawner import cgroups
from tests.testbed.cloudhub import CGROUP_ROOT, CloudHub, spawner_profiles, user_processes
from tests.testbed.hub import CLIENT_SECRET, server_environ
from tests.testbed.procs import mounts_under


@pytest.fixture(scope="module")
def fuse_for_users():
    """What udev does on a normal machine (TESTBED.md): users may open /dev/fuse."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (udev's own mode for it)
    return True


@pytest.fixture(scope="module")
def hub(idp, seaweedfs, run_dir, fuse_for_users):
    root = run_dir / "s3-spawner"
    root.mkdir()
    root.chmod(0o1777)  # like /tmp: each user creates their own mount folders
    mounts = [{"bucket": "{username}", "path": f"{root}/{{username}}"},
              {"bucket": "scratch", "path": f"{root}/scratch", "read_only": True}]
    extra = {**spawner_profiles(mounts),
             "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                         "role_arn": seaweedfs.role_arn, "region": seaweedfs.region,
                         "mount_roots": [str(root)]}}
    h = CloudHub(idp, run_dir / "hub-spawner-storage", extra=extra,
                 hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\n")
    h.start()
    for user in ("alice", "bob"):
        h.login(user)  # they exist in the hub, with their groups and tokens, after logging in
    h.root = root
    yield h
    h.stop()


def test_alice_writes_to_her_bucket_and_reads_scratch_and_bob_mounts_beside_her(hub, seaweedfs):
    seaweedfs.admin_s3().put_object(Bucket="scratch", Key="shared.txt", Body=b"for everyone\n")
    r = hub.spawn("alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "2G"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)

    env = server_environ(hub, "alice")
    spec = json.loads(env["STS_WIRE_SPEC"])
    assert [m["path"] for m in spec["mounts"]] == [f"{hub.root}/alice", f"{hub.root}/scratch"]
    assert spec["token"]["source"] == "hub"
    # The server is sts-wire wrapping jupyterhub-singleuser, with absolute paths from the hub's venv.
    wire = next(p for p in user_processes("alice") if "sts-wire" in " ".join(p.cmdline())
                and p.environ().get("STS_WIRE_SPEC") == env["STS_WIRE_SPEC"])
    argv = wire.cmdline()
    i = next(k for k, a in enumerate(argv) if a.endswith("/sts-wire"))
    assert argv[i + 1:i + 5] == ["run", "--spec", "env:STS_WIRE_SPEC", "--"]
    assert argv[i + 5].endswith("/jupyterhub-singleuser") and argv[i + 5].startswith("/")
    # No secret of the hub or the user in the server's environment or arguments.
    auth_state = hub.user("alice")["auth_state"] or {}
    secrets = [CLIENT_SECRET] + [v for k, v in auth_state.items() if k in ("refresh_token", "id_token")]
    visible = "\n".join(argv) + "\n" + "\n".join(f"{k}={v}" for k, v in env.items())
    assert not [s for s in secrets if s and s in visible]
    assert not [k for k in env if k.startswith("AWS_SECRET") or k == "JUPYTERHUB_CRYPT_KEY"]

    # Through the server's contents API, with the server's own token (as the person's browser would).
    base = f"{hub.url}/user/alice/api/contents"
    headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    r = requests.put(f"{base}/alice/hello.txt", headers=headers, timeout=30,
                     json={"type": "file", "format": "text", "content": "hello from alice\n"})
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{base}/scratch/shared.txt", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "for everyone\n", r.text
    deadline = time.monotonic() + 30
    body = None
    while time.monotonic() < deadline:
        try:
            body = seaweedfs.admin_s3().get_object(Bucket="alice", Key="hello.txt")["Body"].read()
            break
        except Exception:  # uploaded after close(): not there yet
            time.sleep(0.5)
    assert body == b"hello from alice\n"

    # Everything the server started is inside its cgroup, rclone too: the limits hold for all.
    name = hub.user("alice")["servers"][""]["state"]["child"]["cgroup"]
    pids = cgroups.pids(cgroups.CGroup(CGROUP_ROOT, name))
    names = {Path(a).name for p in pids for a in psutil.Process(p).cmdline()[:2]}
    assert {"rclone", "sts-wire", "jupyterhub-singleuser"} <= names, names
    # Her mounts are in her server's own mount namespace, not on the machine.
    server_pid = next(p for p in pids if "jupyterhub-singleuser" in " ".join(psutil.Process(p).cmdline()[:2]))
    assert sorted(fuse_mounts_of(server_pid, hub.root)) == [f"{hub.root}/alice", f"{hub.root}/scratch"]
    assert mounts_under(hub.root) == []

    # bob mounts scratch at the same path at the same time: his own namespace, no collision.
    assert hub.spawn("bob", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"}).status_code in (201, 202)
    hub.wait_ready("bob", timeout=120)
    bob_env = server_environ(hub, "bob")
    bob_pid = next(p.pid for p in user_processes("bob") if p.environ().get("JUPYTERHUB_API_TOKEN")
                   == bob_env["JUPYTERHUB_API_TOKEN"] and "jupyterhub-singleuser" in " ".join(p.cmdline()[:2]))
    assert sorted(fuse_mounts_of(bob_pid, hub.root)) == [f"{hub.root}/bob", f"{hub.root}/scratch"]
    r = requests.get(f"{hub.url}/user/bob/api/contents/scratch/shared.txt", timeout=30,
                     headers={"Authorization": f"token {bob_env['JUPYTERHUB_API_TOKEN']}"})
    assert r.status_code == 200 and r.json()["content"] == "for everyone\n", r.text
    r = requests.get(f"{hub.url}/user/bob/api/contents/alice", timeout=30,
                     headers={"Authorization": f"token {bob_env['JUPYTERHUB_API_TOKEN']}"})
    assert r.status_code == 404  # alice's bucket is not even a folder in bob's server
    bob_name = hub.user("bob")["servers"][""]["state"]["child"]["cgroup"]
    pids |= cgroups.pids(cgroups.CGroup(CGROUP_ROOT, bob_name))
    hub.stop_server("bob")
    hub.stop_server("alice")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (mounts_under(hub.root) or _alive(pids)):
        time.sleep(0.2)
    assert mounts_under(hub.root) == []
    assert _alive(pids) == set()
    for c in ("cpu", "memory"):
        d = CGROUP_ROOT / c / hub.cgroup_parent
        assert not d.exists() or not [x for x in d.iterdir() if x.is_dir()]


def fuse_mounts_of(pid: int, root: Path) -> list[str]:
    """FUSE mounts below `root` as process `pid` sees them (in its mount namespace)."""
    lines = Path(f"/proc/{pid}/mounts").read_text().splitlines()
    return [f.split()[1] for f in lines if f.split()[2].startswith("fuse") and f.split()[1].startswith(f"{root}/")]


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out
