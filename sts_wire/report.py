"""Reports of a notebook server's storage to its hub, for the hub's Prometheus metrics.

In a JupyterHub server (token source `hub`), `sts-wire run` posts what `sts-wire status` shows,
numbers only (mount states, remounts, renewals, failures, key expiry; no key, token or error
text), to `$JUPYTERHUB_API_URL/jhub-cloud/users/$JUPYTERHUB_USER/sts-wire` every
$STS_WIRE_REPORT_SECONDS seconds (unset or 0: never), with the server's own API token. A thread
of its own, so that a slow hub never delays the supervisor; a failed report is only logged.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from .errors import Exit, StsWireError
from .idp import Http

log = logging.getLogger("sts_wire")
ENV = "STS_WIRE_REPORT_SECONDS"


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return t.timestamp()


def report_body(state: Mapping, server: str) -> dict:
    """The report for one state (runtime.state.json): numbers and mount paths only."""
    return {"server": server,
            "key_renewals": state.get("key_renewals", 0),
            "token_renewals": state.get("token_renewals", 0),
            "renewal_failures": state.get("renewal_failures", 0),
            "keys_expire": _epoch(state.get("keys_expire")),
            "error": bool(state.get("last_error")),
            "mounts": [{"path": m["path"], "state": m.get("state"), "remounts": m.get("remounts", 0)}
                       for m in state.get("mounts", [])]}


class Reporter:
    def __init__(self, state_file: Path, url: str, api_token: str, server: str, every: float, http: Http):
        self.state_file, self.url, self.server, self.every = state_file, url, server, every
        self._headers = {"Authorization": f"token {api_token}", "Content-Type": "application/json"}
        self.http = http
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sts-wire-report", daemon=True)

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while True:
            self.send()
            if self._stop.wait(self.every):
                return

    def send(self) -> bool:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return False  # not written yet
        try:
            r = self.http.request("POST", self.url, "JupyterHub API", Exit.IDP_UNREACHABLE,
                                  headers=self._headers, data=json.dumps(report_body(state, self.server)))
        except StsWireError as e:
            log.warning("storage report to the hub failed: %s", e.message)
            return False
        if r.status_code == 404:  # the hub does not count the server as ready (yet, or any more)
            log.debug("the hub did not take the storage report: the server is not ready")
        elif r.status_code >= 400:
            log.warning("the hub refused the storage report (HTTP %d)", r.status_code)
        return r.status_code < 400


def start_reporter(sup, state_file: Path, env: Mapping[str, str] | None = None) -> Reporter | None:
    """A running Reporter when this is a hub server asked to report, else None."""
    env = os.environ if env is None else env
    try:
        every = float(env.get(ENV) or 0)
    except ValueError:
        log.warning("%s is not a number of seconds: storage reports are off", ENV)
        return None
    source = sup.creds.source
    user, token = env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_API_TOKEN")
    if every <= 0 or getattr(source, "name", None) != "hub" or not (user and token):
        return None
    url = f"{source.api_url}/jhub-cloud/users/{user}/sts-wire"
    http = Http(source.http.verify, source.http.cert)  # its own session: the thread shares none
    return Reporter(state_file, url, token, env.get("JUPYTERHUB_SERVER_NAME", ""), every, http).start()
