"""The hub section of the suite config reaches JupyterHub's own settings (no services needed)."""

from __future__ import annotations

from traitlets.config import Config

from jhub_cloud.config import from_dict
from jhub_cloud.hub_config import _apply_hub


def hub_section(tmp_path, **hub) -> dict:
    return from_dict({
        "hub": {"data_dir": str(tmp_path / "data"), **hub},
        "auth": {"issuer": "https://iam.example.org/", "client_id": "hub", "allowed_groups": ["physics"]},
        "backends": {"slurm": {"partition": "debug"}},
        "groups": {"physics": {"max_servers": 1, "max_cpu": 4, "max_memory": "8G"}},
        "profiles": [{"name": "batch", "display_name": "Batch", "backend": "slurm", "groups": ["physics"],
                      "choices": {"image": {"options": ["lab"]}, "cpu": {"options": [1]},
                                  "memory": {"options": ["1G"]}}}],
    }).hub


def test_servers_reach_the_hub_at_the_connect_url(tmp_path):
    c = Config()
    _apply_hub(c, hub_section(tmp_path, hub_bind_url="http://127.0.0.1:8081",
                              hub_connect_url="https://hpc-hub.example.org"), lambda ref, what: "x" * 64)
    assert c.JupyterHub.hub_bind_url == "http://127.0.0.1:8081"
    assert c.JupyterHub.hub_connect_url == "https://hpc-hub.example.org"
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


def test_without_a_connect_url_jupyterhub_chooses(tmp_path):
    c = Config()
    _apply_hub(c, hub_section(tmp_path), lambda ref, what: "x" * 64)
    assert "hub_connect_url" not in c.JupyterHub


def test_roles_defined_before_stay_and_user_gets_no_auth_state(tmp_path):
    c = Config()
    c.JupyterHub.load_roles = [{"name": "monitoring", "scopes": ["read:metrics"], "services": ["prom"]},
                               {"name": "user", "scopes": ["self", "admin:auth_state!user"]}]
    _apply_hub(c, hub_section(tmp_path), lambda ref, what: "x" * 64)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["monitoring"]["scopes"] == ["read:metrics"]
    assert roles["user"]["scopes"] == ["self", "custom:jhub-cloud:access-token!user"]
