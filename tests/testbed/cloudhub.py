"""A real JupyterHub with CloudSpawner (local backend) for the spawner tests, built on hub.Hub.

Profiles and limits (groups as in idp.USERS: alice physics+cms, bob physics, carol admins+physics):
- physics: 1 server, 2 CPUs, 4G in total;  cms: 2 servers, 4 CPUs, 8G;  admins: 3, 4, 8G.
- physics-cpu (physics): cpu 1|2, memory 1G|2G;  cms-cpu (cms): cpu 1|2|4, memory 1G|2G|3G|8G.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jhub_cloud.spawner.cgroups import CONTROLLERS

from .hub import TESTER_SERVICE, Hub, _profile

CGROUP_ROOT = Path("/sys/fs/cgroup")


def spawner_profiles(mounts: list | None = None) -> dict:
    physics = _profile("physics-cpu", "physics", cpus=[1, 2], memory=["1G", "2G"])
    cms = _profile("cms-cpu", "cms", cpus=[1, 2, 4], memory=["1G", "2G", "3G", "8G"])
    admin = _profile("admin-cpu", "admins", cpus=[1], memory=["1G"])
    physics["description"] = "CPU notebooks for the physics group."
    cms["description"] = "Bigger CPU notebooks for CMS analysis."
    for p in (physics, cms):
        p["mounts"] = list(mounts or [])
    return {"profiles": [physics, cms, admin]}


@dataclass
class CloudHub(Hub):
    """Hub whose stop() first stops every server it started (cleanup_servers is off by design)."""

    extra: dict = field(default_factory=spawner_profiles)
    hub_config: str = ""  # more lines for jupyterhub_config.py

    @property
    def cgroup_parent(self) -> str:
        """This hub's own cgroup folder, so that tests count only its servers' cgroups."""
        return f"jhub-cloud-test/{self.dir.parent.name}-{self.dir.name}"

    def config_lines(self) -> str:
        """The tester service, this hub's cgroup folder and the test's own lines; unlike Hub, the
        spawn page shows and servers outlive the hub (cleanup_servers off, as in production)."""
        return (TESTER_SERVICE
                + f"c.LocalChild.cgroup_parent = {self.cgroup_parent!r}\n"
                "c.LocalChild.require_limits = True\n"
                + self.hub_config)

    def stop(self, keep_servers: bool = False) -> None:
        if self.daemon and self.daemon.alive() and not keep_servers:
            self.stop_all_servers()
        super().stop()
        if not keep_servers:  # this hub's cgroup folder, empty once its servers are gone
            for controller in CONTROLLERS:
                folder = CGROUP_ROOT / controller / self.cgroup_parent
                if folder.exists():
                    folder.rmdir()

    # --- servers ------------------------------------------------------------------------------
    def servers(self, user: str) -> dict:
        return self.user(user).get("servers", {})

    def spawn(self, user: str, server: str = "", options: dict | None = None, body=None):
        """POST /users/<user>/servers/<server> as the tester service (JSON user_options)."""
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        payload = body if body is not None else ({"user_options": options} if options is not None else None)
        return self.api("POST", path, json=payload) if not isinstance(payload, str | bytes) else \
            self.api("POST", path, data=payload)

    def wait_ready(self, user: str, server: str = "", timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.servers(user).get(server)
            if s and s.get("ready"):
                return s
            if s is None or not s.get("pending") and not s.get("ready"):
                time.sleep(0.3)
                if not self.servers(user).get(server):
                    raise AssertionError(f"{user}/{server!r} is not starting: {self.log_tail()}")
            time.sleep(0.3)
        raise AssertionError(f"{user}/{server!r} not ready after {timeout} s: {self.log_tail()}")

    def spawn_to_ready(self, user: str, options: dict | None, timeout: float = 180) -> float:
        """Seconds from the REST API's POST until the hub reports the server ready (benchmarks)."""
        t0 = time.perf_counter()
        r = self.spawn(user, options=options)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawn refused: {r.status_code} {r.text}")
        while not self.servers(user).get("", {}).get("ready"):
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"not ready after {timeout} s:\n" + self.log_tail())
            time.sleep(0.05)
        return time.perf_counter() - t0

    def stop_server(self, user: str, server: str = "", timeout: float = 60) -> None:
        path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
        r = self.api("DELETE", path)
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server not in self.servers(user):
                return
            time.sleep(0.3)
        raise AssertionError(f"{user}/{server!r} did not stop: {self.log_tail()}")

    def stop_all_servers(self) -> None:
        r = self.api("GET", "/users")
        if not r.ok:
            return
        for u in r.json():
            for name in list(u.get("servers", {})):
                with contextlib.suppress(AssertionError):  # stop the others all the same
                    self.stop_server(u["name"], name)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def user_processes(user: str) -> list[psutil.Process]:
    """Every live process of a system user (the local backend runs servers as the user)."""
    out = []
    for p in psutil.process_iter(["username", "status"]):
        if p.info["username"] == user and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def singleuser_processes(hub: Hub, user: str) -> list[psutil.Process]:
    """The user's jupyterhub-singleuser processes that belong to this hub."""
    out = []
    for p in user_processes(user):
        try:
            if any("jupyterhub-singleuser" in a for a in p.cmdline()) and \
                    f":{hub.hub_port}/" in p.environ().get("JUPYTERHUB_API_URL", ""):
                out.append(p)
        except psutil.Error:
            pass
    return out
