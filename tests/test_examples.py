"""The example sites in config/examples/: every one passes `jhub-cloud check`; the Docker and the
Slurm site start a real hub (the testbed's IdP and S3 substituted for the site's) that offers
their profiles, runs their culler and serves their metrics; the Zero to JupyterHub values.yaml
fits the chart's schema and loads the same suite YAML."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from tests.testbed.cloudhub import CloudHub
from tests.testbed.paths import REPO, VENV_BIN

EXAMPLES = REPO / "config" / "examples"
SITES = sorted(EXAMPLES.glob("*.yaml"))
VALUES = EXAMPLES / "zero-to-jupyterhub" / "values.yaml"


@pytest.mark.parametrize("path", SITES, ids=[p.name for p in SITES])
def test_every_example_passes_jhub_cloud_check(path):
    r = subprocess.run([str(VENV_BIN / "jhub-cloud"), "check", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and ": OK (" in r.stdout, r.stdout + r.stderr


# --- Docker and Slurm sites in a real hub ---------------------------------------------------------
def site_hub(example: str, idp, seaweedfs, run_dir) -> CloudHub:
    """The example's own backends, groups, profiles, culler and metrics; the hub's addresses, the
    IdP and the S3/STS endpoints are the testbed's."""
    site = yaml.safe_load((EXAMPLES / example).read_text())
    token_file = run_dir / f"{example}.metrics-token"
    token_file.write_text(os.urandom(16).hex())
    token_file.chmod(0o600)
    extra = {k: copy.deepcopy(v) for k, v in site.items() if k not in ("hub", "auth")}
    extra["metrics"]["scrape_token"] = {"file": str(token_file)}
    storage = extra.setdefault("storage", {})
    for key in ("role_arn", "audience", "ca_file"):
        storage.pop(key, None)
    storage.update(s3_endpoint=seaweedfs.endpoint, provider="SeaweedFS", role_arn=seaweedfs.role_arn,
                   region=seaweedfs.region)
    auth = {"admin_groups": [], **{k: site["auth"][k] for k in ("allowed_groups", "admin_groups", "login_service")
                                   if k in site["auth"]}}
    h = CloudHub(idp, run_dir / f"hub-example-{Path(example).stem}", auth=auth, extra=extra)
    h.site, h.scrape_token = site, token_file.read_text()
    return h


def culler_of(hub) -> list[str]:
    for p in psutil.Process(hub.daemon.pid).children(recursive=True):
        cmd = p.cmdline()
        if "jupyterhub_idle_culler" in cmd:
            return cmd
    raise AssertionError("no culler runs: " + hub.log_tail())


@pytest.mark.parametrize("example,user", [("docker.yaml", "alice"), ("slurm.yaml", "alice")])
def test_the_site_starts_a_hub_that_offers_its_profiles_culls_and_serves_metrics(example, user, idp, seaweedfs,
                                                                                 run_dir):
    hub = site_hub(example, idp, seaweedfs, run_dir).start()
    try:
        session, r = hub.login(user)
        assert r.status_code in (302, 303), r.text[:300]
        page = session.get(f"{hub.url}/hub/spawn/{user}", timeout=30)
        assert page.status_code == 200
        groups = {"alice": {"physics", "cms"}}[user]
        offered = [p for p in hub.site["profiles"] if groups & set(p["groups"])]
        assert offered
        for p in hub.site["profiles"]:
            assert (f'value="{p["name"]}"' in page.text) == (p in offered), p["name"]

        culler = hub.site["culler"]
        cmd = culler_of(hub)
        assert f"--timeout={culler['idle_timeout_seconds']}" in cmd
        if culler.get("max_age_seconds"):
            assert f"--max-age={culler['max_age_seconds']}" in cmd

        r = requests.get(f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.scrape_token}"},
                         timeout=10)
        assert r.status_code == 200 and "jupyterhub_total_users" in r.text
    finally:
        hub.stop()


# --- Zero to JupyterHub --------------------------------------------------------------------------
def _obj(props: dict, required=()) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}


_ENABLED = _obj({"enabled": {"type": "boolean"}}, ["enabled"])
# The part of the chart's documented values schema (chart 4.x: values.schema.yaml of
# jupyterhub/zero-to-jupyterhub-k8s) that this values.yaml uses: key names, types and required
# keys, each level closed as the chart's is, so a misspelt or misplaced key fails here too.
DOCUMENTED = _obj({
    "hub": _obj({
        "image": _obj({"name": {"type": "string"}, "tag": {"type": "string"},
                       "pullPolicy": {"enum": [None, "", "IfNotPresent", "Always", "Never"]}}, ["name", "tag"]),
        "extraFiles": {"type": "object", "additionalProperties": False, "patternProperties": {".*": {
            **_obj({"mountPath": {"type": "string"}, "data": {"type": "object"}, "stringData": {"type": "string"},
                    "binaryData": {"type": "string"}, "mode": {"type": "number"}}, ["mountPath"]),
            "oneOf": [{"required": ["data"]}, {"required": ["stringData"]}, {"required": ["binaryData"]}]}}},
        "extraEnv": {"type": ["object", "array"]},
        "extraConfig": {"type": "object", "additionalProperties": {"type": "string"}},
        "allowNamedServers": {"type": ["boolean", "null"]},
        "networkPolicy": _obj({"enabled": {"type": "boolean"}}),
    }),
    "singleuser": _obj({
        "storage": _obj({"type": {"enum": ["dynamic", "static", "none"]}}),
        "cloudMetadata": _obj({"blockWithIptables": {"type": "boolean"}}),
        "networkPolicy": _obj({"enabled": {"type": "boolean"}}),
    }),
    "cull": _ENABLED,
    "prePuller": _obj({"hook": _ENABLED, "continuous": _ENABLED}),
    "scheduling": _obj({"userScheduler": _ENABLED}),
})


def installed_values() -> dict:
    """The values as `helm upgrade --values values.yaml --set-file ...stringData=kubernetes.yaml`
    hands them to the chart."""
    values = yaml.safe_load(VALUES.read_text())
    values["hub"]["extraFiles"]["jhub-cloud"]["stringData"] = (EXAMPLES / "kubernetes.yaml").read_text()
    return values


def _problems(schema: dict, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in Draft202012Validator(schema).iter_errors(data)]


def test_values_keys_are_the_charts_documented_ones():
    assert _problems(DOCUMENTED, installed_values()) == []
    # Without the --set-file the chart refuses the values (the file has no content): as documented.
    assert _problems(DOCUMENTED, yaml.safe_load(VALUES.read_text()))
    bad = installed_values()
    bad["hub"]["extraconfig"] = bad["hub"].pop("extraConfig")
    assert _problems(DOCUMENTED, bad)


def _merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base.get(k), over[k]) if k in base else over[k] for k in over} | \
            {k: v for k, v in base.items() if k not in over}
    return over


def test_values_validate_against_the_charts_own_schema_when_the_chart_is_here():
    chart = os.environ.get("Z2JH_CHART")  # a folder with the chart's values.yaml and values.schema.(json|yaml)
    if not chart:
        pytest.skip("the Zero to JupyterHub chart is not on this machine (set Z2JH_CHART to its folder)")
    chart = Path(chart)
    schema_file = next(p for p in (chart / "values.schema.json", chart / "values.schema.yaml") if p.exists())
    schema = yaml.safe_load(schema_file.read_text())
    merged = _merge(yaml.safe_load((chart / "values.yaml").read_text()), installed_values())
    assert _problems(schema, merged) == []


def test_the_chart_loads_the_same_suite_yaml_through_the_hub_image():
    values = installed_values()
    hub = values["hub"]
    suite_file = hub["extraFiles"]["jhub-cloud"]["mountPath"]
    assert hub["extraEnv"]["JHUB_CLOUD_CONFIG"] == suite_file
    # The suite YAML given is the Kubernetes example, which passes jhub-cloud check (above), and
    # every secret it names by environment variable comes from the chart's Secret.
    suite = yaml.safe_load(hub["extraFiles"]["jhub-cloud"]["stringData"])
    refs = [suite["hub"]["crypt_key"], suite["auth"]["client_secret"], suite["metrics"]["scrape_token"]]
    for ref in refs:
        assert "env" in ref and hub["extraEnv"][ref["env"]]["valueFrom"]["secretKeyRef"]["name"] == "jhub-cloud"
    # The extra config loads the jupyterhub_config.py that images/hub installs at that path.
    (snippet,) = hub["extraConfig"].values()
    loaded = snippet.split('"')[1]
    dockerfile = (REPO / "images" / "hub" / "Dockerfile").read_text()
    assert f"config/jupyterhub_config.py {loaded}" in dockerfile
    # The chart's own culler is off: jhub-cloud's runs (two would race to stop the same servers).
    assert values["cull"]["enabled"] is False and suite["culler"]["idle_timeout_seconds"]
