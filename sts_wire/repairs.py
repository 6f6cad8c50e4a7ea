"""Repairs after the fact, done by the supervisor once a mount works: a file rclone uploaded
truncated because its cache disk was full (sts_wire.cachefull), files written into the bare
folder during a remount (sts_wire.strays), and files rclone uploaded at its start from what its
cache still held (a killed rclone) but then shows as empty."""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
from pathlib import Path

from . import mounts as fs
from . import notes
from .mountstate import Mount, rc_call
from .schedule import iso
from .strays import Strays

log = logging.getLogger("sts_wire")


class LogTail:
    """The lines rclone adds to its log, read as they come (from the start again after rclone
    rotated the file)."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0

    def skip_to_end(self) -> None:
        try:
            self.pos = self.path.stat().st_size
        except OSError:
            self.pos = 0

    def new_lines(self, limit: int = 1 << 20) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self.pos:
                    self.pos = 0
                f.seek(self.pos)
                data = f.read(limit)
        except OSError:
            return []
        end = data.rfind(b"\n") + 1   # complete lines only
        self.pos += end
        return data[:end].decode(errors="replace").splitlines()


def remove_incomplete(m: Mount, names: list[str], timeout: float) -> None:
    """Files uploaded truncated (their cache writes failed for lack of space; the writer got
    EIO): remove each through the mount, so that rclone deletes the object and S3 holds no
    partial file under its name, and say so."""
    for name in names:
        target = os.path.join(m.path, name)
        p = fs.Probe(lambda t=target: os.unlink(t), timeout).start()
        p.wait()
        removed = p.done.is_set() and p.error is None
        msg = (f"{target} could not be written completely: rclone's cache folder {m.cache_dir} is "
               f"full (the program writing it got an I/O error). "
               + ("The incomplete copy was removed from the bucket. " if removed else
                  f"Removing the incomplete copy failed ({p.error or 'no answer'}): delete it. ")
               + "Free space in that folder (or give sts-wire a bigger one), then write the file again.")
        log.error("%s", msg)
        notes.put(m, f"sts-wire: {msg}\ntime: {iso(time.time())}\n"
                     "this note stays until the mount is restarted or another problem replaces it.\n")


def adopt_strays(m: Mount, strays: Strays, timeout: float) -> None:
    """After a remount: what was written into the bare folder meanwhile goes into the mount, in
    a thread with a time limit (it writes through the mount)."""
    p = fs.Probe(strays.adopt, timeout).start()
    if not p.wait():
        log.error("%s: copying what was written during the remount is still going on", m.path)
        return
    if p.error is not None:
        log.error("%s: cannot copy what was written during the remount: %s", m.path, p.error)
        return
    copied, aside = p.result
    if copied:
        log.warning("%s: %d file(s) written while it was being remounted were copied into it: %s",
                    m.path, len(copied), ", ".join(copied[:5]))
    if aside is not None:
        msg = (f"files written into {m.path} while {m.spec.remote} was being remounted could not "
               f"be put into the bucket (a folder, or a name it already has): they are in {aside}")
        log.error("%s", msg)
        notes.put(m, f"sts-wire: {msg}\ntime: {iso(time.time())}\n")


def dirty_dirs(cache_dir: Path, bucket: str, prefix: str = "") -> set[str]:
    """Folders (relative to the mount) holding files rclone's cache still has to upload."""
    base = bucket + (f"/{prefix.strip('/')}" if prefix else "")
    out = set()
    for remote in (Path(cache_dir) / "vfsMeta").glob("*"):
        root = remote / base
        for meta in root.rglob("*"):
            try:
                if meta.is_file() and json.loads(meta.read_text()).get("Dirty"):
                    rel = meta.parent.relative_to(root).as_posix()
                    out.add("" if rel == "." else rel)
            except (OSError, ValueError, AttributeError):
                continue
    return out


def refresh_after_uploads(m: Mount, dirs: set[str], timeout: float = 120) -> None:
    """rclone uploads at start what its cache still held, but then takes those files for
    deleted remotely (their folder was listed before the upload) and shows them empty. Once
    the uploads are done, have it list those folders again (vfs/refresh)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = rc_call(m.rc_socket, "vfs/stats", timeout=3).get("diskCache") or {}
            if int(st.get("uploadsInProgress", 0)) + int(st.get("uploadsQueued", 0)) == 0:
                break
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.02)   # a file read between its upload and the refresh shows empty
    subdirs = sorted(d for d in dirs if d)
    calls = [{}] if "" in dirs else []   # no dir: the root (an empty "dir" is not taken for it)
    if subdirs:
        calls.append({("dir" if i == 0 else f"dir{i + 1}"): d for i, d in enumerate(subdirs)})
    try:
        for params in calls:
            rc_call(m.rc_socket, "vfs/refresh", params, timeout=30)
        log.info("%s: listed again after the uploads left from before: %s", m.path,
                 ", ".join(sorted(d or "/" for d in dirs)[:5]))
    except (OSError, ValueError, http.client.HTTPException) as e:
        log.warning("%s: cannot have rclone list %s again (%s): files uploaded at its start may "
                    "show as empty until it does", m.path, sorted(dirs)[:5], e)
