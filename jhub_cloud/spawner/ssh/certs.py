"""Short-lived user certificates signed by the hub's SSH CA, with Debian's ssh-keygen.

Each certificate serves one command (or one tunnel start): a fresh key pair is made in a new
0700 folder, signed for one principal (the cluster account) with `-O clear` (no pty, no agent,
X11 or port forwarding, no ~/.ssh/rc) unless the tunnel needs port forwarding, with a forced
command (the login node's gate for Slurm commands, /bin/false for the tunnel), then deleted with
the folder. The CA key never leaves its own file: ssh-keygen reads it by path.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sts_wire.core.secretfile import SecretFileError, read_secret_file

from .settings import LoginHost, known_hosts, ssh_config

SKEW = 60  # seconds a certificate is valid before it was signed: clocks differ a little


class CertificateError(RuntimeError):
    """The hub could not make a certificate (CA key missing or open to others, ssh-keygen failed)."""


def check_ca_key(path: str) -> None:
    """The CA key exists and is private to the hub's user (mode 600); read, never kept."""
    try:
        read_secret_file(path, owner_hint="the hub's user")
    except SecretFileError as e:
        raise CertificateError(f"backends.slurm.login_host.ca_key: {e}") from None


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise CertificateError(f"{argv[0]} {argv[1]} failed: {err.decode(errors='replace').strip()}")


async def sign(folder: Path, ca_key: str, principal: str, lifetime: int, *, forwarding: bool = False,
               source_addresses: tuple[str, ...] = (), valid_from: int | None = None,
               force_command: str | None = None) -> Path:
    """Key pair and certificate in `folder` (id, id-cert.pub); returns the certificate's path."""
    check_ca_key(ca_key)
    key = folder / "id"
    await _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"jhub-cloud {principal}", "-f", str(key))
    start = int(time.time()) - SKEW if valid_from is None else valid_from
    # Absolute times (seconds since the epoch): what the certificate says is what was asked.
    options = ["-O", "clear"]
    if forwarding:
        # The tunnel's certificate may forward ports and run nothing else.
        options += ["-O", "permit-port-forwarding", "-O", "force-command=/bin/false"]
    elif force_command:
        # A command's certificate runs only the login node's gate, which lets through only the
        # Slurm commands the backend sends (slurm-gate.sh): stolen, it is worth little.
        options += ["-O", f"force-command={force_command}"]
    if source_addresses:
        options += ["-O", "source-address=" + ",".join(source_addresses)]
    await _run("ssh-keygen", "-q", "-s", ca_key, "-I", f"jhub-cloud:{principal}:{secrets.token_hex(4)}",
               "-n", principal, "-V", f"{start:#x}:{start + SKEW + lifetime:#x}",
               *options, str(key) + ".pub")
    os.unlink(str(key) + ".pub")  # the public key is inside the certificate
    cert = folder / "id-cert.pub"
    cert.chmod(0o600)  # ssh-keygen writes it 0644: not a secret alone, but it is no one else's
    return cert


@asynccontextmanager
async def credentials(login: LoginHost, account: str, *, forwarding: bool = False,
                      send_env=()) -> AsyncIterator[Path]:
    """A private folder with config, known_hosts, key and certificate; deleted on leaving."""
    folder = Path(tempfile.mkdtemp(prefix="jhub-cloud-ssh-"))  # mode 0700
    try:
        old = os.umask(0o077)
        try:
            (folder / "known_hosts").write_text(known_hosts(login))
            (folder / "config").write_text(ssh_config(login, account, str(folder), send_env))
        finally:
            os.umask(old)
        await sign(folder, login.ca_key_file, account, login.certificate_lifetime, forwarding=forwarding,
                   source_addresses=login.source_addresses, force_command=login.gate)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
