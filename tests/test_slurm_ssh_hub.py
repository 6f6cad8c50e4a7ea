"""A hub outside the cluster starts Slurm jobs through the login node (tests/testbed/sshd.py).

The hub runs with no SLURM_CONF and in a mount namespace where the cluster's munge folder is
an empty tmpfs: it cannot talk to Slurm itself, so every job it starts went through SSH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.testbed import cloudhub
from tests.testbed.procs import mounts_under

PROFILE = "physics-hpc"


def hiding(path: Path) -> list[str]:
    """A launcher that starts the hub in a private mount namespace with `path` covered by a tmpfs."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o mode=0755,size=1m jhub-no-munge "$0" && exec "$@"', str(path)]


@pytest.fixture(scope="module")
def ssh_hub(idp, seaweedfs, slurm, login_node, run_dir, user_fuse):
    assert "SLURM_CONF" not in os.environ, "the hub must not inherit a Slurm configuration"
    root = run_dir / "s3-slurm-ssh"
    root.mkdir()
    root.chmod(0o1777)
    h = cloudhub.CloudHub(idp, run_dir / "hub-slurm-ssh",
                          hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\nc.SlurmChild.poll_interval = 3\n")
    h.extra = {
        "backends": {"slurm": {
            "partition": slurm.partition, "server_ip": "127.0.0.1",
            "login_host": {"host": "127.0.0.1", "port": login_node.port, "host_key": login_node.host_key,
                           "ca_key": {"file": str(login_node.ca_key)}, "certificate_lifetime": 120,
                           # A name of its own (not the hub's bind address), so the test sees it is used.
                           "hub_connect_url": f"http://localhost:{h.hub_port}", "tunnel": "always",
                           "gate": login_node.gate}}},
        "groups": {"physics": {"max_servers": 1, "max_cpu": 4096, "max_memory": "2G", "max_gpus": 1},
                   "cms": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0},
                   "admins": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0}},
        "profiles": [{
            "name": PROFILE, "display_name": "HPC notebook (through the login node)", "backend": "slurm",
            "groups": ["physics"],
            "mounts": [{"bucket": "{username}", "path": f"{root}/{{username}}"}],
            "choices": {"image": {"options": ["default"]}, "cpu": {"options": [1, 4096], "default": 1},
                        "memory": {"options": ["512M"], "default": "512M"},
                        "gpus": {"options": [0, 1], "default": 0},
                        "gpu_model": {"options": [slurm.gpu_type]},
                        "time_limit": {"options": ["00:10:00"], "default": "00:10:00"}},
        }],
        "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS", "role_arn": seaweedfs.role_arn,
                    "region": seaweedfs.region, "mount_roots": [str(root)]},
    }
    h.launcher = hiding(slurm.munge_socket.parent)
    h.start()
    h.login("alice")
    h.root = root
    yield h
    h.stop()


def _state(hub, user="alice"):
    return hub.user(user)["servers"][""]["state"]["child"]


def _ssh_processes(hub_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(hub_pid).children(recursive=True) if p.name() == "ssh"]


def _user_processes(user: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["username"]) if p.info["username"] == user]


def _wait(check, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := check()):
            return v
        time.sleep(0.3)
    raise AssertionError(f"{what} not met after {timeout} s")


def _secrets_scan(hub, slurm, login_node) -> list[str]:
    """Where the CA key or a user certificate shows up outside the hub's 0600 files."""
    ca = login_node.ca_key.read_text()
    ca_body = "".join(ca.splitlines()[1:-1])[:64]
    needles = [ca_body, "-cert-v01@openssh.com", "BEGIN OPENSSH PRIVATE KEY"]
    found = []

    def check(where: str, text: str) -> None:
        found.extend(f"{n[:30]} in {where}" for n in needles if n and n in text)

    files = [hub.log, login_node.log, *Path("/home/alice").glob(".jhub-cloud-slurm-*.log"),
             *slurm.dir.joinpath("state").rglob("script"), *slurm.dir.joinpath("log").iterdir()]
    for f in files:
        check(str(f), f.read_text(errors="replace"))
    for p in psutil.process_iter():
        try:
            check(f"cmdline of {p.pid}", "\0".join(p.cmdline()))
            check(f"environ of {p.pid}", Path(f"/proc/{p.pid}/environ").read_text(errors="replace"))
        except (psutil.Error, OSError):
            pass
    return found


def test_alice_hpc_server_through_the_login_node(ssh_hub, slurm, login_node, seaweedfs):
    hub = ssh_hub
    hub_pid = hub.daemon.pid
    # The hub cannot be a Slurm client: no SLURM_CONF, and no munge socket in its mount namespace.
    hub_env = Path(f"/proc/{hub_pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in hub_env if v.startswith(b"SLURM_CONF=")]
    sock = str(slurm.munge_socket)
    assert subprocess.run(["nsenter", "-t", str(hub_pid), "-m", "test", "-S", sock]).returncode != 0
    assert subprocess.run(["test", "-S", sock]).returncode == 0

    r = hub.spawn("alice", options={"profile": PROFILE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    state = _state(hub)
    job_id = state["job_id"]
    job = slurm.run("scontrol", "show", "job", job_id).stdout
    assert "UserId=alice(" in job and "JobName=jhub-alice" in job
    assert re.search(r"Submitting Slurm job for alice: ssh -F \"\$JHUB_CLOUD_SSH_DIR/config\" jhub-cloud-login "
                     r"'sbatch --parsable'", hub.log.read_text())

    # The proxy reaches the server through the hub's tunnel: 127.0.0.1:<tunnel> -> node:<server>.
    tunnel = state["tunnel"]
    assert (state["ip"], state["port"]) == ("127.0.0.1", tunnel["port"]) != ("127.0.0.1", tunnel["remote_port"])
    (ssh,) = [p for p in _ssh_processes(hub_pid) if p.pid == tunnel["pid"]]
    assert f"127.0.0.1:{tunnel['port']}:127.0.0.1:{tunnel['remote_port']}" in ssh.cmdline()
    env = _server_env(job_id)
    assert env["JUPYTERHUB_API_URL"] == f"http://localhost:{hub.hub_port}/hub/api"
    headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    base = f"{hub.url}/user/alice/api/contents"
    r = requests.put(f"{base}/alice/from-the-cluster.txt", headers=headers, timeout=30,
                     json={"type": "file", "format": "text", "content": "written on a compute node\n"})
    assert r.status_code in (200, 201), r.text
    assert _wait(lambda: _object(seaweedfs, "alice", "from-the-cluster.txt"), what="object in S3") \
        == b"written on a compute node\n"

    # A tunnel that dies is reopened on the same port, and the server is reachable again.
    os.kill(tunnel["pid"], signal.SIGKILL)
    _wait(lambda: [p for p in _ssh_processes(hub_pid) if p.pid != tunnel["pid"]
                   and f"127.0.0.1:{tunnel['port']}:" in " ".join(p.cmdline())], what="tunnel reopened")
    r = _wait(lambda: (x := requests.get(f"{base}/alice", headers=headers, timeout=10)).ok and x)
    assert "from-the-cluster.txt" in r.text

    assert _secrets_scan(hub, slurm, login_node) == []

    hub.stop_server("alice")
    assert slurm.wait_job(job_id, timeout=30) in ("CANCELLED", "COMPLETED")
    assert _wait(lambda: not _ssh_processes(hub_pid), what="no ssh left"), "the hub left an ssh process"
    _wait(lambda: not mounts_under(hub.root), what="mounts gone")
    _wait(lambda: not [p for p in _user_processes("alice") if p.name() in ("sshd", "python3", "rclone")],
          what="alice's processes gone")
    assert not list(Path("/tmp").glob("jhub-cloud-ssh-*")), "certificate folders left behind"
    assert _secrets_scan(hub, slurm, login_node) == []


def _server_env(job_id: str) -> dict:
    for p in _user_processes("alice"):
        try:
            e = p.environ()
        except psutil.Error:
            continue
        if e.get("SLURM_JOB_ID") == job_id and "JUPYTERHUB_API_TOKEN" in e:
            return e
    raise AssertionError(f"no process of job {job_id}")


def _object(seaweedfs, bucket, key):
    try:
        return seaweedfs.admin_s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception:  # noqa: BLE001 (not uploaded yet)
        return None


def test_waiting_job_shows_slurm_state_and_reason_through_ssh(ssh_hub, slurm):
    hub = ssh_hub
    blocker = slurm.run("sbatch", "--parsable", f"--gres=gpu:{slurm.gpu_count}", "--mem=50M",
                        "--output=/dev/null", "--wrap", "sleep 300", user="bob").stdout.strip()
    try:
        r = hub.spawn("alice", options={"profile": PROFILE, "gpus": 1, "gpu_model": slurm.gpu_type})
        assert r.status_code in (201, 202), r.text
        messages = []
        with requests.get(f"{hub.url}/hub/api/users/alice/server/progress", stream=True, timeout=60,
                          headers={"Authorization": f"token {hub.api_token}"}) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:])["message"])
                    if "PENDING" in messages[-1]:
                        break
        assert re.search(r"Slurm job \d+ is PENDING \(reason: (Resources|Priority)\)", messages[-1]), messages
        slurm.run("scancel", blocker)
        hub.wait_ready("alice", timeout=120)
        job_id = _state(hub)["job_id"]
        # The job's end (cancelled outside the hub) is noticed at the next poll.
        slurm.run("scancel", job_id)
        t0 = time.monotonic()
        _wait(lambda: "" not in hub.servers("alice"), what="server shown stopped")
        assert time.monotonic() - t0 < 3 + 5
        assert _wait(lambda: not _ssh_processes(hub.daemon.pid), what="tunnel closed")
    finally:
        slurm.run("scancel", blocker, check=False)


def test_job_the_cluster_rejects_is_a_clear_error(ssh_hub, slurm):
    hub = ssh_hub
    r = hub.spawn("alice", options={"profile": PROFILE, "cpu": 4096})
    assert r.status_code in (201, 202, 500), r.text
    _wait(lambda: "" not in hub.servers("alice"), what="failed start cleaned up")
    assert "Batch job submission failed" in hub.log.read_text()
    assert slurm.run("squeue", "-h", "-u", "alice").stdout.strip() == ""
    assert not _ssh_processes(hub.daemon.pid)


def test_server_is_found_again_through_a_new_tunnel_after_a_hub_restart(ssh_hub, slurm):
    hub = ssh_hub
    r = hub.spawn("alice", options={"profile": PROFILE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    state = _state(hub)
    old_tunnel = state["tunnel"]["pid"]
    token = _server_env(state["job_id"])["JUPYTERHUB_API_TOKEN"]

    hub.stop(keep_servers=True)
    hub.start()
    server = hub.wait_ready("alice", timeout=60)
    new = server["state"]["child"]
    assert new["job_id"] == state["job_id"] and new["tunnel"]["port"] == state["tunnel"]["port"]
    assert not psutil.pid_exists(old_tunnel) or psutil.Process(old_tunnel).status() == psutil.STATUS_ZOMBIE
    (ssh,) = [p for p in _ssh_processes(hub.daemon.pid) if p.pid == new["tunnel"]["pid"]]
    r = requests.get(f"{hub.url}/user/alice/api/status", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    hub.stop_server("alice")
    assert slurm.wait_job(state["job_id"], timeout=30) in ("CANCELLED", "COMPLETED")
    assert _wait(lambda: not _ssh_processes(hub.daemon.pid), what="tunnel closed")


def test_unreachable_login_node_fails_the_spawn_with_a_clear_message(ssh_hub, login_node, slurm):
    hub = ssh_hub
    login_node.stop()  # the login node is down (same port, so it can come back)
    try:
        r = hub.spawn("alice", options={"profile": PROFILE})
        assert r.status_code in (201, 202, 500), r.text
        _wait(lambda: "" not in hub.servers("alice"), what="failed start cleaned up")
        want = f"cannot reach the login node 127.0.0.1:{login_node.port} (ssh: connect to host 127.0.0.1 port " \
               f"{login_node.port}: Connection refused); try again later"
        assert want in hub.log.read_text()
        assert slurm.run("squeue", "-h", "-u", "alice").stdout.strip() == ""
    finally:
        login_node.start()
