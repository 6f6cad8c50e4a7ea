"""Base session fixtures: a private run folder, the test CA, the OIDC provider.

Each other service module (seaweedfs, ceph, slurm, docker, ...) defines its own session fixture
and is listed in tests/conftest.py. A fixture starts its service only when a test asks for it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .idp import IdP
from .pki import PKI, make_pki

RUN_ROOT = Path("/var/tmp/jhub-cloud-test")


def unmount_all_under(root: Path) -> None:
    """A leftover FUSE mount makes the next rm fail: lazily unmount anything under root first."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(str(root) + "/"):
            subprocess.run(["fusermount3", "-uz", target], capture_output=True)
            subprocess.run(["umount", "-l", target], capture_output=True)


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """A world-readable folder for this test session (test users' jobs read parts of it)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    RUN_ROOT.chmod(0o755)
    d = Path(tempfile.mkdtemp(prefix="run-", dir=RUN_ROOT))
    d.chmod(0o755)
    yield d
    unmount_all_under(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(run_dir) -> PKI:
    return make_pki(run_dir / "pki")


@pytest.fixture(scope="session")
def idp(pki, run_dir) -> IdP:
    """The OIDC provider: HTTPS on loopback, JWT access tokens with `groups`, refresh, device flow."""
    p = IdP(pki, run_dir / "idp").start()
    yield p
    p.stop()
