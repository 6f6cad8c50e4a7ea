"""sts-wire run against SeaweedFS and Ceph RGW: real IdP, STS, rclone, FUSE.

alice's `run` mounts her bucket, scratch and cms; bob's bucket is refused (note file, CMD still
starts); files cross both ways; status shows keys and mounts; SIGTERM reaches CMD and leaves no
mount and no process; a scan of every log, output, `ps` and process environment finds no secret.
"""

import hashlib
import json
import secrets
import signal
import time
from pathlib import Path

import pytest

from tests.sts_wire_helpers import (
    PYTHON,
    Secrets,
    Wire,
    children_of,
    fuse_mounts_under,
    refresh_token_setup,
    wait_until,
    write_spec,
)
from tests.testbed.procs import pid_alive
from tests.testbed.s3 import assume_role, s3_client

# CMD: waits for SIGTERM, then writes a marker and exits 0.
CMD = """
import signal, sys, time, pathlib
def bye(sig, frame):
    pathlib.Path(sys.argv[1]).write_text(f"signal {sig}")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
while True:
    time.sleep(0.1)
"""


@pytest.fixture(params=["seaweedfs", "ceph_rgw"])
def s3(request):
    return request.getfixturevalue(request.param)


def alice_spec(wire: Wire, s3, idp, extra_mounts=()) -> tuple[Path, dict]:
    token, login = refresh_token_setup(idp, "alice", wire.tmp / "secrets")
    mounts = [{"remote": "{username}", "path": f"{wire.root}/{{username}}"},
              {"remote": "scratch", "path": f"{wire.root}/scratch", "flags": ["--dir-cache-time=1s"]},
              {"remote": "cms", "path": f"{wire.root}/cms"},
              *extra_mounts]
    # Ceph: one role per user (arn:aws:iam:::role/alice); SeaweedFS: one role for everyone.
    role = s3.role_arn_for("alice").replace("alice", "{username}")
    spec = write_spec(wire.tmp / "spec.yaml", s3, mounts, token, role_arn=role)
    return spec, login


def boto_as(s3, login: dict, user: str = "alice"):
    creds = assume_role(s3.endpoint, s3.role_arn_for(user), login["access_token"], f"test-{user}")
    return s3_client(s3.endpoint, creds, s3.region)


def test_run_mounts_alice_buckets_refuses_bob_and_cleans_up(s3, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, login = alice_spec(wire, s3, idp, [{"remote": "bob", "path": f"{wire.root}/bob"}])
    sec = Secrets()
    sec.add(login["refresh_token"], login["access_token"], "sts-wire-secret")
    marker = tmp_path / "cmd-got-signal"
    alice, scratch, cms, bob = (wire.root / n for n in ("alice", "scratch", "cms", "bob"))
    # alice's own keys, as her notebook would use boto3 (on Ceph, objects a role writes are not
    # readable by the admin user: ACLs are per owner).
    admin = boto_as(s3, login)
    try:
        t0 = time.monotonic()
        wire.start("run", ["--spec", str(spec), "--", PYTHON, "-c", CMD, str(marker)])
        wire.wait_mounted([alice, scratch, cms])
        ready_s = time.monotonic() - t0
        # bob's bucket: refused, explained beside the folder, and CMD started anyway
        note = wire.root / "bob.sts-wire-error.txt"
        wait_until(note.exists, 20, "note file for bob")
        assert "denied" in note.read_text() and str(bob) not in fuse_mounts_under(wire.root)
        wait_until(lambda: any("python" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                               for p in children_of(wire.proc.pid)), 20, "CMD started")
        sec.add_keys_file(wire.keys_file())
        sec.snapshot_processes(wire.proc.pid, "while running")

        # a file written in a folder appears in S3 ...
        data = secrets.token_bytes(300_000)
        (alice / "from-mount.bin").write_bytes(data)
        got = wait_until(lambda: admin.get_object(Bucket="alice", Key="from-mount.bin")["Body"].read(), 20,
                         "from-mount.bin in S3")
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        (cms / "sub").mkdir()
        (cms / "sub" / "n.txt").write_text("cms note\n")
        wait_until(lambda: admin.get_object(Bucket="cms", Key="sub/n.txt")["Body"].read() == b"cms note\n",
                   20, "cms/sub/n.txt in S3")
        # ... and one put through boto3 appears in the folder
        admin.put_object(Bucket="scratch", Key="from-boto3.txt", Body=b"hello from boto3\n")
        wait_until(lambda: (scratch / "from-boto3.txt").read_bytes() == b"hello from boto3\n", 20,
                   "from-boto3.txt in the folder")
        # read+write open and seek (what notebooks do)
        with open(alice / "rw.txt", "w+b") as f:
            f.write(b"0123456789")
            f.seek(2)
            f.write(b"ab")
            f.seek(0)
            assert f.read() == b"01ab456789"
        st = wire.instance()
        assert st["alive"] and st["user"] == "alice" and st["key_renewals"] == 0
        assert st["keys_expire"] and st["last_renewal"] and st["access_key"].endswith("...")
        states = {Path(m["path"]).name: m["state"] for m in st["mounts"]}
        assert states == {"alice": "ready", "scratch": "ready", "cms": "ready", "bob": "failed"}
        sec.look_at("status", json.dumps(st))
        rclone_pids = wire.rclone_pids()
        assert len(rclone_pids) == 3
        sec.snapshot_processes(wire.proc.pid, "later")
        cmd_pid = [p for p in children_of(wire.proc.pid) if p not in rclone_pids
                   and "python" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")][0]
        cmd_env = Path(f"/proc/{cmd_pid}/environ").read_bytes().decode(errors="replace")
        assert "STS_WIRE_CLIENT_SECRET" not in cmd_env and "AWS_SECRET_ACCESS_KEY" not in cmd_env

        # SIGTERM: forwarded to CMD, uploads flushed, everything unmounted, nothing left running
        code = wire.terminate()
        assert code == 0, wire.stderr()[-3000:]
        assert marker.read_text() == f"signal {int(signal.SIGTERM)}"
        assert fuse_mounts_under(wire.root) == []
        assert not [p for p in [*rclone_pids, cmd_pid] if pid_alive(p)]
        assert admin.get_object(Bucket="alice", Key="rw.txt")["Body"].read() == b"01ab456789"
        assert not note.exists()
        assert not (wire.runtime / str(wire.proc.pid)).exists()   # keys and state removed
        print(f"{type(s3).__name__}: 3 mounts visible {ready_s:.2f} s after start")
    finally:
        wire.cleanup()
    sec.look_at("stdout", wire.out.read_text(errors="replace"))
    sec.look_at("stderr", wire.stderr())
    sec.look_at_files(wire.logs, "log ")
    sec.look_at_files(wire.runtime / "last-logs", "log ")
    assert len(sec.values) >= 4
    assert sec.leaks() == []
    assert not (alice / "from-mount.bin").exists() and not (scratch / "from-boto3.txt").exists()


def test_run_exits_with_cmds_status_and_strict_refuses(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = alice_spec(wire, seaweedfs, idp)
    try:
        # the spec from an environment variable, as the spawner starts every server
        r = wire.run("run", ["--spec", "env:STS_WIRE_SPEC", "--", "sh", "-c",
                             f"test -d {wire.root}/alice && ls {wire.root}/cms >/dev/null && exit 7"],
                     env={"STS_WIRE_SPEC": spec.read_text()})
        assert r.returncode == 7, r.stderr
        assert "3 of 3 mounts ready" in r.stderr
        assert fuse_mounts_under(wire.root) == []
        # --strict: a mount that fails stops the start, with the reason and its exit code
        spec2, _ = alice_spec(wire, seaweedfs, idp, [{"remote": "bob", "path": f"{wire.root}/bob"}])
        r = wire.run("run", ["--strict", "--spec", str(spec2), "--", "sh", "-c", "echo CMD-RAN"])
        assert r.returncode == 9, r.stderr
        assert "CMD-RAN" not in r.stdout
        assert "not starting sh (--strict): access to bucket bob is denied" in r.stderr
        assert fuse_mounts_under(wire.root) == []
    finally:
        wire.cleanup()


def test_mount_one_bucket_in_the_foreground(seaweedfs, idp, tmp_path):
    """`sts-wire mount BUCKET FOLDER` for people: options on the command line, Ctrl-C unmounts."""
    wire = Wire(tmp_path)
    token, _ = refresh_token_setup(idp, "carol", tmp_path / "secrets")
    target = wire.root / "admins"
    try:
        wire.start("mount", ["admins", str(target), "--sts-endpoint", seaweedfs.endpoint,
                             "--role-arn", seaweedfs.role_arn_for("carol"), "--provider", "SeaweedFS",
                             "--token-source", "refresh", "--issuer", idp.issuer, "--client-id", "sts-wire",
                             "--client-auth", "post", "--client-secret-file", token["client_secret_file"],
                             "--refresh-token-file", token["refresh_token_file"], "--ca-file", token["ca_file"]])
        wire.wait_mounted([target])
        (target / "x.txt").write_text("admins only\n")
        carol = boto_as(seaweedfs, idp.login("carol"), "carol")
        wait_until(lambda: carol.get_object(Bucket="admins", Key="x.txt")["Body"].read()
                   == b"admins only\n", 20, "x.txt in S3")
        wait_until(lambda: "press Ctrl-C to unmount" in wire.stderr(), 30, "the mount announced")
        wire.proc.send_signal(signal.SIGINT)
        assert wire.proc.wait(timeout=60) == 0
        assert "press Ctrl-C to unmount" in wire.stderr()
        assert fuse_mounts_under(wire.root) == []
    finally:
        wire.cleanup()


def test_check_lists_what_each_mount_would_show(s3, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = alice_spec(wire, s3, idp, [{"remote": "bob", "path": f"{wire.root}/bob"}])
    boto_as(s3, idp.login("alice")).put_object(Bucket="cms", Key="check-me.txt", Body=b"x")
    r = wire.run("check", ["--spec", str(spec)])
    assert r.returncode == 9, r.stdout + r.stderr
    out = r.stdout
    assert "ok    token" in out and "user alice" in out and "signature verified" in out
    assert "ok    sts" in out
    assert "ok    bucket cms" in out and "check-me.txt" in out
    assert "FAIL  bucket bob" in out and "denied" in out
    assert f"ok    path {wire.root}/alice" in out
    assert "1 problem found" in out
    assert not any(p.exists() for p in (wire.root / "alice", wire.root / "cms"))   # check changes nothing
    r = wire.run("check", ["--spec", str(spec), "--json"])
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 9 and [x["step"] for x in doc["results"] if not x["ok"]] == ["bucket bob"]


def test_status_when_nothing_runs(tmp_path):
    wire = Wire(tmp_path)
    r = wire.run("status", ["--runtime-dir", str(tmp_path / "nothing")])
    assert r.returncode == 1 and "no sts-wire is running" in r.stdout


def test_mount_with_device_sign_in_at_the_terminal(seaweedfs, idp, tmp_path):
    """A person on a laptop: the device-code flow prints a URL and a code, the person approves,
    the bucket is mounted; Ctrl-C unmounts."""
    wire = Wire(tmp_path)
    target = wire.root / "scratch"
    try:
        wire.start("mount", ["scratch", str(target), "--sts-endpoint", seaweedfs.endpoint,
                             "--role-arn", seaweedfs.role_arn_for("dave"), "--provider", "SeaweedFS",
                             "--token-source", "device", "--issuer", idp.issuer, "--client-id", "sts-wire-public",
                             "--scope", "openid profile groups offline_access", "--ca-file", str(idp.pki.ca_cert)])
        text = wait_until(lambda: "enter the code:" in wire.stderr() and wire.stderr(), 30, "the device code")
        assert f"open {idp.issuer}/device" in text
        idp.approve_device(text.split("enter the code:")[1].split()[0], "dave")
        wire.wait_mounted([target])
        (target / "dave.txt").write_text("from dave's laptop\n")
        assert (target / "dave.txt").read_text() == "from dave's laptop\n"
        wait_until(lambda: "press Ctrl-C to unmount" in wire.stderr(), 30, "the mount announced")
        wire.proc.send_signal(signal.SIGINT)
        assert wire.proc.wait(timeout=60) == 0
        assert "Signed in." in wire.stderr() and fuse_mounts_under(wire.root) == []
    finally:
        wire.cleanup()


def test_a_file_written_just_before_cmd_ends_is_in_s3_after_the_exit(seaweedfs, idp, tmp_path):
    """CMD writes and ends at once: the upload reaches rclone's queue only when the kernel's
    asynchronous FUSE release is handled; sts-wire must not unmount before that (data loss)."""
    wire = Wire(tmp_path)
    spec, login = alice_spec(wire, seaweedfs, idp)
    alice = boto_as(seaweedfs, login)
    try:
        for i in range(6):
            key = f"last-words-{secrets.token_hex(4)}.txt"
            r = wire.run("run", ["--spec", str(spec), "--", "sh", "-c", f"echo {i} > {wire.root}/alice/{key}"])
            assert r.returncode == 0, r.stderr
            assert alice.get_object(Bucket="alice", Key=key)["Body"].read() == f"{i}\n".encode(), i
    finally:
        wire.cleanup()
