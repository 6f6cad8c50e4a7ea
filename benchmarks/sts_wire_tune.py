"""Try rclone flag sets for sts-wire's defaults: 1 GiB write (until in S3) and read through a
mount vs boto3, alternating rounds, page cache dropped before each run. Prints JSON lines.

    /opt/jhub-cloud/venv/bin/python benchmarks/sts_wire_tune.py [--size-mib 1024] [--rounds 3]
        [--server seaweedfs|ceph] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sts_wire_bench as b  # noqa: E402

BASE = ["--use-server-modtime", "--s3-no-check-bucket", "--dir-cache-time", "10s"]
_CUR = ["mount2", "--vfs-cache-mode", "writes", "--vfs-write-back", "0s", "--no-checksum",
        "--s3-upload-concurrency", "4", "--s3-chunk-size", "16M"]
VARIANTS = {
    "current": _CUR,
    # no whole-file MD5 before a multipart upload (parts still carry their Content-MD5)
    "nomd5": [*_CUR, "--s3-disable-checksum"],
    # no SHA-256 of each part for the signature (rclone's default over https anyway)
    "unsigned": [*_CUR, "--s3-use-unsigned-payload", "true"],
    "nomd5-unsigned": [*_CUR, "--s3-disable-checksum", "--s3-use-unsigned-payload", "true"],
    # reads: parallel ranged GETs (helps where each request has a high latency, e.g. Ceph RGW)
    "nomd5-streams4": [*_CUR, "--s3-disable-checksum", "--vfs-read-chunk-streams", "4",
                       "--vfs-read-chunk-size", "16M"],
    "nomd5-streams2-64m": [*_CUR, "--s3-disable-checksum", "--vfs-read-chunk-streams", "2",
                           "--vfs-read-chunk-size", "64M"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--server", default="seaweedfs", choices=["seaweedfs", "ceph"], help="S3 server")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--work", default="/var/tmp/sts-wire-bench", help="working folder")
    args = ap.parse_args()
    args.repeat, args.skip, args.renewals, args.parts = 1, set(), 0, {"io"}
    b.stop_on_signals()
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="tune-", dir=work))
    b.emit(machine=b.machine(), variants={n: VARIANTS[n] for n in names})
    started = []
    try:
        pki = b.make_pki(run / "pki")
        idp = b.IdP(pki, run / "idp").start()
        started.append(idp)
        s3 = (b.BenchSeaweedFS(idp, run / "sw") if args.server == "seaweedfs" else b.CephRGW(idp, run / "ceph")).start()
        started.append(s3)
        bench = b.Bench(args, run / "bench", idp, s3, args.server)
        client, _ = bench.boto()
        if not bench.big.exists():
            with open(bench.big, "wb") as f:
                for _ in range(bench.size >> 20):
                    f.write(b.os.urandom(1 << 20))
        client.upload_file(str(bench.big), "alice", "bench-src.bin", Config=b.TC)
        mnt = bench.root / "t"
        for r in range(args.rounds):
            order = ["boto3", *names]
            random.Random(r).shuffle(order)
            for name in order:
                try:
                    if name == "boto3":
                        bench.boto_round(client)
                        continue
                    cmd, *flags = VARIANTS[name]

                    def start(cmd=cmd, flags=flags):
                        return mnt, bench.start_rclone([*BASE, *flags], mnt, cmd)

                    bench.io_round(name, start, lambda p, m: bench._stop_fuse(p, m), client)
                except Exception as e:  # noqa: BLE001
                    b.emit(config=name, error=f"{type(e).__name__}: {e}")
                    b.unmount_all_under(bench.root)
        med = {k: statistics.median(v) for k, v in bench.results.items()}
        out = {"summary": True, "server": args.server}
        for k, v in sorted(med.items()):
            cfg, what = k.split(":")
            out[k] = round(bench.size / 2**20 / v, 1)
            if cfg != "boto3" and f"boto3:{what}" in med:
                out[k + "_x_boto3"] = round(med[f"boto3:{what}"] / v, 2)
        b.emit(**out)
    finally:
        b.unmount_all_under(run)
        for s in reversed(started):
            with contextlib.suppress(Exception):
                s.stop()
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
