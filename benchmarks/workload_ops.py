"""The file work of benchmarks/workload_bench.py, run as the user inside their notebook server's
mount namespace and cgroup (so it sees the server's /s3 mounts, as a terminal in JupyterLab
would). Standard library only. Prints one JSON line: what it measured, and the file system type
of the folder it worked in (fuse.rclone on a mount, ext4 or similar on local disk).

    workload_ops.py write-files DIR COUNT SIZE      COUNT files of SIZE bytes (deterministic content)
    workload_ops.py read-files DIR COUNT SIZE       read them back, compare every byte
    workload_ops.py untar DIR TARBALL               tar -xf, then compare every file with the tarball
    workload_ops.py git-clone DIR REPO              git clone --no-hardlinks, then git status
    workload_ops.py concurrent-rw DIR WORKERS FILES SIZE
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path


def content(name: str, size: int) -> bytes:
    """The bytes a file of this name holds: reproducible, so readers can check them."""
    return random.Random(name).randbytes(size)


def fstype(path: Path) -> str:
    best, kind = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mnt, typ = line.split()[:3]
        if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, kind = mnt, typ
    return kind


def write_files(d: Path, count: int, size: int) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(count):
        (d / f"f{i:05d}.bin").write_bytes(content(f"f{i:05d}", size))
    return {"seconds": time.perf_counter() - t0, "files": count}


def read_files(d: Path, count: int, size: int) -> dict:
    t0 = time.perf_counter()
    errors = sum((d / f"f{i:05d}.bin").read_bytes() != content(f"f{i:05d}", size) for i in range(count))
    return {"seconds": time.perf_counter() - t0, "files": count, "errors": errors}


def untar(d: Path, tarball: str) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", tarball, "-C", str(d)], check=True)
    took = time.perf_counter() - t0
    errors = files = 0
    with tarfile.open(tarball) as tar:
        for m in tar:
            if m.isfile():
                files += 1
                errors += (d / m.name).read_bytes() != tar.extractfile(m).read()
    return {"seconds": took, "files": files, "errors": errors}


def git_clone(d: Path, repo: str) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    dest = d / "clone"
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", repo, str(dest)], check=True)
    took = time.perf_counter() - t0
    git = ["git", "-C", str(dest)]
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    src = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    files = len(subprocess.run([*git, "ls-files"], capture_output=True, text=True, check=True).stdout.splitlines())
    return {"seconds": took, "files": files, "errors": int(bool(status.strip()) or head != src)}


def concurrent_rw(d: Path, workers: int, files: int, size: int) -> dict:
    """Half the workers write `files` new files each while the other half read files written
    before, all at once; every byte read is checked, and every written file re-read at the end."""
    d.mkdir(parents=True, exist_ok=True)
    writers, readers = workers // 2, workers - workers // 2
    for r in range(readers):  # what the readers read: written (and closed) before the run
        (d / f"seed{r:02d}.bin").write_bytes(content(f"seed{r:02d}", size))
    barrier = threading.Barrier(workers)
    errors: list[str] = []
    moved = [0] * workers

    def writer(w: int) -> None:
        barrier.wait()
        for i in range(files):
            name = f"w{w:02d}-{i:03d}"
            try:
                (d / f"{name}.bin").write_bytes(content(name, size))
                moved[w] += size
            except OSError as e:
                errors.append(f"write {name}: {e}")

    def reader(r: int) -> None:
        barrier.wait()
        for i in range(files):
            name = f"seed{(r + i) % readers:02d}"
            try:
                ok = (d / f"{name}.bin").read_bytes() == content(name, size)
                moved[writers + r] += size
                if not ok:
                    errors.append(f"read {name}: content differs")
            except OSError as e:
                errors.append(f"read {name}: {e}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(readers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    written = {}
    for w in range(writers):
        for i in range(files):
            name = f"w{w:02d}-{i:03d}"
            data = (d / f"{name}.bin").read_bytes()
            if data != content(name, size):
                errors.append(f"re-read {name}: content differs")
            written[f"{name}.bin"] = hashlib.sha256(data).hexdigest()
    return {"seconds": took, "mib_per_s": sum(moved) / 2**20 / took, "writers": writers, "readers": readers,
            "errors": len(errors), "first_errors": errors[:3], "written_sha256": written}


OPS = {"write-files": (write_files, int, int), "read-files": (read_files, int, int), "untar": (untar, str),
       "git-clone": (git_clone, str), "concurrent-rw": (concurrent_rw, int, int, int)}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in OPS:
        print(__doc__, file=sys.stderr)
        return 2
    fn, *types = OPS[argv[0]]
    d = Path(argv[1])
    if len(argv) - 2 != len(types):
        print(f"{argv[0]} needs {len(types)} arguments after DIR", file=sys.stderr)
        return 2
    out = fn(d, *(t(a) for t, a in zip(types, argv[2:], strict=True)))
    print(json.dumps({"op": argv[0], "fstype": fstype(d), "uid": os.getuid(), **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
