"""Base session fixtures: a private run folder, the test CA, the OIDC provider.

Each other service module (seaweedfs, ceph, slurm, docker, ...) defines its own session fixture
and is listed in tests/conftest.py. A fixture starts its service only when a test asks for it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from .idp import IdP
from .pki import PKI, make_pki
from .procs import mounts_under, stop_pid, unmount_all_under

RUN_ROOT = Path("/var/tmp/jhub-cloud-test")


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


@pytest.fixture(scope="session")
def idp_factory(pki, run_dir):
    """Start another OIDC provider: `idp_factory(shape="keycloak", **options)` -> IdP (see
    tests/testbed/idp.py for the shapes and options). Each is stopped at the end of the session."""
    started = []

    def start(shape: str = "default", **options) -> IdP:
        p = IdP(pki, run_dir / f"idp-{shape}-{len(started)}", shape=shape, **options)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()
