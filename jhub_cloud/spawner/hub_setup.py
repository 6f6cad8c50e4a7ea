"""Set the hub's spawner up from the suite's validated configuration: CloudSpawner for every server."""

from __future__ import annotations

from ..config.model import Config


def apply_spawner(c, cfg: Config) -> None:
    """Fill the traitlets config `c`: CloudSpawner with the whole suite config, named servers on."""
    from .cloud import CloudSpawner

    c.JupyterHub.spawner_class = CloudSpawner
    c.CloudSpawner.suite = cfg.raw()
    # Per-group limits (policy: max_servers and the totals) bound a user's servers, not a count here.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = 0
    # Servers outlive a hub restart (their resources are in their state and still count).
    c.JupyterHub.cleanup_servers = False
    if "slurm" in cfg.backends:
        # Jobs report their port to the hub API; the handler must exist before the hub starts.
        from .slurm_port import register

        register()
