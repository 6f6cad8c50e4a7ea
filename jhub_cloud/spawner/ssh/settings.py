"""The `login_host` section -> what ssh needs. Pure: no file, no process.

The hub's own ssh configuration (~/.ssh, /etc/ssh/ssh_config) is never read: each command gets
a config file written for it (`-F`), so nothing of the hub's environment decides where ssh
connects, which key it offers or which host key it accepts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

USER = re.compile(r"^[a-z_][a-z0-9_.-]*$")
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$|^[0-9a-fA-F:]+$")
HOST_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa|rsa-sha2-(256|512)) "
                      r"[A-Za-z0-9+/]+={0,3}$")
HOME = re.compile(r"^/[A-Za-z0-9_./-]*$")
SOURCE = re.compile(r"^[0-9a-fA-F.:]+(/[0-9]{1,3})?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ALIAS = "jhub-cloud-login"  # the name ssh knows the login node by (config and known_hosts)
# Never sent to the login node: the cluster's own values win (PATH, SLURM_CONF, HOME...).
# Where the login node has slurm-gate.sh: the forced command of every Slurm command certificate.
GATE = "/usr/local/libexec/jhub-cloud-slurm-gate"
NOT_SENT = frozenset({"PATH", "SLURM_CONF", "HOME", "USER", "LOGNAME", "SHELL", "PWD",
                      "JHUB_CLOUD_SSH_DIR"})


class LoginSettingsError(ValueError):
    """The login_host section or a user cannot be used; the message says which and why."""


@dataclass(frozen=True)
class LoginHost:
    host: str
    host_key: str
    ca_key_file: str
    hub_connect_url: str
    port: int = 22
    certificate_lifetime: int = 300
    cluster_user: str = "{username}"
    users: Mapping[str, str] = field(default_factory=dict)
    home: str = "/home/{username}"
    tunnel: str = "auto"
    source_addresses: tuple[str, ...] = ()
    gate: str = GATE

    def account(self, hub_user: str) -> str:
        """The cluster account of a hub user: the certificate's principal and the ssh login."""
        name = self.users.get(hub_user) or self.cluster_user.replace("{username}", hub_user)
        if not USER.fullmatch(name):
            raise LoginSettingsError(
                f"hub user {hub_user!r} maps to cluster account {name!r}, which is not a POSIX account "
                "name: add the user to backends.slurm.login_host.users with their cluster account")
        return name

    def home_of(self, account: str) -> str:
        path = self.home.replace("{username}", account)
        if not HOME.fullmatch(path):
            raise LoginSettingsError(f"backends.slurm.login_host.home gives {path!r}: write an absolute path")
        return path


def login_host(section: Mapping | None) -> LoginHost | None:
    """The checked section (schema defaults already filled in), or None when it is not set."""
    if not section:
        return None
    where = "backends.slurm.login_host"

    def need(ok: bool, what: str, hint: str) -> None:
        if not ok:
            raise LoginSettingsError(f"{where}.{what}: {hint}")

    host = section.get("host")
    need(isinstance(host, str) and bool(HOST.fullmatch(host)), "host", "write a host name or an IP address")
    port = section.get("port", 22)
    need(type(port) is int and 1 <= port <= 65535, "port", "write a port number from 1 to 65535")
    raw = str(section.get("host_key") or "").strip()
    key = " ".join(raw.split(" ")[:2])  # type and key; the comment is dropped
    need(bool(HOST_KEY.fullmatch(key)) and not any(c in raw for c in "\r\n\0"), "host_key",
         "paste the one line of the login node's ssh_host_ed25519_key.pub")
    ca = section.get("ca_key") or {}
    need(isinstance(ca, Mapping) and set(ca) == {"file"} and str(ca["file"]).startswith("/"),
         "ca_key", "write {file: /path/to/ssh-ca} (the CA's private key, mode 600)")
    url = section.get("hub_connect_url")
    need(isinstance(url, str) and bool(re.fullmatch(r"https?://[^\s/?#]+/?", url)), "hub_connect_url",
         "write the URL at which compute nodes reach the hub, such as https://hub.example.org")
    lifetime = section.get("certificate_lifetime", 300)
    need(type(lifetime) is int and 10 <= lifetime <= 3600, "certificate_lifetime",
         "write a number of seconds from 10 to 3600")
    tunnel = section.get("tunnel", "auto")
    need(tunnel in ("auto", "always", "never"), "tunnel", "write auto, always or never")
    sources = tuple(section.get("source_addresses") or ())
    need(all(isinstance(s, str) and SOURCE.fullmatch(s) for s in sources), "source_addresses",
         "write addresses or CIDRs such as 192.0.2.10/32")
    gate = section.get("gate", GATE)
    need(isinstance(gate, str) and bool(HOME.fullmatch(gate)), "gate",
         "write the absolute path of slurm-gate.sh on the login node, such as " + GATE)
    users = dict(section.get("users") or {})
    for hub_user, account in users.items():
        need(isinstance(account, str) and bool(USER.fullmatch(account)), f"users.{hub_user}",
             "write a POSIX account name")
    return LoginHost(host=host, port=port, host_key=key, ca_key_file=ca["file"], hub_connect_url=url,
                     certificate_lifetime=lifetime, cluster_user=section.get("cluster_user", "{username}"),
                     users=users, home=section.get("home", "/home/{username}"), tunnel=tunnel,
                     source_addresses=sources, gate=gate)


def known_hosts(login: LoginHost) -> str:
    return f"{ALIAS} {login.host_key}\n"


def ssh_config(login: LoginHost, account: str, folder: str, send_env: Iterable[str] = ()) -> str:
    """The whole client configuration for one connection as `account` (files in `folder`)."""
    names = sorted(n for n in send_env if ENV_NAME.fullmatch(n) and n not in NOT_SENT)
    lines = [
        f"Host {ALIAS}",
        f"  HostName {login.host}",
        f"  Port {login.port}",
        f"  User {account}",
        f"  IdentityFile {folder}/id",
        f"  CertificateFile {folder}/id-cert.pub",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        "  AddKeysToAgent no",
        # The host key is the configured one, never learnt: a changed key is refused.
        f"  UserKnownHostsFile {folder}/known_hosts",
        "  GlobalKnownHostsFile /dev/null",
        f"  HostKeyAlias {ALIAS}",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  CheckHostIP no",
        "  BatchMode yes",
        "  PasswordAuthentication no",
        "  KbdInteractiveAuthentication no",
        "  PubkeyAuthentication yes",
        "  ForwardAgent no",
        "  ForwardX11 no",
        "  RequestTTY no",
        "  ControlMaster no",
        "  ControlPath none",
        "  ConnectTimeout 15",
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 3",
        "  ExitOnForwardFailure yes",
        "  LogLevel ERROR",
    ]
    lines += [f"  SendEnv {n}" for n in names]
    return "\n".join(lines) + "\n"


# The prefix batchspawner puts before each Slurm command: the shell it runs in expands the
# folder of that one command (set in the command's environment by LoginNode.run).
EXEC_PREFIX = f'ssh -F "$JHUB_CLOUD_SSH_DIR/config" {ALIAS}'


def remote(command: str) -> str:
    """One argument for ssh: the login node's shell then sees the command as it was written."""
    return shlex.quote(command)


def explain(stderr: str, login: LoginHost, account: str) -> str | None:
    """A clear message for ssh's own failures (exit status 255) and a missing gate; None for the
    command's errors."""
    where = f"the login node {login.host}:{login.port}"
    text = stderr.strip()
    if login.gate in text and ("not found" in text or "No such file" in text):
        return (f"{where} has no jhub-cloud gate at {login.gate} (backends.slurm.login_host.gate): "
                "install slurm-gate.sh there as docs/slurm-over-ssh.md says")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (f"{where} did not show the host key configured in backends.slurm.login_host.host_key: "
                "nothing was sent to it. If its key really changed, update the setting")
    if "Permission denied" in text:
        return (f"{where} refused the hub's certificate for {account} (is the CA in its TrustedUserCAKeys, "
                f"{account} in its AuthorizedPrincipalsFile, and are the clocks in sync?)")
    for pattern in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                    "Network is unreachable", "Connection closed", "Connection reset"):
        if pattern in text:
            return f"cannot reach {where} ({text.splitlines()[-1] if text else pattern}); try again later"
    return None
