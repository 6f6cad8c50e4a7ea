"""SlurmChild built from the Slurm builder's settings, against the testbed's real Slurm.

The hub's part is played by a small HTTP server that takes the job's port report the way
jhub_cloud.spawner.slurm_port does (same parser, the server's own token only); the hub tests
use the real handler. The job's server is a tiny HTTP server started by the real
batchspawner-singleuser, on the port it picked.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import threading
import time
from types import SimpleNamespace

import pytest

from jhub_cloud.policy.types import Resources
from jhub_cloud.spawner import slurm_port
from jhub_cloud.spawner.backends.slurm import SlurmChild
from jhub_cloud.spawner.builders.slurm import child_settings
from jhub_cloud.spawner.target import SpawnTarget
from tests.server_faults import last_stop_reason, seconds_until_stopped, server_api, spawn_page_notice, user_token
from tests.testbed.paths import free_port
from tests.testbed.web import wait_up

MiB = 1024**2
SERVE = """#!/usr/bin/env python3
import http.server, os, urllib.parse as u
url = u.urlparse(os.environ['JUPYTERHUB_SERVICE_URL'])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ('up ' + os.environ['JUPYTERHUB_USER'] + ' ' + os.environ.get('SLURM_GPUS_ON_NODE', '0')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b)))
        self.end_headers(); self.wfile.write(b)
http.server.HTTPServer((url.hostname, url.port), H).serve_forever()
"""


class FakeHubAPI:
    """POST /hub/api/batchspawner -> child.accept_port, only with the child's token."""

    def __init__(self):
        self.children: list[SlurmChild] = []
        self.posts: list[tuple[int, bytes]] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                token = self.headers.get("Authorization", "").removeprefix("token ")
                child = next((c for c in hub.children if c.api_token == token), None)
                code = 403
                if child is not None and self.path == "/hub/api/batchspawner":
                    try:
                        child.accept_port(slurm_port.parse_port(body))
                        code = 201
                    except ValueError:
                        code = 400
                hub.posts.append((code, body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.api_url = f"http://127.0.0.1:{self.server.server_port}/hub/api"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def slurm_env(slurm):
    """sbatch/squeue run with the hub's environment: point it at the testbed cluster."""
    old = {k: os.environ.get(k) for k in slurm.env}
    os.environ.update(slurm.env)
    yield slurm
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def hub_api():
    h = FakeHubAPI()
    yield h
    h.close()


@pytest.fixture(scope="module")
def serve_cmd(run_dir):
    d = run_dir / "slurm-backend"
    d.mkdir(exist_ok=True, mode=0o755)
    script = d / "serve.py"
    script.write_text(SERVE)
    script.chmod(0o755)
    return [str(script)]


def backend(slurm, **kw) -> dict:
    return {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --",
            "server_ip": "127.0.0.1", **kw}


def res(**kw) -> Resources:
    return Resources(**{"backend": "slurm", "image": "default", "cpu": 1, "memory_bytes": 256 * MiB, **kw})


def make_child(hub_api, resources, target, cfg, cmd) -> SlurmChild:
    user = SimpleNamespace(name=target.username, escaped_name=target.username,
                           url=f"/user/{target.username}/", groups=[])
    hub = SimpleNamespace(api_url=hub_api.api_url, base_url="/hub/", public_host="",
                          url=hub_api.api_url.removesuffix("api"))
    settings = child_settings(resources, target, cfg, cmd, {"EXTRA": "from-cloudspawner"})
    child = SlurmChild(user=user, hub=hub, api_token=f"tok-{target.safe_server}-{os.getpid()}",
                       startup_poll_interval=0.2, **settings)
    hub_api.children.append(child)
    return child


def scontrol(slurm, job_id: str) -> dict:
    out = slurm.run("scontrol", "show", "job", job_id).stdout
    return dict(re.findall(r"(\w+(?::\w+)?)=(\S*)", out))


async def collect_progress(child, events: list):
    async for ev in child.progress():
        events.append(ev)


def test_job_gets_the_profile_resources_and_serves(slurm_env, hub_api, serve_cmd):
    slurm = slurm_env

    async def run():
        r = res(cpu=1, memory_bytes=300 * MiB, gpus=1, gpu_model=slurm.gpu_type, time_limit="00:10:00")
        child = make_child(hub_api, r, SpawnTarget("alice"), backend(slurm), serve_cmd)
        events: list = []
        progress = asyncio.ensure_future(collect_progress(child, events))
        ip, port = await asyncio.wait_for(child.start(), 90)
        try:
            await asyncio.wait_for(progress, 5)
            assert (ip, port) == ("127.0.0.1", child.port)
            assert await wait_up(f"http://{ip}:{port}/") == "up alice 1"
            job = scontrol(slurm, child.job_id)
            assert job["JobName"] == "jhub-alice"
            assert job["UserId"].startswith("alice(")
            assert job["Partition"] == slurm.partition
            assert job["NumCPUs"] == "1"
            assert job["MinMemoryNode"] == "300M"
            assert job["TimeLimit"] == "00:10:00"
            assert job["TresPerNode"] == f"gres:gpu:{slurm.gpu_type}:1"
            assert await child.poll() is None
            messages = [e["message"] for e in events]
            # The job's state as squeue saw it (a job that starts between two polls is never seen RUNNING).
            assert any(m.startswith(f"Slurm job {child.job_id} is ") for m in messages), messages
            assert messages[-1].startswith(f"Server of Slurm job {child.job_id} listens on 127.0.0.1:{port}")
            assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
            job_id = child.job_id
        finally:
            await child.stop()
        assert slurm.wait_job(job_id, timeout=30) in ("CANCELLED", "COMPLETED")
        assert slurm.run("squeue", "-h", "-u", "alice").stdout.strip() == ""

    asyncio.run(run())


def test_pending_progress_shows_state_and_reason(slurm_env, hub_api, serve_cmd, run_dir):
    slurm = slurm_env
    # A job of bob's holds every GPU, so alice's GPU job has to wait for resources.
    blocker = slurm.run("sbatch", "--parsable", f"--gres=gpu:{slurm.gpu_count}", "--mem=50M",
                        "--output=/dev/null", "--wrap", "sleep 300", user="bob").stdout.strip()

    async def run():
        child = make_child(hub_api, res(gpus=1), SpawnTarget("alice"), backend(slurm), serve_cmd)
        events: list = []
        progress = asyncio.ensure_future(collect_progress(child, events))
        start = asyncio.ensure_future(child.start())
        try:
            for _ in range(100):
                if any("PENDING" in e["message"] for e in events):
                    break
                await asyncio.sleep(0.2)
            pending = [e["message"] for e in events if "PENDING" in e["message"]]
            want = r"Slurm job \d+ is PENDING \(reason: (Resources|Priority)\)"
            assert pending and re.fullmatch(want, pending[0]), events
            assert await child.poll() is None  # a waiting job is not a stopped server
            slurm.run("scancel", blocker)
            ip, port = await asyncio.wait_for(start, 90)
            assert await wait_up(f"http://{ip}:{port}/") == "up alice 1"
            await asyncio.wait_for(progress, 5)
        finally:
            start.cancel()
            await child.stop()

    try:
        asyncio.run(run())
    finally:
        slurm.run("scancel", blocker, check=False)


def test_job_that_dies_before_reporting_a_port_fails_the_start_at_once(slurm_env, hub_api, serve_cmd):
    slurm = slurm_env

    async def run():
        # The wrapper exits at once: the job runs, then ends without ever reporting a port.
        child = make_child(hub_api, res(), SpawnTarget("alice"),
                           backend(slurm, batchspawner_singleuser="/bin/false"), serve_cmd)
        ended = r"Slurm job \d+ ended (before it started|before its server reported a port)"
        with pytest.raises(RuntimeError, match=ended):
            await asyncio.wait_for(child.start(), 60)
        assert child.job_id == ""
        await child.stop()  # what the hub does after a failed start: nothing left to cancel

    asyncio.run(run())


def test_cancelled_job_is_seen_at_the_next_poll(slurm_env, hub_api, serve_cmd):
    slurm = slurm_env

    async def run():
        child = make_child(hub_api, res(), SpawnTarget("alice", "cancelme"), backend(slurm), serve_cmd)
        ip, port = await asyncio.wait_for(child.start(), 90)
        await wait_up(f"http://{ip}:{port}/")
        job_id = child.job_id
        slurm.run("scancel", job_id)
        for _ in range(50):
            status = await child.poll()
            if status is not None:
                break
            await asyncio.sleep(0.2)
        assert status == f"Slurm job {job_id} was cancelled (scancel)", status
        assert child.job_id == "" and child.get_state() == {}

    asyncio.run(run())


def test_failing_slurm_command_is_unknown_not_gone(slurm_env, hub_api, serve_cmd):
    slurm = slurm_env

    async def run():
        child = make_child(hub_api, res(), SpawnTarget("alice"), backend(slurm), serve_cmd)
        ip, port = await asyncio.wait_for(child.start(), 90)
        job_id = child.job_id
        try:
            child.exec_prefix = "false"  # e.g. sudo refusing, or the controller unreachable
            assert await child.poll() is None
            assert child.job_id == job_id
            child.exec_prefix = "runuser -u alice --"
            assert await child.poll() is None
        finally:
            child.exec_prefix = "runuser -u alice --"
            await child.stop()

    asyncio.run(run())


def test_state_survives_a_hub_restart(slurm_env, hub_api, serve_cmd):
    slurm = slurm_env

    async def run():
        target = SpawnTarget("alice")
        child = make_child(hub_api, res(), target, backend(slurm), serve_cmd)
        ip, port = await asyncio.wait_for(child.start(), 90)
        try:
            state = child.get_state()
            assert state["job_id"] == child.job_id and (state["ip"], state["port"]) == (ip, port)
            # A new hub process: a fresh child with the stored state finds the server again.
            again = make_child(hub_api, res(), target, backend(slurm), serve_cmd)
            again.load_state(state)
            again.server = SimpleNamespace(base_url="/user/alice/")
            assert await again.poll() is None
            assert await again.get_url() == f"http://127.0.0.1:{port}/user/alice/"
        finally:
            await child.stop()

    asyncio.run(run())


def test_port_reports_other_than_one_int_from_the_own_token_are_refused(slurm_env, hub_api, serve_cmd):
    """The job runs user code with the server's token: it may report its port, nothing else."""
    for body in (b'{"port": "8888"}', b'{"port": 8888, "exec_prefix": "id"}', b'{"port": 0}',
                 b'{"port": 70000}', b'{"port": true}', b'{"port": 8.5}', b"[8888]", b"port=8888", b""):
        with pytest.raises(ValueError):
            slurm_port.parse_port(body)
    assert slurm_port.parse_port(b'{"port": 8888}') == 8888
    child = make_child(hub_api, res(), SpawnTarget("alice"), backend(slurm_env), serve_cmd)
    with pytest.raises(ValueError, match="not waiting for a port"):
        child.accept_port(8888)  # no job yet


def test_port_handler_replaces_batchspawners():
    import batchspawner.api
    from jupyterhub import apihandlers

    routes = [h for h in apihandlers.default_handlers if h[0] == slurm_port.ROUTE]
    assert routes == [(slurm_port.ROUTE, slurm_port.SlurmPortHandler)]
    assert batchspawner.api.BatchSpawnerAPIHandler not in [h[1] for h in apihandlers.default_handlers]


@pytest.fixture(autouse=True)
def _no_jobs_left(request):
    yield
    if "slurm_env" in request.fixturenames:
        slurm = request.getfixturevalue("slurm_env")
        deadline = time.monotonic() + 20  # a cancelled job is COMPLETING for a moment
        while (left := slurm.run("squeue", "-h", "-u", "alice", "-o", "%i %T").stdout.strip()) \
                and time.monotonic() < deadline:
            time.sleep(0.3)
        assert left == "", f"jobs left behind: {left}"


# --- through the real hub: CloudSpawner drives SlurmChild ----------------------------------------

GPU_PROFILE = "physics-slurm-gpu"


@pytest.fixture(scope="module")
def slurm_hub(idp, seaweedfs, slurm_env, run_dir, user_fuse):
    from tests.testbed.cloudhub import CloudHub

    slurm = slurm_env
    root = run_dir / "s3-slurm"
    root.mkdir()
    root.chmod(0o1777)  # like /tmp: each user's job creates their own mount folder
    mounts = [{"bucket": "{username}", "path": f"{root}/{{username}}"},
              {"bucket": "scratch", "path": f"{root}/scratch", "read_only": True}]
    extra = {
        "backends": {"slurm": {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --",
                               "server_ip": "127.0.0.1", "gpu_models": [slurm.gpu_type]}},
        "groups": {"physics": {"max_servers": 2, "max_cpu": 2, "max_memory": "2G", "max_gpus": 1},
                   "cms": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0},
                   "admins": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0}},
        "profiles": [{
            "name": GPU_PROFILE, "display_name": "Slurm job with a GPU", "backend": "slurm",
            "groups": ["physics"], "mounts": mounts,
            "choices": {"image": {"options": ["default"]}, "cpu": {"options": [1, 2], "default": 1},
                        "memory": {"options": ["512M", "1G"], "default": "512M"},
                        "gpus": {"options": [0, 1], "default": 1},
                        "gpu_model": {"options": [slurm.gpu_type]},
                        "time_limit": {"options": ["00:10:00", "00:20:00"], "default": "00:10:00"}},
        }],
        "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                    "role_arn": seaweedfs.role_arn, "region": seaweedfs.region,
                    "mount_roots": [str(root)]},
    }
    h = CloudHub(idp, run_dir / "hub-slurm", extra=extra,
                 hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\nc.SlurmChild.poll_interval = 3\n")
    h.start()
    h.login("alice")
    h.root = root
    yield h
    h.stop()


def _server_state(hub, user="alice", server=""):
    return hub.user(user)["servers"][server]["state"]


def test_alice_slurm_server_through_the_hub(slurm_hub, slurm_env, seaweedfs):
    from tests.testbed.procs import mounts_under

    hub, slurm = slurm_hub, slurm_env
    seaweedfs.admin_s3().put_object(Bucket="scratch", Key="shared.txt", Body=b"for everyone\n")
    r = hub.spawn("alice", options={"profile": GPU_PROFILE, "cpu": 2, "memory": "1G", "gpus": 1,
                                    "gpu_model": slurm.gpu_type, "time_limit": "00:20:00"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    job_id = _server_state(hub)["child"]["job_id"]

    job = scontrol(slurm, job_id)
    assert job["UserId"].startswith("alice(") and job["JobName"] == "jhub-alice"
    assert (job["NumCPUs"], job["MinMemoryNode"], job["TimeLimit"]) == ("2", "1G", "00:20:00")
    assert job["TresPerNode"] == f"gres:gpu:{slurm.gpu_type}:1"
    assert job["Partition"] == slurm.partition

    # Through the proxy and the server's contents API, with the server's own token (read from
    # the job's process as root), as the person's browser session would be allowed.
    import requests

    from tests.testbed.hub import server_environ

    env = server_environ(hub, "alice")
    assert env["SLURM_JOB_ID"] == job_id and env["SLURM_GPUS_ON_NODE"] == "1"
    base = f"{hub.url}/user/alice/api/contents"
    headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    # The hub's port endpoint is ours: the job's own token may report one port, and only once.
    port_url = f"{hub.url}/hub/api/batchspawner"
    for body, code in (({"port": 1234, "exec_prefix": "id"}, 400), ({"port": "1234"}, 400), ({"port": 1234}, 400)):
        r = requests.post(port_url, json=body, headers=headers, timeout=30)
        assert r.status_code == code, (body, r.status_code, r.text)
    r = requests.post(port_url, json={"port": 1234}, headers={"Authorization": f"token {hub.api_token}"}, timeout=30)
    assert r.status_code == 403, r.text

    r = requests.put(f"{base}/alice/from-slurm.txt", headers=headers, timeout=30,
                     json={"type": "file", "format": "text", "content": "hello from a job\n"})
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{base}/scratch/shared.txt", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "for everyone\n", r.text
    body = seaweedfs.wait_object("alice", "from-slurm.txt")
    assert body == b"hello from a job\n"

    hub.stop_server("alice")
    assert slurm.wait_job(job_id, timeout=30) in ("CANCELLED", "COMPLETED")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and mounts_under(hub.root):
        time.sleep(0.2)
    assert mounts_under(hub.root) == []
    assert _job_processes(slurm) == []


POLL = 3  # c.SlurmChild.poll_interval in slurm_hub
SLACK = 3  # the hub's poll jitter (up to 10 %), squeue's time, its cleanup and our 0.1 s look


def test_job_cancelled_outside_the_hub_shows_stopped_within_a_poll(slurm_hub, slurm_env, reliability):
    hub, slurm = slurm_hub, slurm_env
    r = hub.spawn("alice", options={"profile": GPU_PROFILE, "gpus": 0})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    job_id = _server_state(hub)["child"]["job_id"]
    assert "TresPerNode" not in scontrol(slurm, job_id) or not scontrol(slurm, job_id)["TresPerNode"]
    t0 = time.monotonic()
    slurm.run("scancel", job_id)  # as an admin would, outside the hub
    took = seconds_until_stopped(hub, "alice", since=t0)
    assert took <= POLL + SLACK, took
    # Why, where the admin (API) and the user (the next spawn page) look.
    reason = last_stop_reason(hub, "alice")
    assert reason == f"Slurm job {job_id} was cancelled (scancel)", reason
    assert reason in spawn_page_notice(hub, "alice")
    assert _job_processes(slurm) == []
    reliability.record("fault.slurm-scancel", f"hub showed it stopped {took:.1f} s after scancel "
                       f"(poll interval {POLL} s); reason shown: {reason}")


def _job_processes(slurm, user="alice", timeout=15):
    """The user's processes still running in this cluster's jobs (they carry its SLURM_CONF)."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in slurm._our_leftover_pids():
            try:
                if psutil.Process(pid).username() == user:
                    left.append(pid)
            except psutil.Error:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def test_waiting_job_shows_state_and_reason_on_the_hub_progress(slurm_hub, slurm_env):
    import json

    import requests

    hub, slurm = slurm_hub, slurm_env
    blocker = slurm.run("sbatch", "--parsable", f"--gres=gpu:{slurm.gpu_count}", "--mem=50M",
                        "--output=/dev/null", "--wrap", "sleep 300", user="bob").stdout.strip()
    try:
        r = hub.spawn("alice", options={"profile": GPU_PROFILE, "gpus": 1})
        assert r.status_code in (201, 202), r.text
        messages = []
        with requests.get(f"{hub.url}/hub/api/users/alice/server/progress", stream=True, timeout=60,
                          headers={"Authorization": f"token {hub.api_token}"}) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if not line.startswith("data:"):
                    continue
                messages.append(json.loads(line[5:])["message"])
                if "PENDING" in messages[-1]:
                    break
        assert re.search(r"Slurm job \d+ is PENDING \(reason: (Resources|Priority)\)", messages[-1]), messages
        assert hub.servers("alice")[""]["pending"] == "spawn"
        slurm.run("scancel", blocker)
        hub.wait_ready("alice", timeout=120)
    finally:
        slurm.run("scancel", blocker, check=False)
    hub.stop_server("alice")
    assert _job_processes(slurm) == []


def test_running_job_is_found_again_after_a_hub_restart(slurm_hub, slurm_env, reliability):
    hub, slurm = slurm_hub, slurm_env
    r = hub.spawn("alice", options={"profile": GPU_PROFILE, "gpus": 0, "cpu": 2})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    job_id = _server_state(hub)["child"]["job_id"]

    hub.stop(keep_servers=True)
    assert slurm.job_state(job_id) == "RUNNING"
    hub.start()
    server = hub.wait_ready("alice", timeout=60)
    # Found again: the same job.
    assert server["state"]["child"]["job_id"] == job_id and slurm.job_state(job_id) == "RUNNING"
    # Reachable through the proxy, as alice with a token of hers.
    r = server_api(hub, "alice", user_token(hub, "alice"))
    assert r.status_code == 200 and "started" in r.json(), r.text
    # Counted: its 2 CPUs came back from the state; one more CPU is over alice's 2.
    r = hub.spawn("alice", "more", {"profile": GPU_PROFILE, "gpus": 0, "cpu": 1})
    assert r.status_code == 400 and "max_cpu" in r.json()["message"], r.text
    assert "more" not in hub.servers("alice")
    # Stoppable.
    t0 = time.monotonic()
    hub.stop_server("alice")
    stopped = time.monotonic() - t0
    assert slurm.wait_job(job_id, timeout=30) in ("CANCELLED", "COMPLETED")
    assert _job_processes(slurm) == []
    reliability.record("fault.hub-restart.slurm", f"found job {job_id} again, /api/status 200 via proxy, "
                       f"2nd spawn refused (max_cpu), stopped in {stopped:.1f} s")


def test_user_without_a_local_account_gets_a_clear_error(slurm_env, hub_api, serve_cmd):
    async def run():
        child = make_child(hub_api, res(), SpawnTarget("nosuchuser"), backend(slurm_env), serve_cmd)
        with pytest.raises(RuntimeError, match="nosuchuser has no account on the hub's machine"):
            await child.start()
        assert child.job_id == ""

    asyncio.run(run())


def test_server_that_dies_inside_its_job_ends_the_job_and_shows_stopped(slurm_hub, slurm_env):
    """set -euo pipefail and srun: the job ends with the server, so the hub's poll sees it."""
    import signal

    from tests.testbed.cloudhub import singleuser_processes

    hub, slurm = slurm_hub, slurm_env
    r = hub.spawn("alice", options={"profile": GPU_PROFILE, "gpus": 0})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    job_id = _server_state(hub)["child"]["job_id"]
    # The notebook server itself, not its wrappers (batchspawner-singleuser running sts-wire).
    (server,) = [p for p in singleuser_processes(hub, "alice")
                 if not any("sts-wire" in a or "batchspawner" in a for a in p.cmdline())]
    server.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    while "" in hub.servers("alice") and time.monotonic() - t0 < 30:
        time.sleep(0.3)
    assert "" not in hub.servers("alice"), "the hub still shows a server that died"
    assert time.monotonic() - t0 < 3 + 5
    assert slurm.wait_job(job_id, timeout=30) in ("FAILED", "COMPLETED", "CANCELLED")
    assert last_stop_reason(hub, "alice") == f"Slurm job {job_id} failed (Slurm's reason: NonZeroExitCode)"
    assert _job_processes(slurm) == []


def test_job_slurm_refuses_is_a_clear_error_and_nothing_is_queued(slurm_env, hub_api, serve_cmd):
    async def run():
        child = make_child(hub_api, res(cpu=4096), SpawnTarget("alice"), backend(slurm_env), serve_cmd)
        with pytest.raises(RuntimeError, match="Batch job submission failed"):
            await child.start()
        assert child.job_id == ""
        assert slurm_env.run("squeue", "-h", "-u", "alice").stdout.strip() == ""

    asyncio.run(run())


def test_queued_job_at_a_hub_restart_ends_itself_not_leaked(slurm_hub, slurm_env):
    hub, slurm = slurm_hub, slurm_env
    blocker = slurm.run("sbatch", "--parsable", f"--gres=gpu:{slurm.gpu_count}", "--mem=50M",
                        "--output=/dev/null", "--wrap", "sleep 300", user="bob").stdout.strip()
    try:
        r = hub.spawn("alice", options={"profile": GPU_PROFILE, "gpus": 1})
        assert r.status_code in (201, 202), r.text
        deadline = time.monotonic() + 30
        while not (jobs := slurm.run("squeue", "-h", "-u", "alice", "-o", "%i %T").stdout.split()) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert jobs[1] == "PENDING", jobs
        hub.stop(keep_servers=True)
        hub.start()
        deadline = time.monotonic() + 60
        while "" in hub.servers("alice") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "" not in hub.servers("alice")
        # The restarted hub cannot take this start's port report: once the job runs, it ends itself
        # instead of serving nobody until its time limit.
        slurm.run("scancel", blocker)
        assert slurm.wait_job(jobs[0], timeout=60) in ("FAILED", "CANCELLED", "COMPLETED")
        assert _job_processes(slurm) == []
    finally:
        slurm.run("scancel", blocker, check=False)
