"""The lab image (images/lab/Dockerfile, built by images/build.py FROM the testbed base image)
run under the testbed's dockerd: a non-root user, tini as PID 1 reaping orphans, sts-wire and a
jupyterhub-singleuser of the hub's version, no hub packages, /s3 ready for the user, FUSE mounts
through sts-wire that land in S3, and a second build served entirely from the build cache."""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import time

import pytest

from tests.testbed.images import SUITE_LAB_IMAGE, build_image, cached_steps
from tests.testbed.paths import REPO

pytestmark = pytest.mark.slow

# What the container reports about itself (run by the image's own python3, as its own user).
FACTS = r"""
import importlib.util, json, os, pwd, stat, subprocess, time
out = {"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name, "home": os.environ.get("HOME")}
out["pid1"] = open("/proc/1/cmdline", "rb").read().split(b"\0")[:-1]
out["pid1"] = [a.decode() for a in out["pid1"]]
# Three grandchildren whose parent exits at once: the kernel hands them to PID 1.
for _ in range(3):
    subprocess.run(["sh", "-c", "sleep 0.3 &"], check=True)
time.sleep(1.5)
zombies = []
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            zombies.append(int(d))
out["zombies"] = zombies
r = subprocess.run(["sts-wire", "--help"], capture_output=True, text=True)
out["sts_wire_help"] = [r.returncode, r.stdout[:200]]
r = subprocess.run(["jupyterhub-singleuser", "--version"], capture_output=True, text=True)
out["singleuser_version"] = r.stdout.strip() or r.stderr.strip()
r = subprocess.run(["rclone", "version"], capture_output=True, text=True)
out["rclone"] = r.stdout.split("\n")[0]
mods = ["jupyterhub.singleuser", "jupyterlab", "ipykernel", "sts_wire", "jhub_cloud", "dockerspawner", "batchspawner",
        "kubespawner", "oauthenticator", "wrapspawner"]
out["modules"] = {m: importlib.util.find_spec(m.split(".")[0]) is not None and
                  (m.count(".") == 0 or importlib.util.find_spec(m) is not None) for m in mods}
st = os.stat("/s3")
out["s3"] = {"owner": st.st_uid, "mode": oct(stat.S_IMODE(st.st_mode))}
os.mkdir("/s3/probe")
open("/s3/probe/f", "w").write("x")
out["s3"]["writable"] = open("/s3/probe/f").read() == "x"
fm = os.stat("/usr/bin/fusermount3")
out["fusermount3"] = {"setuid": bool(fm.st_mode & stat.S_ISUID), "owner": fm.st_uid}
out["fuse_conf"] = open("/etc/fuse.conf").read()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def facts(dockerd, suite_lab_image) -> dict:
    r = dockerd.docker("run", "--rm", "-i", "--network", "host", suite_lab_image.tag, "python3", "-",
                       input=FACTS, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_runs_as_non_root_user_with_home(facts):
    assert facts["uid"] == 1000 and facts["user"] == "jovyan"
    assert facts["home"] == "/home/jovyan"


def test_pid1_is_tini_and_reaps_orphans(facts):
    assert facts["pid1"][0].endswith("tini") and "--" in facts["pid1"]
    assert facts["zombies"] == []


def test_default_command_is_the_server_under_sts_wire(dockerd, suite_lab_image):
    cfg = json.loads(dockerd.docker("image", "inspect", suite_lab_image.tag).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["tini", "-g", "--"]
    assert cfg["Cmd"] == ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "jupyterhub-singleuser"]
    assert cfg["User"] == "1000"


def test_sts_wire_and_rclone_work(facts):
    rc, out = facts["sts_wire_help"]
    assert rc == 0 and "usage: sts-wire" in out
    assert facts["rclone"].startswith("rclone v1.")


def test_singleuser_matches_the_hubs_jupyterhub(facts):
    assert facts["singleuser_version"] == importlib.metadata.version("jupyterhub")


def test_only_the_notebook_side_is_installed(facts):
    mods = facts["modules"]
    assert mods["jupyterhub.singleuser"] and mods["jupyterlab"] and mods["ipykernel"] and mods["sts_wire"]
    hub_side = [m for m in ("jhub_cloud", "dockerspawner", "batchspawner", "kubespawner", "oauthenticator",
                            "wrapspawner") if mods[m]]
    assert hub_side == []


def test_s3_is_ready_for_the_user(facts):
    assert facts["s3"]["owner"] == 1000 and facts["s3"]["writable"]
    assert facts["fusermount3"] == {"setuid": True, "owner": 0}
    assert "\nuser_allow_other" in "\n" + facts["fuse_conf"]


def test_sts_wire_in_the_image_mounts_the_users_bucket(dockerd, suite_lab_image, user_fuse, idp, seaweedfs,
                                                       tmp_path):
    """The image's own sts-wire, as jovyan, mounts alice's bucket at /s3/alice (STS with her token)
    and what is written there lands in S3; stopping the container unmounts and ends it."""
    from tests.sts_wire_helpers import refresh_token_setup

    folder = tmp_path / "secrets"
    token, _ = refresh_token_setup(idp, "alice", folder)
    shutil.copy(idp.pki.ca_cert, folder / "ca.crt")  # only this folder is mounted into the container
    token["ca_file"] = str(folder / "ca.crt")
    for f in [folder, *folder.iterdir()]:          # jovyan (uid 1000) reads them inside
        os.chown(f, 1000, 1000)
    spec = {"token": token,
            "sts": {"endpoint": seaweedfs.endpoint, "region": seaweedfs.region,
                    "provider": seaweedfs.rclone_provider, "role_arn": seaweedfs.role_arn_for("alice")},
            "mounts": [{"remote": "alice", "path": "/s3/alice"}]}
    key = f"from-image-{secrets.token_hex(4)}.txt"
    name = f"jhub-cloud-test-image-{secrets.token_hex(4)}"
    cmd = f"echo written-in-the-image > /s3/alice/{key} && sleep 120"
    dockerd.docker("run", "-d", "--name", name, "--network", "host", "--device", "/dev/fuse",
                   "--cap-add", "SYS_ADMIN", "--security-opt", "apparmor:unconfined",
                   "-v", f"{folder}:{folder}:ro", "-e", f"STS_WIRE_SPEC={json.dumps(spec)}",
                   suite_lab_image.tag, "sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "sh", "-c", cmd)
    try:
        body, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            try:
                body = seaweedfs.admin_s3().get_object(Bucket="alice", Key=key)["Body"].read()
            except Exception:  # not uploaded yet (or not mounted yet)
                time.sleep(0.5)
        logs = dockerd.docker("logs", name, check=False).stderr[-2000:]
        assert body == b"written-in-the-image\n", logs
        dockerd.docker("stop", "-t", "20", name, timeout=60)
        state = json.loads(dockerd.docker("inspect", name).stdout)[0]["State"]
        assert not state["Running"] and not state["OOMKilled"]
    finally:
        dockerd.docker("rm", "-f", name, check=False)


def test_second_build_is_served_from_the_cache(dockerd, base_image, suite_lab_image):
    again = build_image(dockerd, "lab", SUITE_LAB_IMAGE, base_image)
    cached, ran = cached_steps(again.output)
    assert ran == [], f"rebuilt: {ran}"
    assert any(" RUN " in f" {s}" for s in cached), again.output[-2000:]
    print(f"second build: {again.seconds:.1f} s, {len(cached)} steps from the cache")


def test_hub_image_runs_the_suites_hub(dockerd, suite_hub_image):
    """images/hub: the hub's JupyterHub version, jhub-cloud and sts-wire, the proxy, the entry
    config; `jhub-cloud check` of an example runs inside it."""
    examples = REPO / "config" / "examples"
    script = ("jupyterhub --version; configurable-http-proxy --version; "
              "jhub-cloud check /examples/local.yaml; "
              "python -c 'import jhub_cloud.spawner.cloud, sts_wire.cli; print(\"imports ok\")'; "
              "test -f /etc/jupyterhub/jupyterhub_config.py && echo config ok")
    r = dockerd.docker("run", "--rm", "--network", "host", "-v", f"{examples}:/examples:ro",
                       suite_hub_image.tag, "sh", "-ec", script, timeout=120)
    lines = r.stdout.split("\n")
    assert lines[0] == importlib.metadata.version("jupyterhub")
    assert lines[1].startswith("5.")
    assert "local.yaml: OK" in lines[2]
    assert lines[3:5] == ["imports ok", "config ok"]
    cfg = json.loads(dockerd.docker("image", "inspect", suite_hub_image.tag).stdout)[0]["Config"]
    assert cfg["Cmd"] == ["jupyterhub", "-f", "/etc/jupyterhub/jupyterhub_config.py"]


def test_lab_gpu_is_the_lab_recipe_on_the_given_base_with_nvidia_settings(dockerd, base_image, suite_lab_image):
    """images/build.py lab-gpu: the lab recipe on the --base image (here the testbed base stands
    in for a CUDA image, which no registry here provides), then the GPU settings on top."""
    gpu = build_image(dockerd, "lab-gpu", "jhub-cloud/lab-gpu:testbed", base_image)
    cfg = json.loads(dockerd.docker("image", "inspect", gpu.tag).stdout)[0]["Config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert cfg["Entrypoint"] == ["tini", "-g", "--"] and cfg["User"] == "1000"
    assert cfg["Cmd"] == ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "jupyterhub-singleuser"]
    r = dockerd.docker("run", "--rm", "--network", "none", gpu.tag, "jupyterhub-singleuser", "--version")
    assert r.stdout.strip() == importlib.metadata.version("jupyterhub")
