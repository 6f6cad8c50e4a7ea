"""Slurm through the login node vs the local Slurm backend, in one run. Prints JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/slurm_ssh_bench.py [--rounds 5] [--mb 100]

Two hubs with CloudSpawner and the same Slurm profile: `local` submits with
`runuser -u alice -- sbatch` (the hub is a Slurm client), `ssh` submits through Debian's sshd
playing the login node (tests/testbed/sshd.py) with a fresh certificate per command and
reaches the server through its SSH tunnel (`tunnel: always`). Alternating order per round.
- spawn-to-ready: from the REST API's POST until the hub reports the server ready (polled every
  50 ms); target (issue 11): ssh <= 1.2x local (medians);
- download: a file of --mb MB from the server's `files/` through the hub's proxy, i.e. through
  the tunnel for `ssh` and directly for `local` (MB/s, medians).
Needs root and the testbed; everything it starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.cloudhub import CloudHub  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.procs import stop_services  # noqa: E402
from tests.testbed.slurm import Slurm  # noqa: E402
from tests.testbed.sshd import LoginNode  # noqa: E402

GROUPS = {g: {"max_servers": 1, "max_cpu": 2, "max_memory": "2G", "max_gpus": 0}
          for g in ("physics", "cms", "admins")}
PROFILE = {"name": "bench-slurm", "display_name": "slurm", "backend": "slurm", "groups": ["physics"],
           "choices": {"image": {"options": ["default"]}, "cpu": {"options": [1]}, "memory": {"options": ["1G"]}}}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def server_token(job_id: str) -> str:
    import psutil

    for p in psutil.process_iter(["username"]):
        if p.info["username"] == "alice":
            try:
                env = p.environ()
            except psutil.Error:
                continue
            if env.get("SLURM_JOB_ID") == job_id and env.get("JUPYTERHUB_API_TOKEN"):
                return env["JUPYTERHUB_API_TOKEN"]
    raise RuntimeError(f"no server process of job {job_id}")


def download_mb_s(hub: CloudHub, name: str, mb: int) -> float:
    job_id = hub.user("alice")["servers"][""]["state"]["child"]["job_id"]
    headers = {"Authorization": f"token {server_token(job_id)}"}
    t0 = time.perf_counter()
    got = 0
    with requests.get(f"{hub.url}/user/alice/files/{name}", headers=headers, stream=True, timeout=120) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            got += len(chunk)
    took = time.perf_counter() - t0
    if got != mb * 10**6:
        raise RuntimeError(f"downloaded {got} bytes, expected {mb * 10**6}")
    return mb / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    root = Path("/var/tmp/jhub-cloud-test")
    root.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-slurm-ssh-", dir=root))
    run.chmod(0o755)
    notebooks = run / "notebooks"
    notebooks.mkdir(mode=0o755)
    big = notebooks / "big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(args.mb * 10**6))
    big.chmod(0o644)
    started = []
    try:
        idp = IdP(make_pki(run / "pki"), run / "idp").start()
        started.append(idp)
        slurm = Slurm(run / "slurm").start()
        started.append(slurm)
        node = LoginNode(run / "login-node", slurm.conf_path).start()
        started.append(node)
        conf = f"c.Spawner.notebook_dir = {str(notebooks)!r}\n"
        local = CloudHub(idp, run / "hub-local", hub_config=conf)
        local.extra = {"backends": {"slurm": {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --",
                                              "server_ip": "127.0.0.1"}},
                       "groups": GROUPS, "profiles": [PROFILE]}
        ssh = CloudHub(idp, run / "hub-ssh", hub_config=conf)
        ssh.extra = {"backends": {"slurm": {"partition": slurm.partition, "server_ip": "127.0.0.1", "login_host": {
            "host": "127.0.0.1", "port": node.port, "host_key": node.host_key, "ca_key": {"file": str(node.ca_key)},
            "hub_connect_url": f"http://127.0.0.1:{ssh.hub_port}", "tunnel": "always", "gate": node.gate}}},
            "groups": GROUPS, "profiles": [PROFILE]}
        hubs = {"local": local, "ssh": ssh}
        ssh.start()  # before SLURM_CONF is set: this hub is no Slurm client
        started.append(ssh)
        os.environ.update(slurm.env)
        local.start()
        started.append(local)
        for hub in hubs.values():
            hub.login("alice")  # the user exists on the hub once logged in
        times: dict[str, list[float]] = {k: [] for k in hubs}
        speeds: dict[str, list[float]] = {k: [] for k in hubs}
        for i in range(args.rounds):
            order = list(hubs) if i % 2 == 0 else list(reversed(hubs))
            for name in order:
                hub = hubs[name]
                took = hub.spawn_to_ready("alice", {"profile": PROFILE["name"]})
                speed = download_mb_s(hub, big.name, args.mb)
                hub.stop_server("alice")
                times[name].append(took)
                speeds[name].append(speed)
                emit(round=i, path=name, spawn_to_ready_s=round(took, 3), download_mb_s=round(speed, 1))
        med = {k: statistics.median(v) for k, v in times.items()}
        mbs = {k: statistics.median(v) for k, v in speeds.items()}
        emit(summary="spawn_to_ready", local_s=round(med["local"], 3), ssh_s=round(med["ssh"], 3),
             ratio=round(med["ssh"] / med["local"], 3), target_ratio=1.2, rounds=args.rounds)
        emit(summary="download", mb=args.mb, direct_mb_s=round(mbs["local"], 1), tunnel_mb_s=round(mbs["ssh"], 1),
             ratio=round(mbs["ssh"] / mbs["local"], 3))
        return 0
    finally:
        stop_services(started)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
