"""Idle culling on the Docker and Slurm backends, in a real hub: the culler stops an idle server
as a normal stop does (the container removed with the mounts inside it, the Slurm job cancelled
and its buckets unmounted); the home volume stays."""

from __future__ import annotations

import os
import time

import pytest

from jhub_cloud.spawner.backends.docker import DockerChild
from tests.testbed.cloudhub import CloudHub
from tests.testbed.paths import REPO, VENV, VENV_BIN
from tests.testbed.procs import mounts_under

IDLE = 10
CULLER = {"idle_timeout_seconds": IDLE, "every_seconds": 2}
CHOICES = {"image": {"options": ["default"]}, "cpu": {"options": [1]}, "memory": {"options": ["512M"]}}
GROUPS = {g: {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0} for g in ("physics", "cms", "admins")}


def storage(seaweedfs, root) -> dict:
    return {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS", "role_arn": seaweedfs.role_arn,
            "region": seaweedfs.region, "mount_roots": [str(root)]}


def wait_culled(hub, user: str = "alice") -> None:
    deadline = time.monotonic() + IDLE + 90
    while "" in hub.servers(user) and time.monotonic() < deadline:
        time.sleep(1)
    assert "" not in hub.servers(user), "the idle server was not culled: " + hub.log_tail()
    assert f"Culling server {user} " in hub.log.read_text(errors="replace")


@pytest.fixture
def env_for(request):
    """Set environment variables for this test (the hub's spawner clients read them), then restore."""
    old = {}

    def put(values: dict) -> None:
        for k, v in values.items():
            old.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    yield put
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_culling_removes_an_idle_container(idp, seaweedfs, dockerd, lab_image, user_fuse, run_dir, env_for):
    env_for({"DOCKER_HOST": dockerd.host})
    DockerChild._client = None  # DockerSpawner's one client reads DOCKER_HOST when first used
    extra = {
        "culler": CULLER, "groups": GROUPS, "storage": storage(seaweedfs, "/s3"),
        "backends": {"docker": {"network": "host", "host_ip": "127.0.0.1", "pull_policy": "never",
                                "home_volume": "jhub-cull-home-{username}",
                                "binds": [{"source": str(VENV), "target": str(VENV)},
                                          {"source": str(REPO), "target": str(REPO)}]}},
        "profiles": [{"name": "container", "display_name": "Container", "backend": "docker",
                      "groups": ["physics"], "mounts": [{"bucket": "{username}", "path": "/s3/{username}"}],
                      "choices": {**CHOICES, "image": {"options": [lab_image]}}}],
    }
    hub = CloudHub(idp, run_dir / "hub-cull-docker", extra=extra, hub_config="c.Spawner.notebook_dir = '/s3'\n")
    hub.start()
    client = dockerd.client()
    try:
        hub.login("alice")
        assert hub.spawn("alice", options={"profile": "container"}).status_code in (201, 202)
        hub.wait_ready("alice", timeout=180)
        # The bucket is mounted inside the container.
        mounts = dockerd.docker("exec", "jhub-alice", "cat", "/proc/mounts").stdout
        assert " /s3/alice fuse" in mounts, mounts
        wait_culled(hub)
        assert "jhub-alice" not in [c.name for c in client.containers.list(all=True)]
        assert "jhub-cull-home-alice" in [v.name for v in client.volumes.list()]  # data stays
    finally:
        hub.stop()
        DockerChild._client = None
        for v in client.volumes.list(filters={"name": "jhub-cull-home-"}):
            v.remove(force=True)


def test_culling_cancels_an_idle_slurm_job(idp, seaweedfs, slurm, user_fuse, run_dir, env_for):
    env_for(slurm.env)
    root = run_dir / "s3-cull-slurm"
    root.mkdir()
    root.chmod(0o1777)
    extra = {
        "culler": CULLER, "groups": GROUPS, "storage": storage(seaweedfs, root),
        "backends": {"slurm": {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --",
                               "batchspawner_singleuser": str(VENV_BIN / "batchspawner-singleuser"),
                               "server_ip": "127.0.0.1"}},
        "profiles": [{"name": "job", "display_name": "Slurm job", "backend": "slurm", "groups": ["physics"],
                      "mounts": [{"bucket": "{username}", "path": f"{root}/{{username}}"}],
                      "choices": {**CHOICES, "time_limit": {"options": ["00:10:00"]}}}],
    }
    hub = CloudHub(idp, run_dir / "hub-cull-slurm", extra=extra,
                   hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\nc.SlurmChild.poll_interval = 3\n")
    hub.start()
    try:
        hub.login("alice")
        assert hub.spawn("alice", options={"profile": "job"}).status_code in (201, 202)
        hub.wait_ready("alice", timeout=180)
        (job, state) = slurm.run("squeue", "-h", "-u", "alice", "-o", "%i %T").stdout.split()
        assert state == "RUNNING"
        deadline = time.monotonic() + 30
        while mounts_under(root) != [f"{root}/alice"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert mounts_under(root) == [f"{root}/alice"]  # the job's bucket, mounted on the node
        wait_culled(hub)
        assert slurm.wait_job(job, timeout=30) in ("CANCELLED", "COMPLETED")  # scancel'd, as at a stop
        deadline = time.monotonic() + 20
        while mounts_under(root) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert mounts_under(root) == []
    finally:
        hub.stop()
