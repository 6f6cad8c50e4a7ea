"""sts-wire as it really runs in a notebook server: as the unprivileged user (alice, through the
setuid fusermount3), as a container's PID 1 (every orphan reaped, signals passed to CMD), with
rclone tied to its lifetime, and with renewals going on while a mount is being restarted.
Real IdP, SeaweedFS STS, rclone and FUSE."""

import dataclasses
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.sts_wire_helpers import (
    PYTHON,
    STS_WIRE,
    Secrets,
    Wire,
    children_of,
    fuse_mounts_under,
    refresh_token_setup,
    wait_until,
    write_spec,
)
from tests.testbed.procs import pid_alive, stop_pid, unmount_all_under
from tests.testbed.s3 import assume_role, s3_client


def fstype(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def proc_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise LookupError(pid)


# --- as the unprivileged user -------------------------------------------------------------------
@pytest.fixture
def alice_home(run_dir):
    """A folder of alice's own (0700) below the world-readable run folder."""
    d = Path(tempfile.mkdtemp(prefix="alice-", dir=run_dir))
    pw = pwd.getpwnam("alice")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    d.chmod(0o700)
    yield d, pw
    unmount_all_under(d)
    shutil.rmtree(d, ignore_errors=True)


def test_run_as_alice_through_the_setuid_fusermount3(alice_home, seaweedfs, idp):
    """What a notebook image does: alice (not root) runs `sts-wire run --spec env:...`; the mount
    goes through the setuid fusermount3, rclone runs as alice, and everything secret sits in a
    0700 folder of hers on tmpfs (the default runtime folder) in 0600 files."""
    home, pw = alice_home
    assert stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 == 0o006, \
        "/dev/fuse must be 0666 as udev makes it: run scripts/setup.sh"
    assert os.stat(shutil.which("fusermount3")).st_mode & stat.S_ISUID, "fusermount3 must be setuid root"
    token, login = refresh_token_setup(idp, "alice", home / "secrets")
    for f in (home / "secrets", home / "secrets" / "alice.refresh", home / "secrets" / "client.secret"):
        os.chown(f, pw.pw_uid, pw.pw_gid)
    root = home / "s3"
    spec = write_spec(home / "spec.yaml", seaweedfs, [{"remote": "{username}", "path": f"{root}/{{username}}"}],
                      token, role_arn=seaweedfs.role_arn_for("alice"))
    env = {"PATH": f"{Path(STS_WIRE).parent}:/usr/bin:/bin", "HOME": str(home), "USER": "alice",
           "LANG": "C.UTF-8", "STS_WIRE_SPEC": spec.read_text(), "STS_WIRE_ALLOWED_ROOTS": str(root)}
    marker, written = home / "cmd-done", home / "cmd-wrote"
    # (root itself may not look into alice's mount: FUSE keeps other users out, root included)
    cmd = ["setpriv", "--reuid", "alice", "--regid", "alice", "--init-groups", "--",
           STS_WIRE, "run", "--spec", "env:STS_WIRE_SPEC", "--", "sh", "-c",
           f"echo written-by-alice > {root}/alice/by-alice.txt && touch {written} && "
           f"while [ ! -e {marker} ]; do sleep 0.1; done"]
    err = home / "sts-wire.err"
    with open(err, "wb") as e:
        proc = subprocess.Popen(cmd, env=env, stdout=e, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True)
    base = Path(f"/dev/shm/sts-wire-{pw.pw_uid}")
    try:
        try:
            wait_until(lambda: proc.poll() is None and written.exists(), 60, "alice's file written")
        except AssertionError:
            raise AssertionError(f"sts-wire as alice: {err.read_text()[-2000:]}") from None
        assert str(root / "alice") in fuse_mounts_under(home)
        rclone = [p for p in children_of(proc.pid) if exe_of(p) == "rclone"]
        assert rclone and all(proc_uid(p) == pw.pw_uid for p in rclone)
        # the private folder itself: alice's, 0700, on tmpfs; secrets in it 0600
        inst = base / str(proc.pid)
        assert fstype(base) == "tmpfs"
        for d in (base, inst):
            st = os.lstat(d)
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == pw.pw_uid and stat.S_IMODE(st.st_mode) == 0o700, d
        keys = inst / "keys.json"
        assert keys.exists() and stat.S_IMODE(keys.stat().st_mode) == 0o600 and keys.stat().st_uid == pw.pw_uid
        for f in inst.iterdir():                 # logs (no secrets in them) sit in a 0700 folder
            st = f.lstat()
            # rclone's control socket: connecting needs write permission, which nobody else has
            closed = 0o022 if stat.S_ISSOCK(st.st_mode) else 0o077
            assert stat.S_IMODE(st.st_mode) & closed == 0 and st.st_uid == pw.pw_uid, (f, oct(st.st_mode))
        sec = Secrets()
        sec.add(login["refresh_token"], "sts-wire-secret")
        sec.add_keys_file(keys)
        sec.snapshot_processes(proc.pid, "as alice")
        marker.write_text("")
        assert proc.wait(timeout=60) == 0, err.read_text()
        assert fuse_mounts_under(home) == [] and not inst.exists()
        s3 = s3_client(seaweedfs.endpoint, assume_role(seaweedfs.endpoint, seaweedfs.role_arn_for("alice"),
                                                       login["access_token"], "check"), seaweedfs.region)
        assert s3.get_object(Bucket="alice", Key="by-alice.txt")["Body"].read() == b"written-by-alice\n"
        sec.look_at("stderr", err.read_text())
        assert sec.leaks() == []
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid, timeout=30, group=True)
        shutil.rmtree(base / str(proc.pid), ignore_errors=True)


def test_the_private_runtime_folder_is_checked_and_repaired(tmp_path, monkeypatch):
    """The folder, not /dev/shm: created 0700, a too-open one is closed, a symlink or a folder of
    another user is refused, every secret file in it is 0600, and nothing is left at the end."""
    from sts_wire.errors import StsWireError
    from sts_wire.runtime import Runtime, default_base, write_private

    monkeypatch.delenv("STS_WIRE_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert default_base() == Path(f"/dev/shm/sts-wire-{os.getuid()}")
    base = tmp_path / "rt"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    rt = Runtime(base)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700 and stat.S_IMODE(rt.dir.stat().st_mode) == 0o700
    write_private(rt.keys_file, '{"SecretAccessKey": "x"}')
    assert stat.S_IMODE(rt.keys_file.stat().st_mode) == 0o600
    rt.remove()
    assert not rt.dir.exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(StsWireError, match="not a folder"):
        Runtime(link)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, pwd.getpwnam("bob").pw_uid, -1)
    with pytest.raises(StsWireError, match="belongs to uid"):
        Runtime(other)


# --- as a container's PID 1 -------------------------------------------------------------------
ORPHANS = """
import os, signal, subprocess, sys, time, pathlib
# three grandchildren whose parent exits at once: the kernel hands them to PID 1 (sts-wire)
for i in range(3):
    subprocess.Popen(["sh", "-c", "sleep 0.5 &"])
def bye(sig, frame):
    pathlib.Path(sys.argv[1]).write_text(f"signal {sig}")
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
while True:
    time.sleep(0.1)
"""


def test_as_pid_1_orphans_are_reaped_and_sigterm_reaches_cmd(seaweedfs, idp, tmp_path):
    wire = Wire(tmp_path)
    token, _ = refresh_token_setup(idp, "alice", tmp_path / "secrets")
    spec = write_spec(tmp_path / "spec.yaml", seaweedfs, [{"remote": "scratch", "path": f"{wire.root}/scratch"}],
                      token, role_arn=seaweedfs.role_arn_for("alice"))
    marker, started = tmp_path / "cmd-got", tmp_path / "cmd-pid"
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--", STS_WIRE, "run", "--spec", str(spec),
            *wire.common(), "--", PYTHON, "-c", ORPHANS, str(marker), str(started)]
    unshare = subprocess.Popen(argv, env=wire.env(), stdout=open(wire.out, "ab"), stderr=open(wire.err, "ab"),  # noqa: SIM115
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: started.exists() and started.read_text(), 60, f"CMD started ({wire.stderr()[-500:]})")
        (pid1,) = [p for p in children_of(unshare.pid) if parent_of(p) == unshare.pid]
        nspid = [line for line in Path(f"/proc/{pid1}/status").read_text().splitlines() if line.startswith("NSpid:")]
        assert nspid[0].split()[-1] == "1"       # sts-wire is PID 1 of its PID namespace
        time.sleep(2.5)                          # the orphans have ended by now
        zombies = [p for p in children_of(pid1) if parent_of(p) == pid1 and _is_zombie(p)]
        assert zombies == [], f"unreaped children of PID 1: {zombies}"
        assert str(wire.root / "scratch") in fuse_mounts_under(wire.root)
        os.kill(pid1, signal.SIGTERM)
        assert unshare.wait(timeout=60) == 3, wire.stderr()[-2000:]   # CMD's status
        assert marker.read_text() == f"signal {signal.SIGTERM}"
        assert fuse_mounts_under(wire.root) == []
    finally:
        if unshare.poll() is None:
            stop_pid(unshare.pid, timeout=30, group=True)
        wire.cleanup()


def exe_of(pid: int) -> str | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return proc_state(pid) == "Z"
    except OSError:
        return False


@pytest.mark.parametrize("tie", ["setpriv", "prctl"])
def test_rclone_ends_when_sts_wire_is_killed(seaweedfs, idp, tmp_path, tie):
    """SIGKILL gives sts-wire no chance to clean up: the kernel ends rclone (parent-death signal),
    through setpriv when it is installed, else through prctl (images without util-linux)."""
    wire = Wire(tmp_path)
    token, _ = refresh_token_setup(idp, "alice", tmp_path / "secrets")
    spec = write_spec(tmp_path / "spec.yaml", seaweedfs, [{"remote": "scratch", "path": f"{wire.root}/scratch"}],
                      token, role_arn=seaweedfs.role_arn_for("alice"))
    env = {}
    if tie == "prctl":                           # a PATH with fusermount3 but no setpriv
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "fusermount3").symlink_to(shutil.which("fusermount3"))
        env["PATH"] = f"{bin_dir}:{Path(STS_WIRE).parent}"
    try:
        wire.start("run", ["--spec", str(spec), "--", "/bin/sleep", "600"], env=env)
        wire.wait_mounted([wire.root / "scratch"])
        rclone = wait_until(lambda: [p for p in children_of(wire.proc.pid) if exe_of(p) == "rclone"], 10, "rclone")
        assert len(rclone) == 1
        os.kill(wire.proc.pid, signal.SIGKILL)
        wire.proc.wait(timeout=10)
        wait_until(lambda: not pid_alive(rclone[0]), 10, "rclone ended")
    finally:
        wire.cleanup()


# --- renewals during a remount ----------------------------------------------------------------
def test_renewals_go_on_while_a_mount_is_being_restarted(seaweedfs, idp, tmp_path):
    """A mount that takes long to come up (here: never) must not hold up the key renewal."""
    from sts_wire.runtime import Runtime
    from sts_wire.spec import MountSpec, Spec, StsSpec
    from sts_wire.supervisor import Supervisor
    from sts_wire.tokens import FileSource

    login = idp.login("alice")
    f = tmp_path / "token"
    f.write_text(login["access_token"])
    f.chmod(0o600)
    rt = Runtime(tmp_path / "run")
    root = tmp_path / "s3"
    spec = Spec(sts=StsSpec(endpoint=seaweedfs.endpoint, role_arn=seaweedfs.role_arn_for("alice")),
                mounts=(MountSpec("scratch", str(root / "scratch")),), user="alice")
    sup = Supervisor(spec, rt, FileSource(str(f)), rclone_bin="/bin/false", allowed_roots=[str(root)],
                     cache_base=tmp_path / "cache", ready_timeout=4)
    sup.creds.start()
    first = sup.creds.keys
    # keys due for renewal now (their first 2/3 of life is over)
    sup.creds.keys = dataclasses.replace(first, obtained_at=time.time() - 100, expires_at=time.time() + 30)
    m = sup.mounts[0]
    m.proc = subprocess.Popen(["sleep", "30"])   # an rclone that never mounts
    m.state = "starting"
    try:
        sup.wait_ready([m])
        assert m.state == "failed" and "not ready after 4 s" in m.last_error.message
        assert sup.creds.renewals == 1 and sup.creds.keys.access_key_id != first.access_key_id
    finally:
        if m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()
        rt.remove()
