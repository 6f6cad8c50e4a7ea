"""Idle culling: jupyterhub-idle-culler as a hub service with the least scopes, timeout from the
suite YAML. In a real hub (local backend, storage on SeaweedFS): an idle server is culled and its
processes, mounts and cgroup are gone as after a normal stop; a server in use is not culled."""

from __future__ import annotations

import datetime
import os
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest
from traitlets.config import Config as TraitletsConfig

from jhub_cloud.config import from_dict as load_dict
from jhub_cloud.operations import CULLER_SCOPES, CULLER_SERVICE, apply_operations, culler_command
from jhub_cloud.spawner import cgroups
from tests.testbed.cloudhub import CGROUP_ROOT, CloudHub, spawner_profiles
from tests.testbed.procs import mounts_under

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "local.yaml"


def test_culler_command_follows_the_yaml():
    py = "/venv/bin/python"
    assert culler_command({"idle_timeout_seconds": 3600}, py) == [
        py, "-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=1800", "--config="]
    cmd = culler_command({"idle_timeout_seconds": 600, "every_seconds": 60, "max_age_seconds": 86400}, py)
    assert cmd[3:] == ["--timeout=600", "--cull-every=60", "--config=", "--max-age=86400"]
    # An age limit alone still culls (an idle server that old is past the age limit too).
    assert culler_command({"idle_timeout_seconds": None, "max_age_seconds": 7200}, py)[3:5] == [
        "--timeout=7200", "--cull-every=3600"]
    assert culler_command({"idle_timeout_seconds": None}, py) is None
    # Never deletes servers (their volumes) or users.
    assert not [a for a in cmd if "remove" in a or "cull-users" in a]


def _apply(extra: dict) -> TraitletsConfig:
    import yaml

    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(extra)
    c = TraitletsConfig()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self"]}]
    apply_operations(c, load_dict(data), lambda ref, where: "scrape-secret")
    return c


def test_the_hub_runs_the_culler_with_the_least_scopes_and_keeps_other_roles():
    c = _apply({"culler": {"idle_timeout_seconds": 1200}})
    (svc,) = [s for s in c.JupyterHub.services if s["name"] == CULLER_SERVICE]
    assert svc["command"][:3] == [sys.executable, "-m", "jupyterhub_idle_culler"]
    assert "--timeout=1200" in svc["command"] and "api_token" not in svc and "admin" not in svc
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self"]
    (role,) = [r for r in roles.values() if r.get("services") == [CULLER_SERVICE]]
    assert sorted(role["scopes"]) == sorted(CULLER_SCOPES)
    assert not [s for s in role["scopes"] if s.startswith("admin") or s in ("servers", "users")]


def test_culling_off_means_no_service_and_no_role():
    c = _apply({"culler": {"idle_timeout_seconds": None}})
    assert not [s for s in c.JupyterHub.services if s["name"] == CULLER_SERVICE]
    assert not [r for r in c.JupyterHub.load_roles if CULLER_SERVICE in r.get("services", [])]


def test_bad_timeouts_are_refused_with_the_key_named():
    import yaml

    from jhub_cloud.config import ConfigError

    data = yaml.safe_load(EXAMPLE.read_text())
    for bad in ({"idle_timeout_seconds": 0}, {"idle_timeout_seconds": "1h"}, {"every": 5}):
        with pytest.raises(ConfigError) as e:
            load_dict({**data, "culler": bad})
        assert "culler" in str(e.value)


# --- in a real hub ------------------------------------------------------------------------------
IDLE_TIMEOUT = 15


@pytest.fixture(scope="module")
def hub(idp, seaweedfs, run_dir):
    if stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (what udev does on a normal machine: TESTBED.md)
    root = run_dir / "s3-culler"
    root.mkdir()
    root.chmod(0o1777)
    mounts = [{"bucket": "{username}", "path": f"{root}/{{username}}"}]
    extra = {**spawner_profiles(mounts),
             "culler": {"idle_timeout_seconds": IDLE_TIMEOUT, "every_seconds": 2},
             "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                         "role_arn": seaweedfs.role_arn, "region": seaweedfs.region,
                         "mount_roots": [str(root)]}}
    h = CloudHub(idp, run_dir / "hub-culler", extra=extra, hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\n")
    h.start()
    h.login("alice")
    h.root = root
    yield h
    h.stop()


def _alive(pids) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _keep_busy(hub, server: str) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    r = hub.api("POST", "/users/alice/activity", json={"servers": {server: {"last_activity": now}}})
    assert r.ok, r.text


def test_an_idle_server_is_culled_like_a_stop_and_a_busy_one_is_not(hub):
    for name in ("", "busy"):
        r = hub.spawn("alice", name, {"profile": "cms-cpu", "cpu": 1, "memory": "1G"})
        assert r.status_code in (201, 202), r.text
    for name in ("", "busy"):
        hub.wait_ready("alice", name, timeout=120)
        if name == "busy":
            _keep_busy(hub, "busy")
    idle_cgroup = hub.user("alice")["servers"][""]["state"]["child"]["cgroup"]
    pids = cgroups.pids(cgroups.CGroup(CGROUP_ROOT, idle_cgroup))
    names = {Path(a).name for p in pids for a in psutil.Process(p).cmdline()[:2]}
    assert {"rclone", "sts-wire", "jupyterhub-singleuser"} <= names, names

    deadline = time.monotonic() + IDLE_TIMEOUT + 60
    while "" in hub.servers("alice") and time.monotonic() < deadline:
        _keep_busy(hub, "busy")
        time.sleep(2)
    assert "" not in hub.servers("alice"), "the idle server was not culled: " + hub.log_tail()
    # By the culler service (its log goes to the hub's), not by anything else.
    log = hub.log.read_text(errors="replace")
    assert "Culling server alice " in log and "Culling server alice/busy" not in log
    # Stopped like a normal stop: every process of it (rclone and sts-wire too) gone, no mount,
    # its cgroup removed.
    deadline = time.monotonic() + 15
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _alive(pids) == set()
    assert mounts_under(hub.root) == []
    assert not (CGROUP_ROOT / "memory" / idle_cgroup).exists()
    # The busy server outlived the timeout and is still there, ready; the default server's entry
    # can be started again (culling stops, it does not delete).
    # (The busy one became ready after the idle one, so keep it busy until it too is older than
    # the timeout, plus a culler round.)
    started = datetime.datetime.fromisoformat(hub.servers("alice")["busy"]["started"].replace("Z", "+00:00"))
    while (datetime.datetime.now(datetime.UTC) - started).total_seconds() < IDLE_TIMEOUT + 5:
        _keep_busy(hub, "busy")
        time.sleep(1)
    busy = hub.servers("alice")["busy"]
    assert busy["ready"]
    hub.stop_server("alice", "busy")
