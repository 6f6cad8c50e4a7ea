"""CloudSpawner with the local backend in a real JupyterHub: resources reach the process as
cgroup limits, named servers, concurrent spawns vs the limits, a hub restart, nothing left behind."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from jhub_cloud.spawner import cgroups
from tests.server_faults import last_stop_reason, server_api, spawn_page_notice, user_token
from tests.testbed.cloudhub import CGROUP_ROOT, CloudHub, singleuser_processes


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    # A site's pre_spawn_hook reaches the child (the spawner that has the backend's traits).
    hook = "c.Spawner.pre_spawn_hook = lambda s: s.environment.update(HOOKED_ON=type(s).__name__)\n"
    h = CloudHub(idp, run_dir / "hub-spawner-local", hub_config=hook).start()
    for user in ("alice", "bob", "carol"):
        h.login(user)  # users and their groups exist in the hub after their first login
    yield h
    h.stop()


def our_cgroups(hub) -> list[str]:
    out = []
    for c in cgroups.CONTROLLERS:
        d = CGROUP_ROOT / c / hub.cgroup_parent
        out += [f"{c}/{x.name}" for x in d.iterdir() if x.is_dir()] if d.exists() else []
    return sorted(out)


def cgroup_of(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path.lstrip("/")
    raise LookupError(controller)


def test_alice_server_runs_with_the_profiles_limits_and_leaves_nothing(hub):
    r = hub.spawn("alice", options={"profile": "cms-cpu", "cpu": 2, "memory": "3G"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    (proc,) = singleuser_processes(hub, "alice")
    assert proc.username() == "alice"
    assert proc.environ()["HOOKED_ON"] == "LocalChild"
    name = cgroup_of(proc.pid, "memory")
    assert name.startswith(hub.cgroup_parent + "/alice-") and cgroup_of(proc.pid, "cpu") == name
    limits = cgroups.read_limits(cgroups.CGroup(CGROUP_ROOT, name))
    assert limits == {"cpu": 2.0, "memory_bytes": 3 * 2**30}
    # The hub keeps the resources in the server's state (they count after a restart).
    state = hub.user("alice")["servers"][""]["state"]
    assert state["cloud"]["profile"] == "cms-cpu"
    assert state["cloud"]["resources"]["cpu"] == 2 and state["child"]["cgroup"] == name

    pid = proc.pid
    hub.stop_server("alice")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert singleuser_processes(hub, "alice") == []
    assert our_cgroups(hub) == []


def test_named_servers_each_get_their_own_process_and_cgroup(hub):
    assert hub.spawn("alice", "one", {"profile": "physics-cpu", "cpu": 1, "memory": "1G"}).status_code in (201, 202)
    assert hub.spawn("alice", "two", {"profile": "cms-cpu", "cpu": 1, "memory": "2G"}).status_code in (201, 202)
    hub.wait_ready("alice", "one")
    hub.wait_ready("alice", "two")
    procs = singleuser_processes(hub, "alice")
    assert len(procs) == 2
    names = {cgroup_of(p.pid, "memory") for p in procs}
    assert len(names) == 2
    assert any("alice--one-" in n for n in names) and any("alice--two-" in n for n in names)
    # A third server is above alice's max_servers of 2 (from group cms): refused, nothing started.
    r = hub.spawn("alice", "three", {"profile": "physics-cpu"})
    assert r.status_code == 400 and "max_servers" in r.json()["message"], r.text
    assert len(singleuser_processes(hub, "alice")) == 2
    hub.stop_server("alice", "one")
    hub.stop_server("alice", "two")
    assert singleuser_processes(hub, "alice") == [] and our_cgroups(hub) == []


def test_two_spawns_at_the_same_instant_cannot_exceed_the_limit_together(hub):
    """alice may have 4 CPUs in total: two 4-CPU servers asked for at once, one is refused."""
    opts = {"profile": "cms-cpu", "cpu": 4, "memory": "1G"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda n: hub.spawn("alice", n, opts), ["a", "b"]))
    codes = sorted(r.status_code for r in answers)
    assert codes[0] in (201, 202) and codes[1] == 400, [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 400)
    assert "max_cpu" in refused.json()["message"]
    started = "a" if answers[0].status_code != 400 else "b"
    hub.wait_ready("alice", started)
    assert len(singleuser_processes(hub, "alice")) == 1
    hub.stop_server("alice", started)
    assert our_cgroups(hub) == []


def test_a_restarted_hub_finds_the_server_counts_it_and_stops_it(hub, reliability):
    assert hub.spawn("bob", options={"profile": "physics-cpu", "cpu": 2, "memory": "2G"}).status_code in (201, 202)
    assert hub.spawn("alice", "big", {"profile": "cms-cpu", "cpu": 4, "memory": "2G"}).status_code in (201, 202)
    hub.wait_ready("bob")
    hub.wait_ready("alice", "big")
    procs = [*singleuser_processes(hub, "bob"), *singleuser_processes(hub, "alice")]
    assert len(procs) == 2
    pids = {"bob": hub.servers("bob")[""]["state"]["child"]["pid"],
            "alice": hub.servers("alice")["big"]["state"]["child"]["pid"]}
    assert sorted(pids.values()) == sorted(p.pid for p in procs)
    hub.stop(keep_servers=True)
    assert all(p.is_running() for p in procs)  # the servers outlive the hub (cleanup_servers is off)
    hub.start()
    bob, big = hub.servers("bob")[""], hub.servers("alice")["big"]
    assert bob["ready"] and big["ready"]
    # Found again: the same processes, not new ones.
    assert (bob["state"]["child"]["pid"], big["state"]["child"]["pid"]) == (pids["bob"], pids["alice"])
    # Reachable through the proxy, each as its user with a token of theirs.
    for user, server in (("bob", ""), ("alice", "big")):
        r = server_api(hub, user, user_token(hub, user), server)
        assert r.status_code == 200 and "started" in r.json(), (user, r.text)
    # bob (physics) may run 1 server: the one found again counts.
    r = hub.spawn("bob", "second", {"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code == 400 and "max_servers" in r.json()["message"], r.text
    # alice may run 2 servers but 4 CPUs in all: her 4-CPU server's resources came back from state.
    r = hub.spawn("alice", "small", {"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code == 400 and "max_cpu" in r.json()["message"], r.text
    t0 = time.monotonic()
    hub.stop_server("bob")
    hub.stop_server("alice", "big")
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = time.monotonic() - t0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    assert our_cgroups(hub) == []
    reliability.record("fault.hub-restart.local", f"found PIDs {pids['bob']} and {pids['alice']} again, "
                       "/api/status 200 via proxy for both, 2nd spawns refused (max_servers, max_cpu), "
                       f"both stopped and cgroups removed in {stopped:.1f} s")


def test_progress_tells_what_is_happening(hub):
    """The hub's progress stream (what the spawn page shows) carries our steps in order."""
    import json as _json

    import requests

    # The POST answers only when the server is up (or after 10 s): watch while it is pending.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    posted = pool.submit(hub.spawn, "alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    deadline = time.monotonic() + 10
    while not hub.servers("alice").get("", {}).get("pending") and time.monotonic() < deadline:
        time.sleep(0.02)
    messages = []
    with requests.get(f"{hub.url}/hub/api/users/alice/server/progress", stream=True, timeout=60,
                      headers={"Authorization": f"token {hub.api_token}"}) as r:
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = _json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    assert posted.result().status_code in (201, 202)
    pool.shutdown()
    hub.wait_ready("alice")
    hub.stop_server("alice")
    steps = ["Preparing your server", "Checking your choices",
             "Starting profile physics-cpu on the local backend (1 CPUs, 1024 MiB memory, enforced by cgroups)",
             "Server process started; waiting for it to answer"]
    found = [next(i for i, m in enumerate(messages) if m.startswith(s)) for s in steps]
    assert found == sorted(found), messages
    assert "ready" in messages[-1].lower(), messages


def test_a_server_that_died_while_the_hub_was_down_is_cleaned_up_at_restart(hub):
    assert hub.spawn("bob", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"}).status_code in (201, 202)
    hub.wait_ready("bob")
    name = hub.user("bob")["servers"][""]["state"]["child"]["cgroup"]
    group = cgroups.CGroup(CGROUP_ROOT, name)
    hub.stop(keep_servers=True)
    for pid in cgroups.pids(group):  # the server and all it started die while no hub watches
        os.kill(pid, signal.SIGKILL)
    hub.start()
    deadline = time.monotonic() + 20
    while hub.servers("bob") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert hub.servers("bob") == {}
    assert not group.path("cpu").exists() and not group.path("memory").exists()
    # bob is told, on his next spawn page, that his server ended without him.
    assert last_stop_reason(hub, "bob") == "the local server ended"
    assert "stopped on its own" in spawn_page_notice(hub, "bob")
    # Its resources no longer count: bob (1 server at most) may start again.
    assert hub.spawn("bob", options={"profile": "physics-cpu"}).status_code in (201, 202)
    hub.wait_ready("bob")
    hub.stop_server("bob")  # stopped by the hub: no notice
    assert our_cgroups(hub) == [] and spawn_page_notice(hub, "bob") == ""
