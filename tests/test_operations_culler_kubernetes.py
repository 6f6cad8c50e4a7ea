"""Idle culling on the Kubernetes backend, in a real hub against the loopback API server
(tests/testbed/kubeapi.py; no cluster runs here): the culler stops an idle server, which deletes
its pod as a normal stop does, and keeps the user's home volume (the culler never removes
servers, which would delete the PVC)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.testbed.cloudhub import CloudHub
from tests.testbed.kubeapi import KubeApi
from tests.testbed.paths import VENV_BIN, free_port
from tests.testbed.procs import stop_pid

IDLE = 10


@pytest.fixture
def api(tmp_path):
    a = KubeApi(namespaces=("jhub",)).start()
    a.kubeconfig = a.write_kubeconfig(tmp_path / "kubeconfig")
    yield a
    a.stop()


def test_culling_deletes_an_idle_pod_and_keeps_the_home_volume(idp, api, run_dir, tmp_path):
    port = free_port()
    servers: list[subprocess.Popen] = []

    def kubelet(pod: dict) -> None:
        """Run the pod's server here, with the pod's environment, where the hub will look for it."""
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env", [])}
        env.update(PATH=os.environ["PATH"], HOME=str(tmp_path))
        log = (tmp_path / f"{pod['metadata']['name']}.log").open("wb")
        servers.append(subprocess.Popen([str(VENV_BIN / "jupyterhub-singleuser"), "--allow-root",
                                         f"--ServerApp.root_dir={tmp_path}"],
                                        env=env, stdout=log, stderr=subprocess.STDOUT))

    api.on_running = kubelet
    extra = {
        "culler": {"idle_timeout_seconds": IDLE, "every_seconds": 2},
        "backends": {"kubernetes": {"namespace": "jhub", "home_size": "1Gi", "start_timeout": 60}},
        "groups": {g: {"max_servers": 1, "max_cpu": 1, "max_memory": "1G", "max_gpus": 0}
                   for g in ("physics", "cms", "admins")},
        "profiles": [{"name": "pod", "display_name": "Pod", "backend": "kubernetes", "groups": ["physics"],
                      "choices": {"image": {"options": ["jhub-cloud/lab:latest"]}, "cpu": {"options": [1]},
                                  "memory": {"options": ["1G"]}}}],
    }
    # The hub finds the API server through $KUBECONFIG, and the server at 127.0.0.1:<port>.
    os.environ["KUBECONFIG"] = str(api.kubeconfig)
    try:
        hub = CloudHub(idp, run_dir / "hub-cull-kube", extra=extra,
                       hub_config=f"c.KubernetesChild.port = {port}\n").start()
    finally:
        del os.environ["KUBECONFIG"]
    try:
        hub.login("alice")
        assert hub.spawn("alice", options={"profile": "pod"}).status_code in (201, 202)
        hub.wait_ready("alice", timeout=120)
        (pod,) = api.objects("pods", "jhub").values()
        (pvc,) = api.objects("persistentvolumeclaims", "jhub")
        assert pod["spec"]["containers"][0]["image"] == "jhub-cloud/lab:latest"

        deadline = time.monotonic() + IDLE + 90
        while "" in hub.servers("alice") and time.monotonic() < deadline:
            time.sleep(1)
        assert "" not in hub.servers("alice"), "the idle server was not culled: " + hub.log_tail()
        assert "Culling server alice " in hub.log.read_text(errors="replace")
        deadline = time.monotonic() + 15
        while api.objects("pods", "jhub") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert api.objects("pods", "jhub") == {}
        assert list(api.objects("persistentvolumeclaims", "jhub")) == [pvc]  # her files stay
        assert api.requests_for("DELETE", "persistentvolumeclaims") == []
    finally:
        hub.stop()
        for p in servers:
            stop_pid(p.pid)
