"""What scientists do on /s3/<user> (issue 10, Load): the same work through the mount, on local
disk, and with boto3. Real IdP, SeaweedFS with STS, JupyterHub with CloudSpawner (local backend):
alice's server runs with her bucket mounted by sts-wire (rclone, FUSE). Prints JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/workload_bench.py [--files 2000]
        [--tar-files 1000] [--saves 20] [--rw-workers 20] [--quick] [--no-report]

- load.notebook-save: a 1 MB notebook saved through the server's contents API (PUT
  /user/alice/api/contents/...) into the mount vs a local folder of the same server, --saves times
  each in rotating order, p50/p99; and boto3 put_object of the same bytes.
- load.small-files: --files files of 4 KiB written then read back (every byte checked): mount (and
  when all of them are listed in S3) vs local vs boto3 put_object/get_object.
- load.untar: tar -xf of a tarball of --tar-files files (the first ones of the venv's
  site-packages, by name): mount vs local, every file compared with the tarball.
- load.git-clone: git clone --no-hardlinks of this repository (a bare copy of it): mount vs local.
- load.concurrent-rw: --rw-workers threads at once, half writing new files, half reading files
  written before: throughput, errors (target 0), every byte checked, and every written object
  read back from S3 and compared by sha256.

The file work runs as alice inside her server's mount namespace and cgroup (nsenter, then
benchmarks/workload_ops.py), as a terminal of her JupyterLab would. Needs root, git and the
testbed (tests/testbed); everything it starts is stopped by PID at the end. Full size takes about
1.5 minutes here (2 cores). Exit status 1 when data was wrong or an operation failed. Unless
--no-report, the figures go to docs/reliability.md (record_measurement).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jhub_cloud.spawner import cgroups  # noqa: E402
from tests.testbed.cloudhub import CGROUP_ROOT, CloudHub, singleuser_processes, spawner_profiles  # noqa: E402
from tests.testbed.hub import server_environ  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.paths import VENV_BIN  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.procs import stop_services, unmount_all_under  # noqa: E402
from tests.testbed.reliability import record_measurement  # noqa: E402
from tests.testbed.s3 import assume_role, s3_client  # noqa: E402
from tests.testbed.seaweedfs import SeaweedFS  # noqa: E402

SOURCE = "benchmarks/workload_bench.py"
OPS = Path(__file__).with_name("workload_ops.py")
USER = "alice"
OPTIONS = {"profile": "physics-cpu", "cpu": 2, "memory": "2G"}
SMALL = 4096


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def ms(x: float) -> float:
    return round(1000 * x, 1)


class Server:
    """alice's running server: her mount and a local folder, both seen by the server."""

    def __init__(self, hub: CloudHub, home: Path, s3: SeaweedFS, idp: IdP):
        self.hub = hub
        pw = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.mount, self.local = home / "s3" / USER, home / "local"
        self.pid = singleuser_processes(hub, USER)[0].pid
        self.cgroup = cgroups.CGroup(CGROUP_ROOT, hub.user(USER)["servers"][""]["state"]["child"]["cgroup"])
        self.token = server_environ(hub, USER)["JUPYTERHUB_API_TOKEN"]
        creds = assume_role(s3.endpoint, s3.role_arn_for(USER), idp.login(USER)["access_token"], "bench")
        self.s3 = s3_client(s3.endpoint, creds, s3.region)

    def op(self, *argv) -> dict:
        """Run a workload_ops.py operation as alice in her server's mount namespace and cgroup."""
        cmd = ["nsenter", "-t", str(self.pid), "-m", "-S", str(self.uid), "-G", str(self.gid), "--",
               str(VENV_BIN / "python"), str(OPS), *map(str, argv)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "USER": USER, "LANG": "C.UTF-8"}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/",
                           preexec_fn=cgroups.join_preexec(self.cgroup))  # noqa: PLW1509 (as the spawner does)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {p.stderr[-600:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def keys(self, prefix: str) -> dict[str, int]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=USER, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def wait_in_s3(self, prefix: str, count: int, t0: float, timeout: float = 300) -> float:
        """Seconds from t0 until `count` objects are listed under `prefix` (what other users see)."""
        while len(self.keys(prefix)) < count:
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"only {len(self.keys(prefix))} of {count} objects under {prefix} in S3")
            time.sleep(0.1)
        return time.perf_counter() - t0


def notebook(size: int) -> dict:
    """A notebook whose one output makes it about `size` bytes (an output as text: a plot or a table)."""
    text = os.urandom(size // 2).hex()
    return {"cells": [{"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(data)",
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 4}


def notebook_save(srv: Server, saves: int) -> dict:
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"token {srv.token}"
    base = f"{srv.hub.url}/user/{USER}/api/contents"
    body = {"type": "notebook", "format": "json", "content": notebook(1_000_000)}
    paths = {"mount": f"s3/{USER}/bench-notebook.ipynb", "local": "local/bench-notebook.ipynb"}

    def save(where: str) -> float:
        t0 = time.perf_counter()
        if where == "boto3":
            srv.s3.put_object(Bucket=USER, Key="bench-notebook-boto3.ipynb", Body=data)
        else:
            r = s.put(f"{base}/{paths[where]}", json=body, timeout=120)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"saving on {where}: {r.status_code} {r.text[:300]}")
        return time.perf_counter() - t0

    data = b""
    for where in ("local", "mount"):  # warm-up; the bytes Jupyter writes are what boto3 sends
        save(where)
    data = (srv.local / "bench-notebook.ipynb").read_bytes()
    lat: dict[str, list[float]] = {"mount": [], "local": [], "boto3": []}
    order = list(lat)
    for i in range(saves):
        for where in order[i % 3:] + order[:i % 3]:
            lat[where].append(save(where))
    deadline = time.monotonic() + 60  # the mount's copy in S3, byte for byte
    while True:
        try:
            intact = srv.s3.get_object(Bucket=USER, Key="bench-notebook.ipynb")["Body"].read() == data
        except srv.s3.exceptions.NoSuchKey:
            intact = False
        if intact or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"bytes": len(data), "saves": saves, "in_s3_intact": intact,
            **{f"{k}_p50_ms": ms(pct(v, 0.5)) for k, v in lat.items()},
            **{f"{k}_p99_ms": ms(pct(v, 0.99)) for k, v in lat.items()}}


def small_files(srv: Server, n: int) -> dict:
    out: dict = {"files": n, "size": SMALL}
    t0 = time.perf_counter()
    w = srv.op("write-files", srv.mount / "bench-small", n, SMALL)
    out["mount_fstype"] = w["fstype"]
    out["mount_write_s"] = round(w["seconds"], 3)
    out["mount_in_s3_s"] = round(srv.wait_in_s3("bench-small/", n, t0), 2)
    r = srv.op("read-files", srv.mount / "bench-small", n, SMALL)
    out["mount_read_s"], errors = round(r["seconds"], 3), r["errors"]
    w = srv.op("write-files", srv.local / "bench-small", n, SMALL)
    r = srv.op("read-files", srv.local / "bench-small", n, SMALL)
    out.update(local_fstype=w["fstype"], local_write_s=round(w["seconds"], 3), local_read_s=round(r["seconds"], 3))
    errors += r["errors"]
    blobs = [os.urandom(SMALL) for _ in range(n)]
    t0 = time.perf_counter()
    for i, b in enumerate(blobs):
        srv.s3.put_object(Bucket=USER, Key=f"bench-boto3-small/f{i:05d}.bin", Body=b)
    out["boto3_write_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    for i, b in enumerate(blobs):
        errors += srv.s3.get_object(Bucket=USER, Key=f"bench-boto3-small/f{i:05d}.bin")["Body"].read() != b
    out["boto3_read_s"] = round(time.perf_counter() - t0, 3)
    out["errors"] = errors
    return out


def make_tarball(dest: Path, n: int) -> tuple[int, int]:
    """The first `n` files of the venv's site-packages, by name, as a .tar.gz: (files, bytes)."""
    site = next((VENV_BIN.parent / "lib").glob("python3*/site-packages"))
    picked = []
    for d, dirs, files in os.walk(site):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        picked += [Path(d) / f for f in sorted(files)]
        if len(picked) >= n:
            break
    picked = picked[:n]
    with tarfile.open(dest, "w:gz") as tar:
        for f in picked:
            tar.add(f, arcname=str(f.relative_to(site)))
    dest.chmod(0o644)
    return len(picked), sum(f.stat().st_size for f in picked)


def untar(srv: Server, tarball: Path, files: int, size: int) -> dict:
    t0 = time.perf_counter()
    m = srv.op("untar", srv.mount / "bench-untar", tarball)
    in_s3 = srv.wait_in_s3("bench-untar/", files, t0)
    loc = srv.op("untar", srv.local / "bench-untar", tarball)
    return {"files": m["files"], "mib": round(size / 2**20, 1), "mount_s": round(m["seconds"], 2),
            "mount_in_s3_s": round(in_s3, 2), "local_s": round(loc["seconds"], 2),
            "errors": m["errors"] + loc["errors"]}


def git_clone(srv: Server, repo: Path) -> dict:
    m = srv.op("git-clone", srv.mount / "bench-git", repo)
    loc = srv.op("git-clone", srv.local / "bench-git", repo)
    return {"files": m["files"], "mount_s": round(m["seconds"], 2), "local_s": round(loc["seconds"], 2),
            "errors": m["errors"] + loc["errors"]}


def concurrent_rw(srv: Server, workers: int, files: int, size: int) -> dict:
    m = srv.op("concurrent-rw", srv.mount / "bench-rw", workers, files, size)
    loc = srv.op("concurrent-rw", srv.local / "bench-rw", workers, files, size)
    for e in m["first_errors"] + loc["first_errors"]:
        emit(bench="load.concurrent-rw", error=e)
    # Every file written through the mount, read back from S3 and compared.
    want = {f"bench-rw/{k}": v for k, v in m["written_sha256"].items()}
    deadline, match = time.monotonic() + 120, 0
    while time.monotonic() < deadline:
        listed = srv.keys("bench-rw/")
        match = sum(hashlib.sha256(srv.s3.get_object(Bucket=USER, Key=k)["Body"].read()).hexdigest() == v
                    for k, v in want.items() if k in listed)
        if match == len(want):
            break
        time.sleep(1)
    return {"writers": m["writers"], "readers": m["readers"], "files_each": files, "size": size,
            "mount_mib_per_s": round(m["mib_per_s"], 1), "mount_errors": m["errors"],
            "local_mib_per_s": round(loc["mib_per_s"], 1), "local_errors": loc["errors"],
            "s3_objects": len(want), "s3_sha256_match": match}


def start_server(run: Path) -> tuple[list, Server]:
    started: list = []
    pki = make_pki(run / "pki")
    idp = IdP(pki, run / "idp").start()
    started.append(idp)
    s3 = SeaweedFS(idp, run / "seaweedfs").start()
    started.append(s3)
    # The server's folder (notebook_dir): her mounts under s3/ (a tmpfs of hers in the server's
    # mount namespace), and local/, a folder of hers on this machine's disk.
    home = run / "home"
    root = home / "s3"
    root.mkdir(parents=True)
    root.chmod(0o1777)  # like /tmp: each user creates their own mount folders
    local = home / "local"
    local.mkdir()
    pw = pwd.getpwnam(USER)
    os.chown(local, pw.pw_uid, pw.pw_gid)
    extra = {**spawner_profiles([{"bucket": "{username}", "path": f"{root}/{{username}}"}]),
             "storage": {"s3_endpoint": s3.endpoint, "provider": "SeaweedFS", "role_arn": s3.role_arn,
                         "region": s3.region, "mount_roots": [str(root)]}}
    hub = CloudHub(idp, run / "hub-workload", extra=extra, hub_config=f"c.Spawner.notebook_dir = {str(home)!r}\n")
    started.append(hub)
    hub.start()
    hub.login(USER)
    r = hub.spawn(USER, options=OPTIONS)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn refused: {r.status_code} {r.text}")
    hub.wait_ready(USER, timeout=180)
    return started, Server(hub, home, s3, idp)


def report(res: dict, no_report: bool) -> None:
    nb, sf, ut, gc, rw = (res.get(k) for k in ("notebook", "small", "untar", "git", "rw"))
    rows = {}
    if nb:
        rows["load.notebook-save"] = (
            f"{nb['bytes'] / 1e6:.2f} MB notebook, {nb['saves']} saves each through the contents API: mount "
            f"p50 {nb['mount_p50_ms']} ms, p99 {nb['mount_p99_ms']} ms; local disk p50 {nb['local_p50_ms']} ms, "
            f"p99 {nb['local_p99_ms']} ms; boto3 put_object p50 {nb['boto3_p50_ms']} ms, p99 {nb['boto3_p99_ms']} "
            f"ms; the mount's copy in S3 {'byte-identical' if nb['in_s3_intact'] else 'NOT identical'}")
    if sf:
        rows["load.small-files"] = (
            f"{sf['files']} files of 4 KiB, write / read: mount {sf['mount_write_s']} / {sf['mount_read_s']} s "
            f"(all listed in S3 {sf['mount_in_s3_s']} s after the start), local {sf['local_write_s']} / "
            f"{sf['local_read_s']} s, boto3 {sf['boto3_write_s']} / {sf['boto3_read_s']} s; "
            f"{sf['errors']} files wrong")
    if ut:
        rows["load.untar"] = (
            f"tar -xf of {ut['files']} files ({ut['mib']} MiB): mount {ut['mount_s']} s (all listed in S3 "
            f"{ut['mount_in_s3_s']} s after the start), local {ut['local_s']} s; {ut['errors']} files differ")
    if gc:
        rows["load.git-clone"] = (
            f"git clone of this repository ({gc['files']} files): mount {gc['mount_s']} s, local "
            f"{gc['local_s']} s; {'clean status and same HEAD on both' if not gc['errors'] else 'CHECKOUT WRONG'}")
    if rw:
        rows["load.concurrent-rw"] = (
            f"{rw['writers']} writers + {rw['readers']} readers at once, {rw['files_each']} files of "
            f"{rw['size'] // 1024} KiB each: mount {rw['mount_mib_per_s']} MiB/s with {rw['mount_errors']} errors "
            f"(every byte checked), {rw['s3_sha256_match']}/{rw['s3_objects']} written objects in S3 match "
            f"sha256; local {rw['local_mib_per_s']} MiB/s")
    if not no_report:
        for case, text in rows.items():
            record_measurement(case, text, source=SOURCE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000, help="small files of 4 KiB (default 2000)")
    ap.add_argument("--tar-files", type=int, default=1000, help="files in the tarball (default 1000)")
    ap.add_argument("--saves", type=int, default=20, help="notebook saves per target (default 20)")
    ap.add_argument("--rw-workers", type=int, default=20, help="concurrent readers + writers (default 20)")
    ap.add_argument("--rw-files", type=int, default=5, help="files each of them reads or writes (default 5)")
    ap.add_argument("--rw-size-kib", type=int, default=4096, help="size of those files (default 4096 KiB)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes to check the script")
    ap.add_argument("--no-report", action="store_true", help="do not write the figures to docs/reliability.md")
    args = ap.parse_args()
    if args.quick:
        args.files, args.tar_files, args.saves, args.rw_files, args.rw_size_kib = 20, 20, 3, 2, 64
    if os.geteuid() != 0:
        ap.error("run as root: it enters alice's server's mount namespace")
    if not shutil.which("git") or not shutil.which("nsenter"):
        ap.error("needs git and nsenter (Debian packages git, util-linux)")
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (udev's own mode for it; users mount with FUSE)
    base = Path("/var/tmp/jhub-cloud-test")
    base.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-workload-", dir=base))
    run.chmod(0o755)
    started: list = []
    res: dict = {}
    try:
        tarball = run / "source.tar.gz"
        tar_files, tar_bytes = make_tarball(tarball, args.tar_files)
        repo = run / "repo.git"
        subprocess.run(["git", "clone", "-q", "--bare", "--no-hardlinks", str(REPO), str(repo)], check=True)
        subprocess.run(["chown", "-R", USER, str(repo)], check=True)
        started, srv = start_server(run)
        steps = (("notebook", "load.notebook-save", lambda: notebook_save(srv, args.saves)),
                 ("small", "load.small-files", lambda: small_files(srv, args.files)),
                 ("untar", "load.untar", lambda: untar(srv, tarball, tar_files, tar_bytes)),
                 ("git", "load.git-clone", lambda: git_clone(srv, repo)),
                 ("rw", "load.concurrent-rw",
                  lambda: concurrent_rw(srv, args.rw_workers, args.rw_files, args.rw_size_kib * 1024)))
        for key, case, step in steps:
            res[key] = step()
            emit(bench=case, **res[key])
    finally:
        stop_services(started)
        unmount_all_under(run)
        shutil.rmtree(run, ignore_errors=True)
    report(res, args.no_report)
    nb, rw = res["notebook"], res["rw"]
    bad = (not nb["in_s3_intact"] or res["small"]["errors"] or res["untar"]["errors"] or res["git"]["errors"]
           or rw["mount_errors"] or rw["local_errors"] or rw["s3_sha256_match"] != rw["s3_objects"]
           or not res["small"]["mount_fstype"].startswith("fuse"))
    emit(bench="workload_bench", targets_met=not bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
