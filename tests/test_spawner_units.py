"""The spawner's pure parts without any service: the page, reading answers, the local builder,
the backend registry, resources in state, and the cgroup helper on this machine's cgroup v1."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest

from jhub_cloud.config import load
from jhub_cloud.config.model import Mount
from jhub_cloud.policy import Resources, allowed_profiles, user_limits
from jhub_cloud.spawner import cgroups, form
from jhub_cloud.spawner.builders.local import child_settings
from jhub_cloud.spawner.limits import UNKNOWN, resources_from_json, resources_to_json, running_resources
from jhub_cloud.spawner.registry import BackendUnavailable, load_backend
from jhub_cloud.spawner.target import SpawnTarget

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return load(REPO / "config" / "examples" / "full.yaml")


def test_page_shows_each_offer_with_its_limits_and_escapes_text(cfg):
    offers = allowed_profiles(cfg, ["physics"])
    assert offers
    evil = offers[0].__class__(**{**offers[0].__dict__, "description": "<script>alert(1)</script>"})
    page = form.render([evil, *offers[1:]], user_limits(cfg, ["physics"]), running=0)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    for offer in offers:
        assert f'value="{offer.name}"' in page
    assert page.count('type="radio"') == len(offers)
    assert page.count(" checked>") == 1 and f"value=\"{offers[0].name}\" checked" in page  # preselected
    assert "All your servers together" in page
    with_storage = next(o for o in offers if o.mounts)
    page = form.render([with_storage], None, 0, username="alice")
    assert "/s3/alice (read-write)" in page and "{username}" not in page


def test_page_preselects_the_last_answer(cfg):
    offers = allowed_profiles(cfg, ["physics"])
    last = offers[-1]
    cpu = last.choices["cpu"].options[-1]
    page = form.render(offers, None, 0, {"profile": last.name, "cpu": str(cpu)})
    assert f'value="{last.name}" checked' in page
    assert f'<option value="{cpu}" selected>' in page


def test_page_without_offers_says_so():
    page = form.render([], None, 0)
    assert "No profile is available to your groups" in page and "radio" not in page


def test_form_answer_becomes_the_chosen_profiles_options(cfg):
    offers = allowed_profiles(cfg, ["physics"])
    a, b = offers[0].name, offers[-1].name
    data = {"_xsrf": ["x"], "profile": [b], f"{a}--cpu": ["1"], f"{b}--cpu": ["2"], f"{b}--memory": ["4G"]}
    assert form.parse_form(data, offers) == {"profile": b, "cpu": "2", "memory": "4G"}


def test_form_fields_of_a_profile_named_with_double_dashes(cfg):
    offer = allowed_profiles(cfg, ["physics"])[0]
    odd = offer.__class__(**{**offer.__dict__, "name": "gpu--a100"})
    data = {"profile": ["gpu--a100"], "gpu--a100--cpu": ["2"]}
    assert form.parse_form(data, [odd]) == {"profile": "gpu--a100", "cpu": "2"}


@pytest.mark.parametrize("data,words", [
    ({"profile": ["x", "y"]}, "sent 2 times"),
    ({"profile": []}, "sent 0 times"),
    ({}, "choose a profile"),
    ({"profile": ["nope"]}, "not offered to you"),
    ({"profile": ["a"], "cpu": ["1"]}, "unknown form field"),
])
def test_form_refusals(cfg, data, words):
    with pytest.raises(form.Refusal, match=words):
        form.parse_form(data, allowed_profiles(cfg, ["physics"]))


@pytest.mark.parametrize("value,words", [
    (float("inf"), "finite"), (float("nan"), "finite"), (10**40, "far too large"), (-2, "negative"),
    (True, "one of the values"), (None, "one of the values"), ([1], "one value"), ({"a": 1}, "not dict"),
    ("a" * 200, "too long"), ("1\n2", "line break"), ("a\tb", "control"), ("../x", "'..'"),
    ("a b", "not allowed"), ("$HOME", "not allowed"), ("a;b", "not allowed"), ("a&b", "not allowed"),
    ("a>b", "not allowed"), ("'a'", "not allowed"), ('"a"', "not allowed"), ("a\\b", "not allowed"),
])
def test_screening_names_the_problem(value, words):
    with pytest.raises(form.Refusal, match=words):
        form.screen_value("cpu", value)


@pytest.mark.parametrize("value", ["2", "2.5", "16G", "jupyter/scipy-notebook:2024-05-01", "a100", "08:00:00",
                                   "registry.example.org/lab@sha256:abc", 4, 0.5, 0])
def test_screening_lets_real_values_through(value):
    form.screen_value("x", value)


def test_local_builder_gives_command_env_and_limits():
    r = Resources(backend="local", image="default", cpu=1.5, memory_bytes=2 * 2**30,
                  environment={"SITE": "x"})
    t = SpawnTarget("jo.doe", "gpu", ("physics",))
    got = child_settings(r, t, {}, ["/v/bin/sts-wire", "run", "--", "/v/bin/jupyterhub-singleuser"],
                         {"STS_WIRE_SPEC": "{}"})
    assert got == {"cmd": ["/v/bin/sts-wire", "run", "--", "/v/bin/jupyterhub-singleuser"],
                   "environment": {"SITE": "x", "STS_WIRE_SPEC": "{}"}, "cpu_limit": 1.5,
                   "mem_limit": 2 * 2**30, "cgroup_prefix": t.safe_server, "mount_roots": []}
    got = child_settings(r, t, {}, [], {"STS_WIRE_ALLOWED_ROOTS": "/s3:/data/s3"})
    assert got["mount_roots"] == ["/s3", "/data/s3"]
    with pytest.raises(ValueError, match="no GPUs"):
        child_settings(Resources(backend="local", image="d", cpu=1, memory_bytes=1, gpus=1), t, {}, [], {})


def test_registry_knows_every_backend_and_refuses_others_clearly():
    for name in ("local", "docker", "slurm", "kubernetes"):
        b = load_backend(name)
        assert b.name == name and callable(b.child_settings)
    with pytest.raises(BackendUnavailable, match="unknown backend 'htcondor'; the backends are: local"):
        load_backend("htcondor")


def test_registry_refuses_a_backend_whose_module_is_missing(monkeypatch):
    from jhub_cloud.spawner import registry

    monkeypatch.setitem(registry.ADAPTERS, "local", ("jhub_cloud.spawner.backends.nothere", "X"))
    with pytest.raises(BackendUnavailable, match="local backend is not available in this installation"):
        load_backend("local")


def test_resources_survive_the_json_state_round_trip():
    r = Resources(backend="slurm", image="lab", cpu=2.0, memory_bytes=4 * 2**30, gpus=1, gpu_model="a100",
                  time_limit="08:00:00", mounts=(Mount("{username}", "/s3/{username}", False),
                                                  Mount("cms", "/s3/cms", True, group="cms")),
                  environment={"A": "b"},
                  backend_options=MappingProxyType({"node_selector": MappingProxyType({"zone": "a"})}))
    import json

    back = resources_from_json(json.loads(json.dumps(resources_to_json(r))))
    assert back == r


class _Sp:
    def __init__(self, active, reserved=None, pending=False):
        self.active, self.reserved, self._start_pending = active, reserved, pending


def test_running_resources_counts_active_and_reserved_servers_but_not_me():
    r = Resources(backend="local", image="d", cpu=1, memory_bytes=1)
    me = _Sp(True, r)
    others = [_Sp(True, r), _Sp(False, r), _Sp(False, r, pending=True), _Sp(True, None)]
    assert running_resources([me, *others], me) == [r, r, UNKNOWN]


@pytest.mark.skipif(cgroups.detect(Path("/sys/fs/cgroup"))[0] != 1, reason="no cgroup v1 here")
def test_cgroup_limits_hold_for_a_process_and_everything_is_removed():
    group = cgroups.CGroup(Path("/sys/fs/cgroup"), f"jhub-cloud-unit/{os.getpid()}")
    cgroups.create(group, 0.5, 64 * 2**20)
    try:
        assert cgroups.read_limits(group) == {"cpu": 0.5, "memory_bytes": 64 * 2**20}
        p = subprocess.Popen(["sleep", "60"], preexec_fn=cgroups.join_preexec(group))
        assert cgroups.pids(group) == {p.pid}
        # A process using more memory than allowed is killed by the kernel.
        hog = subprocess.run(["python3", "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                             preexec_fn=cgroups.join_preexec(group), capture_output=True)
        assert hog.returncode == -9
        assert cgroups.remove(group) == [p.pid]
        p.wait(5)
        assert not group.path("cpu").exists() and not group.path("memory").exists()
    finally:
        for c in cgroups.CONTROLLERS:
            for d in (group.path(c), group.path(c).parent):
                if d.exists():
                    d.rmdir()


def _fake_v2(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    """A folder shaped like a cgroup v2 root (the kernel's files as plain files)."""
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("\n")
    (root / "cgroup.procs").write_text("")
    return root


def test_cgroup_detection_names_what_is_missing(tmp_path):
    assert cgroups.detect(Path("/sys/fs/cgroup"))[0] in (1, 2, None)
    assert cgroups.detect(tmp_path / "nothing") == (None, f"no cgroup v1 cpu controller at {tmp_path}/nothing/cpu")
    v2 = _fake_v2(tmp_path / "v2", "hugetlb")  # this machine's own /sys/fs/cgroup/unified looks like this
    version, why = cgroups.detect(v2)
    assert version is None and why.endswith(f"the cgroup v2 hierarchy at {v2} has no cpu/memory controller")
    assert cgroups.detect(_fake_v2(tmp_path / "ok")) == (2, None)


def test_cgroup_v2_writes_the_limits_and_enables_controllers_on_the_way_down(tmp_path):
    root = _fake_v2(tmp_path / "v2")
    group = cgroups.CGroup(root, "jhub-cloud/alice-abc123", version=2)
    leaf = root / "jhub-cloud" / "alice-abc123"
    cgroups.create(group, 1.5, 3 * 2**30)
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (root / "jhub-cloud" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (leaf / "cpu.max").read_text() == "150000 100000"
    assert (leaf / "memory.max").read_text() == str(3 * 2**30)
    assert cgroups.read_limits(group) == {"cpu": 1.5, "memory_bytes": 3 * 2**30}
    assert group.procs_files == [str(leaf / "cgroup.procs")]


@pytest.mark.skipif(cgroups.detect(Path("/sys/fs/cgroup"))[0] != 2, reason="no cgroup v2 cpu/memory controllers here")
def test_cgroup_v2_limits_hold_for_a_process():
    group = cgroups.CGroup(Path("/sys/fs/cgroup"), f"jhub-cloud-unit/{os.getpid()}", version=2)
    cgroups.create(group, 0.5, 64 * 2**20)
    try:
        hog = subprocess.run(["python3", "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                             preexec_fn=cgroups.join_preexec(group), capture_output=True)
        assert hog.returncode == -9
    finally:
        cgroups.remove(group)
        with contextlib.suppress(OSError):
            (Path("/sys/fs/cgroup") / "jhub-cloud-unit").rmdir()
