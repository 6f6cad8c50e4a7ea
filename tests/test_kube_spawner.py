"""KubeSpawner, unmodified, and our KubernetesChild, driven by the builder's settings through
start, progress, poll and stop: against the loopback API server (tests/testbed/kubeapi.py), and
against a real cluster when $KUBECONFIG reaches one (the `cluster` runs are skipped otherwise).

The objects are read back through the Kubernetes API, so each test body is the same for both.
On a real cluster, set JHUB_CLOUD_TEST_K8S_IMAGE to an image with jupyterhub-singleuser that the
cluster can pull, and JHUB_CLOUD_TEST_K8S_NAMESPACE (default jhub) to a namespace you may use.
Tests that need the loopback server's extras (recorded requests, a crashed container, a pod that
cannot be scheduled) run only against it.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets.config import Config

from jhub_cloud.config import load
from jhub_cloud.policy import Allowed, decide
from jhub_cloud.spawner.builders.kubernetes import child_settings
from jhub_cloud.spawner.mountspec import mount_spec
from jhub_cloud.spawner.target import SpawnTarget
from tests.testbed.kubeapi import kube_api, kube_cluster

__all__ = ["kube_api", "kube_cluster"]  # fixtures, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "examples" / "kubernetes.yaml"
SINGLEUSER = ["jupyterhub-singleuser"]
CMD = ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", *SINGLEUSER]


def settings_for(namespace: str, profile: str = "cpu", user: str = "mock@name", server: str = "",
                 with_mounts: bool = False, **backend_changes) -> tuple[dict, object]:
    """The builder's settings for `profile` of the Kubernetes example, as CloudSpawner makes them."""
    cfg = load(EXAMPLE)
    decision = decide(cfg, ["ml"], {"profile": profile})
    assert isinstance(decision, Allowed), decision
    r = decision.resources
    if not with_mounts:
        r = replace(r, mounts=())
    if os.environ.get("JHUB_CLOUD_TEST_K8S_IMAGE"):  # a real cluster must be able to run it
        r = replace(r, image=os.environ["JHUB_CLOUD_TEST_K8S_IMAGE"])
    target = SpawnTarget(user, server, ("ml",))
    spec = mount_spec(r, target, cfg.storage)
    env = {"STS_WIRE_SPEC": json.dumps(spec)} if spec else {}
    backend = {**cfg.backends["kubernetes"], "namespace": namespace, "start_timeout": 60,
               **backend_changes}
    return child_settings(r, target, backend, CMD if spec else SINGLEUSER, env), r


def unmodified_kubespawner(settings: dict):
    """A plain kubespawner.KubeSpawner configured with the settings, as a site would."""
    from kubespawner import KubeSpawner

    c = Config()
    for name, value in settings.items():
        setattr(c.KubeSpawner, name, value)
    sp = KubeSpawner(config=c, _mock=True)
    sp.api_token = "hub-api-token-for-the-test"
    return sp


async def start_with_progress(sp) -> tuple[object, list[str]]:
    """start() and progress() together, as the hub runs them; (start's result, messages)."""
    messages: list[str] = []
    started = sp.start()  # KubeSpawner returns its start Task

    async def follow():
        async for event in sp.progress():
            messages.append(event.get("message", ""))

    follower = asyncio.ensure_future(follow())
    try:
        result = await started
    finally:
        await asyncio.wait_for(follower, 30)
    return result, messages


async def gone(sp) -> bool:
    try:
        await sp.api.read_namespaced_pod(sp.pod_name, sp.namespace)
    except ApiException as e:
        return e.status == 404
    return False


async def delete_home(sp) -> None:
    try:
        await sp.api.delete_namespaced_persistent_volume_claim(sp.pvc_name, sp.namespace)
    except ApiException as e:
        if e.status != 404:
            raise


async def test_unmodified_kubespawner_start_progress_poll_stop(kube_cluster):
    api, namespace = kube_cluster
    settings, r = settings_for(namespace)
    sp = unmodified_kubespawner(settings)
    try:
        result, messages = await start_with_progress(sp)
        ip, port = result if isinstance(result, tuple) else (None, None)
        assert port == 8888 or str(result).endswith(":8888")
        assert any("Started container" in m or "started" in m.lower() for m in messages), messages
        assert await sp.poll() is None
        pod = await sp.api.read_namespaced_pod(sp.pod_name, namespace)
        container = pod.spec.containers[0]
        assert pod.metadata.name == settings["pod_name_template"]
        assert str(container.resources.limits["cpu"]) in ("1", "1.0")
        assert int(container.resources.limits["memory"]) == r.memory_bytes
        assert container.resources.requests == container.resources.limits
        assert pod.spec.automount_service_account_token is False
        assert container.args == SINGLEUSER
        claim = await sp.api.read_namespaced_persistent_volume_claim(sp.pvc_name, namespace)
        assert claim.spec.resources.requests["storage"] == "10Gi"
        await sp.stop()
        assert await gone(sp)
        assert await sp.poll() is not None
        # The home volume stays for the next start.
        await sp.api.read_namespaced_persistent_volume_claim(sp.pvc_name, namespace)
    finally:
        if not await gone(sp):
            await sp.stop(now=True)
        if api is None:
            await delete_home(sp)


async def test_kubernetes_child_takes_the_builders_settings_after_construction(kube_cluster):
    """CloudSpawner constructs the child, then sets the settings: the names must follow."""
    from jhub_cloud.spawner.backends.kubernetes import KubernetesChild

    api, namespace = kube_cluster
    settings, _ = settings_for(namespace, server="big")
    child = KubernetesChild(_mock=True)
    default_name = child.pod_name
    for name, value in settings.items():
        setattr(child, name, value)
    child.api_token = "hub-api-token-for-the-test"
    assert child.pod_name == settings["pod_name_template"] != default_name
    assert child.pvc_name == settings["pvc_name_template"]
    try:
        await child.start()
        assert await child.poll() is None
        pod = await child.api.read_namespaced_pod(child.pod_name, namespace)
        assert pod.metadata.namespace == namespace
        state = child.get_state()
        assert state["pod_name"] == settings["pod_name_template"]
        await child.stop()
        assert await gone(child)
    finally:
        if not await gone(child):
            await child.stop(now=True)
        if api is None:
            await delete_home(child)


# --- loopback only -----------------------------------------------------------------------------


async def test_what_the_spawner_sent_holds_no_secret_but_the_hubs_token(kube_api):
    settings, _ = settings_for("jhub", user="alice", with_mounts=True)
    sp = unmodified_kubespawner(settings)
    await start_with_progress(sp)
    await sp.stop()
    sent = [(r["method"], r["plural"]) for r in kube_api.requests if r["method"] != "GET"]
    assert ("POST", "persistentvolumeclaims") in sent and ("POST", "pods") in sent
    assert ("DELETE", "pods") in sent
    assert not any(plural == "secrets" for _, plural in sent)  # no Secret for us to leak
    body = kube_api.requests_for("POST", "pods")[0]["body"]
    container = body["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JUPYTERHUB_API_TOKEN"] == "hub-api-token-for-the-test"
    spec = json.loads(env["STS_WIRE_SPEC"])  # the spec arrives exactly as JSON
    assert spec["token"] == {"source": "hub"} and spec["mounts"][0]["remote"] == "alice"
    assert container["args"] == CMD
    text = json.dumps(body).lower()
    for word in ("client_secret", "refresh_token", "aws_secret", "secret_access_key", "password"):
        assert word not in text
    assert container["securityContext"].get("privileged") in (None, False)
    assert container["securityContext"]["capabilities"] == {"add": ["SYS_ADMIN"]}
    assert container["resources"]["limits"]["smarter-devices/fuse"] == "1"


async def test_a_crashed_server_is_noticed_at_the_next_poll(kube_api):
    settings, _ = settings_for("jhub")
    sp = unmodified_kubespawner(settings)
    await start_with_progress(sp)
    assert await sp.poll() is None
    await asyncio.get_running_loop().run_in_executor(
        None, kube_api.terminate_pod, "jhub", sp.pod_name, 3)
    for _ in range(50):
        status = await sp.poll()
        if status is not None:
            break
        await asyncio.sleep(0.1)
    assert status == 3
    await sp.stop()
    assert await gone(sp)


async def test_a_pod_that_cannot_be_scheduled_says_why_and_is_removed(kube_api):
    kube_api.pod_behaviour = "unschedulable"
    settings, _ = settings_for("jhub", start_timeout=3)
    sp = unmodified_kubespawner(settings)
    with pytest.raises(TimeoutError):
        await start_with_progress(sp)
    events = [e["message"] for e in sp.events]
    assert any("Insufficient nvidia.com/gpu" in m for m in events), events
    await sp.stop(now=True)
    for _ in range(50):
        if await gone(sp):
            break
        await asyncio.sleep(0.1)
    assert await gone(sp)


async def test_an_invalid_pod_is_refused_and_nothing_runs(kube_api):
    settings, _ = settings_for("jhub")
    # A mount of a volume the pod does not have: the schemas accept it, the API server does not.
    settings["volume_mounts"] = [*settings["volume_mounts"], {"name": "nowhere", "mountPath": "/x"}]
    settings["start_timeout"] = 5
    sp = unmodified_kubespawner(settings)
    with pytest.raises(Exception) as raised:
        await sp.start()
    assert "422" in str(raised.value) or "Invalid" in str(raised.value)
    assert kube_api.objects("pods", "jhub") == {}
    refused = kube_api.requests_for("POST", "pods")
    assert refused and "nowhere" in json.dumps(refused[0]["body"])


async def test_the_api_server_refuses_requests_without_its_token(kube_api):
    from aiohttp import ClientSession

    async with ClientSession() as s:
        async with s.get(f"{kube_api.url}/api/v1/namespaces/jhub/pods") as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {kube_api.token}"}
        async with s.get(f"{kube_api.url}/api/v1/namespaces/jhub/pods", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["items"] == []
        async with s.get(f"{kube_api.url}/api/v1/namespaces/nope/pods", headers=headers) as resp:
            assert resp.status == 404


async def test_a_test_can_run_something_when_a_pod_turns_running(kube_api):
    seen = []
    kube_api.on_running = lambda pod: seen.append(
        ({e["name"] for e in pod["spec"]["containers"][0]["env"]}, pod["status"]["podIP"]))
    settings, _ = settings_for("jhub")
    sp = unmodified_kubespawner(settings)
    await start_with_progress(sp)
    await sp.stop()
    assert len(seen) == 1
    names, ip = seen[0]
    assert "JUPYTERHUB_API_TOKEN" in names and ip == "127.0.0.1"
