"""Spawn-to-ready benchmark, local backend: CloudSpawner vs the plain LocalProcessSpawner it
wraps (same command, same user), and CloudSpawner with storage mounts (sts-wire, SeaweedFS)
vs without. Alternating order in each round (A/B, then B/A). Prints JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/spawn_bench.py [--rounds 5]

Spawn-to-ready: from the REST API's POST of the server until the hub reports it ready (polled
every 50 ms through the API), as a user of the hub would wait. Each server is stopped (and
waited for) before the next. Targets (issue 8): CloudSpawner <= 1.1x the plain spawner;
mounts add at most 1 s. Needs root and the testbed (tests/testbed); everything it starts is
stopped by PID at the end.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testbed.cloudhub import CloudHub, spawner_profiles  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.procs import stop_services, unmount_all_under  # noqa: E402
from tests.testbed.seaweedfs import SeaweedFS  # noqa: E402

PLAIN = "c.JupyterHub.spawner_class = 'jupyterhub.spawner.LocalProcessSpawner'\n"
OPTIONS = {"profile": "physics-cpu", "cpu": 1, "memory": "1G"}
MANY = {"profile": "cms-cpu", "cpu": 1, "memory": "1G"}
MOUNTED = {"profile": "cms-cpu", "cpu": 1, "memory": "1G"}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def latency_while_spawning(hub: CloudHub, servers: int) -> None:
    """Hub API latency (GET /hub/api/users/alice) alone, then while `servers` servers spawn at once."""
    import concurrent.futures as cf
    import threading

    def probe(stop: threading.Event, out: list[float]) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            hub.api("GET", "/users/alice").raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)

    def measure(work) -> list[float]:
        stop, out = threading.Event(), []
        t = threading.Thread(target=probe, args=(stop, out))
        t.start()
        try:
            work()
        finally:
            stop.set()
            t.join()
        return out

    def spawn_all() -> None:
        names = [f"s{i}" for i in range(servers)]
        with cf.ThreadPoolExecutor(servers) as pool:
            answers = list(pool.map(lambda n: hub.spawn("alice", n, MANY), names))
        bad = [a.text for a in answers if a.status_code not in (201, 202)]
        if bad:
            raise RuntimeError(f"spawns refused: {bad[:2]}")
        for n in names:
            hub.wait_ready("alice", n, timeout=300)

    for label, work in (("idle", lambda: time.sleep(5)), (f"{servers}_spawning", spawn_all)):
        lat = sorted(measure(work))
        emit(bench="hub_api_latency", backend="local", during=label, requests=len(lat),
             p50_ms=round(1000 * lat[len(lat) // 2], 1),
             p99_ms=round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1))
    for i in range(servers):
        hub.stop_server("alice", f"s{i}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--logs", type=Path, help="copy the hubs' logs into this folder at the end")
    ap.add_argument("--parallel", type=int, default=10, help="servers spawned at once for the latency figures")
    args = ap.parse_args()
    root = Path("/var/tmp/jhub-cloud-test")
    root.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-spawn-", dir=root))
    run.chmod(0o755)
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (udev's own mode for it)
    started = []
    try:
        pki = make_pki(run / "pki")
        idp = IdP(pki, run / "idp").start()
        started.append(idp)
        s3 = SeaweedFS(idp, run / "seaweedfs").start()
        started.append(s3)
        mounts_root = run / "s3"
        mounts_root.mkdir()
        mounts_root.chmod(0o1777)
        profiles = spawner_profiles()
        # Only the cms profile mounts (alice's bucket and scratch): same hub, with and without.
        profiles["profiles"][1]["mounts"] = [
            {"bucket": "{username}", "path": f"{mounts_root}/{{username}}"},
            {"bucket": "scratch", "path": f"{mounts_root}/scratch", "read_only": True}]
        storage = {"s3_endpoint": s3.endpoint, "provider": "SeaweedFS", "role_arn": s3.role_arn,
                   "region": s3.region, "mount_roots": [str(mounts_root)]}
        cloud = CloudHub(idp, run / "hub-cloud", extra={**profiles, "storage": storage})
        plain = CloudHub(idp, run / "hub-plain", hub_config=PLAIN)
        # Room for --parallel servers of 1 CPU and 1G for alice (cms) on the latency hub (and at
        # least the cms profile's largest choices, 4 CPUs and 8G, or the configuration is refused).
        roomy = spawner_profiles()
        roomy["groups"] = {"physics": {"max_servers": 1, "max_cpu": 2, "max_memory": "4G"},
                           "cms": {"max_servers": args.parallel, "max_cpu": max(args.parallel, 4),
                                   "max_memory": f"{max(args.parallel, 8)}G"},
                           "admins": {"max_servers": 1, "max_cpu": 1, "max_memory": "1G"}}
        # Ten JupyterLab servers starting at once on a small machine need more than 30 s to answer.
        many = CloudHub(idp, run / "hub-many", extra=roomy, hub_config="c.Spawner.http_timeout = 300\n")
        for hub in (cloud, plain, many):
            hub.start()
            started.append(hub)
            hub.login("alice")
        for hub, options in ((cloud, OPTIONS), (plain, {})):  # warm-up: first imports, caches
            hub.spawn_to_ready("alice", options, timeout=120)
            hub.stop_server("alice")
        variants = {"cloud": (cloud, OPTIONS), "plain": (plain, {}), "cloud+mounts": (cloud, MOUNTED)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for i in range(args.rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                hub, options = variants[name]
                took = hub.spawn_to_ready("alice", options, timeout=120)
                hub.stop_server("alice")
                times[name].append(took)
                emit(bench="spawn_to_ready", backend="local", variant=name, round=i, seconds=round(took, 3))
        latency_while_spawning(many, args.parallel)
        med = {k: statistics.median(v) for k, v in times.items()}
        emit(bench="spawn_to_ready_summary", backend="local", rounds=args.rounds,
             median_seconds={k: round(v, 3) for k, v in med.items()},
             cloud_over_plain=round(med["cloud"] / med["plain"], 3), target_cloud_over_plain=1.1,
             mounts_extra_seconds=round(med["cloud+mounts"] - med["cloud"], 3), target_mounts_extra_seconds=1.0,
             cpus=os.cpu_count())
    finally:
        stop_services(started)
        for c in ("cpu", "memory"):
            for hub_dir in ("hub-cloud", "hub-plain", "hub-many"):
                d = Path("/sys/fs/cgroup") / c / f"jhub-cloud-test/{run.name}-{hub_dir}"
                if d.exists():
                    d.rmdir()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in run.glob("hub-*/jupyterhub.log"):
                shutil.copy(log, args.logs / f"{log.parent.name}.log")
        unmount_all_under(run)
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
