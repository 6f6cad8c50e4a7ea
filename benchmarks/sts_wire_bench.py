"""sts-wire benchmark: rclone mounts made by sts-wire vs direct boto3, vs INFN's rclone flags,
vs Debian's s3fs, against SeaweedFS and Ceph RGW (real IdP, STS, FUSE). Prints JSON lines.

    sudo /opt/jhub-cloud/venv/bin/python benchmarks/sts_wire_bench.py [--size-mib 1024] [--repeat 3]
        [--servers seaweedfs,ceph] [--renewals 10] [--skip s3fs,infn]

Figures per server and configuration (medians over --repeat runs, the page cache dropped before
every run): sequential write (until the object is complete in S3) and read of one file, `ls -l`
of a 5,000-object folder (cold and warm) vs paginated list_objects_v2, time from the token to
three mounts ready, and a renewal run: continuous writes and reads through the mount while keys
of a few seconds' life renew ``--renewals`` times, counting failed operations and lost bytes.

Not a test: it takes minutes (1 GiB runs). Needs root (drops the page cache) and the testbed
(tests/testbed) for the services; everything it starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boto3.s3.transfer import TransferConfig  # noqa: E402

from tests.testbed.ceph import CephRGW  # noqa: E402
from tests.testbed.fixtures import unmount_all_under  # noqa: E402
from tests.testbed.idp import IdP  # noqa: E402
from tests.testbed.paths import VENV_BIN  # noqa: E402
from tests.testbed.pki import make_pki  # noqa: E402
from tests.testbed.s3 import assume_role, s3_client  # noqa: E402
from tests.testbed.seaweedfs import SeaweedFS  # noqa: E402

STS_WIRE = str(VENV_BIN / "sts-wire")
RCLONE = str(VENV_BIN / "rclone")
INFN_FLAGS = ["--vfs-cache-mode", "full", "--vfs-read-ahead", "8M", "--buffer-size", "2M",
              "--vfs-write-back", "10s"]
TC = TransferConfig(multipart_chunksize=16 << 20, max_concurrency=4)
N_SMALL = 5000


class BenchSeaweedFS(SeaweedFS):
    """The testbed's SeaweedFS with room for many GiB (deleted data is reclaimed by vacuum())."""

    def argv(self) -> list[str]:
        return [a.replace("-volume.max=200", "-volume.max=2000") for a in super().argv()]

    def vacuum(self) -> None:
        import requests

        with contextlib.suppress(Exception):
            requests.get(f"http://127.0.0.1:{self.ports['master']}/vol/vacuum",
                         params={"garbageThreshold": "0.01"}, timeout=300)


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def drop_caches() -> None:
    subprocess.run(["sync"])
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    mem = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal"))) // 1024
    rcv = subprocess.run([RCLONE, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    s3fs = subprocess.run(["s3fs", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_mib": mem, "kernel": platform.release(),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?"), "rclone": rcv,
            "s3fs": s3fs[0] if s3fs else None, "python": platform.python_version()}


class Bench:
    def __init__(self, args, work: Path, idp: IdP, s3, name: str, short_s3=None, short_duration=None):
        self.args, self.work, self.idp, self.s3, self.name = args, work, idp, s3, name
        self.short_s3, self.short_duration = short_s3 or s3, short_duration
        self.root = work / "mnt"
        self.root.mkdir(parents=True, exist_ok=True)
        self.size = args.size_mib << 20
        self.big = Path(args.work) / f"big-{args.size_mib}.bin"
        self.results: dict[str, list[float]] = {}

    # --- credentials -----------------------------------------------------------------------
    def login(self) -> dict:
        return self.idp.login("alice")

    def boto(self, s3=None):
        s3 = s3 or self.s3
        tok = self.login()["access_token"]
        creds = assume_role(s3.endpoint, s3.role_arn_for("alice"), tok, "bench")
        return s3_client(s3.endpoint, creds, s3.region), creds

    def token_file(self) -> Path:
        f = self.work / "token"
        f.write_text(self.login()["access_token"])
        f.chmod(0o600)
        return f

    def spec(self, mounts: list[dict], s3=None, duration=None) -> Path:
        import yaml

        s3 = s3 or self.s3
        sts = {"endpoint": s3.endpoint, "region": s3.region, "provider": s3.rclone_provider,
               "role_arn": s3.role_arn_for("alice")}
        if duration:
            sts["duration"] = duration
        p = self.work / f"spec-{len(mounts)}.yaml"
        p.write_text(yaml.safe_dump({"token": {"source": "file", "path": str(self.token_file())},
                                     "sts": sts, "mounts": mounts}))
        return p

    # --- mounts ----------------------------------------------------------------------------
    def start_wire(self, mounts: list[dict], s3=None, duration=None, extra=()) -> tuple[subprocess.Popen, float]:
        spec = self.spec(mounts, s3, duration)
        env = dict(os.environ, XDG_CACHE_HOME=str(self.work / "cache"))
        t0 = time.monotonic()
        p = subprocess.Popen([STS_WIRE, "run", "--spec", str(spec), "--allowed-root", str(self.root),
                              "--runtime-dir", str(self.work / "run"), "--log-dir", str(self.work / "logs"),
                              "-q", *extra, "--", "sleep", "1000000"], env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        paths = [m["path"] for m in mounts]
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"sts-wire exited {p.returncode}")
            table = {ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()
                     if ln.split()[2].startswith("fuse")}
            if all(x in table for x in paths):
                for x in paths:
                    os.listdir(x)
                return p, time.monotonic() - t0
            time.sleep(0.005)

    def stop_wire(self, p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        unmount_all_under(self.root)

    def start_rclone(self, flags: list[str], mnt: Path, command: str = "mount") -> subprocess.Popen:
        """Stock rclone as INFN runs it (only its flags), keys through the same AWS profile."""
        _, creds = self.boto()
        keys = self.work / "infn-keys.json"
        keys.write_text(json.dumps({"Version": 1, "AccessKeyId": creds["AccessKeyId"],
                                    "SecretAccessKey": creds["SecretAccessKey"],
                                    "SessionToken": creds["SessionToken"],
                                    "Expiration": creds["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}))
        keys.chmod(0o600)
        aws = self.work / "infn-aws.conf"
        aws.write_text(f"[profile b]\ncredential_process = /bin/cat {keys}\n")
        conf = self.work / "infn-rclone.conf"
        conf.write_text(f"[b]\ntype = s3\nprovider = {self.s3.rclone_provider}\nenv_auth = true\nprofile = b\n"
                        f"endpoint = {self.s3.endpoint}\nregion = {self.s3.region}\n")
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "RCLONE_CONFIG": str(conf),
               "AWS_CONFIG_FILE": str(aws), "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_EC2_METADATA_DISABLED": "true"}
        mnt.mkdir(parents=True, exist_ok=True)
        p = subprocess.Popen([RCLONE, command, "b:alice", str(mnt), "--cache-dir", str(self.work / "infn-cache"),
                              "--log-file", str(self.work / "infn.log"), "--log-level", "INFO", *flags], env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_mount(mnt, p)
        return p

    def start_s3fs(self, mnt: Path) -> subprocess.Popen | None:
        _, creds = self.boto()
        mnt.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, AWSACCESSKEYID=creds["AccessKeyId"], AWSSECRETACCESSKEY=creds["SecretAccessKey"],
                   AWSSESSIONTOKEN=creds["SessionToken"])
        p = subprocess.Popen(["s3fs", "alice", str(mnt), "-f", "-o", f"url={self.s3.endpoint}",
                              "-o", "use_path_request_style", "-o", "use_session_token",
                              "-o", f"endpoint={self.s3.region}", "-o", "multipart_size=16",
                              "-o", "parallel_count=4"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(self.work / "s3fs.log", "ab"),  # noqa: SIM115
                             start_new_session=True)
        try:
            self._wait_mount(mnt, p)
            os.listdir(mnt)
        except (RuntimeError, OSError) as e:
            emit(server=self.name, config="s3fs", error=str(e))
            self._stop_fuse(p, mnt)
            return None
        return p

    def _wait_mount(self, mnt: Path, p: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"mount process exited {p.returncode}")
            if os.path.ismount(mnt):
                return
            time.sleep(0.02)
        raise RuntimeError("mount not ready")

    def _stop_fuse(self, p: subprocess.Popen, mnt: Path) -> None:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)

    # --- measurements ----------------------------------------------------------------------
    def record(self, config: str, what: str, seconds: float, **extra) -> None:
        key = f"{config}:{what}"
        self.results.setdefault(key, []).append(seconds)
        out = {"server": self.name, "config": config, "what": what, "seconds": round(seconds, 3), **extra}
        if what in ("write", "read"):
            out["mib_s"] = round(self.size / 2**20 / seconds, 1)
        emit(**out)

    def wait_object(self, client, key: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if client.head_object(Bucket="alice", Key=key)["ContentLength"] == self.size:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{key} not complete in S3 after {timeout:.0f} s")

    def vacuum(self) -> None:
        if hasattr(self.s3, "vacuum"):
            self.s3.vacuum()

    def dd(self, src: Path, dst: Path) -> None:
        subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "status=none"], check=True)

    def io_round(self, config: str, start, stop, client) -> None:
        key = f"{config}-{random.randrange(1 << 30)}.bin"
        mnt, handle = start()
        drop_caches()
        t0 = time.monotonic()
        self.dd(self.big, mnt / key)
        self.wait_object(client, key)
        self.record(config, "write", time.monotonic() - t0)
        stop(handle, mnt)
        mnt, handle = start()          # a fresh mount: nothing cached
        drop_caches()
        t0 = time.monotonic()
        self.dd(mnt / "bench-src.bin", Path("/dev/null"))
        self.record(config, "read", time.monotonic() - t0)
        stop(handle, mnt)
        client.delete_object(Bucket="alice", Key=key)
        self.vacuum()

    def boto_round(self, client) -> None:
        drop_caches()
        t0 = time.monotonic()
        client.upload_file(str(self.big), "alice", "boto3-up.bin", Config=TC)
        self.record("boto3", "write", time.monotonic() - t0)
        drop_caches()
        dl = self.work / "dl.bin"
        t0 = time.monotonic()
        client.download_file("alice", "bench-src.bin", str(dl), Config=TC)
        self.record("boto3", "read", time.monotonic() - t0)
        dl.unlink()
        client.delete_object(Bucket="alice", Key="boto3-up.bin")
        self.vacuum()

    def listing(self, config: str, start, stop, client) -> None:
        def blist():
            n = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="alice", Prefix="small5000/"):
                n += page.get("KeyCount", 0)
            assert n == N_SMALL, n
        t0 = time.monotonic()
        blist()
        self.record("boto3", "list5000", time.monotonic() - t0)
        mnt, handle = start()
        for label in ("ls_cold", "ls_warm"):
            t0 = time.monotonic()
            out = subprocess.run(["ls", "-l", str(mnt / "small5000")], capture_output=True, text=True).stdout
            self.record(config, label, time.monotonic() - t0, lines=len(out.splitlines()) - 1)
        stop(handle, mnt)

    def renewal_run(self) -> None:
        """Continuous writes and reads through an sts-wire mount while short keys renew."""
        s3 = self.short_s3
        p, _ = self.start_wire([{"remote": "alice/renewal", "path": str(self.root / "ren")}], s3,
                               self.short_duration, ["--health-interval", "2"])
        folder = self.root / "ren"
        written, failures, stop = {}, [], threading.Event()
        t0 = time.time()
        state_dir = self.work / "run" / str(p.pid)

        def renewals() -> int:
            with contextlib.suppress(OSError, ValueError):
                return json.loads((state_dir / "state.json").read_text())["key_renewals"]
            return 0

        def writer():
            i = 0
            while not stop.is_set():
                i += 1
                data = os.urandom(random.choice([65536, 1 << 20, 4 << 20]))
                try:
                    (folder / f"r{i:05d}.bin").write_bytes(data)
                    written[f"r{i:05d}.bin"] = hashlib.sha256(data).hexdigest()
                except OSError as e:
                    failures.append(f"write: {e}")
                time.sleep(0.1)

        def reader():
            while not stop.is_set():
                try:
                    names = list(written)
                    os.listdir(folder)
                    if names:
                        n = random.choice(names)
                        if hashlib.sha256((folder / n).read_bytes()).hexdigest() != written[n]:
                            failures.append(f"read {n}: checksum")
                except OSError as e:
                    failures.append(f"read: {e}")
                time.sleep(0.05)

        th = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in th:
            t.start()
        while renewals() < self.args.renewals and time.time() - t0 < 30 * self.args.renewals:
            time.sleep(1)
        stop.set()
        for t in th:
            t.join()
        n = renewals()
        self.stop_wire(p)
        lost = 0
        client, got_at = self.boto(s3)[0], time.monotonic()
        for name, digest in written.items():
            if time.monotonic() - got_at > (self.short_duration or self.args.short_lifetime) / 2:
                client, got_at = self.boto(s3)[0], time.monotonic()   # short keys: renew as we go
            body = client.get_object(Bucket="alice", Key=f"renewal/{name}")["Body"].read()
            lost += hashlib.sha256(body).hexdigest() != digest
        emit(server=self.name, config="sts-wire", what="renewal", seconds=round(time.time() - t0, 1),
             key_renewals=n, files=len(written), failed_operations=len(failures), lost_files=lost,
             failures=failures[:5])

    # --- the whole run for one server ------------------------------------------------------
    def run(self) -> None:
        client, _ = self.boto()
        if not self.big.exists():
            with open(self.big, "wb") as f:
                for _ in range(self.size >> 20):
                    f.write(os.urandom(1 << 20))
        if "io" in self.args.parts:
            client.upload_file(str(self.big), "alice", "bench-src.bin", Config=TC)
        if "listing" in self.args.parts and \
                client.list_objects_v2(Bucket="alice", Prefix="small5000/", MaxKeys=1).get("KeyCount", 0) == 0:
            with cf.ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda i: client.put_object(Bucket="alice", Key=f"small5000/f{i:05d}.txt",
                                                        Body=f"object {i}\n".encode()), range(N_SMALL)))
        wmnt = self.root / "alice"

        def wire_start():
            p, _ = self.start_wire([{"remote": "alice", "path": str(wmnt)}])
            return wmnt, p

        def wire_stop(p, mnt):
            self.stop_wire(p)

        infn_mnt = self.root / "infn"

        def infn_start():
            return infn_mnt, self.start_rclone(INFN_FLAGS, infn_mnt)

        s3fs_mnt = self.root / "s3fs"

        def s3fs_start():
            p = self.start_s3fs(s3fs_mnt)
            if p is None:
                raise RuntimeError("s3fs does not work here")
            return s3fs_mnt, p

        parts = self.args.parts
        configs = [("sts-wire", wire_start, wire_stop)]
        if "infn" not in self.args.skip:
            configs.append(("infn-flags", infn_start, lambda p, m: self._stop_fuse(p, m)))
        if "s3fs" not in self.args.skip:
            configs.append(("s3fs", s3fs_start, lambda p, m: self._stop_fuse(p, m)))

        # start time: token file present -> three mounts listable (sts-wire reports its own share too)
        for _ in range(self.args.repeat if "start" in parts else 0):
            mounts = [{"remote": "alice", "path": str(self.root / "a")},
                      {"remote": "scratch", "path": str(self.root / "scratch")},
                      {"remote": "cms", "path": str(self.root / "cms")}]
            p, took = self.start_wire(mounts)
            self.record("sts-wire", "three_mounts_ready", took)
            self.stop_wire(p)
        for r in range(self.args.repeat if "io" in parts else 0):
            order = [("boto3", None, None), *configs]
            random.Random(r).shuffle(order)
            for name, start, stop in order:
                try:
                    if name == "boto3":
                        self.boto_round(client)
                    else:
                        self.io_round(name, start, stop, client)
                except Exception as e:  # noqa: BLE001 - report and go on with the others
                    emit(server=self.name, config=name, error=f"{type(e).__name__}: {e}")
                    unmount_all_under(self.root)
        for name, start, stop in configs if "listing" in parts else []:
            try:
                self.listing(name, start, stop, client)
            except Exception as e:  # noqa: BLE001
                emit(server=self.name, config=name, what="listing", error=f"{type(e).__name__}: {e}")
                unmount_all_under(self.root)
        if self.args.renewals and "renewal" in parts:
            try:
                self.renewal_run()
            except Exception as e:  # noqa: BLE001
                emit(server=self.name, config="sts-wire", what="renewal", error=f"{type(e).__name__}: {e}")
                unmount_all_under(self.root)
        self.summary()

    def summary(self) -> None:
        med = {k: statistics.median(v) for k, v in self.results.items()}
        out = {"server": self.name, "summary": True, "repeat": self.args.repeat, "size_mib": self.args.size_mib}
        mib = self.size / 2**20
        for k, v in sorted(med.items()):
            cfg, what = k.split(":")
            out[k] = round(mib / v, 1) if what in ("write", "read") else round(v, 3)
        for cfg in ("sts-wire", "infn-flags", "s3fs"):
            for what in ("write", "read"):
                if f"{cfg}:{what}" in med and f"boto3:{what}" in med:
                    out[f"{cfg}:{what}_x_boto3"] = round(med[f"boto3:{what}"] / med[f"{cfg}:{what}"], 2)
            if f"{cfg}:ls_cold" in med and "boto3:list5000" in med:
                out[f"{cfg}:ls_cold_x_list"] = round(med[f"{cfg}:ls_cold"] / med["boto3:list5000"], 2)
        emit(**out)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even when a background start ignored it) end the run through the
    finally clauses, which unmount and stop every service started."""
    def bye(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="size of the sequential file (default 1024)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each I/O figure, shuffled (default 3)")
    ap.add_argument("--servers", default="seaweedfs,ceph", help="comma-separated: seaweedfs, ceph")
    ap.add_argument("--renewals", type=int, default=10, help="key renewals in the renewal run (0: skip)")
    ap.add_argument("--short-lifetime", type=int, default=15, help="key lifetime in the renewal run, seconds")
    ap.add_argument("--skip", default="", help="comma-separated configurations to skip: infn, s3fs")
    ap.add_argument("--work", default="/var/tmp/sts-wire-bench", help="working folder (default %(default)s)")
    ap.add_argument("--parts", default="start,io,listing,renewal",
                    help="comma-separated parts to run: start, io, listing, renewal (default: all)")
    args = ap.parse_args()
    args.parts = set(args.parts.split(","))
    args.skip = set(filter(None, args.skip.split(",")))
    stop_on_signals()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    emit(machine=machine(), args={k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()})
    started = []
    try:
        pki = make_pki(run / "pki")
        idp = IdP(pki, run / "idp").start()
        started.append(idp)
        for name in args.servers.split(","):
            if name == "seaweedfs":
                s3 = BenchSeaweedFS(idp, run / "sw").start()
                short = BenchSeaweedFS(idp, run / "sw-short", token_duration=f"{args.short_lifetime}s").start()
                started += [s3, short]
                Bench(args, run / name, idp, s3, name, short).run()
            elif name == "ceph":
                s3 = CephRGW(idp, run / "ceph").start()
                started.append(s3)
                Bench(args, run / name, idp, s3, name, s3, args.short_lifetime).run()
    finally:
        unmount_all_under(run)
        for s in reversed(started):
            with contextlib.suppress(Exception):
                s.stop()
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
