"""Files written into a mount folder while nothing was mounted on it.

Between a dead rclone's unmount and the new mount (a fraction of a second), a program saving a
file writes into the bare folder. Left there, such a file blocks the remount ("not empty") or,
mounted over, is hidden and lost when the server ends. Before a remount sts-wire moves what is
already there into a hidden staging folder beside it and keeps a handle on the bare folder
(rclone then mounts with --allow-non-empty, since a file may still land in that instant); once
the mount works, every file found in either place is copied into the mount, so it reaches the
bucket. What cannot be (a folder, or a name the bucket already has) is moved beside the mount
folder, and the note file says where.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from pathlib import Path


class Strays:
    def __init__(self, path: str):
        self.path = Path(path)
        self.staging = self.path.parent / f".{self.path.name}.sts-wire-staging"
        self.bare: int | None = None      # fd of the bare folder, beneath the new mount

    def before_mount(self) -> None:
        """The folder is not mounted: move what is in it to staging, keep a handle on it."""
        with contextlib.suppress(OSError):
            names = os.listdir(self.path)
            if names:
                self.staging.mkdir(mode=0o700, exist_ok=True)
                for name in names:
                    os.rename(self.path / name, self.staging / name)
        self.close()
        with contextlib.suppress(OSError):
            self.bare = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def adopt(self) -> tuple[list[str], Path | None]:
        """The mount works: copy each stray file into it. Returns (names copied in, the folder
        where the rest was moved, or None)."""
        copied, aside = [], None
        sources = [self.bare]
        with contextlib.suppress(OSError):
            sources.append(os.open(self.staging, os.O_RDONLY | os.O_DIRECTORY))
        try:
            for src in sources:
                if src is None:
                    continue
                for name in os.listdir(src):
                    st = os.stat(name, dir_fd=src, follow_symlinks=False)
                    target = self.path / name
                    if stat.S_ISREG(st.st_mode) and not os.path.lexists(target):
                        fd = os.open(name, os.O_RDONLY, dir_fd=src)
                        with os.fdopen(fd, "rb") as fin, open(target, "xb") as fout:
                            shutil.copyfileobj(fin, fout, 1 << 20)
                        os.unlink(name, dir_fd=src)
                        copied.append(name)
                    else:
                        if aside is None:
                            when = time.strftime("%Y%m%dT%H%M%S")
                            aside = self.path.parent / f"{self.path.name}.sts-wire-unsaved-{when}"
                            aside.mkdir(mode=0o700, exist_ok=True)
                        os.rename(name, aside / name, src_dir_fd=src)
        finally:
            for src in sources[1:]:
                os.close(src)
            with contextlib.suppress(OSError):
                self.staging.rmdir()
            self.close()
        return copied, aside

    def close(self) -> None:
        if self.bare is not None:
            with contextlib.suppress(OSError):
                os.close(self.bare)
            self.bare = None
