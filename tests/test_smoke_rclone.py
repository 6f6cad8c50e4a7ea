"""rclone (1.75, FUSE 3) mounts alice's bucket with her STS keys, on both S3 servers.

Keys reach rclone through a 0600 config file, never its command line. The mount is made the way
notebooks need it (``--vfs-cache-mode writes``, ``--use-server-modtime``) and is unmounted with
``fusermount3 -u``; rclone is stopped by its PID.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.testbed.paths import rclone_bin
from tests.testbed.procs import stop_pid, wait_for
from tests.testbed.s3 import assume_role, s3_client

SERVERS = ["seaweedfs", "ceph_rgw"]


def rclone_env() -> dict[str, str]:
    """rclone's environment: no AWS_* from the machine (AWS_CA_BUNDLE breaks older rclone and
    the endpoints are plain HTTP on loopback), no RCLONE_* either."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}


def write_config(path: Path, srv, creds: dict) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[s3]\ntype = s3\n"
                f"provider = {srv.rclone_provider}\n"
                f"endpoint = {srv.endpoint}\n"
                f"region = {srv.region}\n"
                f"access_key_id = {creds['AccessKeyId']}\n"
                f"secret_access_key = {creds['SecretAccessKey']}\n"
                f"session_token = {creds['SessionToken']}\n")


@pytest.fixture(params=SERVERS)
def alice_mount(request, idp, run_dir):
    """alice's bucket mounted with her STS keys: (server, her S3 client, mount point, rclone)."""
    srv = request.getfixturevalue(request.param)
    creds = assume_role(srv.endpoint, srv.role_arn_for("alice"), idp.login("alice")["access_token"],
                        "alice")
    base = run_dir / f"rclone-{request.param}-{uuid.uuid4().hex[:6]}"
    conf, mnt, cache = base / "private" / "rclone.conf", base / "mnt", base / "private" / "cache"
    write_config(conf, srv, creds)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    mnt.mkdir(parents=True)
    log = base / "rclone.log"
    argv = [rclone_bin(), "mount", "s3:alice", str(mnt), "--config", str(conf),
            "--use-server-modtime", "--vfs-cache-mode", "writes", "--vfs-write-back", "1s",
            "--dir-cache-time", "1s", "--cache-dir", str(cache),
            "--log-file", str(log), "--log-level", "INFO"]
    assert creds["SecretAccessKey"] not in " ".join(argv)
    with open(base / "rclone.out", "wb") as out:
        proc = subprocess.Popen(argv, env=rclone_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: os.path.ismount(mnt), 20, "rclone mount", log, proc)
        yield srv, s3_client(srv.endpoint, creds), mnt, proc
    finally:
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, text=True)
        try:
            proc.wait(timeout=15)     # rclone exits by itself once unmounted
        except subprocess.TimeoutExpired:
            stop_pid(proc.pid, timeout=5)
            proc.wait(timeout=5)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        assert r.returncode == 0, f"fusermount3 -u failed: {r.stderr}"
        assert not os.path.ismount(mnt)


def test_mount_shows_boto3_writes_and_uploads_its_own(alice_mount):
    _srv, s3, mnt, proc = alice_mount
    name = f"from-boto3-{uuid.uuid4().hex[:8]}.txt"
    body = b"written through boto3\n"
    s3.put_object(Bucket="alice", Key=name, Body=body)
    # The directory cache lives 1 s: the new object appears in the listing soon after.
    wait_for(lambda: name in os.listdir(mnt), 15, f"{name} in the mount")
    assert (mnt / name).read_bytes() == body
    st = (mnt / name).stat()
    assert st.st_size == len(body)
    assert abs(st.st_mtime - time.time()) < 300      # server modtime, not 2000-01-01

    # And the other way round: a file written (and rewritten in place) in the mount lands in S3.
    mine = mnt / f"from-mount-{uuid.uuid4().hex[:8]}.txt"
    with open(mine, "w") as f:
        f.write("hello from the mount\n")
    with open(mine, "r+") as f:          # read+write and seek: needs --vfs-cache-mode writes
        f.seek(6)
        f.write("FROM")

    def uploaded() -> bool:
        return s3.get_object(Bucket="alice", Key=mine.name)["Body"].read() == \
            b"hello FROM the mount\n"

    wait_for(uploaded, 30, f"{mine.name} uploaded")
    assert proc.poll() is None, "rclone died"
