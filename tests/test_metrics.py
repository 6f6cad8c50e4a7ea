"""Prometheus metrics in a real hub: JupyterHub's own and jhub-cloud's spawn counters at
/hub/metrics for the scrape token only; started and refused spawns move their counters; a running
server's sts-wire reports its mounts and renewals, which appear per server and end with it."""

from __future__ import annotations

import copy
import json
import os
import stat
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from jhub_cloud.metrics import parse_report
from sts_wire.idp import Http
from sts_wire.report import Reporter, report_body
from tests.testbed.cloudhub import CloudHub, spawner_profiles
from tests.testbed.hub import server_environ

REPORT_SECONDS = 3


def test_a_report_is_numbers_and_paths_only_and_bad_ones_are_refused():
    state = {"key_renewals": 3, "token_renewals": 2, "renewal_failures": 1, "keys_expire": "2030-01-01T00:00:00Z",
             "access_key": "AKIA...", "last_error": "STS said no", "token_source": "hub",
             "mounts": [{"path": "/s3/alice", "state": "ready", "remounts": 1, "log": "/run/x", "rclone_pid": 7}]}
    body = report_body(state, "gpu")
    assert body == {"server": "gpu", "key_renewals": 3, "token_renewals": 2, "renewal_failures": 1,
                    "keys_expire": 1893456000.0, "error": True,
                    "mounts": [{"path": "/s3/alice", "state": "ready", "remounts": 1}]}
    parsed = parse_report(json.dumps(body).encode())
    assert parsed["mounts"] == [{"path": "/s3/alice", "ready": True, "remounts": 1}] and parsed["error"]
    for bad, why in ((b"[1]", "JSON object"), (b"{", "not JSON"), (b'{"key_renewals": "3"}', "key_renewals"),
                     (b'{"mounts": [{"path": 3}]}', "mounts"), (b"x" * 70000, "larger")):
        with pytest.raises(ValueError, match=why):
            parse_report(bad)


# --- in a real hub ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(idp, seaweedfs, run_dir):
    if stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (what udev does on a normal machine: TESTBED.md)
    root = run_dir / "s3-metrics"
    root.mkdir()
    root.chmod(0o1777)
    token_file = run_dir / "metrics-scrape-token"
    token_file.write_text("scrape-" + os.urandom(16).hex())
    token_file.chmod(0o600)
    mounts = [{"bucket": "{username}", "path": f"{root}/{{username}}"}]
    profiles = spawner_profiles(mounts)
    # A profile whose server cannot start: Python finds no standard library.
    broken = copy.deepcopy(profiles["profiles"][0])
    broken.update(name="broken-cpu", display_name="Broken", mounts=[], environment={"PYTHONHOME": "/nonexistent"})
    profiles["profiles"].append(broken)
    extra = {**profiles,
             "metrics": {"scrape_token": {"file": str(token_file)}, "sts_wire_report_seconds": REPORT_SECONDS},
             "storage": {"s3_endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                         "role_arn": seaweedfs.role_arn, "region": seaweedfs.region,
                         "mount_roots": [str(root)]}}
    h = CloudHub(idp, run_dir / "hub-metrics", extra=extra, hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\n")
    h.start()
    for user in ("alice", "bob"):
        h.login(user)
    h.root, h.scrape_token = root, token_file.read_text()
    yield h
    h.stop()


def scrape(hub) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, as Prometheus would read them with the scrape token."""
    r = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.scrape_token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_scrape_token_which_reads_nothing_else(hub):
    assert requests.get(f"{hub.url}/hub/metrics", timeout=10).status_code == 403
    samples = scrape(hub)
    assert value(samples, "jupyterhub_total_users") >= 2  # JupyterHub's own
    r = hub.api("GET", "/users", token=hub.scrape_token)
    assert r.status_code == 403


def test_spawns_are_counted_per_profile_and_backend_and_storage_per_server(hub):
    before = scrape(hub)
    # Refused by policy: bob (physics) asks for the CMS profile, and for a profile that does not exist.
    r = hub.spawn("bob", options={"profile": "cms-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code == 400, r.text
    assert hub.spawn("bob", options={"profile": "no-such-profile"}).status_code == 400
    # Started: alice's server with her bucket mounted by sts-wire.
    r = hub.spawn("alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text + hub.log_tail(60)
    hub.wait_ready("alice", timeout=120)
    after = scrape(hub)
    refused = "jhub_cloud_spawns_total"
    assert value(after, refused, profile="cms-cpu", backend="local", outcome="refused") == \
        value(before, refused, profile="cms-cpu", backend="local", outcome="refused") + 1
    assert value(after, refused, profile="", backend="", outcome="refused") == \
        value(before, refused, profile="", backend="", outcome="refused") + 1
    assert value(after, refused, profile="physics-cpu", backend="local", outcome="started") == \
        value(before, refused, profile="physics-cpu", backend="local", outcome="started") + 1
    assert value(after, refused, profile="physics-cpu", backend="local", outcome="failed") == \
        value(before, refused, profile="physics-cpu", backend="local", outcome="failed")
    count = "jhub_cloud_spawn_duration_seconds_count"
    assert value(after, count, profile="physics-cpu", backend="local") == \
        value(before, count, profile="physics-cpu", backend="local") + 1
    assert value(after, "jhub_cloud_spawn_duration_seconds_sum", profile="physics-cpu", backend="local") > 0

    # sts-wire in alice's server reports her mount and its renewals (every 3 s here).
    path = f"{hub.root}/alice"
    url = f"{hub.url}/hub/api/jhub-cloud/users/%s/sts-wire"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = scrape(hub)
        if value(samples, "jhub_cloud_sts_wire_mount_ready", user="alice", server="", path=path) == 1.0:
            break
        time.sleep(1)
    assert value(samples, "jhub_cloud_sts_wire_mount_ready", user="alice", server="", path=path) == 1.0, \
        [k for k in samples if "sts_wire" in k[0]]
    # Keys obtained once at the start: no renewal (keys last at least 900 s) and no failure yet.
    renewals = ("jhub_cloud_sts_wire_key_renewals_total", (("server", ""), ("user", "alice")))
    failures = ("jhub_cloud_sts_wire_renewal_failures_total", (("server", ""), ("user", "alice")))
    assert samples[renewals] == 0 and samples[failures] == 0
    assert value(samples, "jhub_cloud_sts_wire_error", user="alice", server="") == 0
    assert value(samples, "jhub_cloud_sts_wire_keys_expiry_timestamp_seconds", user="alice", server="") > time.time()
    assert value(samples, "jhub_cloud_sts_wire_report_timestamp_seconds", user="alice", server="") > time.time() - 10

    # What sts-wire's state file says is what the hub shows: a state with renewals and failures,
    # sent by the reporter with the server's token (the live one sends again within 3 s: retry).
    token = server_environ(hub, "alice")["JUPYTERHUB_API_TOKEN"]
    state_file = hub.dir / "state.json"
    state_file.write_text(json.dumps({"key_renewals": 4, "renewal_failures": 2, "last_error": "STS unreachable",
                                      "mounts": [{"path": path, "state": "failed", "remounts": 5}]}))
    reporter = Reporter(state_file, url % "alice", token, "", 60, Http(True))
    for _ in range(5):
        assert reporter.send()
        samples = scrape(hub)
        if samples[renewals] == 4:
            break
    assert samples[renewals] == 4 and samples[failures] == 2
    assert value(samples, "jhub_cloud_sts_wire_error", user="alice", server="") == 1
    assert value(samples, "jhub_cloud_sts_wire_mount_ready", user="alice", server="", path=path) == 0
    assert value(samples, "jhub_cloud_sts_wire_remounts_total", user="alice", server="", path=path) == 5

    # Only alice's server may report for her, and only for a server that runs.
    assert requests.post(url % "bob", headers={"Authorization": f"token {token}"}, json={}, timeout=10) \
        .status_code == 403
    r = requests.post(url % "alice", headers={"Authorization": f"token {token}"}, json={"server": "nope"}, timeout=10)
    assert r.status_code == 404
    r = requests.post(url % "alice", headers={"Authorization": f"token {token}"}, data=b"{", timeout=10)
    assert r.status_code == 400 and "not JSON" in r.text

    # Stopped: her storage series end.
    hub.stop_server("alice")
    time.sleep(2)  # a report in flight when the server stopped is refused (404), not recorded
    assert not [k for k in scrape(hub) if k[0].startswith("jhub_cloud_sts_wire") and ("user", "alice") in k[1]]


def test_a_server_that_cannot_start_counts_as_failed(hub):
    before = scrape(hub)
    r = hub.spawn("alice", options={"profile": "broken-cpu", "cpu": 1, "memory": "1G"})
    # Failed within the request (500), or later while the hub waited for it (202).
    assert r.status_code in (202, 500), r.text
    deadline = time.monotonic() + 120
    while "" in hub.servers("alice") and time.monotonic() < deadline:
        time.sleep(1)
    assert "" not in hub.servers("alice"), hub.log_tail()
    after = scrape(hub)
    name, labels = "jhub_cloud_spawns_total", {"profile": "broken-cpu", "backend": "local"}
    assert value(after, name, outcome="failed", **labels) == value(before, name, outcome="failed", **labels) + 1
    assert value(after, name, outcome="started", **labels) == value(before, name, outcome="started", **labels)


def test_the_scrape_token_service_reads_metrics_only_and_public_drops_the_token():
    import yaml
    from traitlets.config import Config as TraitletsConfig

    from jhub_cloud.config import from_dict
    from jhub_cloud.operations import PROMETHEUS_SERVICE, REPORT_ENV, apply_operations

    site = yaml.safe_load((Path(__file__).parents[1] / "config" / "examples" / "local.yaml").read_text())
    c = TraitletsConfig()
    given = []
    apply_operations(c, from_dict({**site, "metrics": {"scrape_token": {"env": "PROM_TOKEN"}}}),
                     lambda ref, where: given.append((ref, where)) or "the-token")
    assert given == [({"env": "PROM_TOKEN"}, "metrics.scrape_token")]
    (svc,) = [s for s in c.JupyterHub.services if s["name"] == PROMETHEUS_SERVICE]
    assert svc == {"name": PROMETHEUS_SERVICE, "api_token": "the-token"}
    (role,) = [r for r in c.JupyterHub.load_roles if r.get("services") == [PROMETHEUS_SERVICE]]
    assert role["scopes"] == ["read:metrics"]
    assert c.JupyterHub.authenticate_prometheus is True
    # Servers are told how often to report (merged into whatever environment the site sets).
    assert c.Spawner.environment.get_value({"SITE": "x"}) == {"SITE": "x", REPORT_ENV: "30"}

    c = TraitletsConfig()
    apply_operations(c, from_dict({**site, "metrics": {"public": True, "sts_wire_report_seconds": 0}}),
                     lambda ref, where: "unused")
    assert c.JupyterHub.authenticate_prometheus is False
    assert not [s for s in c.JupyterHub.services if s["name"] == PROMETHEUS_SERVICE]
