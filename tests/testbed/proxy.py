"""configurable-http-proxy (the proxy JupyterHub drives) on free loopback ports.

The API token goes to CHP through CONFIGPROXY_AUTH_TOKEN, never on its command line, where any
local user could read it in the process list.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .paths import NODE_MODULES, free_port
from .procs import Daemon

CHP_BIN = NODE_MODULES / ".bin" / "configurable-http-proxy"


@dataclass
class Proxy:
    dir: Path
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api"

    def api(self, method: str, path: str, **kw) -> requests.Response:
        s = requests.Session()
        s.trust_env = False  # no proxy variables or netrc from the machine for loopback calls
        r = s.request(method, self.api_url + path, timeout=10,
                      headers={"Authorization": f"token {self.token}"}, **kw)
        r.raise_for_status()
        return r

    def routes(self) -> dict:
        return self.api("GET", "/routes").json()

    def add_route(self, prefix: str, target: str, **data) -> None:
        """Send requests under ``prefix`` (e.g. "/user/alice") to ``target`` (a URL)."""
        self.api("POST", "/routes" + prefix, json={"target": target, **data})

    def delete_route(self, prefix: str) -> None:
        self.api("DELETE", "/routes" + prefix)

    def start(self) -> Proxy:
        argv = [str(CHP_BIN), "--ip", "127.0.0.1", "--port", str(self.port),
                "--api-ip", "127.0.0.1", "--api-port", str(self.api_port), "--log-level", "info"]
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=self.token)
        self.daemon = Daemon("configurable-http-proxy", argv, self.dir / "chp.log", env=env,
                             stop_timeout=5).start()
        self.daemon.wait_ready(lambda: self.api("GET", "/routes").ok, timeout=30)
        return self

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()


@pytest.fixture(scope="session")
def chp(run_dir) -> Proxy:
    """A running configurable-http-proxy; add routes with ``chp.add_route(prefix, target)``."""
    p = Proxy(run_dir / "chp")
    try:
        yield p.start()
    finally:
        p.stop()
