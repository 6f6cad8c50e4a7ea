"""Docker builder: every translation from Resources to DockerSpawner settings, without Docker."""

import docker.types
import pytest

from jhub_cloud.config.model import Mount
from jhub_cloud.policy.types import Resources
from jhub_cloud.spawner.builders.docker import DockerSettingsError, child_settings
from jhub_cloud.spawner.target import SpawnTarget

CMD = ["sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "jupyterhub-singleuser"]
ENV = {"STS_WIRE_SPEC": '{"mounts": []}'}
ALICE = SpawnTarget("alice", "", ("physics",))


def res(**kw) -> Resources:
    base = dict(backend="docker", image="jhub-cloud/lab:latest", cpu=2, memory_bytes=4 * 1024**3)
    return Resources(**{**base, **kw})


def build(resources=None, target=ALICE, backend=None, cmd=CMD, env=ENV):
    return child_settings(resources or res(), target, backend or {}, cmd, env)


def test_image_cpu_memory_and_swap_capped():
    s = build(res(cpu=0.5, memory_bytes=512 * 1024**2))
    assert s["image"] == "jhub-cloud/lab:latest"
    assert s["cpu_limit"] == 0.5
    assert s["mem_limit"] == 512 * 1024**2
    assert s["extra_host_config"]["memswap_limit"] == 512 * 1024**2


def test_command_and_environment_passed_as_given_profile_env_underneath():
    s = build(res(environment={"A": "1", "STS_WIRE_SPEC": "profile"}))
    assert s["cmd"] == CMD and s["cmd"] is not CMD
    assert s["environment"] == {"A": "1", "STS_WIRE_SPEC": ENV["STS_WIRE_SPEC"]}
    assert s["env_keep"] == []  # nothing of the hub's own environment


def test_container_removed_and_named_from_safe_server_name():
    assert build()["remove"] is True
    assert build()["name_template"] == "jhub-alice"
    named = build(target=SpawnTarget("Jo.Doe", "gpu"))
    assert named["name_template"] == "jhub-" + SpawnTarget("Jo.Doe", "gpu").safe_server
    assert named["name_template"] != build(target=SpawnTarget("jo-doe", "gpu"))["name_template"]


def test_labels_keep_braces_literal_for_dockerspawner_formatting():
    labels = build(target=SpawnTarget("we{ird}", "x"))["extra_create_kwargs"]["labels"]
    assert labels["org.jhub-cloud.user"].format() == "we{ird}"
    assert labels["org.jhub-cloud.server"] == "x"


def test_no_gpu_no_device_request():
    assert "device_requests" not in build()["extra_host_config"]


def test_gpus_by_count():
    reqs = build(res(gpus=2))["extra_host_config"]["device_requests"]
    assert reqs == [{"driver": "nvidia", "count": 2, "capabilities": [["gpu"]]}]
    # The shape docker-py turns into the API's DeviceRequests.
    assert docker.types.DeviceRequest(**reqs[0])["Count"] == 2


def test_gpus_by_device_ids_list_takes_first_n():
    s = build(res(gpus=2), backend={"gpu_device_ids": [3, "GPU-abc", "MIG-x"]})
    reqs = s["extra_host_config"]["device_requests"]
    assert reqs == [{"driver": "nvidia", "device_ids": ["3", "GPU-abc"], "capabilities": [["gpu"]]}]
    assert docker.types.DeviceRequest(**reqs[0])["DeviceIDs"] == ["3", "GPU-abc"]


def test_gpus_by_device_ids_per_model():
    backend = {"gpu_device_ids": {"t4": ["0"], "a100": ["1", "2"]}}
    reqs = build(res(gpus=1, gpu_model="a100"), backend=backend)["extra_host_config"]["device_requests"]
    assert reqs[0]["device_ids"] == ["1"]


def test_gpu_model_without_devices_is_a_clear_error():
    with pytest.raises(DockerSettingsError, match="no devices for GPU model 'v100'.*a100, t4"):
        build(res(gpus=1, gpu_model="v100"), backend={"gpu_device_ids": {"t4": ["0"], "a100": ["1"]}})


def test_more_gpus_than_pinned_devices_is_a_clear_error():
    with pytest.raises(DockerSettingsError, match="asks for 2 GPUs.*names only 1"):
        build(res(gpus=2), backend={"gpu_device_ids": ["0"]})


def test_fuse_only_with_mounts_and_never_privileged():
    plain = build()["extra_host_config"]
    assert not {"devices", "cap_add", "security_opt", "privileged"} & set(plain)
    mounted = build(res(mounts=(Mount("alice", "/s3/alice"),)))["extra_host_config"]
    assert mounted["devices"] == ["/dev/fuse:/dev/fuse:rwm"]
    assert mounted["cap_add"] == ["SYS_ADMIN"]
    assert mounted["security_opt"] == ["apparmor=unconfined"]
    assert "privileged" not in mounted


def test_fuse_apparmor_profile_from_config():
    s = build(res(mounts=(Mount("alice", "/s3/alice"),)), backend={"apparmor_profile": "jhub-cloud-fuse"})
    assert s["extra_host_config"]["security_opt"] == ["apparmor=jhub-cloud-fuse"]


def test_home_volume_per_user_with_safe_name():
    s = build(target=SpawnTarget("Jo.Doe", "second"))
    safe = SpawnTarget("Jo.Doe").safe_user
    assert s["volumes"] == {f"jhub-home-{safe}": {"bind": "/home/jovyan", "mode": "rw"}}
    # Shared by a user's servers, never by two users.
    assert build(target=SpawnTarget("Jo.Doe"))["volumes"] == s["volumes"]
    assert build(target=SpawnTarget("jo-doe"))["volumes"] != s["volumes"]


def test_home_volume_configurable_or_off():
    s = build(backend={"home_volume": "home.{username}", "home_path": "/home/user"})
    assert s["volumes"] == {"home.alice": {"bind": "/home/user", "mode": "rw"}}
    assert build(backend={"home_volume": None})["volumes"] == {}


@pytest.mark.parametrize("template", ["home/{username}", "home-{username}\n", "-home"])
def test_bad_home_volume_template_is_refused(template):
    with pytest.raises(DockerSettingsError, match="not a Docker volume name"):
        build(backend={"home_volume": template})


def test_bad_apparmor_profile_is_refused():
    with pytest.raises(DockerSettingsError, match="apparmor_profile"):
        build(res(mounts=(Mount("alice", "/s3/alice"),)), backend={"apparmor_profile": "x,seccomp=unconfined"})


def test_binds_read_only_by_default():
    s = build(backend={"home_volume": None, "binds": [
        {"source": "/opt/sw", "target": "/opt/sw"},
        {"source": "/data", "target": "/mnt/data", "read_only": False}]})
    assert s["volumes"] == {"/opt/sw": {"bind": "/opt/sw", "mode": "ro"},
                            "/data": {"bind": "/mnt/data", "mode": "rw"}}


def test_bind_with_relative_path_is_refused():
    with pytest.raises(DockerSettingsError, match="source 'opt' is not an absolute path"):
        build(backend={"binds": [{"source": "opt", "target": "/opt"}]})


@pytest.mark.parametrize("policy", ["ifnotpresent", "always", "never"])
def test_pull_policy_from_config(policy):
    assert build(backend={"pull_policy": policy})["pull_policy"] == policy


def test_default_pull_policy_and_bridge_network():
    s = build()
    assert s["pull_policy"] == "ifnotpresent"
    assert s["network_name"] == "bridge" and s["host_ip"] == "127.0.0.1"
    assert "host_networking" not in s and "use_internal_ip" not in s


def test_host_networking_listens_on_host_ip_only():
    s = build(backend={"network": "host", "host_ip": "127.0.0.1"})
    assert s["network_name"] == "host"
    assert s["host_networking"] is True
    assert s["ip"] == "127.0.0.1"
    assert s["use_internal_ip"] is True  # no port bindings


def test_named_network():
    s = build(backend={"network": "jhub-cloud"})
    assert s["network_name"] == "jhub-cloud" and "host_networking" not in s


def test_settings_are_traits_of_the_child_class():
    from jhub_cloud.spawner.backends.docker import DockerChild

    s = build(res(gpus=1, mounts=(Mount("alice", "/s3/alice"),)), backend={"network": "host"})
    assert set(s) <= set(DockerChild.class_trait_names())
