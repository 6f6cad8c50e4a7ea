"""A throwaway one-node Ceph (Debian's 16.2 "pacific") with radosgw S3 + OIDC STS, on loopback.

One monitor and one bluestore OSD on a sparse file, then radosgw; every file (config, keyrings,
pid files, admin sockets, logs, data) lives under the run folder. The monitor and radosgw listen
on free loopback ports picked here; the OSD binds free ports of Ceph's 6800-7300 range on
127.0.0.1 itself. The daemons run in the foreground (``-f``) as our children, in process groups of
their own, and are stopped by PID.

radosgw's libcurl ignores the CA environment variables, so it runs in a private mount namespace
in which the test CA bundle (system CAs + test CA) is bind-mounted over the system bundle: it
then trusts the IdP's HTTPS for the JWKS without touching the host's trust store.

STS on RGW: RoleArn is mandatory and trust conditions only see ``sub``/``aud`` (no groups, no
policy variables from the token), so there is one role per user, ``arn:aws:iam:::role/<user>``,
trusted for tokens whose ``sub`` is that user and whose ``aud`` is ours, with a policy that grants
the user's bucket, ``scratch`` and the buckets of the user's groups (as the IdP starts with them).
RGW 16.2 cannot parse policy JSON that contains spaces: documents are sent compact.

Key lifetime: 3600 s unless DurationSeconds asks otherwise; ``rgw sts min session duration`` is
lowered to 15 s so that renewal tests can ask for keys that expire quickly. A role's
MaxSessionDuration cannot go below 3600 (RGW refuses), so the default cannot be shortened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .idp import AUDIENCE, USERS, IdP
from .paths import SYSTEM_CA_BUNDLE
from .procs import Daemon, ServiceError, log_tail, pid_alive, read_pid, wait_for
from .s3 import (
    ALL_BUCKETS,
    REGION,
    SHARED_BUCKET,
    boto_config,
    buckets_of,
    free_ports,
    static_s3_client,
)

ADMIN_KEY, ADMIN_SECRET = "rgwadmin", "rgwadmin-secret"
# Lowest DurationSeconds RGW accepts here (its default minimum is 900, like AWS).
MIN_SESSION_SECONDS = 15


def compact(doc: dict) -> str:
    """RGW 16.2 refuses policy documents with spaces in them."""
    return json.dumps(doc, separators=(",", ":"))


class CephRGW:
    """1 mon + 1 OSD + radosgw with STS, everything under ``dir``."""

    region = REGION
    rclone_provider = "Ceph"
    min_duration = MIN_SESSION_SECONDS    # lowest DurationSeconds its STS accepts
    key_lifetime = 3600        # seconds keys live when no DurationSeconds is asked for
    daemon_names = ("client.rgw.a", "osd.0", "mon.a")   # stop order

    def __init__(self, idp: IdP, dir: Path, osd_bytes: int = 20 << 30):
        self.idp, self.dir = idp, Path(dir)
        self.osd_bytes = osd_bytes
        self.mon_v2, self.mon_v1, self.rgw_port = free_ports(3)
        self.daemons: dict[str, Daemon] = {}
        self.sts_key = secrets.token_hex(8)      # rgw sts key: 16 characters
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        self.timings: dict[str, float] = {}     # seconds since start when each step was done

    # --- names --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    @property
    def idp_host(self) -> str:
        """The issuer without scheme: RGW's name for the provider and its condition keys."""
        return self.idp.issuer.split("://", 1)[1]

    @property
    def oidc_provider_arn(self) -> str:
        return f"arn:aws:iam:::oidc-provider/{self.idp_host}"

    def role_arn_for(self, user: str) -> str:
        return f"arn:aws:iam:::role/{user}"

    def admin_s3(self):
        """boto3 S3 client with the static keys of the RGW admin user."""
        return static_s3_client(self.endpoint, ADMIN_KEY, ADMIN_SECRET, self.region)

    def admin_iam(self):
        return boto3.client("iam", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=ADMIN_KEY, aws_secret_access_key=ADMIN_SECRET,
                            config=boto_config())

    # --- configuration ------------------------------------------------------------------------
    def ceph_conf(self, fsid: str) -> str:
        d = self.dir
        return f"""[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:127.0.0.1:{self.mon_v2},v1:127.0.0.1:{self.mon_v1}]
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/$name.keyring
run dir = {d}/run
pid file = {d}/run/$name.pid
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
crash dir = {d}/crash
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {self.osd_bytes}
bluestore fsck on mkfs = false
osd memory target = 1073741824
mon data avail warn = 5
mon data avail crit = 1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
paxos propose interval = 0.1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000
osd max object name len = 256
osd max object namespace len = 64

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{self.rgw_port}
rgw data = {d}/rgw
rgw dns name = localhost
rgw s3 auth use sts = true
rgw sts key = {self.sts_key}
rgw sts min session duration = {MIN_SESSION_SECONDS}
rgw gc obj min wait = 0
rgw gc processor period = 10
rgw enable usage log = false
"""

    # --- commands -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_CONF": str(self.conf)}

    def run(self, *argv: str, input: str | None = None, timeout: float = 60) -> str:
        r = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        if r.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:3])} failed ({r.returncode}): "
                               f"{r.stderr.strip()[-2000:]}")
        return r.stdout

    def ceph(self, *args: str, input: str | None = None) -> str:
        return self.run("ceph", "-c", str(self.conf), "--connect-timeout", "20", *args,
                        input=input)

    def asok(self, name: str, prefix: str) -> dict:
        """Ask a daemon through its admin socket (no 0.4 s ``ceph`` CLI start per poll)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.dir / "run" / f"{name}.asok"))
            sock.sendall(json.dumps({"prefix": prefix, "format": "json"}).encode() + b"\0")
            buf = b""
            while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf[4:])

    def _daemon(self, name: str, argv: list[str]) -> Daemon:
        d = Daemon(name, argv, self.dir / "log" / f"{name}.out", env=self.env(),
                   cwd=self.dir, stop_timeout=3).start()
        self.daemons[name] = d
        return d

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> CephRGW:
        t0 = time.monotonic()
        try:
            for step in (self._start_mon, self._start_osd, self._start_rgw, self._setup_sts):
                step()
                self.timings[step.__name__.strip("_")] = round(time.monotonic() - t0, 2)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start_mon(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("mon", "osd", "run", "log", "rgw", "crash"):
            (self.dir / sub).mkdir(parents=True)
        fsid = str(uuid.uuid4())
        self.conf.write_text(self.ceph_conf(fsid))
        d, c = self.dir, str(self.conf)
        self.run("ceph-authtool", "--create-keyring", f"{d}/mon.a.keyring", "--gen-key",
                 "-n", "mon.", "--cap", "mon", "allow *")
        self.run("ceph-authtool", "--create-keyring", f"{d}/client.admin.keyring", "--gen-key",
                 "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                 "--cap", "mds", "allow *", "--cap", "mgr", "allow *")
        self.run("ceph-authtool", f"{d}/mon.a.keyring", "--import-keyring",
                 f"{d}/client.admin.keyring")
        self.run("monmaptool", "--create", "--addv", "a",
                 f"[v2:127.0.0.1:{self.mon_v2},v1:127.0.0.1:{self.mon_v1}]",
                 "--fsid", fsid, f"{d}/monmap")
        self.run("ceph-mon", "-c", c, "--mkfs", "-i", "a", "--monmap", f"{d}/monmap",
                 "--keyring", f"{d}/mon.a.keyring")
        mon = self._daemon("mon.a", ["ceph-mon", "-f", "-c", c, "-i", "a"])
        mon.wait_ready(lambda: self.asok("mon.a", "mon_status")["state"] == "leader", timeout=60)

    def _start_osd(self) -> None:
        d, c = self.dir, str(self.conf)
        osd_uuid, secret = str(uuid.uuid4()), self.run("ceph-authtool", "--gen-print-key").strip()
        osd_id = self.ceph("osd", "new", osd_uuid, "-i", "-",
                           input=json.dumps({"cephx_secret": secret})).strip()
        assert osd_id == "0", osd_id
        (d / "osd" / f"ceph-{osd_id}").mkdir()
        self.run("ceph-authtool", "--create-keyring", f"{d}/osd.{osd_id}.keyring",
                 "--name", f"osd.{osd_id}", "--add-key", secret)
        self.run("ceph-osd", "-c", c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid,
                 timeout=120)
        osd = self._daemon(f"osd.{osd_id}", ["ceph-osd", "-f", "-c", c, "-i", osd_id])
        osd.wait_ready(lambda: self.asok(f"osd.{osd_id}", "status")["state"] == "active",
                       timeout=90)

    def _start_rgw(self) -> None:
        d, c = self.dir, str(self.conf)
        self.ceph("auth", "get-or-create", "client.rgw.a", "mon", "allow rw", "osd", "allow rwx",
                  "mgr", "allow rw", "-o", f"{d}/client.rgw.a.keyring")
        # A private mount namespace in which the system CA bundle is system + test CA.
        bind = (f"mount --bind {self.idp.pki.bundle} {SYSTEM_CA_BUNDLE} && "
                f"exec radosgw -f -c {c} -n client.rgw.a")
        rgw = self._daemon("client.rgw.a", ["unshare", "-m", "--propagation", "private",
                                            "sh", "-c", bind])
        rgw.wait_ready(lambda: requests.get(self.endpoint, timeout=2).status_code < 500,
                       timeout=120)

    def _setup_sts(self) -> None:
        self.run("radosgw-admin", "-c", str(self.conf), "user", "create", "--uid=admin",
                 "--display-name=admin", f"--access-key={ADMIN_KEY}", f"--secret={ADMIN_SECRET}")
        self.run("radosgw-admin", "-c", str(self.conf), "caps", "add", "--uid=admin",
                 "--caps=oidc-provider=*;roles=*;users=*;buckets=*")
        iam = self.admin_iam()
        # RGW does not check thumbprints, but the API wants at least one: the IdP's TLS cert.
        cert = x509.load_pem_x509_certificate(self.idp.pki.server_cert.read_bytes())
        thumb = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER),
                             usedforsecurity=False).hexdigest()
        wait_for(lambda: iam.create_open_id_connect_provider(
            Url=self.idp.issuer, ClientIDList=[AUDIENCE], ThumbprintList=[thumb]),
            30, "RGW OIDC provider", self.daemons["client.rgw.a"].log, interval=0.5)
        for user in USERS:
            self._create_role(iam, user)
        s3 = self.admin_s3()
        for b in ALL_BUCKETS:
            s3.create_bucket(Bucket=b)
        # The first object creates the data pool (~2 s): pay for it here, not in a test.
        s3.put_object(Bucket=SHARED_BUCKET, Key=".testbed-probe", Body=b"")
        s3.delete_object(Bucket=SHARED_BUCKET, Key=".testbed-probe")

    def trust_policy(self, user: str) -> dict:
        return {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Federated": [self.oidc_provider_arn]},
            "Action": ["sts:AssumeRoleWithWebIdentity"],
            # RGW accepts a token whose client_id OR aud is a registered client id: check aud too.
            "Condition": {"StringEquals": {f"{self.idp_host}:sub": user,
                                           f"{self.idp_host}:aud": AUDIENCE}}}]}

    @staticmethod
    def role_policy(user: str) -> dict:
        res = [r for b in buckets_of(user) for r in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")]
        return {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": res}]}

    def _create_role(self, iam, user: str) -> None:
        iam.create_role(RoleName=user, Path="/", AssumeRolePolicyDocument=compact(
            self.trust_policy(user)))
        iam.put_role_policy(RoleName=user, PolicyName="buckets",
                            PolicyDocument=compact(self.role_policy(user)))

    # --- stop ---------------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """PIDs from the daemons' pid files (and of our children, should a pid file be missing)."""
        out = {}
        for name in self.daemon_names:
            pid = read_pid(self.dir / "run" / f"{name}.pid")
            if pid is None and name in self.daemons:
                pid = self.daemons[name].pid
            if pid is not None:
                out[name] = pid
        return out

    def stop(self, grace: float = 3.0) -> None:
        """Stop radosgw (~2 s: it waits for its OSD requests), then the OSD (0.1 s: it tells
        the monitor it goes down, and waits ~5 s when the monitor is gone), then the monitor;
        KILL a daemon still there after ``grace`` seconds (the cluster is thrown away, so a clean
        bluestore shutdown buys nothing); then delete the cluster's data."""
        t0 = time.monotonic()
        ours = {d.pid for d in self.daemons.values()}
        pids = {n: p for n, p in self.pids().items() if p in ours}
        for name in self.daemon_names:
            if name in pids:
                self._stop_group({name: pids[name]}, grace, t0)
        self._reap()
        # The bind mount lived only in radosgw's namespace; nothing is mounted here.
        # Data (the sparse block file), pid files and sockets go; logs stay for the run folder.
        for sub in ("osd", "mon", "run"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self.stop_seconds = time.monotonic() - t0

    def _stop_group(self, pids: dict[str, int], grace: float, t0: float) -> None:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while True:
            for name, pid in pids.items():
                if f"stop {name}" not in self.timings and not pid_alive(pid):
                    self.timings[f"stop {name}"] = round(time.monotonic() - t0, 2)
            if time.monotonic() >= deadline or not any(pid_alive(p) for p in pids.values()):
                break
            time.sleep(0.05)
        for name, pid in pids.items():
            if pid_alive(pid):
                self.timings[f"kill {name}"] = round(time.monotonic() - t0, 2)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def _reap(self) -> None:
        for d in self.daemons.values():
            if d.proc is not None:
                try:
                    d.proc.wait(timeout=10)
                except subprocess.TimeoutExpired as e:
                    raise ServiceError(f"{d.name} (pid {d.pid}) did not die\n"
                                       f"{log_tail(d.log)}") from e


@pytest.fixture(scope="session")
def ceph_rgw(idp, run_dir) -> CephRGW:
    """Ceph RGW S3 + STS with per-user roles ``arn:aws:iam:::role/<user>``."""
    c = CephRGW(idp, run_dir / "ceph").start()
    yield c
    c.stop()
