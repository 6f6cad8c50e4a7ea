"""Resources -> SlurmSpawner settings. Pure: no Slurm command, no file read.

The job script is one fixed template (JOB_SCRIPT). Only values checked here against strict
patterns go into it: numbers computed from Resources, the time limit, names from the site's
config, the job name made from the safe user name. Nothing typed by a user reaches it, and the
child gets `user_options={}` because batchspawner merges every user option into the template.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping

from ...policy.types import Resources
from ..ssh import settings as ssh_settings
from ..target import SpawnTarget

# Every value the template receives is checked against one of these.
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")           # partition, account, GPU model
TIME = re.compile(r"^([0-9]+-)?[0-9]{1,2}:[0-5][0-9]:[0-5][0-9]$")
PATH = re.compile(r"^[A-Za-z0-9_./-]+$")
COMMAND = re.compile(r"^[A-Za-z0-9_./ -]+$")
USER = re.compile(r"^[a-z_][a-z0-9_.-]*[$]?$")     # a POSIX account name: jobs run as that account
PREFIX = re.compile(r"^[A-Za-z0-9_./= -]*(\{username\}[A-Za-z0-9_./= -]*)*$")
IP = re.compile(r"^[0-9.]+$|^[0-9a-fA-F:]+$")

JOB_NAME_PREFIX = "jhub-"

# Jinja2 (batchspawner renders templates containing '{{' with jinja2). Variables: the req_*
# traits without the prefix, plus `cmd` (shell-quoted by the adapter).
JOB_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name={{job_name}}
#SBATCH --output={{homedir}}/.jhub-cloud-slurm-%j.log
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --cpus-per-task={{nprocs}}
#SBATCH --mem={{memory}}
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if account %}#SBATCH --account={{account}}
{% endif %}{% if runtime %}#SBATCH --time={{runtime}}
{% endif %}{% if gres %}#SBATCH --gres={{gres}}
{% endif %}
# The job ends with the server (and so poll sees a server that died), whatever killed it.
set -euo pipefail
trap 'echo SIGTERM received' TERM
{{srun}} {{cmd}}
"""

DEFAULTS = {
    "partition": None,
    "account": None,
    "exec_prefix": "sudo -E -u {username}",
    "batchspawner_singleuser": None,
    "server_ip": "0.0.0.0",  # noqa: S104 (the schema default: servers on compute nodes)
    "login_host": None,
}


class SlurmSettingsError(ValueError):
    """The backend section, the user or the resources cannot be turned into a job."""


def _check(pattern: re.Pattern, value: str, what: str, hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SlurmSettingsError(f"{what} {value!r} cannot go into a Slurm job: {hint}")
    return value


def memory_mb(n_bytes: int) -> str:
    """Slurm's --mem in MiB, rounded up (the profile's memory is a floor, never cut)."""
    if n_bytes <= 0:
        raise SlurmSettingsError(f"memory {n_bytes} bytes: a job needs a positive amount")
    return f"{math.ceil(n_bytes / 1024**2)}M"


def cpus(cpu: float) -> str:
    """--cpus-per-task is a whole number: a fractional profile value is rounded up."""
    if not (isinstance(cpu, (int, float)) and math.isfinite(cpu) and cpu > 0):
        raise SlurmSettingsError(f"cpu {cpu!r}: a job needs a positive number of CPUs")
    return str(math.ceil(cpu))


def gres(resources: Resources) -> str:
    """`gpu:N` or `gpu:MODEL:N`; empty without GPUs."""
    n = resources.gpus
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise SlurmSettingsError(f"gpus {n!r}: write a whole number, 0 or more")
    if n == 0:
        return ""
    if resources.gpu_model:
        _check(NAME, resources.gpu_model, "GPU model", "use letters, digits, '_', '.', '-'")
        return f"gpu:{resources.gpu_model}:{n}"
    return f"gpu:{n}"


def exec_prefix(template: str, username: str) -> str:
    """The prefix with the user filled in: only names safe in a shell word get through."""
    _check(PREFIX, template, "backends.slurm.exec_prefix",
           "only letters, digits, spaces, '-', '_', '.', '/', '=' and {username}")
    _check(USER, username, "user name", "Slurm jobs run as a local account, whose name must be "
           "lower-case letters, digits, '_', '.', '-' (starting with a letter or '_')")
    return template.replace("{username}", username)


def port_reporter(command: str | None, python: str = sys.executable) -> str:
    """The job's wrapper command (words joined by spaces): ours with the hub's Python by default."""
    if command:  # words separated by plain spaces only: a newline would start a new command
        _check(COMMAND, command, "backends.slurm.batchspawner_singleuser",
               "use letters, digits, spaces, '_', '.', '/', '-'")
    words = command.split(" ") if command else [python, "-m", "jhub_cloud.spawner.slurm_singleuser"]
    words = [w for w in words if w]
    if not words:
        raise SlurmSettingsError("backends.slurm.batchspawner_singleuser is empty: leave it out (null) "
                                 "for the default")
    for word in words:
        _check(PATH, word, "backends.slurm.batchspawner_singleuser word",
               "use letters, digits, '_', '.', '/', '-'")
    return " ".join(words)


def child_settings(resources: Resources, target: SpawnTarget, backend: Mapping,
                   cmd: list[str], env: Mapping[str, str]) -> dict:
    """Trait name -> value for jhub_cloud.spawner.backends.slurm.SlurmChild."""
    cfg = {**DEFAULTS, **backend}
    partition = cfg["partition"] or ""
    account = cfg["account"] or ""
    if partition:
        _check(NAME, partition, "backends.slurm.partition", "use letters, digits, '_', '.', '-'")
    if account:
        _check(NAME, account, "backends.slurm.account", "use letters, digits, '_', '.', '-'")
    runtime = resources.time_limit or ""
    if runtime:
        _check(TIME, runtime, "time limit", 'write it as "HH:MM:SS" or "D-HH:MM:SS"')
    server_ip = _check(IP, cfg["server_ip"], "backends.slurm.server_ip", "write an IP address")
    settings = {
        "batch_script": JOB_SCRIPT,
        "req_job_name": JOB_NAME_PREFIX + target.safe_server,
        "req_partition": partition,
        "req_account": account,
        "req_nprocs": cpus(resources.cpu),
        "req_memory": memory_mb(resources.memory_bytes),
        "req_gres": gres(resources),
        "req_runtime": runtime,
        "req_srun": "srun",
        # Unused by JOB_SCRIPT; emptied so that nothing from elsewhere in the config slips in.
        "req_options": "", "req_prologue": "", "req_epilogue": "", "req_qos": "",
        "req_reservation": "", "req_cluster": "", "req_queue": "", "req_host": "",
        "exec_prefix": "" if cfg["login_host"] else exec_prefix(cfg["exec_prefix"], target.username),
        "batchspawner_singleuser_cmd": port_reporter(cfg["batchspawner_singleuser"]),
        "cmd": list(cmd),
        "environment": {**resources.environment, **env},
        # sbatch runs with the server's environment, and --export passes exactly that on.
        "env_keep": ["PATH", "LANG", "LC_ALL", "SLURM_CONF", "JUPYTERHUB_SINGLEUSER_APP"],
        "listen_ip": server_ip,
        "user_options": {},
    }
    try:
        login = ssh_settings.login_host(cfg["login_host"])
        if login is not None:
            # Every command goes to the login node as the user's cluster account (ssh/).
            account = login.account(target.username)
            settings.update(exec_prefix=ssh_settings.EXEC_PREFIX, login_host=dict(cfg["login_host"]),
                            hub_connect_url=login.hub_connect_url, req_homedir=login.home_of(account))
    except ssh_settings.LoginSettingsError as e:
        raise SlurmSettingsError(str(e)) from None
    return settings
