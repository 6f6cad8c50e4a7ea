"""A private mount namespace per local server, with its own empty folder at each mount root.

Local servers share the machine's file system, so two users mounting `/s3/scratch` at the same
time would collide, and a mount left by a crashed server would stay. Instead, between fork and
exec (as root, before the process becomes the user), the server's process enters a new mount
namespace that receives the machine's mounts but sends none back, and gets a small tmpfs owned
by the user on each mount root. sts-wire then mounts the user's buckets there, seen only by
that server's processes; when the last of them ends, the namespace and its mounts are gone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_SLAVE = 0x2, 0x4, 0x4000, 0x80000

_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str | None:
    """None when private mount namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "the hub does not run as root"
    if not hasattr(_libc, "unshare") or not os.path.exists("/proc/self/ns/mnt"):
        return "this system has no mount namespaces"
    return None


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def enter_preexec(roots: Iterable[str], uid: int, gid: int):
    """A function for Popen's preexec_fn: new mount namespace, a user-owned tmpfs on each root."""
    # Everything is encoded now: the child between fork and exec should do as little as it can.
    targets = [os.fsencode(r) for r in roots]
    options = f"mode=0755,uid={uid},gid={gid},size=1m".encode()

    def enter() -> None:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Mounts made here (tmpfs, FUSE) stay here; the machine's still arrive.
        _check(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "make / a slave mount")
        for target in targets:
            _check(_libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, options),
                   f"tmpfs on {os.fsdecode(target)}")

    return enter
