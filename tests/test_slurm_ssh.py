"""Slurm from a hub outside the cluster: commands through the login node (Debian's sshd on
loopback, tests/testbed/sshd.py) with short-lived certificates from the hub's CA."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import stat
import time
from pathlib import Path

import pytest

from jhub_cloud.spawner.ssh import certs
from jhub_cloud.spawner.ssh.login import LoginNode, LoginNodeError
from jhub_cloud.spawner.ssh.settings import EXEC_PREFIX, LoginSettingsError, login_host
from tests.testbed.paths import free_port


def section(node, **kw) -> dict:
    return {"host": "127.0.0.1", "port": node.port, "host_key": node.host_key,
            "ca_key": {"file": str(node.ca_key)}, "hub_connect_url": "http://127.0.0.1:1",
            "certificate_lifetime": 60, "gate": node.gate, **kw}


async def shell(cmd, input=None, env=None):
    """What batchspawner's run_command does (a shell, RuntimeError with stderr on failure)."""
    proc = await asyncio.create_subprocess_shell(cmd, env=env, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(input.encode() if input else None)
    if proc.returncode != 0:
        raise RuntimeError(err.decode().strip())
    return out.decode().strip()


def run_on(node, user: str, command: str, env=None, input=None, **kw) -> str:
    login = login_host(section(node, **kw))
    return asyncio.run(LoginNode(login, login.account(user)).run(shell, f"{EXEC_PREFIX} {command}", input=input,
                                                                 env=env))


def test_commands_run_on_the_login_node_as_the_user_with_slurm_there(login_node, slurm):
    script = "'id -un; echo $SLURM_CONF; echo $JUPYTERHUB_USER; echo ${JHUB_CLOUD_SSH_DIR-unset}'"
    # The open gate: this test is about the login (account, environment), not the gate.
    out = run_on(login_node, "alice", script, env={"JUPYTERHUB_USER": "alice", "PATH": "/nowhere"},
                 gate=login_node.open_gate)
    assert out.splitlines() == ["alice", str(slurm.conf_path), "alice", "unset"]
    assert run_on(login_node, "alice", "'squeue -h -u alice -o %i'", gate=login_node.open_gate) == ""


def test_user_mapping_logs_in_as_the_cluster_account(login_node):
    assert run_on(login_node, "alice@example.org", "id -un", users={"alice@example.org": "bob"},
                  gate=login_node.open_gate) == "bob"


def test_certificate_files_are_private_and_gone_after_use(login_node):
    seen = {}

    async def look(cmd, input=None, env=None):
        folder = Path(env["JHUB_CLOUD_SSH_DIR"])
        seen["folder"] = folder
        seen["modes"] = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        seen["folder_mode"] = stat.S_IMODE(folder.stat().st_mode)
        return await shell(cmd, input, env)

    login = login_host(section(login_node, gate=login_node.open_gate))
    out = asyncio.run(LoginNode(login, "alice").run(look, f"{EXEC_PREFIX} id -un"))
    assert out == "alice"
    assert seen["folder_mode"] == 0o700
    assert seen["modes"] == {"config": 0o600, "known_hosts": 0o600, "id": 0o600, "id-cert.pub": 0o600}
    assert not seen["folder"].exists()


def _ssh_with(node, folder: Path, user: str) -> str:
    """ssh as `user` with the key and certificate already in `folder` (signed by the test)."""
    from jhub_cloud.spawner.ssh.settings import known_hosts, ssh_config

    login = login_host(section(node))
    (folder / "known_hosts").write_text(known_hosts(login))
    (folder / "config").write_text(ssh_config(login, user, str(folder)))
    return asyncio.run(shell(f"ssh -F {folder}/config jhub-cloud-login id -un", env={"PATH": os.environ["PATH"]}))


def test_certificate_older_than_its_lifetime_is_refused(login_node, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir(mode=0o700)
    # Signed 10 minutes ago for 60 s (plus the 60 s allowance for clock skew): expired.
    asyncio.run(certs.sign(folder, str(login_node.ca_key), "alice", 60, valid_from=int(time.time()) - 600))
    with pytest.raises(RuntimeError, match=r"Permission denied \(publickey\)"):
        _ssh_with(login_node, folder, "alice")
    # The same, signed now, is accepted: only its age made the difference.
    shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    asyncio.run(certs.sign(folder, str(login_node.ca_key), "alice", 60))
    assert _ssh_with(login_node, folder, "alice") == "alice"
    assert "Certificate invalid: expired" in login_node.log.read_text()


def test_bobs_certificate_cannot_run_commands_as_alice(login_node, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir(mode=0o700)
    asyncio.run(certs.sign(folder, str(login_node.ca_key), "bob", 60))
    with pytest.raises(RuntimeError, match=r"Permission denied \(publickey\)"):
        _ssh_with(login_node, folder, "alice")
    assert _ssh_with(login_node, folder, "bob") == "bob"


def test_refused_certificate_is_a_clear_message(login_node, tmp_path):
    other_ca = tmp_path / "other-ca"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other_ca}")  # noqa: S605 (fixed test command)
    with pytest.raises(LoginNodeError, match=r"refused the hub's certificate for alice \(is the CA in its "
                                             r"TrustedUserCAKeys"):
        run_on(login_node, "alice", "id", ca_key={"file": str(other_ca)})


def test_wrong_host_key_is_refused_before_anything_is_sent(login_node, tmp_path):
    other = tmp_path / "host"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")  # noqa: S605 (fixed test command)
    marker = tmp_path / "ran"
    with pytest.raises(LoginNodeError, match="did not show the host key configured in "
                                             "backends.slurm.login_host.host_key"):
        run_on(login_node, "alice", f"touch {marker}", host_key=Path(f"{other}.pub").read_text())
    assert not marker.exists()


def test_unreachable_login_node_is_a_clear_message(login_node):
    with pytest.raises(LoginNodeError, match=r"cannot reach the login node 127.0.0.1:\d+ \(.*Connection refused"):
        run_on(login_node, "alice", "id", port=free_port())


def test_ca_key_open_to_others_is_refused_and_nothing_runs(login_node, tmp_path):
    loose = tmp_path / "ca"
    shutil.copy(login_node.ca_key, loose)
    loose.chmod(0o644)
    with pytest.raises(certs.CertificateError, match=r"ca_key: file .* is open to group or others .*chmod 600"):
        run_on(login_node, "alice", "id", ca_key={"file": str(loose)})


def test_bad_login_host_settings_name_the_setting():
    base = {"host": "login", "host_key": "ssh-ed25519 AAAA", "ca_key": {"file": "/ca"},
            "hub_connect_url": "https://hub.example.org"}
    with pytest.raises(LoginSettingsError, match="login_host.host_key"):
        login_host({**base, "host_key": "ssh-ed25519 AAAA\nPermitLocalCommand yes"})
    with pytest.raises(LoginSettingsError, match="login_host.host: "):
        login_host({**base, "host": "login\n  ProxyCommand x"})
    with pytest.raises(LoginSettingsError, match="not a POSIX account name"):
        login_host(base).account("Alice Smith")
    assert login_host(base).account("alice") == "alice"
    assert login_host(None) is None


def test_builder_sends_every_command_through_the_login_node():
    from jhub_cloud.policy.types import Resources
    from jhub_cloud.spawner.builders.slurm import SlurmSettingsError, child_settings
    from jhub_cloud.spawner.target import SpawnTarget

    lh = {"host": "login", "host_key": "ssh-ed25519 AAAA", "ca_key": {"file": "/ca"},
          "hub_connect_url": "https://hub.example.org", "users": {"alice": "asmith"}}
    res = Resources(backend="slurm", image="default", cpu=1, memory_bytes=2**30)
    s = child_settings(res, SpawnTarget("alice"), {"login_host": lh}, ["x"], {})
    assert s["exec_prefix"] == EXEC_PREFIX and s["login_host"] == lh
    assert s["hub_connect_url"] == "https://hub.example.org" and s["req_homedir"] == "/home/asmith"
    local = child_settings(res, SpawnTarget("alice"), {}, ["x"], {})
    assert local["exec_prefix"] == "sudo -E -u alice" and "login_host" not in local
    with pytest.raises(SlurmSettingsError, match="login_host.host_key"):
        child_settings(res, SpawnTarget("alice"), {"login_host": {**lh, "host_key": "nope"}}, ["x"], {})


def test_certificate_bound_to_source_addresses(login_node):
    assert run_on(login_node, "alice", "id -un", source_addresses=["127.0.0.1/32"],
                  gate=login_node.open_gate) == "alice"
    with pytest.raises(LoginNodeError, match="refused the hub's certificate for alice"):
        run_on(login_node, "alice", "id -un", source_addresses=["192.0.2.10/32"])


def test_server_reached_directly_when_it_answers_or_never_tunnelled(login_node):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for mode in ("auto", "never"):
            node = LoginNode(login_host(section(login_node, tunnel=mode)), "alice")
            assert asyncio.run(node.reach("127.0.0.1", port)) == ("127.0.0.1", port)
            assert node.tunnel_pid is None


REFUSED = r"jhub-cloud-slurm-gate: refused {}: this certificate allows only \"sbatch --parsable\""


@pytest.mark.parametrize("command", ["id", "cat /etc/passwd", "'scancel 1; id'", "'sbatch --parsable --wrap id'",
                                     "'squeue -h -u alice'"])
def test_command_certificate_runs_only_the_gate(login_node, command):
    """A certificate the hub signed for a Slurm command, used for anything else: refused by the
    login node's gate (the certificate forces it), exit status 126, nothing run."""
    import re

    shown = command.strip("'")
    with pytest.raises(RuntimeError, match=REFUSED.format(re.escape(shown))):
        run_on(login_node, "alice", command)


def test_gate_refuses_a_query_for_a_job_id_that_is_not_a_number(login_node):
    for job in ("1x", "1 2", "$(id)", "-1"):
        command = f"squeue -h -j {job} -o '%T %B %r'"
        with pytest.raises(RuntimeError, match="jhub-cloud-slurm-gate: refused squeue -h -j"):
            run_on(login_node, "alice", shlex.quote(command))


def test_gate_lets_the_backend_submit_query_and_cancel(login_node, slurm):
    """The three commands exactly as SlurmChild sends them pass the gate, as the user."""
    job = run_on(login_node, "alice", shlex.quote("sbatch --parsable"),
                 input="#!/bin/sh\n#SBATCH --job-name=jhub-gate-test\n#SBATCH --chdir=/tmp\nsleep 60\n")
    assert job.isdigit()
    try:
        state = run_on(login_node, "alice", shlex.quote(f"squeue -h -j {job} -o '%T %B %r'"))
        assert state.split()[0] in ("PENDING", "RUNNING", "CONFIGURING")
    finally:
        run_on(login_node, "alice", shlex.quote(f"scancel {job}"))
    gone = run_on(login_node, "alice", shlex.quote(f"squeue -h -j {job} -o '%T %B %r'"))
    assert gone.split()[:1] in ([], ["CANCELLED"], ["COMPLETING"])


def test_missing_gate_on_the_login_node_is_a_clear_message(login_node):
    with pytest.raises(LoginNodeError, match=r"the login node 127.0.0.1:\d+ has no jhub-cloud gate at "
                                             r"/nonexistent/gate \(backends.slurm.login_host.gate\)"):
        run_on(login_node, "alice", shlex.quote("sbatch --parsable"), gate="/nonexistent/gate")
