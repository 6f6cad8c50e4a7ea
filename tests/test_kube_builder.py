"""The Kubernetes builder: what a pod gets for each profile, and every object it makes is valid.

The objects are the ones KubeSpawner itself renders from the builder's settings
(get_pod_manifest, get_pvc_manifest), for every kubernetes profile of every example
configuration, validated with the official schemas of three Kubernetes versions and with the
rules the schemas miss (tests/testbed/kubeapi.py object_problems).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from traitlets.config import Config

from jhub_cloud.config import load
from jhub_cloud.policy import Allowed, allowed_profiles, decide
from jhub_cloud.spawner.builders.kubernetes import (
    DEFAULTS,
    KubernetesSettingsError,
    child_settings,
    gpu_resource,
    home_claim_name,
    pod_name,
)
from jhub_cloud.spawner.mountspec import mount_spec
from jhub_cloud.spawner.target import SpawnTarget
from tests.testbed.kubeapi import TEST_VERSIONS, kube_api, object_problems, schema_problems

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
CMD = ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "jupyterhub-singleuser"]
__all__ = ["kube_api"]  # the fixture, imported for pytest


def kube_requests(cfg, groups, profile):
    """Resources for every option of every choice on its own, and every GPU count x model."""
    offer = next(o for o in allowed_profiles(cfg, groups) if o.name == profile)
    forms = [{"profile": profile}]
    for name, choice in offer.choices.items():
        forms += [{"profile": profile, name: option} for option in choice.options]
    if "gpu_model" in offer.choices:
        gpus = [n for n in offer.choices["gpus"].options if n > 0]
        forms += [{"profile": profile, "gpus": n, "gpu_model": m}
                  for n, m in itertools.product(gpus, offer.choices["gpu_model"].options)]
    out = []
    for form in forms:
        decision = decide(cfg, groups, form)
        assert isinstance(decision, Allowed), (form, decision)
        out.append(decision.resources)
    return out


def build(cfg, resources, user="alice", groups=(), server="", **backend_changes):
    target = SpawnTarget(user, server, tuple(groups))
    backend = {**cfg.backends["kubernetes"], **backend_changes}
    spec = mount_spec(resources, target, cfg.storage)
    env = {"STS_WIRE_SPEC": json.dumps(spec)} if spec else {}
    return child_settings(resources, target, backend, CMD if spec else CMD[-1:], env)


def kube_cases():
    for path in EXAMPLES:
        cfg = load(path)
        if "kubernetes" not in cfg.backends:
            continue
        for profile in (p for p in cfg.profiles if p.backend == "kubernetes"):
            yield pytest.param(path, profile.name, id=f"{path.stem}-{profile.name}")


# --- the settings, without any service ---------------------------------------------------------


def full():
    return load(ROOT / "config" / "examples" / "full.yaml")


def gpu_resources(**changes):
    cfg = full()
    decision = decide(cfg, ["admins"], {"profile": "gpu", **changes})
    assert isinstance(decision, Allowed), decision
    return cfg, decision.resources


def test_cpu_and_memory_are_requested_and_limited_at_the_profiles_values():
    cfg, r = gpu_resources(cpu=8, memory="32G")
    s = build(cfg, r, groups=["admins"])
    assert (s["cpu_guarantee"], s["cpu_limit"]) == (8.0, 8.0)
    assert (s["mem_guarantee"], s["mem_limit"]) == (32 * 1024**3, 32 * 1024**3)
    assert s["image"] == "jhub-cloud/lab-gpu:latest" and s["image_pull_policy"] == "IfNotPresent"


@pytest.mark.parametrize("model, resource", [
    ("1g.10gb", "nvidia.com/mig-1g.10gb"),
    ("3g.40gb", "nvidia.com/mig-3g.40gb"),
    ("a100", "nvidia.com/gpu"),
])
def test_gpus_are_an_extended_resource_with_request_equal_to_limit(model, resource):
    cfg, r = gpu_resources(gpus=2, gpu_model=model)
    s = build(cfg, r, groups=["admins"], fuse="hostpath")
    assert s["extra_resource_limits"] == {resource: "2"}
    assert s["extra_resource_guarantees"] == {resource: "2"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in s["tolerations"]
    assert "nvidia.com/gpu.product" not in s["node_selector"]  # no product mapped in the example


def test_a_whole_gpu_model_is_placed_by_its_product_label_and_a_mig_slice_is_not():
    cfg, r = gpu_resources(gpu_model="a100")
    products = {"a100": "NVIDIA-A100-SXM4-80GB"}
    s = build(cfg, r, groups=["admins"], gpu_products=products)
    assert s["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    mig = build(cfg, replace(r, gpu_model="1g.10gb"), groups=["admins"], gpu_products=products)
    assert mig["node_selector"] == {}
    assert gpu_resource(None) == "nvidia.com/gpu" and gpu_resource("1g.10gb+me").endswith("+me")


def test_no_gpu_means_no_gpu_resource_and_no_gpu_toleration():
    cfg = full()
    r = decide(cfg, ["admins"], {"profile": "gpu"}).resources
    s = build(cfg, replace(r, gpus=0, gpu_model=None), groups=["admins"])
    assert not any("nvidia" in k for k in s["extra_resource_limits"])
    assert s["tolerations"] == []


def test_node_selectors_and_tolerations_from_the_backend_and_the_profile():
    cfg, r = gpu_resources()
    r = replace(r, backend_options={
        "node_selector": {"site/pool": "gpu-large"},
        "tolerations": [{"key": "site/dedicated", "operator": "Equal", "value": "ml",
                         "effect": "NoSchedule"}]})
    s = build(cfg, r, groups=["admins"], node_selector={"site/notebooks": "true"},
              tolerations=[{"key": "site/spot", "operator": "Exists"}])
    assert s["node_selector"] == {"site/notebooks": "true", "site/pool": "gpu-large"}
    assert [t["key"] for t in s["tolerations"]] == ["site/spot", "site/dedicated", "nvidia.com/gpu"]


def test_home_is_a_claim_per_user_mounted_at_home_path():
    cfg, r = gpu_resources()
    s = build(cfg, r, user="jo.doe", groups=["admins"], server="big")
    claim = home_claim_name(SpawnTarget("jo.doe"))
    assert claim.startswith("jhub-home-jo-doe-") and s["pvc_name_template"] == claim
    assert s["storage_pvc_ensure"] is True and s["storage_capacity"] == "10Gi"
    assert {"name": "home", "persistentVolumeClaim": {"claimName": claim}} in s["volumes"]
    assert {"name": "home", "mountPath": "/home/jovyan"} in s["volume_mounts"]
    assert s["pod_name_template"] == pod_name(SpawnTarget("jo.doe", "big"))


def test_pod_names_are_dns_labels_even_for_long_user_and_server_names():
    long = SpawnTarget("a" * 32, "Ä" * 60)
    other = SpawnTarget("a" * 32, "Ö" * 60)
    assert len(pod_name(long)) <= 63 and pod_name(long) != pod_name(other)
    assert pod_name(SpawnTarget("alice")) == "jupyter-alice"


@pytest.mark.parametrize("mode", ["device-plugin", "hostpath", "none"])
def test_fuse_only_when_mounting_and_never_privileged(mode):
    cfg, r = gpu_resources()
    s = build(cfg, r, groups=["admins"], fuse=mode)
    assert s["privileged"] is False and s["automount_service_account_token"] is False
    if mode == "none":
        assert s["container_security_context"] == {} and s["allow_privilege_escalation"] is False
    else:
        assert s["container_security_context"]["capabilities"] == {"add": ["SYS_ADMIN"]}
        assert s["allow_privilege_escalation"] is True
    fuse_resource = "smarter-devices/fuse" in s["extra_resource_limits"]
    fuse_volume = any(v.get("hostPath", {}).get("path") == "/dev/fuse" for v in s["volumes"])
    assert (fuse_resource, fuse_volume) == {"device-plugin": (True, False),
                                            "hostpath": (False, True), "none": (False, False)}[mode]
    plain = build(cfg, replace(r, mounts=()), groups=["admins"], fuse=mode)
    assert plain["container_security_context"] == {} and plain["cmd"] == CMD[-1:]
    assert "STS_WIRE_SPEC" not in plain["environment"]
    assert len(plain["volumes"]) == 1


def test_apparmor_profile_for_the_fuse_mount():
    cfg, r = gpu_resources()
    s = build(cfg, r, groups=["admins"], apparmor_profile="Localhost/fuse-mounts")
    assert s["container_security_context"]["appArmorProfile"] == {
        "type": "Localhost", "localhostProfile": "fuse-mounts"}
    s = build(cfg, r, groups=["admins"], apparmor_profile="Unconfined")
    assert s["container_security_context"]["appArmorProfile"] == {"type": "Unconfined"}


def test_the_spec_and_the_profiles_environment_are_the_only_additions_to_the_environment():
    cfg = full()
    r = decide(cfg, ["admins"], {"profile": "gpu"}).resources
    r = replace(r, environment={"HF_HOME": "/s3/alice/hf"})
    s = build(cfg, r, groups=["admins"])
    assert set(s["environment"]) == {"HF_HOME", "STS_WIRE_SPEC"}
    assert s["cmd"] == CMD
    # Escaped for KubeSpawner's template expansion, which gives the JSON back (see rendered()).
    spec = json.loads(s["environment"]["STS_WIRE_SPEC"].replace("{{", "{").replace("}}", "}"))
    assert spec["token"] == {"source": "hub"}
    text = json.dumps(s).lower()
    assert "secret" not in text.replace("secret_name", "") and "password" not in text


def test_a_bad_namespace_or_fuse_mode_is_refused_with_its_name():
    cfg, r = gpu_resources()
    with pytest.raises(KubernetesSettingsError, match="namespace 'Bad_NS'"):
        build(cfg, r, namespace="Bad_NS")
    with pytest.raises(KubernetesSettingsError, match="fuse 'privileged'"):
        build(cfg, r, groups=["admins"], fuse="privileged")


def test_defaults_match_the_schema():
    cfg = full()
    k = cfg.backends["kubernetes"]
    assert {key: k[key] for key in DEFAULTS} == DEFAULTS


# --- the objects KubeSpawner renders, against the official schemas -----------------------------


async def rendered(settings: dict) -> list[dict]:
    """The pod and PVC that an unmodified KubeSpawner makes from these settings, as JSON."""
    from kubespawner import KubeSpawner

    c = Config()
    for name, value in settings.items():
        setattr(c.KubeSpawner, name, value)
    sp = KubeSpawner(config=c, _mock=True)
    sp.api_token = "hub-api-token"  # what the hub sets before start
    pod = await sp.get_pod_manifest()
    pvc = sp.get_pvc_manifest()
    to_json = sp.api.api_client.sanitize_for_serialization
    return [{"apiVersion": "v1", "kind": "Pod", **to_json(pod)},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **to_json(pvc)}]


@pytest.mark.parametrize("path, profile", list(kube_cases()))
async def test_every_object_for_every_example_profile_is_valid(kube_api, path, profile):
    cfg = load(path)
    groups = list(cfg.allowed_groups)
    checked = 0
    variants = [{}, {"fuse": "hostpath", "apparmor_profile": "Unconfined"}, {"fuse": "none"}]
    for r, variant in itertools.product(kube_requests(cfg, groups, profile), variants):
        settings = build(cfg, r, groups=groups, **variant)
        for obj in await rendered(settings):
            for version in TEST_VERSIONS:
                assert schema_problems(obj, version) == [], (version, obj)
            assert object_problems(obj) == [], obj
            checked += 1
    assert checked >= 6


async def test_the_rendered_pod_has_what_the_profile_asked_for(kube_api):
    cfg, r = gpu_resources(cpu=4, memory="16G", gpus=2, gpu_model="1g.10gb")
    pod, pvc = await rendered(build(cfg, r, groups=["admins"]))
    c = pod["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"cpu": 4.0, "memory": 16 * 1024**3,
                                        "nvidia.com/mig-1g.10gb": "2", "smarter-devices/fuse": "1"}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert c["args"][:5] == CMD[:5] and c["securityContext"]["capabilities"] == {"add": ["SYS_ADMIN"]}
    assert c["securityContext"].get("privileged") in (None, False)
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["JUPYTERHUB_API_TOKEN"] == "hub-api-token"
    # The spec reaches the pod exactly as mount_spec made it (KubeSpawner expands templates).
    target = SpawnTarget("alice", "", ("admins",))
    assert json.loads(env["STS_WIRE_SPEC"]) == mount_spec(r, target, cfg.storage)
    assert pvc["spec"]["resources"]["requests"] == {"storage": "10Gi"}


# --- the checks the schemas miss can fail ------------------------------------------------------


async def test_the_extra_checks_find_what_the_schemas_let_through(kube_api):
    cfg, r = gpu_resources(gpus=1, gpu_model="1g.10gb")
    pod, pvc = await rendered(build(cfg, r, groups=["admins"]))
    bad = json.loads(json.dumps(pod))
    c = bad["spec"]["containers"][0]
    c["resources"]["limits"]["cpu"] = "two"
    c["resources"]["requests"]["nvidia.com/mig-1g.10gb"] = "0"
    c["resources"]["limits"]["nvidia.com/gpu"] = "1"
    c["volumeMounts"].append({"name": "nowhere", "mountPath": "/x"})
    bad["spec"]["volumes"].append(dict(bad["spec"]["volumes"][0]))
    bad["metadata"]["name"] = "x" * 64
    bad["metadata"]["labels"]["hub.jupyter.org/username"] = "y" * 64
    bad["spec"]["nodeSelector"] = {"bad key!": "v"}
    # The official schemas accept all of it...
    for version in TEST_VERSIONS:
        assert schema_problems(bad, version) == []
    problems = "\n".join(object_problems(bad))
    # ...the API server (and these checks) do not.
    for expected in ("'two' is not a quantity", "request '0' must equal its limit",
                     "whole GPUs and MIG slices", "'nowhere' is not a volume",
                     "defined more than once", "must be a DNS label", "is not a label value",
                     "label key 'bad key!'"):
        assert expected in problems, (expected, problems)
    assert "is not a quantity" in "\n".join(object_problems(
        {**pvc, "spec": {**pvc["spec"], "resources": {"requests": {"storage": "lots"}}}}))
