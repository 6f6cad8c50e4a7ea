"""DockerChild built from the Docker builder's settings, against the testbed's real dockerd.

The server here is a tiny HTTP server on the port the spawner chose (JUPYTERHUB_SERVICE_URL), so
these tests check the adapter and the settings alone; the hub tests run jupyterhub-singleuser.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import pytest

from jhub_cloud.config.model import Mount
from jhub_cloud.policy.types import Resources
from jhub_cloud.spawner.backends.docker import DockerChild
from jhub_cloud.spawner.builders.docker import child_settings
from jhub_cloud.spawner.target import SpawnTarget
from tests.server_faults import last_stop_reason, seconds_until_stopped, server_api, spawn_page_notice, user_token
from tests.testbed.web import wait_up

MiB = 1024**2
# Serves 200 "up <user>" on the port in JUPYTERHUB_SERVICE_URL, at the address it names.
SERVE = ("import http.server, os, urllib.parse as u\n"
         "url = u.urlparse(os.environ['JUPYTERHUB_SERVICE_URL'])\n"
         "class H(http.server.BaseHTTPRequestHandler):\n"
         "    def do_GET(self):\n"
         "        b = ('up ' + os.environ['JUPYTERHUB_USER']).encode()\n"
         "        self.send_response(200); self.send_header('Content-Length', str(len(b)))\n"
         "        self.end_headers(); self.wfile.write(b)\n"
         "http.server.HTTPServer((url.hostname, url.port), H).serve_forever()\n")
CMD = ["python3", "-c", SERVE]


@pytest.fixture(scope="module")
def docker_host(dockerd):
    """DockerSpawner's one client for all instances reads DOCKER_HOST when first used."""
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = dockerd.host
    DockerChild._client = None
    yield dockerd
    DockerChild._client = None
    if old is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = old


@pytest.fixture(scope="module")
def lab_image(suite_lab_image) -> str:
    """The project's own images/lab (built FROM the testbed's base): what sites run."""
    return suite_lab_image.tag


def backend(**kw) -> dict:
    return {"network": "host", "host_ip": "127.0.0.1", "pull_policy": "never",
            "home_volume": "jhub-test-home-{username}", **kw}


def make_child(resources: Resources, target: SpawnTarget, cfg: dict, cmd=CMD) -> DockerChild:
    user = SimpleNamespace(name=target.username, escaped_name=target.username,
                           url=f"/user/{target.username}/", groups=[])
    hub = SimpleNamespace(api_url="http://127.0.0.1:9/hub/api", base_url="/hub/", public_host="",
                          url="http://127.0.0.1:9/hub/")
    settings = child_settings(resources, target, cfg, cmd, {"EXTRA": "from-cloudspawner"})
    return DockerChild(user=user, hub=hub, **settings)


def res(image, **kw) -> Resources:
    return Resources(**{"backend": "docker", "image": image, "cpu": 0.5, "memory_bytes": 256 * MiB, **kw})


def test_host_network_limits_and_nothing_left(docker_host, lab_image):
    async def run():
        child = make_child(res(lab_image), SpawnTarget("alice"), backend())
        ip, port = await child.start()
        try:
            assert ip == "127.0.0.1" and port > 0
            assert await wait_up(f"http://{ip}:{port}/") == "up alice"
            info = docker_host.client().api.inspect_container("jhub-alice")
            hc = info["HostConfig"]
            assert hc["NetworkMode"] == "host"
            assert (hc["CpuQuota"], hc["CpuPeriod"]) == (50_000, 100_000)
            assert hc["Memory"] == hc["MemorySwap"] == 256 * MiB
            assert hc["Privileged"] is False and not hc["CapAdd"] and not hc["Devices"]
            assert info["Config"]["Labels"]["org.jhub-cloud.user"] == "alice"
            env = dict(e.split("=", 1) for e in info["Config"]["Env"])
            assert env["EXTRA"] == "from-cloudspawner"
            assert env["JUPYTERHUB_SERVICE_URL"].startswith(f"http://127.0.0.1:{port}")
            # The limits as the kernel enforces them, read inside the container (cgroup v2 or v1).
            v2 = "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max 2>/dev/null"
            v1 = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes"
            cg = docker_host.docker("exec", "jhub-alice", "sh", "-c", f"{v2} || {v1}").stdout.split()
            assert cg in (["50000", "100000", str(256 * MiB)], ["50000", str(256 * MiB)])
            assert await child.poll() is None
            state = child.get_state()
            assert state["port"] == port and state["object_name"] == "jhub-alice"
        finally:
            await child.stop()
        assert await child.poll() == 0
        names = [c.name for c in docker_host.client().containers.list(all=True)]
        assert "jhub-alice" not in names
        # The home volume is kept on purpose: it is the user's home folder.
        assert "jhub-test-home-alice" in [v.name for v in docker_host.client().volumes.list()]

    asyncio.run(run())


def test_two_servers_get_their_own_ports_and_names(docker_host, lab_image):
    async def run():
        a = make_child(res(lab_image), SpawnTarget("alice"), backend())
        b = make_child(res(lab_image), SpawnTarget("alice", "second"), backend())
        (_, pa), (_, pb) = await a.start(), await b.start()
        try:
            assert pa != pb
            assert await wait_up(f"http://127.0.0.1:{pa}/") == await wait_up(f"http://127.0.0.1:{pb}/") == "up alice"
            assert {a.object_name, b.object_name} == {"jhub-alice", "jhub-alice--second"}
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(run())


def test_killed_container_is_seen_with_its_reason_and_removed(docker_host, lab_image):
    async def run():
        child = make_child(res(lab_image), SpawnTarget("alice"), backend())
        ip, port = await child.start()
        await wait_up(f"http://{ip}:{port}/")
        docker_host.docker("kill", "jhub-alice")
        reason = await child.poll()
        assert isinstance(reason, str) and reason.startswith("ExitCode=137, killed by SIGKILL"), reason
        names = [c.name for c in docker_host.client().containers.list(all=True)]
        assert "jhub-alice" not in names
        await child.stop()  # the hub may still call it: nothing left to do, no error

    asyncio.run(run())


def test_out_of_memory_is_named_in_the_reason(docker_host, lab_image):
    hog = ["python3", "-c", "x = bytearray(512 * 1024 * 1024); import time; time.sleep(60)"]

    async def run():
        child = make_child(res(lab_image, memory_bytes=64 * MiB), SpawnTarget("alice"), backend(), cmd=hog)
        await child.start()
        for _ in range(100):
            reason = await child.poll()
            if reason is not None:
                break
            await asyncio.sleep(0.2)
        await child.stop()
        assert "out of memory (OOMKilled" in reason, reason

    asyncio.run(run())


def test_fuse_settings_reach_docker_and_jovyan_can_open_the_device(docker_host, lab_image, user_fuse):
    check = ["python3", "-c", "import os; os.close(os.open('/dev/fuse', os.O_RDWR))\n" + SERVE]
    mounts = (Mount("alice", "/s3/alice"),)

    async def run():
        child = make_child(res(lab_image, mounts=mounts), SpawnTarget("alice"), backend(), cmd=check)
        ip, port = await child.start()
        try:
            assert await wait_up(f"http://{ip}:{port}/") == "up alice"  # it opened /dev/fuse first
            hc = docker_host.client().api.inspect_container("jhub-alice")["HostConfig"]
            assert hc["Privileged"] is False
            assert hc["CapAdd"] == ["SYS_ADMIN"]
            assert hc["SecurityOpt"] == ["apparmor=unconfined"]
            assert [d["PathOnHost"] for d in hc["Devices"]] == ["/dev/fuse"]
        finally:
            await child.stop()

    asyncio.run(run())


@pytest.mark.parametrize(("gpu_cfg", "want"), [
    (None, {"Count": 2, "DeviceIDs": []}),
    (["GPU-1111", "GPU-2222", "GPU-3333"], {"Count": 0, "DeviceIDs": ["GPU-1111", "GPU-2222"]}),
])
def test_gpu_device_requests_reach_docker(docker_host, lab_image, gpu_cfg, want):
    """No GPU here, so the container is created (Docker records the request) but not started."""
    async def run():
        child = make_child(res(lab_image, gpus=2), SpawnTarget("alice", "gpu"), backend(gpu_device_ids=gpu_cfg))
        obj = await child.create_object()
        try:
            hc = docker_host.client().api.inspect_container(obj["Id"])["HostConfig"]
            (req,) = hc["DeviceRequests"]
            assert req["Driver"] == "nvidia" and req["Capabilities"] == [["gpu"]]
            assert {k: req[k] for k in want} == want
        finally:
            docker_host.client().api.remove_container(obj["Id"], force=True)

    asyncio.run(run())


# --- through the real hub: CloudSpawner drives DockerChild ---------------------------------------

PROFILE = "physics-docker"


@pytest.fixture(scope="module")
def docker_hub(idp, seaweedfs, docker_host, lab_image, run_dir, user_fuse):
    from tests.testbed.cloudhub import CloudHub

    mounts = [{"bucket": "{username}", "path": "/s3/{username}"},
              {"bucket": "scratch", "path": "/s3/scratch", "read_only": True}]
    extra = {
        "backends": {"docker": backend(pull_policy="never")},
        # 1.5 CPUs: two 1-CPU servers are over alice's limit (the hub-restart test counts on it).
        "groups": {"physics": {"max_servers": 2, "max_cpu": 1.5, "max_memory": "2G", "max_gpus": 0},
                   "cms": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0},
                   "admins": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0}},
        "profiles": [{
            "name": PROFILE, "display_name": "Container", "backend": "docker", "groups": ["physics"],
            "mounts": mounts,
            "choices": {"image": {"options": [lab_image]}, "cpu": {"options": [0.5, 1], "default": 0.5},
                        "memory": {"options": ["512M", "1G"], "default": "512M"}},
        }],
        "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                    "role_arn": seaweedfs.role_arn, "region": seaweedfs.region, "mount_roots": ["/s3"]},
    }
    h = CloudHub(idp, run_dir / "hub-docker", extra=extra,
                 hub_config="c.Spawner.notebook_dir = '/s3'\nc.DockerChild.poll_interval = 3\n")
    h.start()
    h.login("alice")
    yield h
    h.stop()


def _container_env(dockerd, name: str) -> dict:
    info = dockerd.client().api.inspect_container(name)
    return dict(e.split("=", 1) for e in info["Config"]["Env"])


def test_alice_docker_server_through_the_hub(docker_hub, docker_host, seaweedfs):
    import requests

    hub = docker_hub
    seaweedfs.admin_s3().put_object(Bucket="scratch", Key="shared.txt", Body=b"for everyone\n")
    r = hub.spawn("alice", options={"profile": PROFILE, "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text + hub.log_tail(60)
    hub.wait_ready("alice", timeout=120)
    assert _server_state(hub)["child"]["object_name"] == "jhub-alice"

    info = docker_host.client().api.inspect_container("jhub-alice")
    hc = info["HostConfig"]
    assert (hc["CpuQuota"], hc["CpuPeriod"], hc["Memory"]) == (100_000, 100_000, 1024 * MiB)
    assert hc["NetworkMode"] == "host" and hc["Privileged"] is False
    assert hc["CapAdd"] == ["SYS_ADMIN"] and [d["PathOnHost"] for d in hc["Devices"]] == ["/dev/fuse"]
    assert info["Config"]["Cmd"][:5] == ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--"]
    v2 = "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max 2>/dev/null"
    v1 = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes"
    cg = docker_host.docker("exec", "jhub-alice", "sh", "-c", f"{v2} || {v1}").stdout.split()
    assert cg in (["100000", "100000", str(1024 * MiB)], ["100000", str(1024 * MiB)])
    env = _container_env(docker_host, "jhub-alice")
    assert "AWS_SECRET_ACCESS_KEY" not in env and "JHUB_CLOUD_CLIENT_SECRET" not in env

    base = f"{hub.url}/user/alice/api/contents"
    headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    r = requests.put(f"{base}/alice/from-docker.txt", headers=headers, timeout=30,
                     json={"type": "file", "format": "text", "content": "hello from a container\n"})
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{base}/scratch/shared.txt", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "for everyone\n", r.text
    assert seaweedfs.wait_object("alice", "from-docker.txt") == b"hello from a container\n"

    hub.stop_server("alice")
    names = [c.name for c in docker_host.client().containers.list(all=True)]
    assert "jhub-alice" not in names
    assert "jhub-test-home-alice" in [v.name for v in docker_host.client().volumes.list()]


POLL = 3  # c.DockerChild.poll_interval in docker_hub
SLACK = 3  # the hub's poll jitter (up to 10 %), its cleanup and our 0.1 s look


def test_killed_container_shows_stopped_within_a_poll(docker_hub, docker_host, reliability):
    hub = docker_hub
    r = hub.spawn("alice", server="second", options={"profile": PROFILE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", "second", timeout=120)
    t0 = time.monotonic()
    docker_host.docker("kill", "jhub-alice--second")
    took = seconds_until_stopped(hub, "alice", "second", since=t0)
    assert took <= POLL + SLACK, took
    names = [c.name for c in docker_host.client().containers.list(all=True)]
    assert "jhub-alice--second" not in names
    # Why, where the admin (API) and the user (the next spawn page) look.
    reason = last_stop_reason(hub, "alice", "second")
    assert reason.startswith("ExitCode=137, killed by SIGKILL"), reason
    assert "killed by SIGKILL" in spawn_page_notice(hub, "alice", "second")
    reliability.record("fault.container-killed", f"hub showed it stopped {took:.1f} s after docker kill "
                       f"(poll interval {POLL} s); reason shown: {reason.split(', FinishedAt')[0]}")


def test_out_of_memory_in_the_container_shows_stopped_with_the_reason(docker_hub, docker_host, reliability):
    """512 MiB profile; a process in the container takes 1 GiB. The kernel is told to kill the
    server first (oom_score_adj 1000, as the owner may), as when the server itself grows."""
    hub = docker_hub
    r = hub.spawn("alice", server="oom", options={"profile": PROFILE, "memory": "512M"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", "oom", timeout=120)
    hog = ("import os\n"
           "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
           "    try:\n"
           "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
           "        if pid != str(os.getpid()) and b'jupyterhub-singleuser' in cmd:\n"
           "            open(f'/proc/{pid}/oom_score_adj', 'w').write('1000')\n"
           "    except OSError:\n"
           "        pass\n"
           "x = b'x' * 2**30\n")
    t0 = time.monotonic()
    docker_host.docker("exec", "jhub-alice--oom", "python3", "-c", hog, check=False)
    took = seconds_until_stopped(hub, "alice", "oom", since=t0)
    assert took <= POLL + SLACK, took
    reason = last_stop_reason(hub, "alice", "oom")
    assert "out of memory (OOMKilled" in reason, reason
    assert "out of memory" in spawn_page_notice(hub, "alice", "oom")
    assert "jhub-alice--oom" not in [c.name for c in docker_host.client().containers.list(all=True)]
    reliability.record("fault.container-oom", f"1 GiB in a 512 MiB container: hub showed it stopped "
                       f"{took:.1f} s after the allocation began (poll interval {POLL} s); "
                       f"reason shown: {reason.split(', FinishedAt')[0]}")


def _server_state(hub, user="alice", server=""):
    return hub.user(user)["servers"][server]["state"]


def test_running_container_is_found_again_after_a_hub_restart(docker_hub, docker_host, reliability):
    hub = docker_hub
    r = hub.spawn("alice", options={"profile": PROFILE, "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    before = _server_state(hub)["child"]

    hub.stop(keep_servers=True)
    assert docker_host.client().api.inspect_container("jhub-alice")["State"]["Running"]
    hub.start()
    server = hub.wait_ready("alice", timeout=60)
    after = server["state"]["child"]
    # Found again: the same container, not a new one.
    assert (after["object_id"], after["port"]) == (before["object_id"], before["port"])
    assert docker_host.client().api.inspect_container("jhub-alice")["Id"] == before["object_id"]
    # Reachable through the proxy, as alice with a token of hers.
    r = server_api(hub, "alice", user_token(hub, "alice"))
    assert r.status_code == 200 and "started" in r.json(), r.text
    # Counted: its CPU came back from the state; one more 1-CPU server is over alice's 1.5.
    r = hub.spawn("alice", "more", {"profile": PROFILE, "cpu": 1, "memory": "512M"})
    assert r.status_code == 400 and "max_cpu" in r.json()["message"], r.text
    assert "more" not in hub.servers("alice")
    # Stoppable.
    t0 = time.monotonic()
    hub.stop_server("alice")
    stopped = time.monotonic() - t0
    assert "jhub-alice" not in [c.name for c in docker_host.client().containers.list(all=True)]
    reliability.record("fault.hub-restart.docker", f"found container {before['object_id'][:12]} again, "
                       f"/api/status 200 via proxy, 2nd spawn refused (max_cpu), stopped and removed in "
                       f"{stopped:.1f} s")


def test_docker_not_answering_is_not_a_stopped_server(docker_host, lab_image, run_dir):
    import docker

    class Offline(DockerChild):
        # dockerspawner keeps one client per class: this one talks to a socket with no daemon.
        _client = docker.APIClient(base_url=f"unix://{run_dir}/no-dockerd.sock", version="1.41")

    async def run():
        child = make_child(res(lab_image), SpawnTarget("alice"), backend())
        offline = Offline(user=child.user, hub=child.hub, name_template=child.name_template)
        offline.load_state({"object_id": "0123456789ab", "object_name": "jhub-alice"})
        assert await offline.poll() is None
        assert offline.object_id == "0123456789ab"

    asyncio.run(run())


def test_missing_image_with_pull_policy_never_is_a_clear_error(docker_host):
    async def run():
        child = make_child(res("jhub-cloud/not-built:anywhere"), SpawnTarget("alice"), backend())
        with pytest.raises(RuntimeError, match="jhub-cloud/not-built:anywhere is not on the Docker host"):
            await child.start()
        assert "jhub-alice" not in [c.name for c in docker_host.client().containers.list(all=True)]

    asyncio.run(run())
