"""SeaweedFS (``weed server``: master + volume + filer + S3) with OIDC STS, on loopback.

One role for every user: its policy gives each user the bucket named after them through
``${jwt:preferred_username}``, ``scratch`` to everyone, and each group bucket to the members of
that group through ``ForAnyValue:StringEquals`` on ``jwt:groups``. SeaweedFS verifies the token's
signature, issuer, audience and expiry against the IdP's JWKS over HTTPS.

Key lifetime: SeaweedFS refuses an explicit ``DurationSeconds`` below 900, but the lifetime it
gives when none is asked for is ``sts.tokenDuration``, which may be short: ``SeaweedFS(...,
token_duration="60s")`` (fixture ``seaweedfs_short``) hands out keys that expire within a minute.

Other identity providers (``idp_factory`` shapes): ``SeaweedFS(idp, dir, client_id=...)`` trusts
that provider with the audience its tokens carry (Keycloak: ``account``; INDIGO IAM: the
audience the client asked for).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

import pytest
import requests

from .idp import AUDIENCE, IdP
from .paths import VENV_BIN
from .procs import Daemon, wait_for
from .s3 import ALL_BUCKETS, GROUP_BUCKETS, REGION, SHARED_BUCKET, free_ports, static_s3_client

WEED = VENV_BIN / "weed"
PROVIDER = "testidp"
ROLE = "NotebookUser"
ADMIN_KEY, ADMIN_SECRET = "swadmin", "swadmin-secret"
SHORT_TOKEN_DURATION = "60s"


def _seconds(duration: str) -> int:
    """Go duration ("90s", "15m", "1h", "1h30m") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, num = 0, ""
    for ch in duration:
        if ch.isdigit():
            num += ch
        else:
            total += int(num) * units[ch]
            num = ""
    return total + int(num or 0)


def _bucket(name: str) -> list[str]:
    return [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]


def role_policy() -> dict:
    """Own bucket by username claim, scratch for all, group buckets by the groups claim."""
    stmts = [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": _bucket("${jwt:preferred_username}")},
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": _bucket(SHARED_BUCKET)},
    ]
    for g in GROUP_BUCKETS:
        stmts.append({"Effect": "Allow", "Action": ["s3:*"], "Resource": _bucket(g),
                      "Condition": {"ForAnyValue:StringEquals": {"jwt:groups": [g]}}})
    stmts.append({"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]})
    return {"Version": "2012-10-17", "Statement": stmts}


class SeaweedFS:
    """A throwaway single-process SeaweedFS with S3 and OIDC STS on free loopback ports."""

    region = REGION
    rclone_provider = "SeaweedFS"
    min_duration = 900         # lowest DurationSeconds its STS accepts

    def __init__(self, idp: IdP, dir: Path, token_duration: str = "1h",  # noqa: S107
                 max_session_length: str = "12h", client_id: str = AUDIENCE):
        self.idp, self.dir = idp, Path(dir)
        # The audience SeaweedFS accepts: the token's `aud` when it is one string, else its `azp`.
        self.client_id = client_id
        self.token_duration, self.max_session_length = token_duration, max_session_length
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.role_arn = f"arn:aws:iam::role/{ROLE}"
        self.daemon: Daemon | None = None
        self._sockets: dict[Path, int] = {}
        self.start_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def key_lifetime(self) -> int:
        """Seconds STS keys live when AssumeRoleWithWebIdentity names no DurationSeconds."""
        return _seconds(self.token_duration)

    def role_arn_for(self, user: str) -> str:
        """The one role every user assumes (the policy tells users apart by their claims)."""
        return self.role_arn

    def admin_s3(self):
        """boto3 S3 client with the static admin keys (creates buckets, reads everything)."""
        return static_s3_client(self.endpoint, ADMIN_KEY, ADMIN_SECRET, self.region)

    def wait_object(self, bucket: str, key: str, timeout: float = 30) -> bytes | None:
        """The object's bytes once it is there (mounts upload after close()), or None at the time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.admin_s3().get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception:  # noqa: BLE001 (not uploaded yet)
                time.sleep(0.5)
        return None

    # --- configuration ------------------------------------------------------------------------
    def iam_config(self) -> dict:
        return {
            "sts": {"tokenDuration": self.token_duration, "maxSessionLength": self.max_session_length,
                    "issuer": "seaweedfs-sts",
                    "signingKey": base64.b64encode(secrets.token_bytes(32)).decode()},
            "providers": [{
                "name": PROVIDER, "type": "oidc", "enabled": True,
                "config": {"issuer": self.idp.issuer, "clientId": self.client_id,
                           "jwksUri": self.idp.issuer + "/jwks",
                           "claimsMapping": {"username": "preferred_username", "groups": "groups"}},
            }],
            "policy": {"defaultEffect": "Deny", "storeType": "memory"},
            "roles": [{
                "roleName": ROLE, "roleArn": self.role_arn,
                "trustPolicy": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Federated": PROVIDER},
                    "Action": ["sts:AssumeRoleWithWebIdentity"]}]},
                "attachedPolicies": ["NotebookBuckets"],
            }],
            "policies": [{"name": "NotebookBuckets", "document": role_policy()}],
        }

    def s3_config(self) -> dict:
        return {"identities": [{"name": "admin",
                                "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
                                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}

    def argv(self) -> list[str]:
        p = self.ports
        return [
            str(WEED), "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            # Each bucket is a collection with volumes of its own: 8 buckets need far more than 8.
            "-volume.max=200", f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-s3.config={self.dir / 's3.json'}", f"-s3.iam.config={self.dir / 'iam.json'}",
        ]

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SeaweedFS:
        t0, started = time.monotonic(), time.time()
        shutil.rmtree(self.dir / "data", ignore_errors=True)   # fresh dir: old raft state is slow
        (self.dir / "data").mkdir(parents=True)
        for name, doc in (("iam.json", self.iam_config()), ("s3.json", self.s3_config())):
            f = self.dir / name
            f.write_text(json.dumps(doc, indent=1))
            f.chmod(0o600)
        # Go reads SSL_CERT_FILE: trust system CAs + the test CA for the IdP's JWKS.
        env = {**os.environ, **self.idp.pki.ca_env()}
        self.daemon = Daemon("seaweedfs", self.argv(), self.dir / "weed.log", env=env,
                             cwd=self.dir, stop_timeout=2).start()
        self.daemon.wait_ready(self._s3_answers, timeout=60)
        self._create_buckets()
        self._sockets = self._tmp_sockets(since=started)
        self.start_seconds = time.monotonic() - t0
        return self

    def _tmp_sockets(self, since: float) -> dict[Path, int]:
        """weed's gRPC unix sockets in /tmp named after our ports (a killed weed leaves them):
        path -> inode, for those made since our start, so that stop removes only ours."""
        found = {}
        for kind in ("master", "volume", "filer", "s3"):
            sock = Path(f"/tmp/seaweedfs-{kind}-grpc-{self.ports[kind + '_grpc']}.sock")
            with contextlib.suppress(OSError):
                st = sock.lstat()
                if stat.S_ISSOCK(st.st_mode) and st.st_mtime >= since - 1:
                    found[sock] = st.st_ino
        return found

    def _s3_answers(self) -> bool:
        requests.get(self.endpoint, timeout=2)
        return True

    def _create_buckets(self) -> None:
        s3 = self.admin_s3()

        def create_all() -> bool:
            have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            for b in ALL_BUCKETS:
                if b not in have:
                    s3.create_bucket(Bucket=b)
            # A bucket works once the master has grown volumes for it: write to each once.
            for b in ALL_BUCKETS:
                s3.put_object(Bucket=b, Key=".testbed-probe", Body=b"")
                s3.delete_object(Bucket=b, Key=".testbed-probe")
            return True

        wait_for(create_all, 60, "SeaweedFS buckets", self.daemon.log, self.daemon.proc, 0.5)

    def restart(self) -> float:
        """Stop the server by PID and start it again on the same ports with the same data (an S3
        outage under running mounts); returns the seconds until S3 answered again."""
        t0 = time.monotonic()
        self.daemon.stop()
        env = {**os.environ, **self.idp.pki.ca_env()}
        self.daemon = Daemon("seaweedfs", self.argv(), self.dir / "weed.log", env=env,
                             cwd=self.dir, stop_timeout=2).start()
        self.daemon.wait_ready(self._s3_answers, timeout=60)
        self._sockets.update(self._tmp_sockets(since=time.time() - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds: the data dir is thrown away anyway."""
        if self.daemon:
            self.daemon.stop()
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        for sock, inode in self._sockets.items():
            with contextlib.suppress(OSError):
                if sock.lstat().st_ino == inode:
                    sock.unlink()


@pytest.fixture(scope="session")
def seaweedfs(idp, run_dir) -> SeaweedFS:
    """SeaweedFS S3 + STS; keys live 1 h unless DurationSeconds asks otherwise (>= 900)."""
    s = SeaweedFS(idp, run_dir / "seaweedfs").start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def seaweedfs_factory(idp, run_dir):
    """``make(token_duration)`` -> a SeaweedFS whose keys live that long by default ("10s",
    "90s", ...); one instance per lifetime for the session, all stopped at its end."""
    made: dict[str, SeaweedFS] = {}

    def make(token_duration: str) -> SeaweedFS:
        if token_duration not in made:
            name = f"seaweedfs-{token_duration}"
            made[token_duration] = SeaweedFS(idp, run_dir / name,
                                             token_duration=token_duration).start()
        return made[token_duration]

    yield make
    for s in made.values():
        s.stop()


@pytest.fixture(scope="session")
def seaweedfs_short(seaweedfs_factory) -> SeaweedFS:
    """A second SeaweedFS whose STS keys expire after 60 s (for renewal tests).

    Works down to at least 10 s; only an explicit DurationSeconds must be >= 900."""
    return seaweedfs_factory(SHORT_TOKEN_DURATION)
