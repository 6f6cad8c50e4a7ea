"""Base session fixtures: a private run folder, the test CA, the OIDC provider.

Each other service module (seaweedfs, ceph, slurm, docker, ...) defines its own session fixture
and is listed in tests/conftest.py. A fixture starts its service only when a test asks for it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from .idp import IdP
from .pki import PKI, make_pki
from .procs import stop_pid

RUN_ROOT = Path("/var/tmp/jhub-cloud-test")


def mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    targets = (line.split()[1].replace("\\040", " ") for line in lines)
    return [t for t in targets if t.startswith(str(root) + "/")]


def unmount_all_under(root: Path) -> None:
    """A leftover FUSE mount makes the next rm fail: lazily unmount anything under root first."""
    for target in mounts_under(root):
        subprocess.run(["fusermount3", "-uz", target], capture_output=True)
        subprocess.run(["umount", "-l", target], capture_output=True)


def leftover_children() -> list[psutil.Process]:
    """Live descendants of this test process (zombies are already gone, only unreaped)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            p.info = {"name": p.name()}
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """A world-readable folder for this test session (test users' jobs read parts of it)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    RUN_ROOT.chmod(0o755)
    d = Path(tempfile.mkdtemp(prefix="run-", dir=RUN_ROOT))
    d.chmod(0o755)
    yield d
    # Every service fixture (they all depend on this one) has stopped by now: whatever is left is a leak.
    leaks = leftover_children()
    mounts = mounts_under(d)
    unmount_all_under(d)
    for p in leaks:
        stop_pid(p.pid, timeout=5)
    shutil.rmtree(d, ignore_errors=True)
    if leaks or mounts:
        raise RuntimeError("the test session left behind "
                           f"processes {[(p.pid, p.info['name']) for p in leaks]} and mounts {mounts}")


@pytest.fixture(scope="session")
def pki(run_dir) -> PKI:
    return make_pki(run_dir / "pki")


@pytest.fixture(scope="session")
def idp(pki, run_dir) -> IdP:
    """The OIDC provider: HTTPS on loopback, JWT access tokens with `groups`, refresh, device flow."""
    p = IdP(pki, run_dir / "idp").start()
    yield p
    p.stop()
