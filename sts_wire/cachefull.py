"""Writes that failed because rclone's cache disk was full. Pure: log lines in, file names out.

rclone writes every file to its VFS cache first and uploads it at close. When the cache disk is
full the writer gets EIO, but rclone still uploads, at close, whatever reached the cache file: a
truncated object in S3 under the file's name. sts-wire reads each rclone log as it grows, keeps
the names whose cache writes failed, and when rclone reports such a name uploaded, the
supervisor removes that file through the mount (so rclone deletes the object too) and explains
it in the note file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NO_SPACE = re.compile(r" ERROR : IO error: write (?P<path>.+): (?:no space left on device|disk quota exceeded)\s*$")
UPLOADED = re.compile(r" INFO  : (?P<name>.+): Copied \((?:new|replaced existing)\)\s*$")
QUEUED = re.compile(r" INFO  : (?P<name>.+): vfs cache: queuing for upload in ")


def relative_name(cache_file: str, cache_dir: str, bucket: str, prefix: str = "") -> str | None:
    """The file's name in the mount from its cache path,
    ``<cache_dir>/vfs/<remote>{hash}/<bucket>[/<prefix>]/<name>``; None if it is not one."""
    root = cache_dir.rstrip("/") + "/vfs/"
    if not cache_file.startswith(root):
        return None
    parts = cache_file[len(root):].split("/", 1)  # the remote's name first: any characters but '/'
    head = bucket + (f"/{prefix.strip('/')}" if prefix else "") + "/"
    if len(parts) < 2 or not parts[1].startswith(head):
        return None
    name = parts[1][len(head):]
    return name if name and ".." not in name.split("/") else None


@dataclass
class NoSpaceWatch:
    """One mount's files whose cache writes failed, until rclone has uploaded them."""

    cache_dir: str
    bucket: str
    prefix: str = ""
    failed: set[str] = field(default_factory=set)

    def feed(self, lines: list[str]) -> list[str]:
        """Read log lines in order; return the names that were just uploaded incomplete."""
        out = []
        for line in lines:
            m = NO_SPACE.search(line)
            if m:
                name = relative_name(m.group("path"), self.cache_dir, self.bucket, self.prefix)
                if name:
                    self.failed.add(name)
                continue
            m = UPLOADED.search(line)
            if m and m.group("name") in self.failed:
                self.failed.discard(m.group("name"))
                out.append(m.group("name"))
                continue
            m = QUEUED.search(line)
            if m and m.group("name") in out:   # written again since: that copy is not ours to remove
                out.remove(m.group("name"))
        return out
