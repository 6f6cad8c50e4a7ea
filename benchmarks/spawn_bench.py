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
from tests.testbed.procs import unmount_all_under  # noqa: E402
from tests.testbed.seaweedfs import SeaweedFS  # noqa: E402

PLAIN = "c.JupyterHub.spawner_class = 'jupyterhub.spawner.LocalProcessSpawner'\n"
OPTIONS = {"profile": "physics-cpu", "cpu": 1, "memory": "1G"}
MOUNTED = {"profile": "cms-cpu", "cpu": 1, "memory": "1G"}


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def spawn_to_ready(hub: CloudHub, options: dict | None) -> float:
    t0 = time.perf_counter()
    r = hub.spawn("alice", options=options)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn refused: {r.status_code} {r.text}")
    while not hub.servers("alice").get("", {}).get("ready"):
        if time.perf_counter() - t0 > 120:
            raise RuntimeError("not ready after 120 s:\n" + hub.log_tail())
        time.sleep(0.05)
    took = time.perf_counter() - t0
    hub.stop_server("alice")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
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
        for hub in (cloud, plain):
            hub.start()
            started.append(hub)
            hub.login("alice")
        spawn_to_ready(cloud, OPTIONS)  # warm-up: first imports, caches
        spawn_to_ready(plain, {})
        variants = {"cloud": (cloud, OPTIONS), "plain": (plain, {}), "cloud+mounts": (cloud, MOUNTED)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for i in range(args.rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                hub, options = variants[name]
                took = spawn_to_ready(hub, options)
                times[name].append(took)
                emit(bench="spawn_to_ready", backend="local", variant=name, round=i, seconds=round(took, 3))
        med = {k: statistics.median(v) for k, v in times.items()}
        emit(bench="spawn_to_ready_summary", backend="local", rounds=args.rounds,
             median_seconds={k: round(v, 3) for k, v in med.items()},
             cloud_over_plain=round(med["cloud"] / med["plain"], 3), target_cloud_over_plain=1.1,
             mounts_extra_seconds=round(med["cloud+mounts"] - med["cloud"], 3), target_mounts_extra_seconds=1.0,
             cpus=os.cpu_count())
    finally:
        for svc in reversed(started):
            try:
                svc.stop()
            except Exception as e:  # stop the others all the same
                print(f"stopping {svc.__class__.__name__}: {e}", file=sys.stderr)
        for c in ("cpu", "memory"):
            for hub_dir in ("hub-cloud", "hub-plain"):
                d = Path("/sys/fs/cgroup") / c / f"jhub-cloud-test/{run.name}-{hub_dir}"
                if d.exists():
                    d.rmdir()
        unmount_all_under(run)
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
