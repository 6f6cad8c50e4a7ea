"""cgroup limits for one local server: CPU and memory, cgroup v1 or v2.

The hub (root) creates the server's cgroup(s) before the server starts, the server's process
joins them between fork and exec (so everything it starts later is inside too), and stop kills
whatever is left in them and removes them.

- v1 (separate `cpu` and `memory` hierarchies, e.g. /sys/fs/cgroup/cpu): one cgroup in each,
  `cpu.cfs_quota_us`/`cpu.cfs_period_us` and `memory.limit_in_bytes` (+ memsw: no extra swap).
- v2 (one unified hierarchy whose `cgroup.controllers` lists cpu and memory): one cgroup with
  `cpu.max` and `memory.max` (+ `memory.swap.max` 0); the controllers are enabled in each parent's
  `cgroup.subtree_control` on the way down. (Under systemd, give the hub a delegated subtree and
  set LocalChild.cgroup_root to it.)

`detect(root)` says which one a machine has, or why neither is usable.
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
    root: Path    # v1: where the hierarchies are mounted (/sys/fs/cgroup); v2: the unified root
    name: str     # relative path, e.g. jhub-cloud/alice-1a2b3c
    version: int = 1

    def path(self, controller: str) -> Path:
        return self.root / controller / self.name if self.version == 1 else self.root / self.name

    @property
    def dirs(self) -> list[Path]:
        return [self.path(c) for c in CONTROLLERS] if self.version == 1 else [self.root / self.name]

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]


def detect(root: Path) -> tuple[int | None, str | None]:
    """(1 or 2, None) when cgroup v1 or v2 cpu and memory controllers are usable under `root`,
    else (None, why not)."""
    why_v1 = None
    for c in CONTROLLERS:
        d = root / c
        if not (d / "cgroup.procs").exists():
            why_v1 = f"no cgroup v1 {c} controller at {d}"
            break
        if not os.access(d, os.W_OK):
            return None, f"{d} is not writable by the hub (it must run as root)"
    if why_v1 is None:
        return 1, None
    controllers = root / "cgroup.controllers"
    if not controllers.exists():
        return None, why_v1
    missing = [c for c in CONTROLLERS if c not in controllers.read_text().split()]
    if missing:
        return None, f"{why_v1}, and the cgroup v2 hierarchy at {root} has no {'/'.join(missing)} controller"
    if not os.access(root, os.W_OK):
        return None, f"{root} is not writable by the hub (it must run as root, with a delegated subtree)"
    return 2, None


def available(root: Path) -> str | None:
    """None when cgroup limits can be enforced under `root`, else why not."""
    return detect(root)[1]


def create(group: CGroup, cpu: float, memory_bytes: int) -> None:
    """Make the cgroup(s) with their limits: CPU as a quota per period, memory without extra swap."""
    quota = max(1000, int(round(cpu * CPU_PERIOD_US)))
    if group.version == 2:
        _create_v2(group, quota, memory_bytes)
        return
    cpu_dir, mem_dir = group.path("cpu"), group.path("memory")
    cpu_dir.mkdir(parents=True, exist_ok=True)
    mem_dir.mkdir(parents=True, exist_ok=True)
    (cpu_dir / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
    (cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
    (mem_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
    memsw = mem_dir / "memory.memsw.limit_in_bytes"
    if memsw.exists():  # only with swap accounting; memory+swap = memory means no swap on top
        memsw.write_text(str(memory_bytes))


def _create_v2(group: CGroup, quota: int, memory_bytes: int) -> None:
    # Each level down to the server's parent hands cpu and memory on to its children (v2's rule:
    # only cgroups without processes of their own may, so these levels hold none).
    level = group.root
    for part in Path(group.name).parts[:-1]:
        _enable_controllers(level)
        level = level / part
        level.mkdir(exist_ok=True)
    _enable_controllers(level)
    leaf = group.root / group.name
    leaf.mkdir(exist_ok=True)
    (leaf / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
    (leaf / "memory.max").write_text(str(memory_bytes))
    swap = leaf / "memory.swap.max"
    if swap.exists():
        swap.write_text("0")


def _enable_controllers(d: Path) -> None:
    control = d / "cgroup.subtree_control"
    enabled = control.read_text().split() if control.exists() else []
    wanted = [c for c in CONTROLLERS if c not in enabled]
    if wanted:
        control.write_text(" ".join(f"+{c}" for c in wanted))


def join_preexec(group: CGroup):
    """A function for Popen's preexec_fn: the new process moves itself into the cgroup(s)."""
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
    """Kill what is still in the cgroup(s), then remove them. Returns the PIDs that were killed."""
    killed = sorted(pids(group))
    for pid in killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for d in group.dirs:
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
    """The limits as the kernel holds them (for tests and diagnostics)."""
    if group.version == 2:
        leaf = group.root / group.name
        quota, period = (leaf / "cpu.max").read_text().split()
        return {"cpu": int(quota) / int(period), "memory_bytes": int((leaf / "memory.max").read_text())}
    cpu, mem = group.path("cpu"), group.path("memory")
    quota = int((cpu / "cpu.cfs_quota_us").read_text())
    period = int((cpu / "cpu.cfs_period_us").read_text())
    return {"cpu": quota / period, "memory_bytes": int((mem / "memory.limit_in_bytes").read_text())}
