"""The local side of a mount: FUSE present?, mount path usable?, mount table, unmount, probes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import Exit, StsWireError
from .spec import under_root


@dataclass(frozen=True)
class MountEntry:
    target: str
    fstype: str
    source: str
    dev: str


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_table() -> dict[str, MountEntry]:
    """Current mounts of this mount namespace, by target (the last one mounted wins)."""
    out: dict[str, MountEntry] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if len(a) < 5 or len(b) < 2:
            continue
        out[_unescape(a[4])] = MountEntry(_unescape(a[4]), b[0], _unescape(b[1]), a[2])
    return out


def is_mounted(path: str) -> MountEntry | None:
    return mount_table().get(os.path.normpath(path))


def check_fuse(device: str = "/dev/fuse") -> None:
    """FUSE needs the device and fusermount3; say plainly which one is missing."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        raise StsWireError(f"FUSE is not available: {device} does not exist", Exit.FUSE,
                           "install fuse3 on the host; a container needs --device /dev/fuse "
                           "--cap-add SYS_ADMIN") from None
    if not stat.S_ISCHR(st.st_mode):
        raise StsWireError(f"FUSE is not available: {device} is not a character device", Exit.FUSE,
                           "a container needs --device /dev/fuse --cap-add SYS_ADMIN")
    try:
        os.close(os.open(device, os.O_RDWR))
    except OSError as e:
        raise StsWireError(f"FUSE is not usable: cannot open {device} ({e.strerror})", Exit.FUSE,
                           "the device must be readable and writable by this user") from None
    if not shutil.which("fusermount3"):
        raise StsWireError("FUSE is not usable: fusermount3 is not installed (or not on PATH)", Exit.FUSE,
                           "install the fuse3 package")


def prepare_path(path: str, roots: list[str], dry_run: bool = False) -> list[str]:
    """Make sure ``path`` can be mounted on: below a root after resolving symlinks, a folder
    (created if missing), not already mounted (a stale mount of ours is cleared), empty.
    Returns notes about what was done (``dry_run``: what would be done; nothing is changed)."""
    notes: list[str] = []
    real_roots = [os.path.realpath(r) for r in roots]
    # Resolve the deepest existing ancestor: a symlink must not lead outside the roots.
    existing = path
    while not os.path.lexists(existing) and existing != "/":
        existing = os.path.dirname(existing)
    real = os.path.join(os.path.realpath(existing), os.path.relpath(path, existing))
    real = os.path.normpath(real)
    if not under_root(real, real_roots):
        raise StsWireError(f"{path} resolves to {real}, which is not below an allowed root", Exit.MOUNT_PATH)
    if os.path.islink(path):
        raise StsWireError(f"{path} is a symbolic link; mount on a real folder", Exit.MOUNT_PATH)
    entry = is_mounted(path)
    if entry is not None:
        if entry.source.startswith(OURS) and not probe_alive(path, 2.0):
            if not dry_run:
                lazy_unmount(path)
            notes.append(f"cleared a stale sts-wire mount on {path}")
        else:
            raise StsWireError(f"{path} is busy: something is already mounted there ({entry.fstype} "
                               f"{entry.source})", Exit.MOUNT_PATH,
                               "unmount it first (fusermount3 -u), or choose another path")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise StsWireError(f"{path} exists and is not a folder", Exit.MOUNT_PATH)
        try:
            with os.scandir(path) as it:
                first = next(it, None)
        except OSError as e:
            raise StsWireError(f"cannot read {path}: {e.strerror}", Exit.MOUNT_PATH) from None
        if first is not None:
            raise StsWireError(f"{path} is not empty (it holds {first.name!r}); rclone does not mount over files",
                               Exit.MOUNT_PATH, "move the files away or choose another path")
    elif dry_run:
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StsWireError(f"cannot create the mount folder {path}: {parent} is not writable",
                               Exit.MOUNT_PATH)
        notes.append(f"would create {path}")
        return notes
    else:
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as e:
            raise StsWireError(f"cannot create the mount folder {path}: {e.strerror}", Exit.MOUNT_PATH,
                               "the parent folder must exist and be writable") from None
        notes.append(f"created {path}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StsWireError(f"{path} is not writable by this user", Exit.MOUNT_PATH)
    return notes


def _run_quiet(argv: list[str], timeout: float = 10) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 255, str(e)
    return p.returncode, (p.stderr or p.stdout).strip()


OURS = "sts-wire:"   # rclone --devname prefix: how our mounts show in the mount table


def ours(path: str) -> MountEntry | None:
    """The mount on path if it is one of ours (never touch anybody else's)."""
    e = is_mounted(path)
    return e if e is not None and e.fstype.startswith("fuse") and e.source.startswith(OURS) else None


def unmount(path: str) -> tuple[bool, str]:
    """Unmount our mount; when the folder is busy, unmount lazily (gone now, released when unused)."""
    if ours(path) is None:
        return True, "not mounted"
    rc, err = _run_quiet(["fusermount3", "-u", path])
    if rc == 0:
        return True, "unmounted"
    rc, err2 = _run_quiet(["fusermount3", "-uz", path])
    if rc == 0:
        return True, "unmounted lazily (it was busy)"
    if os.geteuid() == 0:
        rc, err3 = _run_quiet(["umount", "-l", path])
        if rc == 0:
            return True, "unmounted lazily (umount -l)"
    return False, err2 or err


def lazy_unmount(path: str) -> None:
    if ours(path) is not None:
        rc, _ = _run_quiet(["fusermount3", "-uz", path])
        if rc != 0 and os.geteuid() == 0:
            _run_quiet(["umount", "-l", path])


# --- probes with a time limit (a hung FUSE mount blocks any call into it) ---------------------
class Probe:
    """Run a file-system call in a daemon thread; report 'ok', an errno, or 'timeout'."""

    def __init__(self, fn, timeout: float):
        self.fn, self.timeout = fn, timeout
        self.result: object = None
        self.error: OSError | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sts-wire-probe")

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except OSError as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 - reported as a failed probe
            self.error = OSError(errno.EIO, str(e))
        finally:
            self.done.set()

    def start(self) -> Probe:
        self.thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(self.timeout if timeout is None else timeout)


def health_fn(path: str):
    """What the health check asks of a mount: the kernel must reach rclone (stat, statfs)."""
    def fn():
        os.stat(path)
        os.statvfs(path)
        return True
    return fn


def list_fn(path: str):
    def fn():
        with os.scandir(path) as it:
            return [e.name for e in it]
    return fn


def probe_alive(path: str, timeout: float) -> bool:
    p = Probe(health_fn(path), timeout).start()
    return p.wait() and p.error is None
