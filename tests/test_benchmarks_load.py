"""The load benchmarks (benchmarks/load_bench.py, benchmarks/workload_bench.py) work: each runs at
tiny size (--quick) against its own real services and prints parseable figures that meet the
targets. --no-report: the reliability report keeps the full-size figures of the real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the benchmarks create users and enter namespaces as root")


def run_bench(script: str) -> dict[str, dict]:
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", "--no-report"],
                       capture_output=True, text=True, timeout=500, cwd=REPO)
    rows = {}
    for line in p.stdout.splitlines():
        row = json.loads(line)  # every line of its output is a JSON figure
        rows[row["bench"]] = row
    assert p.returncode == 0, f"{script} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return rows


def test_load_bench_quick_logins_spawns_and_token_stampede():
    rows = run_bench("load_bench.py")
    ls = rows["load.logins-and-spawns"]
    assert (ls["logins"], ls["spawns"]) == (3, 2)
    assert ls["failed_logins"] == 0 and ls["failed_spawns"] == 0
    assert 0 < ls["login_p50_s"] <= ls["login_p99_s"] and 0 < ls["spawn_p50_s"] <= ls["spawn_max_s"]
    for phase in ("api_idle", "api_load"):
        api = ls[phase]
        assert api["requests"] > 0 and api["errors"] == 0 and 0 < api["p50_ms"] <= api["p99_ms"]
    ts = rows["load.token-stampede"]
    assert (ts["callers"], ts["users"]) == (5, 2)
    assert ts["answered_200"] == 5 and ts["users_with_one_new_token"] == 2
    assert ts["idp_refreshes_per_user_min"] == ts["idp_refreshes_per_user_max"] == 1
    assert ts["start_spread_s"] < 1 and 0 < ts["p50_ms"] <= ts["p99_ms"]
    assert rows["load_bench"]["targets_met"] is True


def test_workload_bench_quick_mount_vs_local_vs_boto3():
    rows = run_bench("workload_bench.py")
    nb = rows["load.notebook-save"]
    assert nb["bytes"] > 900_000 and nb["in_s3_intact"] is True
    for where in ("mount", "local", "boto3"):
        assert 0 < nb[f"{where}_p50_ms"] <= nb[f"{where}_p99_ms"]
    sf = rows["load.small-files"]
    assert sf["files"] == 20 and sf["errors"] == 0
    assert sf["mount_fstype"].startswith("fuse") and not sf["local_fstype"].startswith("fuse")
    assert sf["mount_in_s3_s"] > 0 and sf["boto3_write_s"] > 0
    ut = rows["load.untar"]
    assert ut["files"] == 20 and ut["errors"] == 0 and ut["mount_s"] > 0 and ut["local_s"] > 0
    gc = rows["load.git-clone"]
    assert gc["files"] > 10 and gc["errors"] == 0
    rw = rows["load.concurrent-rw"]
    assert (rw["writers"], rw["readers"]) == (10, 10)
    assert rw["mount_errors"] == 0 and rw["local_errors"] == 0 and rw["mount_mib_per_s"] > 0
    assert rw["s3_objects"] == 20 and rw["s3_sha256_match"] == 20
    assert rows["workload_bench"]["targets_met"] is True
