"""Storage faults under a running notebook server (issue 10): alice's server runs through a real
hub (CloudSpawner, local backend) as `sts-wire run -- jupyterhub-singleuser` with her bucket
mounted from a private SeaweedFS (restarting it must not disturb other tests). Her rclone is
killed or stopped, the S3 server is restarted: each time the mount comes back by itself, the
notebook server keeps its PID and answers throughout, files written before are intact (sha256
through the mount and in S3), and a write afterwards lands in S3. A full cache disk gives the
writer a clear error and leaves no partial object in S3 (sts-wire level, with a small tmpfs as
its cache folder)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.sts_wire_helpers import Wire, children_of, fuse_mounts_under, refresh_token_setup, wait_until, write_spec
from tests.testbed.cloudhub import CloudHub, singleuser_processes, spawner_profiles
from tests.testbed.hub import server_environ
from tests.testbed.procs import pid_alive
from tests.testbed.seaweedfs import SeaweedFS

RECOVERY_LIMIT = 10.0  # seconds: the promise for a killed or hung rclone


@pytest.fixture(scope="module")
def fuse_for_users():
    """What udev does on a normal machine (TESTBED.md): users may open /dev/fuse."""
    import stat

    if stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)  # noqa: S103 (udev's own mode for it)


@pytest.fixture(scope="module")
def private_s3(idp, run_dir):
    """A SeaweedFS of this module only: the S3 restart must not disturb the session's."""
    s = SeaweedFS(idp, run_dir / "seaweedfs-faults").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def hub(idp, private_s3, run_dir, fuse_for_users):
    root = run_dir / "s3-faults"
    root.mkdir()
    root.chmod(0o1777)
    mounts = [{"bucket": "{username}", "path": f"{root}/{{username}}"}]
    extra = {**spawner_profiles(mounts),
             "storage": {"s3_endpoint": private_s3.endpoint, "provider": "SeaweedFS",
                         "role_arn": private_s3.role_arn, "region": private_s3.region,
                         "mount_roots": [str(root)]}}
    h = CloudHub(idp, run_dir / "hub-faults", extra=extra,
                 hub_config=f"c.Spawner.notebook_dir = {str(root)!r}\n")
    h.start()
    h.login("alice")
    h.root = root
    yield h
    h.stop()


def notebooks(hub: CloudHub) -> list[psutil.Process]:
    """alice's jupyterhub-singleuser processes of this hub (not the sts-wire that runs one)."""
    return [p for p in singleuser_processes(hub, "alice") if "sts-wire" not in " ".join(p.cmdline())]


class Server:
    """alice's running server as the test sees it: processes, contents API, her S3 objects."""

    def __init__(self, hub: CloudHub, s3: SeaweedFS):
        self.hub, self.s3 = hub, s3
        self.mount = f"{hub.root}/alice"
        env = server_environ(hub, "alice")
        self.headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
        self.base = f"{hub.url}/user/alice/api"
        (self.notebook,) = notebooks(hub)
        wire = self.notebook.parent()
        assert "sts-wire" in " ".join(wire.cmdline()), wire.cmdline()
        self.wire = wire.pid

    def rclone(self) -> int | None:
        """PID of the rclone serving her bucket: a child of her server's sts-wire."""
        for pid in children_of(self.wire):
            with contextlib.suppress(psutil.Error):
                argv = psutil.Process(pid).cmdline()
                if argv and argv[0].endswith("rclone") and self.mount in argv:
                    return pid
        return None

    def put(self, name: str, data: bytes, timeout: float = 30) -> requests.Response:
        return requests.put(f"{self.base}/contents/alice/{name}", headers=self.headers, timeout=timeout,
                            json={"type": "file", "format": "base64",
                                  "content": base64.b64encode(data).decode()})

    def get(self, name: str, timeout: float = 30) -> bytes:
        r = requests.get(f"{self.base}/contents/alice/{name}", params={"format": "base64", "type": "file"},
                         headers=self.headers, timeout=timeout)
        r.raise_for_status()
        return base64.b64decode(r.json()["content"])

    def in_s3(self, name: str) -> bytes | None:
        try:
            return self.s3.admin_s3().get_object(Bucket="alice", Key=name)["Body"].read()
        except Exception:  # noqa: BLE001 - not (yet) there, or S3 still starting
            return None

    def write_files(self, tag: str, n: int, size: int = 16 * 1024) -> dict[str, str]:
        """n files of random bytes through the contents API: name -> sha256."""
        sums = {}
        for i in range(n):
            data = os.urandom(size)
            name = f"{tag}-{i:02d}.bin"
            r = self.put(name, data)
            assert r.status_code in (200, 201), r.text
            sums[name] = hashlib.sha256(data).hexdigest()
        return sums

    def wait_in_s3(self, sums: dict[str, str], timeout: float = 60) -> None:
        def all_there():
            return all(hashlib.sha256(self.in_s3(n) or b"").hexdigest() == h for n, h in sums.items())
        try:
            wait_until(all_there, timeout, "the files in S3", 0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None

    def intact(self, sums: dict[str, str]) -> None:
        """The same bytes through the mount (contents API) and in S3."""
        wrong = self.wrong_in_mount(sums)
        assert wrong == [], f"changed (read through the mount): {wrong}\n{self.logs()}"
        for name, h in sums.items():
            assert hashlib.sha256(self.in_s3(name) or b"").hexdigest() == h, f"{name} changed in S3"

    def wrong_in_mount(self, sums: dict[str, str]) -> list[str]:
        return [n for n, h in sums.items() if hashlib.sha256(self.get(n)).hexdigest() != h]

    def recover(self, t0: float, tag: str, timeout: float = 60) -> tuple[float, int]:
        """Write and read back a probe file through the server until it works: (seconds since
        t0, failed attempts). Each attempt is what a person saving a notebook would do."""
        failures, deadline = 0, time.monotonic() + timeout
        data = f"probe {tag}\n".encode()
        while time.monotonic() < deadline:
            try:
                r = self.put(f"probe-{tag}.txt", data, timeout=15)
                # Working means: in the bucket, not merely in the folder (a bare folder takes
                # writes too while nothing is mounted on it).
                if r.status_code in (200, 201) and self.get(f"probe-{tag}.txt", timeout=15) == data:
                    with contextlib.suppress(AssertionError):
                        wait_until(lambda: self.in_s3(f"probe-{tag}.txt") == data, 5, "probe in S3")
                        return time.monotonic() - t0, failures
            except requests.RequestException:
                pass
            failures += 1
            time.sleep(0.2)
        raise AssertionError(f"the mount did not work again within {timeout} s:\n{self.logs()}")

    def logs(self, lines: int = 40) -> str:
        """The ends of the logs sts-wire and its rclone keep open (for failure messages)."""
        out = []
        for pid in [self.wire, *children_of(self.wire)]:
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    target = os.readlink(fd)
                    if target.endswith(".log"):
                        text = Path(f"/proc/{pid}/root{target}").read_text(errors="replace")
                        out.append(f"--- {target}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(dict.fromkeys(out))


class ApiWatch:
    """Ask the server's /api every 0.2 s in a thread; count what did not answer within the
    recovery window, and the slowest answer."""

    def __init__(self, server: Server):
        self.server, self.ok, self.failed, self.slowest = server, 0, [], 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = requests.get(self.server.base, headers=self.server.headers, timeout=RECOVERY_LIMIT)
                if r.status_code == 200 and "version" in r.json():
                    self.ok += 1
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                else:
                    self.failed.append(r.status_code)
            except requests.RequestException as e:
                self.failed.append(type(e).__name__)
            self._stop.wait(0.2)

    def __enter__(self) -> ApiWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def alice(hub, private_s3):
    r = hub.spawn("alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", timeout=120)
    server = Server(hub, private_s3)
    wait_until(server.rclone, 30, "alice's rclone")
    yield server
    hub.stop_server("alice")


# --- rclone killed or hung -----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["killed", "hung"])
def test_rclone_killed_or_hung_under_a_running_server(alice, how, reliability):
    before = alice.write_files(f"before-{how}", 20)
    alice.wait_in_s3(before)
    notebook_pid, old = alice.notebook.pid, alice.rclone()
    assert old is not None
    # Written just before the fault, not waited for: rclone may not have uploaded them yet.
    last = alice.write_files(f"last-{how}", 3)
    with ApiWatch(alice) as watch:
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        try:
            took, failed_ops = alice.recover(t0, how)
            new = alice.rclone()
        finally:
            if how == "hung" and pid_alive(old):  # sts-wire should have killed it; if not, free it
                os.kill(old, signal.SIGCONT)
        time.sleep(1)  # the server keeps answering after the remount too
    print(f"rclone {how}: mount working again after {took:.1f} s, {failed_ops} failed operations, "
          f"/api {watch.ok} answers (slowest {watch.slowest:.1f} s), {len(watch.failed)} failures {watch.failed}")
    assert new is not None and new != old, "sts-wire started no new rclone"
    assert not pid_alive(old)
    assert took < RECOVERY_LIMIT, f"the mount worked again only after {took:.1f} s"
    assert watch.failed == [] and watch.ok >= 5, watch.failed
    assert alice.notebook.pid == notebook_pid and alice.notebook.is_running()
    assert notebooks(alice.hub) == [alice.notebook]
    # Nothing written during the remount was left beside the folder (sts_wire.strays).
    assert not list(alice.hub.root.glob("*sts-wire-unsaved*")) and not list(alice.hub.root.glob(".*staging"))
    alice.intact(before)
    alice.wait_in_s3(last)   # rclone's cache survives it: the new rclone uploads what was pending
    # Files closed a moment before the fault: the new rclone uploads them from its cache (and
    # would then show them empty without sts-wire's vfs/refresh, see sts_wire.repairs).
    alice.intact(last)
    after = alice.write_files(f"after-{how}", 1)
    alice.wait_in_s3(after)
    reliability.record({"killed": "fault.rclone-killed", "hung": "fault.rclone-hung"}[how],
                       f"mount working again {took:.1f} s after {'SIGKILL' if how == 'killed' else 'SIGSTOP'}"
                       f" ({failed_ops} failed save(s) in that window); notebook server same PID, /api "
                       f"answered {watch.ok}/{watch.ok + len(watch.failed)} (slowest {watch.slowest:.1f} s); "
                       f"{len(before)} files, and {len(last)} closed just before it, intact (sha256, mount "
                       "and S3); new write in S3")


# --- the S3 server restarted ----------------------------------------------------------------------
def test_s3_restarted_under_a_running_server(alice, private_s3, reliability):
    before = alice.write_files("before-s3", 20)
    alice.wait_in_s3(before)
    notebook_pid, rclone_pid = alice.notebook.pid, alice.rclone()
    saved, refused = {}, []      # what the person saved while S3 was down, and what was refused
    stop = threading.Event()

    def keep_saving():
        n = 0
        while not stop.is_set():
            data = os.urandom(8 * 1024)
            name = f"during-s3-{n:02d}.bin"
            try:
                r = alice.put(name, data, timeout=RECOVERY_LIMIT)
                (saved.__setitem__(name, hashlib.sha256(data).hexdigest()) if r.status_code in (200, 201)
                 else refused.append(r.status_code))
            except requests.RequestException as e:
                refused.append(type(e).__name__)
            n += 1
            stop.wait(1)

    saver = threading.Thread(target=keep_saving, daemon=True)
    with ApiWatch(alice) as watch:
        saver.start()
        s3_back = private_s3.restart()   # stopped by PID, started again: same ports, same data
        t_back = time.monotonic()
        took, failed_ops = alice.recover(t_back, "s3-restart", timeout=90)
        stop.set()
        saver.join(RECOVERY_LIMIT + 5)
    print(f"S3 restart: down {s3_back:.1f} s; after it answered the mount saved to S3 within {took:.1f} s "
          f"({failed_ops} failed); during: {len(saved)} saved, refused {refused}; /api {watch.ok} answers "
          f"(slowest {watch.slowest:.1f} s), failures {watch.failed}")
    # While S3 is down a save may wait on it (and jupyter-server's synchronous stat calls with
    # it): the server is slow then, but it is the same server and it answers again.
    assert watch.ok >= 5
    assert alice.notebook.pid == notebook_pid and alice.notebook.is_running()
    assert notebooks(alice.hub) == [alice.notebook]
    assert requests.get(alice.base, headers=alice.headers, timeout=5).status_code == 200
    assert saved, f"nothing could be saved while S3 was down: {refused}"
    t0 = time.monotonic()
    alice.wait_in_s3(saved, timeout=120)   # rclone uploads what was saved during the outage
    late = time.monotonic() - t0 + took
    alice.intact(before)
    alice.intact(saved)
    after = alice.write_files("after-s3", 3)
    alice.wait_in_s3(after)
    alice.intact(after)
    reliability.record("fault.s3-restart",
                       f"SeaweedFS stopped and started again on the same data ({s3_back:.1f} s down); once "
                       f"back, a save reached S3 within {took:.1f} s, and all {len(saved)} files saved during "
                       f"the outage ({len(refused)} save(s) refused) within {late:.1f} s; notebook server "
                       f"same PID, /api answered {watch.ok}/{watch.ok + len(watch.failed)} within "
                       f"{RECOVERY_LIMIT:.0f} s, rclone "
                       f"{'not restarted' if alice.rclone() == rclone_pid else 'restarted'}; "
                       f"{len(before)} earlier files intact (sha256)")


# --- rclone's cache folder on a full disk --------------------------------------------------------
def _write_big(path: Path, data: bytes, chunk: int = 1 << 20) -> tuple[str, int] | None:
    """Write data to path as a program would; (the step that failed, errno) or None."""
    try:
        f = open(path, "wb")  # noqa: SIM115 - the close is one of the steps that may fail
    except OSError as e:
        return "open", e.errno
    step = "write"
    try:
        for i in range(0, len(data), chunk):
            f.write(data[i:i + chunk])
        step = "flush"
        f.flush()
        step = "close"
    except OSError as e:
        with contextlib.suppress(OSError):
            f.close()
        return step, e.errno
    try:
        f.close()
    except OSError as e:
        return "close", e.errno
    return None


def test_full_cache_disk_gives_the_writer_an_error_and_s3_no_partial_object(private_s3, idp, tmp_path,
                                                                               reliability):
    import errno

    wire = Wire(tmp_path)
    size_mib = 16
    wire.cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "sts-wire-cache-full",
                    str(wire.cache)], check=True)
    token, _ = refresh_token_setup(idp, "alice", wire.tmp / "secrets")
    spec = write_spec(wire.tmp / "spec.yaml", private_s3, [{"remote": "alice", "path": f"{wire.root}/alice"}],
                      token, role_arn=private_s3.role_arn)
    folder = wire.root / "alice"
    s3 = private_s3.admin_s3()
    try:
        wire.start("run", ["--spec", str(spec), "--", "sleep", "600"])
        wire.wait_mounted([folder])
        earlier = {}
        for i in range(3):
            data = os.urandom(256 * 1024)
            (folder / f"cache-full-earlier-{i}.bin").write_bytes(data)
            earlier[f"cache-full-earlier-{i}.bin"] = hashlib.sha256(data).hexdigest()

        def uploaded(names):
            return all(hashlib.sha256(s3.get_object(Bucket="alice", Key=n)["Body"].read()).hexdigest() == h
                       for n, h in names.items())
        wait_until(lambda: uploaded(earlier), 30, "the earlier files in S3", 0.5)

        free = os.statvfs(wire.cache).f_bavail * os.statvfs(wire.cache).f_frsize
        big = os.urandom(free + 8 * 1024 * 1024)  # more than the cache disk has left
        t0 = time.monotonic()
        failed = _write_big(folder / "cache-full-big.bin", big)
        took = time.monotonic() - t0
        print(f"cache disk full: {free / 2**20:.1f} MiB free, writing {len(big) / 2**20:.1f} MiB: {failed} "
              f"after {took:.1f} s")
        assert failed is not None, "the writer was told nothing although the cache disk is full"
        step, code = failed
        assert code in (errno.ENOSPC, errno.EIO, errno.EDQUOT), f"{step}: {os.strerror(code)}"

        # Whatever rclone does with the half-written file: S3 never holds a partial object.
        objects = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listing = s3.list_objects_v2(Bucket="alice", Prefix="cache-full-").get("Contents", [])
            objects = {o["Key"]: o["Size"] for o in listing}
            time.sleep(1)
        big_sum = hashlib.sha256(big).hexdigest()
        if "cache-full-big.bin" in objects:
            body = s3.get_object(Bucket="alice", Key="cache-full-big.bin")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == big_sum, \
                f"S3 holds a corrupt cache-full-big.bin ({len(body)} of {len(big)} bytes)"
        assert set(objects) <= {*earlier, "cache-full-big.bin"}, objects
        # The person is told, beside the folder, what happened and what to do.
        note = (wire.root / "alice.sts-wire-error.txt").read_text()
        assert "cache-full-big.bin could not be written completely" in note and "is full" in note, note
        assert "Free space in that folder" in note
        for name, h in earlier.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == h
            assert uploaded({name: h})
        # Once space is free again (the failed file removed), writing works again.
        with contextlib.suppress(OSError):
            (folder / "cache-full-big.bin").unlink()
        after = os.urandom(64 * 1024)
        wait_until(lambda: (folder / "cache-full-after.bin").write_bytes(after) or True, 20, "a write after")
        wait_until(lambda: uploaded({"cache-full-after.bin": hashlib.sha256(after).hexdigest()}), 30,
                   "the write after in S3", 0.5)
        reliability.record("fault.cache-disk-full",
                           f"{len(big) / 2**20:.0f} MiB written with {free / 2**20:.1f} MiB free in a "
                           f"{size_mib} MiB cache: {errno.errorcode[code]} at {step} after {took:.1f} s; "
                           f"S3: {'complete object (sha256)' if 'cache-full-big.bin' in objects else 'no object'}"
                           f"; {len(earlier)} earlier files intact (sha256); writes work again after")
    finally:
        wire.cleanup()
        subprocess.run(["umount", "-l", str(wire.cache)], check=False)
        assert fuse_mounts_under(wire.root) == []


# --- the pieces, on their own --------------------------------------------------------------------
def test_no_space_watch_names_the_files_rclone_uploaded_truncated():
    from sts_wire.cachefull import NoSpaceWatch, relative_name

    cache = "/c/sts-wire/s3-alice"
    lines = [
        "2026/11/26 04:51:24 INFO  : fine.bin: Copied (new)",
        f"2026/11/26 04:51:24 ERROR : IO error: write {cache}/vfs/stswire{{3hok-}}/alice/sub/big.bin: "
        "no space left on device",
        "2026/11/26 04:51:24 INFO  : sub/big.bin: vfs cache: queuing for upload in 0s",
    ]
    watch = NoSpaceWatch(cache, "alice")
    assert watch.feed(lines) == []                      # not uploaded yet: nothing to remove
    assert watch.feed(["2026/11/26 04:51:25 INFO  : sub/big.bin: Copied (replaced existing)"]) == ["sub/big.bin"]
    assert watch.feed(["2026/11/26 04:51:26 INFO  : sub/big.bin: Copied (new)"]) == []  # a later good write
    # Uploaded truncated, but written again (queued) before sts-wire read the log: left alone.
    assert watch.feed([lines[1], "2026/11/26 04:51:27 INFO  : sub/big.bin: Copied (new)",
                       "2026/11/26 04:51:27 INFO  : sub/big.bin: vfs cache: queuing for upload in 0s"]) == []
    # Another mount's cache, a prefix, and paths that are not a file of this mount.
    assert relative_name(f"{cache}/vfs/r/alice/x", "/other", "alice") is None
    assert relative_name(f"{cache}/vfs/r/cms/shared/x.txt", cache, "cms", "shared") == "x.txt"
    assert relative_name(f"{cache}/vfs/r/cms/other/x.txt", cache, "cms", "shared") is None
    assert relative_name(f"{cache}/vfs/r/alice/../x", cache, "alice") is None


def test_strays_written_during_a_remount_end_up_in_the_new_mount(tmp_path):
    """A plain folder stands for the mount: files already there go to staging, a file written
    after before_mount (beneath the new mount) is found through the kept handle."""
    from sts_wire.strays import Strays

    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "early.txt").write_text("early")
    (folder / "sub").mkdir()
    s = Strays(str(folder))
    s.before_mount()
    assert os.listdir(folder) == [] and s.staging.is_dir()
    (folder / "late.txt").write_text("late")   # lands in the bare folder as rclone starts
    (folder / "taken.txt").write_text("mine")  # a name the bucket already has (below)
    mount = tmp_path / "mounted"               # the new mount, over the folder
    os.rename(folder, mount)
    folder.mkdir()
    (folder / "taken.txt").write_text("the bucket's")
    copied, aside = s.adopt()
    assert sorted(copied) == ["early.txt", "late.txt"]
    assert (folder / "early.txt").read_text() == "early" and (folder / "late.txt").read_text() == "late"
    assert (folder / "taken.txt").read_text() == "the bucket's"
    assert aside is not None and sorted(os.listdir(aside)) == ["sub", "taken.txt"]
    assert (aside / "taken.txt").read_text() == "mine"
    assert os.listdir(mount) == [] and not s.staging.exists() and s.bare is None


def test_files_closed_just_before_rclone_is_killed_read_back_whole(private_s3, idp, tmp_path):
    """sts-wire level: the new rclone uploads them from its cache at start; without sts-wire's
    vfs/refresh afterwards rclone 1.75 takes them for deleted remotely and shows them empty."""
    wire = Wire(tmp_path)
    token, _ = refresh_token_setup(idp, "alice", wire.tmp / "secrets")
    spec = write_spec(wire.tmp / "spec.yaml", private_s3, [{"remote": "alice", "path": f"{wire.root}/alice"}],
                      token, role_arn=private_s3.role_arn)
    folder = wire.root / "alice"
    try:
        wire.start("run", ["--spec", str(spec), "--", "sleep", "600"])
        wire.wait_mounted([folder])
        data = {f"closed-before-kill-{i}.bin": os.urandom(16384) for i in range(3)}
        for name, d in data.items():
            (folder / name).write_bytes(d)
        old = wire.instance()["mounts"][0]["rclone_pid"]
        os.kill(old, signal.SIGKILL)   # before rclone has handled the kernel's release of each
        wait_until(lambda: wire.instance()["mounts"][0]["rclone_pid"] not in (None, old)
                   and wire.instance()["mounts"][0]["state"] == "ready", 15, "a new rclone")
        # The new rclone logs at its start what its cache still held; when it did (the usual
        # case), sts-wire has it list the folder again once those uploads are done.
        started = next(wire.logs.glob("rclone-*.log")).read_text().rsplit("STS-WIRE : starting rclone", 1)[-1]
        if "queuing for upload" in started:
            wait_until(lambda: "listed again" in (wire.logs / "sts-wire.log").read_text(), 15,
                       "the folder listed again")
        s3 = private_s3.admin_s3()
        for name, d in data.items():
            assert (folder / name).read_bytes() == d, name
            assert s3.get_object(Bucket="alice", Key=name)["Body"].read() == d, name
    finally:
        wire.cleanup()
