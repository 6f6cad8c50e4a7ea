"""Slurm builder: every translation from Resources to SlurmSpawner settings, and the job script
holding nothing but checked values. No Slurm needed."""

import re

import pytest
from batchspawner.batchspawner import format_template

from jhub_cloud.policy.types import Resources
from jhub_cloud.spawner.builders.slurm import JOB_SCRIPT, SlurmSettingsError, child_settings
from jhub_cloud.spawner.target import SpawnTarget

CMD = ["/opt/venv/bin/sts-wire", "run", "--spec", "env:STS_WIRE_SPEC", "--", "jupyterhub-singleuser"]
ENV = {"STS_WIRE_SPEC": '{"mounts": [{"bucket": "alice"}]}'}
ALICE = SpawnTarget("alice", "", ("physics",))
GiB = 1024**3


def res(**kw) -> Resources:
    base = dict(backend="slurm", image="default", cpu=4, memory_bytes=8 * GiB)
    return Resources(**{**base, **kw})


def build(resources=None, target=ALICE, backend=None):
    return child_settings(resources or res(), target, backend or {}, CMD, ENV)


def render(settings: dict, homedir="/home/alice", keepvars="PATH,STS_WIRE_SPEC") -> str:
    subvars = {k[4:]: v for k, v in settings.items() if k.startswith("req_")}
    return format_template(settings["batch_script"], **subvars, homedir=homedir,
                           keepvars=keepvars, cmd="'quoted' 'command'")


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_cpu_memory_partition_account():
    s = build(backend={"partition": "interactive", "account": "physics"})
    assert s["req_nprocs"] == "4"
    assert s["req_memory"] == "8192M"
    assert s["req_partition"] == "interactive"
    assert s["req_account"] == "physics"


def test_fractional_cpu_and_odd_memory_round_up():
    s = build(res(cpu=0.5, memory_bytes=GiB + 1))
    assert s["req_nprocs"] == "1"
    assert s["req_memory"] == "1025M"


def test_no_partition_or_account_leaves_them_out():
    script = render(build())
    assert "--partition" not in script and "--account" not in script


def test_gres_without_gpus_is_empty():
    s = build()
    assert s["req_gres"] == ""
    assert "--gres" not in render(s)


def test_gres_with_count_only():
    assert build(res(gpus=2))["req_gres"] == "gpu:2"


def test_gres_with_model():
    s = build(res(gpus=1, gpu_model="a100"))
    assert s["req_gres"] == "gpu:a100:1"
    assert "#SBATCH --gres=gpu:a100:1" in sbatch_lines(render(s))


def test_mig_profile_as_model():
    assert build(res(gpus=1, gpu_model="1g.10gb"))["req_gres"] == "gpu:1g.10gb:1"


def test_time_limit_to_runtime():
    s = build(res(time_limit="1-04:00:00"))
    assert s["req_runtime"] == "1-04:00:00"
    assert "#SBATCH --time=1-04:00:00" in sbatch_lines(render(s))
    assert "--time" not in render(build())


def test_job_name_from_safe_server_name():
    assert build()["req_job_name"] == "jhub-alice"
    assert build(target=SpawnTarget("alice", "gpu"))["req_job_name"] == "jhub-alice--gpu"
    odd = build(target=SpawnTarget("jo.doe", "x"))["req_job_name"]
    assert re.fullmatch(r"jhub-[a-z0-9-]+", odd)


def test_child_gets_no_user_options_and_fixed_template():
    s = build()
    assert s["user_options"] == {}
    assert s["batch_script"] == JOB_SCRIPT
    for unused in ("req_options", "req_prologue", "req_epilogue", "req_qos", "req_reservation"):
        assert s[unused] == ""


def test_script_is_strict_and_runs_the_command_under_srun():
    script = render(build(res(gpus=1, gpu_model="a100", time_limit="01:00:00"),
                          backend={"partition": "gpu", "account": "phys"}))
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in script
    assert script.rstrip().endswith("srun 'quoted' 'command'")
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=jhub-alice",
        "#SBATCH --output=/home/alice/.jhub-cloud-slurm-%j.log",
        "#SBATCH --chdir=/home/alice",
        "#SBATCH --export=PATH,STS_WIRE_SPEC",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8192M",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=phys",
        "#SBATCH --time=01:00:00",
        "#SBATCH --gres=gpu:a100:1",
    ]


def test_environment_goes_to_the_environment_not_the_script():
    s = build(res(environment={"FOO": "bar $(id)"}))
    assert s["environment"] == {"FOO": "bar $(id)", **ENV}
    script = render(s)
    assert "bar $(id)" not in script and "mounts" not in script


def test_exec_prefix_fills_in_the_user():
    assert build()["exec_prefix"] == "sudo -E -u alice"
    assert build(backend={"exec_prefix": "runuser -u {username} --"})["exec_prefix"] == "runuser -u alice --"


def test_command_and_port_reporter():
    import sys

    s = build()
    assert s["cmd"] == CMD
    # Default: jhub-cloud's own reporter, which ends a job the hub does not take, with the hub's Python.
    assert s["batchspawner_singleuser_cmd"] == f"{sys.executable} -m jhub_cloud.spawner.slurm_singleuser"
    s = build(backend={"batchspawner_singleuser": "/opt/venv/bin/batchspawner-singleuser"})
    assert s["batchspawner_singleuser_cmd"] == "/opt/venv/bin/batchspawner-singleuser"


def test_listen_address():
    assert build()["listen_ip"] == "0.0.0.0"  # noqa: S104
    assert build(backend={"server_ip": "127.0.0.1"})["listen_ip"] == "127.0.0.1"


INJECTIONS = [
    ({"backend": {"partition": "debug\n#SBATCH --uid=0"}}, "partition"),
    ({"backend": {"partition": "debug --uid=0"}}, "partition"),
    ({"backend": {"account": "a;id"}}, "account"),
    ({"backend": {"exec_prefix": "sudo -u {username}; id"}}, "exec_prefix"),
    ({"backend": {"exec_prefix": "sudo -u $(id)"}}, "exec_prefix"),
    ({"backend": {"batchspawner_singleuser": "x;y"}}, "batchspawner_singleuser"),
    ({"backend": {"batchspawner_singleuser": "x\ny"}}, "batchspawner_singleuser"),
    ({"backend": {"batchspawner_singleuser": "python -c 'import os'"}}, "batchspawner_singleuser"),
    ({"backend": {"batchspawner_singleuser": "  "}}, "batchspawner_singleuser"),
    ({"backend": {"server_ip": "0.0.0.0\n"}}, "server_ip"),
    ({"resources": res(gpus=1, gpu_model="a100\n#SBATCH --x")}, "GPU model"),
    ({"resources": res(gpus=1, gpu_model="a100 --uid=0")}, "GPU model"),
    ({"resources": res(time_limit="01:00:00\nid")}, "time limit"),
    ({"resources": res(time_limit="1:00")}, "time limit"),
    ({"resources": res(gpus=-1)}, "gpus"),
    ({"resources": res(gpus=True)}, "gpus"),
    ({"resources": res(cpu=float("nan"))}, "cpu"),
    ({"resources": res(cpu=0)}, "cpu"),
    ({"resources": res(memory_bytes=0)}, "memory"),
    ({"target": SpawnTarget("alice;id")}, "user name"),
    ({"target": SpawnTarget("Alice")}, "user name"),
    ({"target": SpawnTarget("al ice")}, "user name"),
]


@pytest.mark.parametrize(("kwargs", "named"), INJECTIONS, ids=[i[1] + str(n) for n, i in enumerate(INJECTIONS)])
def test_unsafe_values_are_refused_naming_what(kwargs, named):
    with pytest.raises(SlurmSettingsError, match=re.escape(named)):
        build(**kwargs)


def test_every_script_line_is_fixed_text_or_a_checked_value():
    allowed = re.compile(
        r"^(#!/bin/bash|#SBATCH --(job-name=jhub-[a-z0-9-]+|output=/home/alice/\.jhub-cloud-slurm-%j\.log"
        r"|chdir=/home/alice|export=[A-Za-z0-9_,]+|cpus-per-task=[0-9]+|mem=[0-9]+M"
        r"|partition=[A-Za-z0-9_.-]+|account=[A-Za-z0-9_.-]+|time=[0-9:-]+|gres=gpu(:[A-Za-z0-9_.-]+)?:[0-9]+)"
        r"|#.*|set -euo pipefail|trap 'echo SIGTERM received' TERM|srun 'quoted' 'command'|)$")
    for r in (res(), res(gpus=2), res(gpus=1, gpu_model="1g.10gb", time_limit="00:30:00", cpu=0.25)):
        for backend in ({}, {"partition": "p", "account": "a"}):
            for line in render(build(r, backend=backend)).splitlines():
                assert allowed.match(line), line
