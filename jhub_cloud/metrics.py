"""Prometheus metrics of jhub-cloud, served with JupyterHub's own at /hub/metrics (one registry).

- Spawns per profile and backend, recorded by CloudSpawner: `jhub_cloud_spawns_total{outcome}`
  (started: the server answered through the proxy; refused: by policy, before anything ran;
  failed: anything else) and `jhub_cloud_spawn_duration_seconds` (admission to ready).
- Each running server's storage, as its sts-wire reports it to the hub
  (`POST /hub/api/jhub-cloud/users/<name>/sts-wire`, with the server's own token):
  `jhub_cloud_sts_wire_*`. Reports are kept in memory while the server runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from jupyterhub.apihandlers import APIHandler
from jupyterhub.scopes import has_scope
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.web import HTTPError

SPAWNS = Counter("jhub_cloud_spawns", "Spawns by profile, backend and outcome (started, refused, failed)",
                 ["profile", "backend", "outcome"])
SPAWN_DURATION = Histogram("jhub_cloud_spawn_duration_seconds",
                           "Seconds from admission to a server answering through the proxy",
                           ["profile", "backend"],
                           buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
REPORT_ROUTE = r"/api/jhub-cloud/users/([^/]+)/sts-wire"
MAX_REPORT_BYTES = 65536


# --- spawns ---------------------------------------------------------------------------------
def _labels(cfg, profile: str | None) -> tuple[str, str]:
    """(profile, backend) of a configured profile; user input that names none becomes ''."""
    p = cfg.profile(profile) if isinstance(profile, str) else None
    return (p.name, p.backend) if p is not None else ("", "")


def spawn_refused(cfg, options: Mapping | None) -> None:
    profile, backend = _labels(cfg, (options or {}).get("profile"))
    SPAWNS.labels(profile, backend, "refused").inc()


def watch_spawn(spawner, started_at: float) -> None:
    """Count this spawn as started or failed when the hub's spawn future ends (after the proxy
    route is added, or after a failure and its clean-up)."""
    profile, backend = spawner.profile_name or "", spawner.backend_name or ""
    future = getattr(spawner, "_spawn_future", None)
    if future is None:  # not a spawn the hub is waiting on: nothing to count
        return

    def done(f) -> None:
        if not f.cancelled() and f.exception() is None and spawner.ready:
            SPAWNS.labels(profile, backend, "started").inc()
            SPAWN_DURATION.labels(profile, backend).observe(time.monotonic() - started_at)
        else:
            SPAWNS.labels(profile, backend, "failed").inc()

    future.add_done_callback(done)


# --- sts-wire reports -------------------------------------------------------------------------
_reports: dict[tuple[str, str], dict] = {}


def parse_report(body: bytes) -> dict:
    """The numbers of an sts-wire report (see sts_wire/report.py), or ValueError saying why."""
    if len(body) > MAX_REPORT_BYTES:
        raise ValueError(f"report larger than {MAX_REPORT_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("report is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("server", ""), str):
        raise ValueError("report must be a JSON object with a string 'server'")
    out = {"server": doc.get("server", ""), "error": bool(doc.get("error"))}
    for key in ("key_renewals", "token_renewals", "renewal_failures", "keys_expire"):
        v = doc.get(key)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise ValueError(f"'{key}' must be a number")
        out[key] = v
    mounts = doc.get("mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                               for m in mounts):
        raise ValueError("'mounts' must be a list of objects with a string 'path'")
    out["mounts"] = [{"path": m["path"][:256], "ready": m.get("state") == "ready",
                      "remounts": int(m.get("remounts") or 0)} for m in mounts[:64]]
    return out


def record_report(user: str, report: dict) -> None:
    _reports[(user, report["server"])] = {**report, "received": time.time()}


def forget_server(user: str, server: str) -> None:
    """The server stopped: its storage series end."""
    _reports.pop((user, server), None)


class StsWireCollector:
    """The latest report of every running server, as metric families at each scrape."""

    def collect(self):
        per = ["user", "server"]
        fams = {
            "ready": GaugeMetricFamily("jhub_cloud_sts_wire_mount_ready", "1 if the mount answers",
                                       labels=[*per, "path"]),
            "remounts": CounterMetricFamily("jhub_cloud_sts_wire_remounts", "Times sts-wire remounted",
                                            labels=[*per, "path"]),
            "key_renewals": CounterMetricFamily("jhub_cloud_sts_wire_key_renewals", "S3 keys obtained",
                                                labels=per),
            "token_renewals": CounterMetricFamily("jhub_cloud_sts_wire_token_renewals", "Tokens obtained",
                                                  labels=per),
            "renewal_failures": CounterMetricFamily("jhub_cloud_sts_wire_renewal_failures",
                                                    "Failed token or key renewals", labels=per),
            "error": GaugeMetricFamily("jhub_cloud_sts_wire_error",
                                       "1 if sts-wire's last renewal ended in an error", labels=per),
            "keys_expire": GaugeMetricFamily("jhub_cloud_sts_wire_keys_expiry_timestamp_seconds",
                                             "When the current S3 keys expire", labels=per),
            "received": GaugeMetricFamily("jhub_cloud_sts_wire_report_timestamp_seconds",
                                          "When the hub last heard from the server's sts-wire", labels=per),
        }
        for (user, server), r in sorted(_reports.items()):
            for m in r["mounts"]:
                fams["ready"].add_metric([user, server, m["path"]], 1.0 if m["ready"] else 0.0)
                fams["remounts"].add_metric([user, server, m["path"]], m["remounts"])
            for key in ("key_renewals", "token_renewals", "renewal_failures", "keys_expire", "received"):
                if r.get(key) is not None:
                    fams[key].add_metric([user, server], float(r[key]))
            fams["error"].add_metric([user, server], 1.0 if r["error"] else 0.0)
        yield from fams.values()


_collector = StsWireCollector()
REGISTRY.register(_collector)


class StsWireReportHandler(APIHandler):
    """POST a server's sts-wire report. The server's own token may (it holds users:activity for
    its user, as for its activity reports); a report for a server that is not running is 404."""

    async def post(self, user_name: str):
        if not self.current_user or not has_scope(f"users:activity!user={user_name}", self.parsed_scopes,
                                                  db=self.db):
            raise HTTPError(403, f"This token may not report for {user_name} (needs users:activity).")
        try:
            report = parse_report(self.request.body)
        except ValueError as e:
            raise HTTPError(400, f"Bad sts-wire report: {e}") from None
        user = self.find_user(user_name)
        spawner = user.spawners.get(report["server"]) if user is not None else None
        # Only while ready: a report in flight when a stop begins must not bring the series back.
        if spawner is None or not spawner.ready:
            raise HTTPError(404, f"{user_name} has no running server {report['server']!r}")
        record_report(user_name, report)
        self.set_status(204)


def register_report_handler() -> None:
    """Add the report endpoint to the hub's API handlers (before the hub starts)."""
    from jupyterhub import apihandlers

    if not any(h[1] is StsWireReportHandler for h in apihandlers.default_handlers):
        apihandlers.default_handlers.append((REPORT_ROUTE, StsWireReportHandler))
