"""cgroup v1 limits for one local server: a `cpu` and a `memory` cgroup per server.

The hub (root) creates both before the server starts, the server's process joins them between
fork and exec (so everything it starts later is inside too), and stop kills whatever is left in
them and removes them. Only cgroup v1 with the `cpu` and `memory` controllers mounted is
supported; `available()` says whether this machine has them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CPU_PERIOD_US = 100_000
CONTROLLERS = ("cpu", "memory")


@dataclass(frozen=True)
class CGroup:
    root: Path    # where the v1 hierarchies are mounted, e.g. /sys/fs/cgroup
    name: str     # relative path below each controller, e.g. jhub-cloud/alice-1a2b3c

    def path(self, controller: str) -> Path:
        return self.root / controller / self.name

    @property
    def procs_files(self) -> list[str]:
        return [str(self.path(c) / "cgroup.procs") for c in CONTROLLERS]


def available(root: Path) -> str | None:
    """None when v1 cpu and memory controllers are usable under `root`, else why not."""
    for c in CONTROLLERS:
        d = root / c
        if not (d / "cgroup.procs").exists():
            return f"no cgroup v1 {c} controller at {d}"
        if not os.access(d, os.W_OK):
            return f"{d} is not writable by the hub (it must run as root)"
    return None


def create(group: CGroup, cpu: float, memory_bytes: int) -> None:
    """Make both cgroups with their limits (CPU as a CFS quota, memory without extra swap)."""
    quota = max(1000, int(round(cpu * CPU_PERIOD_US)))
    cpu_dir, mem_dir = group.path("cpu"), group.path("memory")
    cpu_dir.mkdir(parents=True, exist_ok=True)
    mem_dir.mkdir(parents=True, exist_ok=True)
    (cpu_dir / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
    (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
    (mem_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
    memsw = mem_dir / "memory.memsw.limit_in_bytes"
    if memsw.exists():  # only with swap accounting; memory+swap = memory means no swap on top
        memsw.write_text(str(memory_bytes))


def join_preexec(group: CGroup):
    """A function for Popen's preexec_fn: the new process moves itself into the cgroups."""
    files = group.procs_files

    def join() -> None:
        pid = str(os.getpid())
        for f in files:
            with open(f, "w") as fh:
                fh.write(pid)

    return join


def pids(group: CGroup) -> set[int]:
    out: set[int] = set()
    for f in group.procs_files:
        with contextlib.suppress(OSError, ValueError):
            out |= {int(x) for x in Path(f).read_text().split()}
    return out


def remove(group: CGroup, timeout: float = 5.0) -> list[int]:
    """Kill what is still in the cgroups, then remove them. Returns the PIDs that had to be killed."""
    killed = sorted(pids(group))
    for pid in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for c in CONTROLLERS:
        d = group.path(c)
        while d.exists():
            try:
                d.rmdir()
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the killed processes are still leaving
    return killed


def read_limits(group: CGroup) -> dict:
    """The limits as the kernel holds them (for tests and `jhub-cloud` diagnostics)."""
    cpu, mem = group.path("cpu"), group.path("memory")
    quota = int((cpu / "cpu.cfs_quota_us").read_text())
    period = int((cpu / "cpu.cfs_period_us").read_text())
    return {"cpu": quota / period, "memory_bytes": int((mem / "memory.limit_in_bytes").read_text())}
