"""A login node for the Slurm-over-SSH tests: Debian's sshd on its own loopback port.

It has its own host key and configuration (nothing of /etc/ssh is used), trusts only the test
SSH CA (TrustedUserCAKeys) and lets a certificate log in as an account only when its principal
is listed in that account's principals file. User sessions get SLURM_CONF from sshd (SetEnv),
so Slurm commands work there while the hub's own environment has no Slurm at all.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .paths import free_port
from .procs import Daemon, ServiceError

USERS = ("alice", "bob", "carol")
# What the job must receive from the hub (docs/slurm-over-ssh.md lists the same).
ACCEPT_ENV = "JUPYTERHUB_* JPY_* STS_WIRE_* MEM_* CPU_* LANG LC_*"
GATE_SOURCE = Path(__file__).resolve().parents[2] / "jhub_cloud" / "spawner" / "ssh" / "slurm-gate.sh"


@dataclass
class LoginNode:
    dir: Path
    slurm_conf: Path
    port: int = field(default_factory=free_port)
    daemon: Daemon | None = None

    @property
    def ca_key(self) -> Path:
        """The CA's private key, as the hub holds it (0600)."""
        return self.dir / "ca" / "ssh-ca"

    @property
    def host_key(self) -> str:
        """The login node's public host key line, for backends.slurm.login_host.host_key."""
        return (self.dir / "ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def principals(self) -> Path:
        """sshd (StrictModes) wants no world-writable folder above it, as /var/tmp is: in /run."""
        return Path(f"/run/jhub-cloud-test-sshd-{self.port}")

    @property
    def libexec(self) -> Path:
        """The site's programs on the login node (readable by the users, like the principals)."""
        return Path(f"/run/jhub-cloud-test-sshd-{self.port}-libexec")

    @property
    def gate(self) -> str:
        """jhub-cloud's slurm-gate.sh from this repository, installed as a site would."""
        return str(self.libexec / "jhub-cloud-slurm-gate")

    @property
    def open_gate(self) -> str:
        """A gate that runs any command: for tests of the login itself (user, environment)."""
        return str(self.libexec / "open-gate")

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def write(self) -> None:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
        (d / "ca").mkdir(mode=0o700, exist_ok=True)
        for key in (d / "ssh_host_ed25519_key", self.ca_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)],
                               check=True, capture_output=True)
        # The login node has only the CA's public half.
        (d / "trusted-user-ca.pub").write_text(Path(str(self.ca_key) + ".pub").read_text())
        principals = self.principals
        principals.mkdir(mode=0o755, parents=True, exist_ok=True)
        for user in USERS:
            (principals / user).write_text(f"{user}\n")
            (principals / user).chmod(0o644)
        self.libexec.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(GATE_SOURCE, self.gate)
        Path(self.open_gate).write_text('#!/bin/sh\nexec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
        for program in (self.gate, self.open_gate):
            Path(program).chmod(0o755)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        (d / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {d}/ssh_host_ed25519_key
PidFile {d}/sshd.pid
TrustedUserCAKeys {d}/trusted-user-ca.pub
AuthorizedPrincipalsFile {principals}/%u
AuthorizedKeysFile none
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {' '.join(USERS)}
UsePAM yes
AllowTcpForwarding local
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PermitUserEnvironment no
AcceptEnv {ACCEPT_ENV}
SetEnv SLURM_CONF={self.slurm_conf}
LogLevel VERBOSE
""")

    def start(self) -> LoginNode:
        self.write()
        r = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(self.dir / "sshd_config")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ServiceError(f"sshd refuses its configuration: {r.stderr}")
        self.daemon = Daemon("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.dir / "sshd_config")],
                             self.log, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).start()
        self.daemon.wait_ready(lambda: _banner(self.port), timeout=15)
        return self

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()
        shutil.rmtree(self.principals, ignore_errors=True)
        shutil.rmtree(self.libexec, ignore_errors=True)


def _banner(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        return s.recv(64).startswith(b"SSH-2.0-")


@pytest.fixture(scope="session")
def login_node(run_dir, slurm) -> LoginNode:
    """sshd playing the cluster's login node, in front of the testbed's Slurm."""
    node = LoginNode(run_dir / "login-node", slurm.conf_path)
    try:
        node.start()
        yield node
    finally:
        node.stop()

