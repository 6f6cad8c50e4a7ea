"""The spawn benchmarks (benchmarks/spawn_bench.py, spawn_bench_backends.py, slurm_ssh_bench.py)
still work: each runs one small round against its own real services and prints parseable figures
(the figures themselves are in the README, from full runs on a quiet machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> list[dict]:
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, f"{script} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return [json.loads(line) for line in p.stdout.splitlines()]  # every line is a JSON figure


def test_spawn_bench_one_round():
    rows = run_bench("spawn_bench.py", "--rounds", "1", "--parallel", "2")
    summary = next(r for r in rows if r.get("bench") == "spawn_to_ready_summary")
    assert set(summary["median_seconds"]) == {"cloud", "plain", "cloud+mounts"}
    assert all(v > 0 for v in summary["median_seconds"].values())
    api = [r for r in rows if r.get("bench") == "hub_api_latency"]
    assert {r["during"] for r in api} == {"idle", "2_spawning"} and all(r["requests"] > 0 for r in api)


def test_spawn_bench_backends_one_round():
    # This session's dockerd holds the suite's data folder: the benchmark uses the demo's
    # (scripts/demo.py), whose base image tests/test_demo.py needs as well.
    demo_data = os.environ.get("JHUB_CLOUD_DEMO_DOCKER", "/var/cache/jhub-cloud-demo/docker")
    rows = run_bench("spawn_bench_backends.py", "--rounds", "1", "--docker-data-root", demo_data)
    summaries = {r["backend"]: r for r in rows if r.get("bench") == "spawn_to_ready_summary"}
    assert set(summaries) == {"docker", "slurm"}
    for s in summaries.values():
        assert s["median_seconds"]["cloud"] > 0 and s["median_seconds"]["plain"] > 0


def test_slurm_ssh_bench_one_round():
    rows = run_bench("slurm_ssh_bench.py", "--rounds", "1", "--mb", "5")
    spawn = next(r for r in rows if r.get("summary") == "spawn_to_ready")
    download = next(r for r in rows if r.get("summary") == "download")
    assert spawn["local_s"] > 0 and spawn["ssh_s"] > 0
    assert download["mb"] == 5 and download["direct_mb_s"] > 0 and download["tunnel_mb_s"] > 0
