"""Running the hub in production: idle culling and Prometheus metrics (the `culler` and `metrics`
sections of the suite config). `apply_operations(c, cfg, resolve_secret)` fills the traitlets
config; `culler_command` is pure so that tests and `jhub-cloud` can show what will run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

CULLER_SERVICE = "idle-culler"
# The least the culler needs (SPAWNER-NOTES §6): find servers and their activity, stop them.
# Not admin:users (it never deletes users) and no --remove-named-servers: removing a server calls
# delete_forever, which deletes a Kubernetes user's volume.
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
PROMETHEUS_SERVICE = "prometheus"
PROMETHEUS_SCOPES = ["read:metrics"]
# Tells each server's sts-wire how often to report its mounts to the hub (0: never).
REPORT_ENV = "STS_WIRE_REPORT_SECONDS"


def culler_command(culler: Mapping, python: str = sys.executable) -> list[str] | None:
    """The culler service's command for the `culler` section, or None when culling is off."""
    idle, max_age = culler.get("idle_timeout_seconds"), culler.get("max_age_seconds")
    if idle is None and max_age is None:
        return None
    # With only an age limit, an idle timeout equal to it culls nothing more: a server idle for
    # max_age seconds is at least that old.
    timeout = idle if idle is not None else max_age
    every = culler.get("every_seconds") or max(1, min(timeout, max_age or timeout) // 2)
    cmd = [python, "-m", "jupyterhub_idle_culler", f"--timeout={timeout}", f"--cull-every={every}",
           # No config file from whatever folder the hub runs in: this command is the whole setting.
           "--config="]
    if max_age is not None:
        cmd.append(f"--max-age={max_age}")
    return cmd


def apply_operations(c, cfg, resolve_secret: Callable[[object, str], str]) -> None:
    """Fill the traitlets config `c`: the culler service, metrics access and sts-wire reports."""
    data = cfg.raw()
    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    roles = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    cmd = culler_command(data.get("culler") or {})
    if cmd:
        services.append({"name": CULLER_SERVICE, "command": cmd})
        roles.append({"name": "jhub-cloud-idle-culler", "scopes": CULLER_SCOPES, "services": [CULLER_SERVICE]})

    metrics = data.get("metrics") or {}
    c.JupyterHub.authenticate_prometheus = not metrics.get("public", False)
    if metrics.get("scrape_token") is not None:
        token = resolve_secret(metrics["scrape_token"], "metrics.scrape_token")
        services.append({"name": PROMETHEUS_SERVICE, "api_token": token})
        roles.append({"name": "jhub-cloud-prometheus", "scopes": PROMETHEUS_SCOPES,
                      "services": [PROMETHEUS_SERVICE]})
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles

    every = metrics.get("sts_wire_report_seconds", 30)
    c.Spawner.environment.update({REPORT_ENV: str(every)})
    if every:
        from .metrics import register_report_handler

        register_report_handler()
