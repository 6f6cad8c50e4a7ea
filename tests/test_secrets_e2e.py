"""No secret in clear after an end-to-end run, on each backend (tests/testbed/secrets.py).

alice logs in for real through the IdP, starts a server with her bucket and scratch mounted by
sts-wire, writes a file through the server, and stops it. While the server runs and after, the
scanner searches the hub's and the services' logs, `ps` snapshots, the command line and
environment of every process of the server, the hub's database, Slurm job scripts and their
output, `docker inspect` and the Kubernetes objects the hub sent, for her tokens, the hub's
client secret and crypt key, and the S3 keys sts-wire got; the files that hold secrets must be
0600 and belong to their user.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil
import pytest
import requests

from tests import test_backend_docker, test_backend_slurm, test_spawner_storage
from tests.test_backend_docker import _container_env, docker_host, lab_image  # noqa: F401 (fixtures)
from tests.test_backend_slurm import slurm_env  # noqa: F401 (fixture)
from tests.test_spawner_storage import fuse_for_users  # noqa: F401 (fixture)
from tests.testbed.cloudhub import CloudHub, user_processes
from tests.testbed.hub import server_environ
from tests.testbed.kubeapi import KubeApi
from tests.testbed.paths import VENV_BIN, free_port
from tests.testbed.procs import stop_pid
from tests.testbed.secrets import SecretScan, descendants, on_host


# The end-to-end hubs of the backend tests, each in a folder of this module's own: theirs have
# fixed names in the session's run folder, and a full run has all modules in one session.
@pytest.fixture(scope="module")
def own_dir(run_dir, request) -> Path:
    d = run_dir / request.module.__name__.rsplit(".", 1)[-1]
    d.mkdir(mode=0o755)
    d.chmod(0o755)  # the test users' servers and jobs enter it
    return d


@pytest.fixture(scope="module")
def local_hub(idp, seaweedfs, own_dir, fuse_for_users):  # noqa: F811
    """tests/test_spawner_storage.py's hub: local servers with the bucket and scratch mounted."""
    yield from test_spawner_storage.hub.__wrapped__(idp, seaweedfs, own_dir, fuse_for_users)


@pytest.fixture(scope="module")
def docker_hub(idp, seaweedfs, docker_host, lab_image, own_dir, user_fuse):  # noqa: F811
    """tests/test_backend_docker.py's hub: containers of the lab image with the same mounts."""
    yield from test_backend_docker.docker_hub.__wrapped__(idp, seaweedfs, docker_host, lab_image, own_dir, user_fuse)


@pytest.fixture(scope="module")
def slurm_hub(idp, seaweedfs, slurm_env, own_dir, user_fuse):  # noqa: F811
    """tests/test_backend_slurm.py's hub: Slurm jobs with the same mounts."""
    yield from test_backend_slurm.slurm_hub.__wrapped__(idp, seaweedfs, slurm_env, own_dir, user_fuse)


def _write_through_server(h, token: str, path: str, text: str) -> None:
    r = requests.put(f"{h.url}/user/alice/api/contents/{path}", timeout=30,
                     headers={"Authorization": f"token {token}"},
                     json={"type": "file", "format": "text", "content": text})
    assert r.status_code in (200, 201), r.text


def _sts_wire_pids(procs: list[psutil.Process]) -> list[int]:
    out = []
    for p in procs:
        try:
            if any(a.endswith("sts-wire") for a in p.cmdline()[:2]):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _environ(p: psutil.Process) -> dict:
    try:
        return p.environ()
    except psutil.Error:
        return {}


def _scan_hub_side(scan: SecretScan, h, services: list[Path]) -> None:
    """After the run: the hub's logs and database and its 0600 files; the logs of the services
    the run used (known secrets only there: they also served every other test of the session)."""
    db = h.dir / "data" / "jupyterhub.sqlite"
    states = scan.collect_db(db, h.crypt_key)  # every user's tokens, as the database holds them
    assert states.get("alice", {}).get("refresh_token"), "alice's tokens are not in the hub's database"
    scan.scan_logs(h.dir)
    for folder in services:
        scan.scan_logs(folder, jwts=False)
    scan.scan_db(db)  # ... encrypted: never in clear
    assert os.stat(db.parent).st_mode & 0o077 == 0, "the hub's data folder is open to others"
    scan.check_private(h.dir / "data" / "jupyterhub_cookie_secret", 0)
    scan.check_private(h.dir / "api_token", 0)


def _while_running(scan: SecretScan, h, procs: list[psutil.Process], label: str) -> list[Path]:
    """The secrets as they are now (tokens of this login, S3 keys), then the live places;
    returns sts-wire's runtime folders."""
    scan.collect_hub(h, ["alice"])
    # Any JWT is a leak in this server's processes; the user's other processes (of other tests
    # on this machine) are searched for this run's secrets only.
    ours = [p for p in procs if f":{h.hub_port}/" in _environ(p).get("JUPYTERHUB_API_URL", "")]
    wires = _sts_wire_pids(ours)
    assert wires, f"no sts-wire among the server's processes ({label})"
    assert sum(scan.collect_sts_keys(pid) for pid in wires) >= 1, "sts-wire's keys were not found"
    assert sum(scan.check_sts_wire_files(pid) for pid in wires) >= 1  # keys.json (and token)
    scan.scan_ps(label)
    scan.scan_processes(ours, label)
    scan.scan_processes([p for p in procs if p not in ours], label + ", other", jwts=False)
    return [b for pid in wires for b in scan.scan_sts_wire_folder(pid)]


def test_the_scanner_finds_each_kind_of_leak(tmp_path):
    """The scans above can fail: a secret in a log, in a database, in a process's environment or
    command line, any JWT, and a secret file open to others are each reported; the place's own
    token is not."""
    scan = SecretScan()
    scan.add("alice's refresh_token", "rt-" + "x" * 20)
    scan.add("S3 secret access key", "sk-" + "y" * 20)
    (tmp_path / "hub.log").write_text("refresh with rt-" + "x" * 20 + "\n")
    (tmp_path / "clean.log").write_text("nothing here\n")
    (tmp_path / "db.sqlite").write_bytes(b"\0\0sk-" + b"y" * 20 + b"\0")
    (tmp_path / "jwt.log").write_text("Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln\n")
    scan.scan_logs(tmp_path)
    scan.scan_db(tmp_path / "db.sqlite")
    own = "own-server-token-123"
    argv = [str(VENV_BIN / "python"), "-c", "import time; time.sleep(30)", "sk-" + "y" * 20]
    proc = subprocess.Popen(argv, env={"JUPYTERHUB_API_TOKEN": own, "LEAK": "rt-" + "x" * 20})
    try:
        scan.add("server token, if it were not the process's own", own)
        scan.scan_processes([psutil.Process(proc.pid)])
    finally:
        proc.kill()
        proc.wait()
    loose = tmp_path / "keys.json"
    loose.write_text("{}")
    loose.chmod(0o644)
    scan.check_private(loose, 0)
    places = sorted(leak.split(":")[0].rsplit("/", 1)[-1] for leak in scan.leaks)
    assert places == ["cmdline ", "db.sqlite", "environ ", "hub.log", "jwt.log", "keys.json"], scan.leaks
    assert not [leak for leak in scan.leaks if "server token" in leak]  # its own token is allowed


def test_local_run_leaves_no_secret_in_clear(local_hub, idp, seaweedfs, reliability):
    hub = local_hub
    # A real login through the IdP (the fixture logged alice in; again, for fresh tokens).
    session, r = hub.login("alice")
    assert r.status_code == 302, r.text[:300]
    scan = SecretScan()
    scan.collect_hub(hub, ["alice"])
    r = hub.spawn("alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("alice", timeout=120)
        env = server_environ(hub, "alice")
        scan.add("server's API token", env["JUPYTERHUB_API_TOKEN"])  # allowed in its own environment only
        _write_through_server(hub, env["JUPYTERHUB_API_TOKEN"], "alice/secret-scan-local.txt", "local\n")
        assert seaweedfs.wait_object("alice", "secret-scan-local.txt") == b"local\n"
        bases = _while_running(scan, hub, user_processes("alice"), "local server running")
        # What alice is shown: her pages, and her model through the API with her server's token.
        for page in ("/hub/home", "/hub/spawn", "/hub/token", "/hub/spawn-pending/alice"):
            r = session.get(hub.url + page, timeout=30)
            assert r.status_code == 200, (page, r.status_code)
            scan.scan_text(f"GET {page} as alice", r.text, "page or API answer")
        for path in ("/user", "/users/alice", "/users/alice/server/progress"):
            r = hub.api("GET", path, token=env["JUPYTERHUB_API_TOKEN"])
            scan.scan_text(f"GET /hub/api{path} as alice's server ({r.status_code})", r.text, "page or API answer")
    finally:
        hub.stop_server("alice")
    for base in bases:  # sts-wire's last logs, kept after the stop
        scan.scan_folder(on_host(base) / "last-logs", "sts-wire runtime file")
    scan.scan_ps("after stop")
    _scan_hub_side(scan, hub, [idp.dir, seaweedfs.dir])
    assert scan.leaks == [], scan.leaks
    assert {"OAuth client secret", "crypt key", "alice's refresh_token", "S3 session token"} <= \
        set(scan.secrets.values())
    reliability.record("secrets.local", scan.summary())


def test_docker_run_leaves_no_secret_in_clear(docker_hub, docker_host, idp, seaweedfs, reliability):  # noqa: F811
    h = docker_hub
    _, r = h.login("alice")
    assert r.status_code == 302, r.text[:300]
    scan = SecretScan()
    scan.collect_hub(h, ["alice"])
    r = h.spawn("alice", options={"profile": "physics-docker", "cpu": 0.5, "memory": "512M"})
    assert r.status_code in (201, 202), r.text + h.log_tail(60)
    try:
        h.wait_ready("alice", timeout=120)
        env = _container_env(docker_host, "jhub-alice")
        scan.add("server's API token", env["JUPYTERHUB_API_TOKEN"])  # allowed in its own environment only
        _write_through_server(h, env["JUPYTERHUB_API_TOKEN"], "alice/secret-scan-docker.txt", "docker\n")
        assert seaweedfs.wait_object("alice", "secret-scan-docker.txt") == b"docker\n"
        info = docker_host.client().api.inspect_container("jhub-alice")
        procs = descendants(info["State"]["Pid"])  # every process in the container
        _while_running(scan, h, procs, "docker server running")
        own = (env["JUPYTERHUB_API_TOKEN"],)
        scan.scan_text("docker inspect jhub-alice", json.dumps(info), "docker inspect", allowed=own)
        scan.scan_text("docker logs jhub-alice", docker_host.docker("logs", "jhub-alice").stdout
                       + docker_host.docker("logs", "jhub-alice").stderr, "log file")
    finally:
        h.stop_server("alice")
    scan.scan_ps("after stop")
    _scan_hub_side(scan, h, [idp.dir, seaweedfs.dir, docker_host.dir])
    assert scan.leaks == [], scan.leaks
    assert {"OAuth client secret", "crypt key", "alice's refresh_token", "S3 session token"} <= \
        set(scan.secrets.values())
    reliability.record("secrets.docker", scan.summary())


def test_slurm_run_leaves_no_secret_in_clear(slurm_hub, slurm_env, idp, seaweedfs, reliability):  # noqa: F811
    h, slurm = slurm_hub, slurm_env
    _, r = h.login("alice")
    assert r.status_code == 302, r.text[:300]
    scan = SecretScan()
    scan.collect_hub(h, ["alice"])
    r = h.spawn("alice", options={"profile": "physics-slurm-gpu", "gpus": 0})
    assert r.status_code in (201, 202), r.text + h.log_tail(60)
    job_id = None
    try:
        h.wait_ready("alice", timeout=120)
        job_id = h.user("alice")["servers"][""]["state"]["child"]["job_id"]
        env = server_environ(h, "alice")
        own = (env["JUPYTERHUB_API_TOKEN"],)
        scan.add("server's API token", env["JUPYTERHUB_API_TOKEN"])  # allowed in its own environment only
        _write_through_server(h, env["JUPYTERHUB_API_TOKEN"], "alice/secret-scan-slurm.txt", "slurm\n")
        assert seaweedfs.wait_object("alice", "secret-scan-slurm.txt") == b"slurm\n"
        bases = _while_running(scan, h, user_processes("alice"), "slurm job running")
        script = slurm.run("scontrol", "write", "batch_script", job_id, "-").stdout
        assert "#SBATCH" in script
        scan.scan_text(f"job script of {job_id}", script, "job script")
        # What slurmctld keeps of the job: its script and the environment it was submitted with.
        stored = list((slurm.dir / "state").glob(f"hash.*/job.{job_id}/*"))
        assert {f.name for f in stored} >= {"script", "environment"}, stored
        for f in stored:
            scan.scan_text(str(f), f.read_bytes(), "job script" if f.name == "script" else "job environment",
                           allowed=own)
            if f.name == "environment":  # it holds the server's token: slurmctld's alone
                scan.check_private(f, os.getuid())
    finally:
        h.stop_server("alice")
    assert job_id and slurm.wait_job(job_id, timeout=30) in ("CANCELLED", "COMPLETED")
    for base in bases:  # sts-wire's last logs, kept after the stop
        scan.scan_folder(on_host(base) / "last-logs", "sts-wire runtime file")
    output = Path(f"~alice/.jhub-cloud-slurm-{job_id}.log").expanduser()
    assert output.exists(), output
    scan.scan_file(output, "job output")
    scan.scan_ps("after stop")
    _scan_hub_side(scan, h, [idp.dir, seaweedfs.dir, slurm.dir / "log"])
    assert scan.leaks == [], scan.leaks
    assert {"OAuth client secret", "crypt key", "alice's refresh_token", "S3 session token"} <= \
        set(scan.secrets.values())
    reliability.record("secrets.slurm", scan.summary())


def test_kubernetes_objects_hold_no_secret_but_the_servers_own_token(idp, seaweedfs, run_dir, tmp_path, reliability):
    """A real hub with the Kubernetes backend and mounts, against the loopback API server: every
    object the hub sent (pod, PVC, ...) is searched; only the pod's own API token may be there."""
    api = KubeApi(namespaces=("jhub",)).start()
    port = free_port()
    servers: list[subprocess.Popen] = []

    def kubelet(pod: dict) -> None:  # run the pod's server here, with the pod's environment
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}
        env.update(PATH=os.environ["PATH"], HOME=str(tmp_path))
        servers.append(subprocess.Popen([str(VENV_BIN / "jupyterhub-singleuser"), "--allow-root",
                                         f"--ServerApp.root_dir={tmp_path}"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    api.on_running = kubelet
    extra = {
        "backends": {"kubernetes": {"namespace": "jhub", "home_size": "1Gi", "start_timeout": 60}},
        "groups": {g: {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0}
                   for g in ("physics", "cms", "admins")},
        "profiles": [{"name": "pod", "display_name": "Pod", "backend": "kubernetes", "groups": ["physics"],
                      "mounts": [{"bucket": "{username}", "path": "/s3/{username}"}],
                      "choices": {"image": {"options": ["jhub-cloud/lab:latest"]}, "cpu": {"options": [1]},
                                  "memory": {"options": ["1G"]}}}],
        "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                    "role_arn": seaweedfs.role_arn, "region": seaweedfs.region, "mount_roots": ["/s3"]},
    }
    os.environ["KUBECONFIG"] = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
    try:
        h = CloudHub(idp, run_dir / "hub-secrets-kube", extra=extra,
                       hub_config=f"c.KubernetesChild.port = {port}\n").start()
    finally:
        del os.environ["KUBECONFIG"]
    try:
        _, r = h.login("alice")
        assert r.status_code == 302, r.text[:300]
        assert h.spawn("alice", options={"profile": "pod"}).status_code in (201, 202)
        h.wait_ready("alice", timeout=120)
        scan = SecretScan()
        scan.collect_hub(h, ["alice"])
        h.stop_server("alice")
        (pod_post,) = api.requests_for("POST", "pods")
        env = {e["name"]: e.get("value") for e in pod_post["body"]["spec"]["containers"][0]["env"]}
        assert json.loads(env["STS_WIRE_SPEC"])["token"] == {"source": "hub"}
        own = (env["JUPYTERHUB_API_TOKEN"],)
        scan.add("server's API token", env["JUPYTERHUB_API_TOKEN"])  # allowed in the pod's env only
        sent = [q for q in api.requests if q.get("body")]
        for q in sent:
            scan.scan_text(f"{q['method']} {q['path']}", json.dumps(q["body"]), "Kubernetes object", allowed=own)
        assert len(sent) >= 2  # the PVC and the pod at least
        _scan_hub_side(scan, h, [])
    finally:
        h.stop()
        for p in servers:
            stop_pid(p.pid)
        api.stop()
    assert scan.leaks == [], scan.leaks
    reliability.record("secrets.kubernetes", scan.summary())
