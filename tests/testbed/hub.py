"""A real JupyterHub (with configurable-http-proxy) started from config/jupyterhub_config.py."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from .idp import IdP
from .paths import NODE_MODULES, REPO, VENV_BIN, free_port
from .procs import Daemon

CLIENT_SECRET = "jupyterhub-secret"  # the test IdP's secret for client 'jupyterhub'


def suite_config(idp: IdP, data_dir: Path, port: int, hub_port: int, proxy_api_port: int, **auth) -> dict:
    """A suite config for a hub on loopback logging in with the test IdP."""
    return {
        "hub": {
            "bind_url": f"http://127.0.0.1:{port}",
            "hub_bind_url": f"http://127.0.0.1:{hub_port}",
            "proxy_api_url": f"http://127.0.0.1:{proxy_api_port}",
            "proxy_command": str(NODE_MODULES / ".bin" / "configurable-http-proxy"),
            "data_dir": str(data_dir),
            "crypt_key": {"env": "JUPYTERHUB_CRYPT_KEY"},
        },
        "auth": {
            "issuer": idp.issuer,
            "client_id": "jupyterhub",
            "client_secret": {"env": "JHUB_CLOUD_CLIENT_SECRET"},
            "scopes": ["openid", "profile", "email", "groups", "offline_access"],
            "groups_claim": "groups",
            "groups_source": "access_token",
            "allowed_groups": ["physics", "cms", "admins"],
            "admin_groups": ["admins"],
            "ca_file": str(idp.pki.bundle),
            # oidc-provider issues refresh tokens only with explicit consent (IAM does not need this).
            "extra_authorize_params": {"prompt": "consent"},
            **auth,
        },
        "backends": {"local": {}},
        "groups": {
            "physics": {"max_servers": 1, "max_cpu": 2, "max_memory": "4G", "max_gpus": 0},
            "cms": {"max_servers": 2, "max_cpu": 4, "max_memory": "8G", "max_gpus": 0},
            "admins": {"max_servers": 3, "max_cpu": 4, "max_memory": "8G", "max_gpus": 0},
        },
        "profiles": [
            _profile("physics-cpu", "physics", cpus=[1, 2], memory=["1G", "2G"]),
            _profile("cms-cpu", "cms", cpus=[1, 4], memory=["2G", "8G"]),
            _profile("admin-cpu", "admins", cpus=[1], memory=["1G"]),
        ],
    }


def _profile(name: str, group: str, cpus: list, memory: list) -> dict:
    return {"name": name, "display_name": f"{group} notebook", "description": f"For {group}.",
            "backend": "local", "groups": [group],
            "choices": {"image": {"options": ["default"], "default": "default"},
                        "cpu": {"options": cpus, "default": cpus[0]},
                        "memory": {"options": memory, "default": memory[0]}}}


# The service that drives a test hub through its REST API (token in the 0600 file api_token).
TESTER_SERVICE = (
    "c.JupyterHub.services = list(c.JupyterHub.services) + [{'name': 'tester',"
    " 'api_token': open('api_token').read().strip()}]\n"
    "c.JupyterHub.load_roles = list(c.JupyterHub.load_roles) + [{'name': 'tester', 'services': ['tester'],"
    " 'scopes': ['admin:users', 'admin:servers', 'admin:auth_state', 'admin:groups', 'read:hub',"
    " 'tokens', 'custom:jhub-cloud:access-token']}]\n"
    "c.JupyterHub.log_level = 'DEBUG'\n"
)


@dataclass
class Hub:
    idp: IdP
    dir: Path
    auth: dict = field(default_factory=dict)   # overrides of the auth section
    extra: dict = field(default_factory=dict)  # extra top-level sections (backends, groups, profiles)
    extra_config: str = ""                     # extra lines for the hub's jupyterhub_config.py
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    api_token: str = field(default_factory=lambda: secrets.token_hex(24))
    # The same key across a restart of this hub: auth_state stays readable.
    crypt_key: str = field(default_factory=lambda: secrets.token_hex(32))
    # Put before the hub's command line (e.g. unshare, to start it in a mount namespace of its own).
    launcher: list = field(default_factory=list)
    daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "jupyterhub.log"

    @property
    def config_file(self) -> Path:
        return self.dir / "jhub-cloud.yaml"

    def config_lines(self) -> str:
        """The test's additions to jupyterhub_config.py (after the suite's own config)."""
        return (
            TESTER_SERVICE
            # Tests of login and tokens spawn with GET /hub/spawn (first profile, its defaults) and
            # leave no server behind when the hub stops (tests/testbed/cloudhub.py tests the spawner).
            + "c.CloudSpawner.show_form = False\n"
            "c.JupyterHub.cleanup_servers = True\n"
        )

    def start(self, timeout: float = 60) -> Hub:
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = suite_config(self.idp, self.dir / "data", self.port, self.hub_port, self.proxy_api_port, **self.auth)
        cfg.update(self.extra)
        self.config_file.write_text(yaml.safe_dump(cfg))
        (self.dir / "jupyterhub_config.py").write_text(
            f"load_subconfig({str(REPO / 'config' / 'jupyterhub_config.py')!r})\n"
            "c = get_config()\n" + self.config_lines() + self.extra_config
        )
        token_file = self.dir / "api_token"
        token_file.write_text(self.api_token)
        token_file.chmod(0o600)
        env = dict(os.environ, JHUB_CLOUD_CONFIG=str(self.config_file), JHUB_CLOUD_CLIENT_SECRET=CLIENT_SECRET,
                   JUPYTERHUB_CRYPT_KEY=self.crypt_key, CONFIGPROXY_AUTH_TOKEN=secrets.token_hex(16))
        argv = [*self.launcher, str(VENV_BIN / "jupyterhub"), "-f", "jupyterhub_config.py"]
        self.daemon = Daemon("jupyterhub", argv, self.log,
                             env=env, cwd=self.dir, stop_timeout=15).start()
        self.daemon.wait_ready(lambda: requests.get(self.url + "/hub/api/", timeout=2).ok, timeout=timeout)
        return self

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()

    # --- driving it ------------------------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.api_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)

    def user(self, name: str) -> dict:
        r = self.api("GET", f"/users/{name}")
        r.raise_for_status()
        return r.json()

    def login(self, user: str, password: str | None = None) -> tuple[requests.Session, requests.Response]:
        """Log in through the hub's OAuth flow without a browser.

        Returns the session and the hub's answer to the OAuth callback: a redirect onwards when the
        login worked (not followed, so that no server is spawned as a side effect), else an error page.
        """
        s = self.idp.session()
        r = s.get(self.url + "/hub/oauth_login", allow_redirects=False)
        while r.status_code in (302, 303):
            if "/hub/oauth_callback" in r.url:
                break
            loc = urllib.parse.urljoin(r.url, r.headers["location"])
            if "/interaction/" in loc:
                r = s.get(loc, allow_redirects=False)
                if r.status_code == 200:  # the login form
                    r = self.idp.submit_login(s, loc, user, password)
                continue
            r = s.get(loc, allow_redirects=False)
        return s, r


def spawn(hub: Hub, session: requests.Session, user: str, timeout: float = 90) -> None:
    """Start `user`'s default server as their browser would (GET /hub/spawn), wait until ready."""
    import time

    r = session.get(f"{hub.url}/hub/spawn/{user}", allow_redirects=False)
    if r.status_code not in (200, 302, 303):
        raise RuntimeError(f"spawn of {user} failed: {r.status_code} {r.text[:300]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.user(user)["servers"].get("", {}).get("ready"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server of {user} was not ready within {timeout} s; see {hub.log}")


def server_environ(hub: Hub, user: str) -> dict:
    """The environment of a user's running local-process server of this hub (read from /proc as root)."""
    import psutil

    for p in psutil.process_iter(["username", "cmdline"]):
        if p.info["username"] == user and any("jupyterhub-singleuser" in a for a in (p.info["cmdline"] or [])):
            env = p.environ()
            if f":{hub.hub_port}/" in env.get("JUPYTERHUB_API_URL", ""):
                return env
    raise LookupError(f"no running single-user server of {user} at this hub")
