"""Spawn-to-ready benchmark, Docker and Slurm backends: CloudSpawner vs the plain child spawner
(DockerChild / SlurmChild configured directly with the same settings, which the builders make),
same image, resources and command, no mounts. Alternating order in each round. JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/spawn_bench_backends.py [--rounds 5] [--backends docker slurm]

Spawn-to-ready: from the REST API's POST until the hub reports the server ready (polled every
50 ms), then the server is stopped and waited for. Target (issue 8): CloudSpawner <= 1.1x the
plain child spawner. Needs root and the testbed (a private dockerd, a one-node Slurm); everything
it starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jhub_cloud.config.units import parse_memory  # noqa: E402
from jhub_cloud.policy.types import Resources  # noqa: E402
from jhub_cloud.spawner.builders import docker as docker_builder  # noqa: E402
from jhub_cloud.spawner.builders import slurm as slurm_builder  # noqa: E402
from jhub_cloud.spawner.target import SpawnTarget  # noqa: E402
from tests.testbed.cloudhub import CloudHub  # noqa: E402
from tests.testbed.docker import Dockerd  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.paths import REPO as TB_REPO  # noqa: E402
from tests.testbed.paths import VENV, VENV_BIN  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.procs import stop_services  # noqa: E402
from tests.testbed.slurm import Slurm  # noqa: E402

CPU, MEMORY = 1, "1G"
GROUPS = {g: {"max_servers": 1, "max_cpu": 2, "max_memory": "2G", "max_gpus": 0}
          for g in ("physics", "cms", "admins")}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def start_seconds(hub: CloudHub, offset: int) -> tuple[float | None, int]:
    """From the hub's log, written since `offset`: the spawner's part of the last spawn, from
    "Initiating spawn" until the hub starts waiting for the server to answer (the server's own
    start-up, the noisy part on a busy machine, is left out). Returns it and the new offset."""
    text = hub.log.read_text(errors="replace")
    begin = end = None
    for line in text[offset:].splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        if "Initiating spawn for alice" in line:
            begin = datetime.fromisoformat(m.group(1))
        elif begin and end is None and "Waiting" in line and "for server at" in line:
            end = datetime.fromisoformat(m.group(1))
    took = (end - begin).total_seconds() if begin and end else None
    return took, len(text)


def profile(backend: str, image: str) -> dict:
    return {"name": f"bench-{backend}", "display_name": backend, "backend": backend, "groups": ["physics"],
            "choices": {"image": {"options": [image]}, "cpu": {"options": [CPU]},
                        "memory": {"options": [MEMORY]}}}


def plain_config(class_name: str, settings: dict) -> str:
    """jupyterhub_config.py lines: the child class as the hub's spawner, with the same settings."""
    module = {"DockerChild": "docker", "SlurmChild": "slurm"}[class_name]
    lines = [f"from jhub_cloud.spawner.backends.{module} import {class_name}",
             f"c.JupyterHub.spawner_class = {class_name}"]
    lines += [f"c.{class_name}.{k} = {v!r}" for k, v in settings.items() if k != "user_options"]
    return "\n".join(lines) + "\n"


def hubs_for(backend: str, idp: IdP, run: Path, cfg: dict, image: str, cmd: list[str]):
    resources = Resources(backend=backend, image=image, cpu=CPU, memory_bytes=parse_memory(MEMORY))
    builder = docker_builder if backend == "docker" else slurm_builder
    settings = builder.child_settings(resources, SpawnTarget("alice"), cfg, cmd, {})
    extra = {"backends": {backend: cfg}, "groups": GROUPS, "profiles": [profile(backend, image)]}
    cls = "DockerChild" if backend == "docker" else "SlurmChild"
    cloud = CloudHub(idp, run / f"hub-{backend}-cloud", extra=extra)
    plain = CloudHub(idp, run / f"hub-{backend}-plain", extra=extra, hub_config=plain_config(cls, settings))
    return cloud, plain


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", nargs="+", default=["docker", "slurm"], choices=["docker", "slurm"])
    ap.add_argument("--logs", type=Path, help="copy the hubs' logs into this folder at the end")
    ap.add_argument("--docker-data-root", type=Path,
                    help="dockerd's data folder (default: the test suite's; a test session's dockerd holds "
                         "that one, so a benchmark run inside a test session needs another)")
    args = ap.parse_args()
    root = Path("/var/tmp/jhub-cloud-test")
    root.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-backends-", dir=root))
    run.chmod(0o755)
    started = []
    try:
        idp = IdP(make_pki(run / "pki"), run / "idp").start()
        started.append(idp)
        pairs = {}
        if "docker" in args.backends:
            dockerd = Dockerd(run / "docker", **({"data_root": args.docker_data_root} if args.docker_data_root else {}))
            dockerd.start(say=lambda m: print(m, file=sys.stderr))
            started.append(dockerd)
            os.environ.update(dockerd.env)
            image = dockerd.build_lab_image(say=lambda m: print(m, file=sys.stderr))
            cfg = {"network": "host", "host_ip": "127.0.0.1", "pull_policy": "never", "home_volume": None,
                   "binds": [{"source": str(VENV), "target": str(VENV)},
                             {"source": str(TB_REPO), "target": str(TB_REPO)}]}
            pairs["docker"] = hubs_for("docker", idp, run, cfg, image, ["jupyterhub-singleuser"])
        if "slurm" in args.backends:
            slurm = Slurm(run / "slurm").start()
            started.append(slurm)
            os.environ.update(slurm.env)
            cfg = {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --", "server_ip": "127.0.0.1"}
            pairs["slurm"] = hubs_for("slurm", idp, run, cfg, "default", [str(VENV_BIN / "jupyterhub-singleuser")])
        for backend, (cloud, plain) in pairs.items():
            for hub in (cloud, plain):
                hub.start()
                started.append(hub)
                hub.login("alice")
            options = {"profile": f"bench-{backend}"}
            for hub, opts in ((cloud, options), (plain, {})):  # warm-up: imports, image layers, caches
                hub.spawn_to_ready("alice", opts)
                hub.stop_server("alice")
            variants = {"cloud": (cloud, options), "plain": (plain, {})}
            times: dict[str, list[float]] = {k: [] for k in variants}
            starts: dict[str, list[float]] = {k: [] for k in variants}
            offsets = {k: len(hub.log.read_text(errors="replace")) for k, (hub, _) in variants.items()}
            for i in range(args.rounds):
                for name in list(variants) if i % 2 == 0 else list(variants)[::-1]:
                    hub, opts = variants[name]
                    took = hub.spawn_to_ready("alice", opts)
                    hub.stop_server("alice")
                    start, offsets[name] = start_seconds(hub, offsets[name])
                    times[name].append(took)
                    if start is not None:
                        starts[name].append(start)
                    emit(bench="spawn_to_ready", backend=backend, variant=name, round=i, seconds=round(took, 3),
                         spawner_start_seconds=start)
            med = {k: statistics.median(v) for k, v in times.items()}
            med_start = {k: round(statistics.median(v), 3) for k, v in starts.items() if v}
            emit(bench="spawn_to_ready_summary", backend=backend, rounds=args.rounds,
                 median_seconds={k: round(v, 3) for k, v in med.items()},
                 cloud_over_plain=round(med["cloud"] / med["plain"], 3), target_cloud_over_plain=1.1,
                 median_spawner_start_seconds=med_start, cpus=os.cpu_count())
    finally:
        stop_services(started)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in run.glob("hub-*/jupyterhub.log"):
                shutil.copy(log, args.logs / f"{log.parent.name}.log")
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
