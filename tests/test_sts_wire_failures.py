"""What goes wrong, and what sts-wire says about it: each failure a clear message and the exit
code documented in docs/sts-wire.md; a killed or hung rclone is remounted."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from sts_wire.errors import Exit
from tests.sts_wire_helpers import (
    STS_WIRE,
    Wire,
    fuse_mounts_under,
    refresh_token_setup,
    wait_until,
    write_spec,
)
from tests.testbed.paths import VENV_BIN, free_port


def spec_for(wire: Wire, s3, idp, user="alice", mounts=None, token_changes=None, **sts):
    token, login = refresh_token_setup(idp, user, wire.tmp / "secrets")
    token.update(token_changes or {})
    mounts = mounts or [{"remote": "{username}", "path": f"{wire.root}/{{username}}"}]
    sts.setdefault("role_arn", s3.role_arn_for(user))
    return write_spec(wire.tmp / "spec.yaml", s3, mounts, token, **sts), login


def strict_run(wire: Wire, spec: Path, env=None, prefix=None, timeout=120):
    argv = [STS_WIRE, "run", "--strict", "--spec", str(spec), *wire.common(), "--", "sh", "-c", "echo CMD-RAN"]
    r = subprocess.run([*(prefix or []), *argv], capture_output=True, text=True, env=wire.env(env),
                       timeout=timeout, stdin=subprocess.DEVNULL)
    assert "CMD-RAN" not in r.stdout
    assert fuse_mounts_under(wire.root) == []
    return r


# --- each failure: message and exit code ---------------------------------------------------------
def test_idp_unreachable(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp, token_changes={"issuer": f"https://127.0.0.1:{free_port()}"})
    r = strict_run(wire, spec)
    assert r.returncode == Exit.IDP_UNREACHABLE, r.stderr
    assert "OpenID discovery at https://127.0.0.1:" in r.stderr and "the IdP cannot be reached" in r.stderr


def test_sts_unreachable(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp, endpoint=f"http://127.0.0.1:{free_port()}")
    r = strict_run(wire, spec)
    assert r.returncode == Exit.STS_UNREACHABLE, r.stderr
    assert "STS: cannot reach 127.0.0.1:" in r.stderr


def test_s3_unreachable(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp, s3_endpoint=f"http://127.0.0.1:{free_port()}")
    r = strict_run(wire, spec)
    assert r.returncode == Exit.S3_UNREACHABLE, r.stderr
    assert "S3: cannot reach http://127.0.0.1:" in r.stderr


def test_wrong_role_seaweedfs(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp, role_arn="arn:aws:iam::role/NoSuchRole")
    r = strict_run(wire, spec)
    assert r.returncode == Exit.STS_REFUSED, r.stderr
    assert "STS refused AssumeRoleWithWebIdentity: AccessDenied: role not found" in r.stderr
    assert "is sts.role_arn (arn:aws:iam::role/NoSuchRole) right" in r.stderr


def test_wrong_role_ceph(ceph_rgw, idp, tmp_path):
    """Ceph RGW: alice's token may not assume bob's role (trust condition on sub)."""
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, ceph_rgw, idp, role_arn=ceph_rgw.role_arn_for("bob"))
    r = strict_run(wire, spec)
    assert r.returncode == Exit.STS_REFUSED, r.stderr
    assert "STS refused AssumeRoleWithWebIdentity" in r.stderr and "role_arn" in r.stderr


def test_expired_refresh_token(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, login = spec_for(wire, seaweedfs, idp)
    idp.revoke(login["refresh_token"], client_id="sts-wire")
    r = strict_run(wire, spec)
    assert r.returncode == Exit.TOKEN, r.stderr
    assert "the refresh token is expired, revoked or not for this client" in r.stderr
    assert "log in again" in r.stderr


def test_fusermount3_missing(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "true"):
        (bindir / tool).symlink_to(f"/bin/{tool}")
    r = strict_run(wire, spec, env={"PATH": f"{VENV_BIN}:{bindir}"})
    assert r.returncode == Exit.FUSE, r.stderr
    assert "fusermount3 is not installed" in r.stderr and "install the fuse3 package" in r.stderr


def test_dev_fuse_missing(seaweedfs, idp, tmp_path):
    """In a private mount namespace, /dev/fuse is covered by a plain file: as in a container
    started without --device /dev/fuse."""
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    fake = tmp_path / "not-a-device"
    fake.write_text("")
    script = f'mount --bind {fake} /dev/fuse && exec "$@"'
    r = strict_run(wire, spec, prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"])
    assert r.returncode == Exit.FUSE, r.stderr
    assert "FUSE is not available: /dev/fuse is not a character device" in r.stderr
    assert "--device /dev/fuse" in r.stderr


def test_busy_mount_path(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    busy = wire.root / "alice"
    busy.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "busy-test", str(busy)], check=True)
    try:
        r = strict_run(wire, spec)
    finally:
        subprocess.run(["umount", str(busy)], check=True)
    assert r.returncode == Exit.MOUNT_PATH, r.stderr
    assert f"{busy} is busy: something is already mounted there (tmpfs busy-test)" in r.stderr


@pytest.mark.parametrize(("setup", "message"), [
    ("nonempty", "is not empty (it holds 'notes.txt')"),
    ("file", "exists and is not a folder"),
    ("symlink", "which is not below an allowed root"),
])
def test_unusable_mount_path(seaweedfs, idp, tmp_path, setup, message):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    p = wire.root / "alice"
    if setup == "nonempty":
        p.mkdir()
        (p / "notes.txt").write_text("mine")
    elif setup == "file":
        p.write_text("a file")
    else:
        (tmp_path / "elsewhere").mkdir()
        p.symlink_to(tmp_path / "elsewhere")
    r = strict_run(wire, spec)
    assert r.returncode == Exit.MOUNT_PATH, r.stderr
    assert message in r.stderr


@pytest.mark.parametrize(("change", "message"), [
    ({"path": "/etc/alice"}, "mounts[0].path: /etc/alice is not below an allowed root"),
    ({"path": "relative/alice"}, "mounts[0].path: 'relative/alice' must be an absolute path"),
    ({"path": "/s3/x/../../etc"}, "must not contain '..'"),
    ({"flags": ["--allow-other"]}, "--allow-other is not allowed"),
    ({"colour": "blue"}, "mounts[0].colour: unknown key (known: cache_mode, flags"),
    # injection through the spec (the whole corpus is in tests/test_mountspec.py; these go end to end)
    ({"remote": "--config=/tmp/x"}, "mounts[0].remote: '--config=' is not a valid bucket name"),
    ({"remote": "alice\n"}, "is not a valid bucket name"),
    ({"remote": "alice/../bob"}, "has an empty, '.' or '..' part"),
    ({"path": "{username}\n/etc"}, "mounts[0].path: has control characters"),
    ({"flags": ["--config", "/tmp/rclone.conf"]}, "--config is not allowed"),
    ({"flags": ["--vfs-read-ahead", "64M\n"]}, "--vfs-read-ahead needs a size"),
    ({"flags": ["-o", "allow_other"]}, "'-o' is not a --flag"),
])
def test_bad_spec(seaweedfs, idp, tmp_path, change, message):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    doc = yaml.safe_load(spec.read_text())
    doc["mounts"][0].update(change)
    spec.write_text(yaml.safe_dump(doc))
    r = strict_run(wire, spec)
    assert r.returncode == Exit.SPEC, r.stderr
    assert message in r.stderr
    assert list(wire.root.iterdir()) == []  # no mount folder made, nothing mounted (strict_run)


def test_unreadable_and_invalid_yaml_spec(tmp_path):
    wire = Wire(tmp_path)
    r = strict_run(wire, tmp_path / "missing.yaml")
    assert r.returncode == Exit.SPEC and "cannot read" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("sts: {endpoint: x\n")
    r = strict_run(wire, bad)
    assert r.returncode == Exit.SPEC and "not valid YAML: " in r.stderr and "(line 2)" in r.stderr
    # A YAML bomb (9**8 values) and a 2 MB spec: refused at once, not minutes of CPU.
    lol = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lol += [f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefg", "bcdefgh", strict=True)]
    bad.write_text("\n".join(lol) + "\n")
    t0 = time.monotonic()
    r = strict_run(wire, bad)
    assert r.returncode == Exit.SPEC and "expands to more than 100000 values" in r.stderr, r.stderr
    bad.write_text("# padding\n" * 200_000)
    r = strict_run(wire, bad)
    assert r.returncode == Exit.SPEC and "more than the 1048576 accepted" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_usage_errors(tmp_path):
    r = subprocess.run([STS_WIRE, "run", "--spec", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == Exit.USAGE
    r = subprocess.run([STS_WIRE, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == Exit.USAGE


def test_without_strict_cmd_starts_and_the_mount_comes_when_sts_does(seaweedfs, idp, tmp_path):
    """STS down at start: CMD starts anyway, the note explains; once STS answers, it mounts."""
    wire = Wire(tmp_path)
    port = free_port()
    spec, _ = spec_for(wire, seaweedfs, idp, endpoint=f"http://127.0.0.1:{port}",
                       s3_endpoint=seaweedfs.endpoint)
    proxy = None
    try:
        wire.start("run", ["--spec", str(spec), "--max-backoff", "2", "--", "sleep", "600"])
        note = wire.root / "alice.sts-wire-error.txt"
        wait_until(note.exists, 30, "note file")
        assert "STS: cannot reach" in note.read_text()
        assert wait_until(lambda: "started sleep" in wire.stderr(), 30, "CMD started")
        # STS comes up (a TCP relay to SeaweedFS on the port that was dead)
        relay = ("import socket,threading,sys\n"
                 "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                 f"s.bind(('127.0.0.1',{port}));s.listen(50)\n"
                 "def pipe(a,b):\n"
                 "  while (d:=a.recv(65536)): b.sendall(d)\n"
                 "  b.close()\n"
                 "while True:\n"
                 "  c,_=s.accept();u=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n"
                 "  threading.Thread(target=pipe,args=(c,u),daemon=True).start()\n"
                 "  threading.Thread(target=pipe,args=(u,c),daemon=True).start()\n")
        proxy = subprocess.Popen([str(VENV_BIN / "python"), "-c", relay, seaweedfs.endpoint.rsplit(":", 1)[1]])
        wire.wait_mounted([wire.root / "alice"], timeout=40)
        wait_until(lambda: not note.exists(), 10, "note removed")
        assert wire.terminate() == 143
    finally:
        if proxy:
            proxy.kill()
            proxy.wait()
        wire.cleanup()


# --- supervision: killed or hung rclone ----------------------------------------------------------
def _rclone_for(wire: Wire, path: Path) -> int:
    for m in wire.instance()["mounts"]:
        if m["path"] == str(path) and m["rclone_pid"]:
            return m["rclone_pid"]
    raise AssertionError("no rclone pid")


def _works(path: Path, tag: str) -> bool:
    f = path / f"probe-{tag}.txt"
    f.write_text(tag)
    return f.read_text() == tag


@pytest.mark.parametrize("how", ["killed", "hung"])
def test_dead_or_hung_rclone_is_remounted_within_10s(seaweedfs, idp, tmp_path, how):
    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp)
    folder = wire.root / "alice"
    try:
        wire.start("run", ["--spec", str(spec), "--health-interval", "1", "--health-timeout", "3", "--",
                           "sleep", "600"])
        wire.wait_mounted([folder])
        assert _works(folder, "before")
        old = _rclone_for(wire, folder)
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        # Do not touch the folder while rclone is stopped: wait for the new rclone first.
        wait_until(lambda: _rclone_for(wire, folder) != old and wire.instance()["mounts"][0]["state"] == "ready",
                   15, "a new rclone")
        wait_until(lambda: _works(folder, "after"), 10, "the folder works again")
        took = time.monotonic() - t0
        print(f"rclone {how}: working again after {took:.1f} s")
        assert took < 10
        st = wire.instance()["mounts"][0]
        assert st["remounts"] >= 1
        assert ("hung" if how == "hung" else "stopped") in wire.stderr()
        assert wire.terminate() == 143
        assert fuse_mounts_under(wire.root) == []
    finally:
        wire.cleanup()


@pytest.mark.parametrize("when", [0.3, 0.8, "mounted"])
def test_sigterm_at_any_moment_of_the_start_leaves_nothing(seaweedfs, idp, tmp_path, when):
    """SIGTERM while the token is fetched, while rclone starts, or the moment the folders appear:
    sts-wire ends promptly and nothing stays mounted or running."""
    from tests.sts_wire_helpers import children_of
    from tests.testbed.procs import pid_alive

    wire = Wire(tmp_path)
    spec, _ = spec_for(wire, seaweedfs, idp, mounts=[
        {"remote": "{username}", "path": f"{wire.root}/{{username}}"},
        {"remote": "scratch", "path": f"{wire.root}/scratch"},
        {"remote": "cms", "path": f"{wire.root}/cms"}])
    try:
        wire.start("run", ["--spec", str(spec), "--", "sleep", "600"])
        if when == "mounted":
            wire.wait_mounted([wire.root / n for n in ("alice", "scratch", "cms")])
        else:
            time.sleep(when)
        kids = children_of(wire.proc.pid)
        wire.proc.send_signal(signal.SIGTERM)
        code = wire.proc.wait(timeout=30)
        # -15: still importing, before any handler (and before anything was started)
        assert code in (143, -signal.SIGTERM), wire.stderr()
        time.sleep(0.5)
        assert fuse_mounts_under(wire.root) == []
        assert [k for k in kids if pid_alive(k)] == []
    finally:
        wire.cleanup()
