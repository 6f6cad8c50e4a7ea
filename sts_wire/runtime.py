"""The private runtime folder: 0700, on tmpfs where there is one, holding 0600 files only.

Layout (one sub-folder per running sts-wire, named by its PID)::

    <base>/<pid>/state.json      what `sts-wire status` shows (no secret in it)
    <base>/<pid>/keys.json       the STS keys in credential_process form (0600, secret)
    <base>/<pid>/token           the current OIDC access token (0600, secret)
    <base>/<pid>/rclone.conf     rclone's remote (no secret in it)
    <base>/<pid>/aws.conf        the AWS profile pointing at keys.json (no secret in it)
    <base>/<pid>/rc-<mount>.sock rclone's remote-control socket per mount
    <base>/<pid>/logs/           sts-wire's and rclone's logs, rotated (unless --log-dir)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import Exit, StsWireError


def _tmpfs(path: str) -> bool:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[1] == path and parts[2] == "tmpfs":
                return True
    except OSError:
        pass
    return False


def default_base(env: dict | None = None) -> Path:
    """$STS_WIRE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/sts-wire, else /dev/shm/sts-wire-<uid>
    (tmpfs), else ~/.cache/sts-wire/run."""
    env = os.environ if env is None else env
    if env.get("STS_WIRE_RUNTIME_DIR"):
        return Path(env["STS_WIRE_RUNTIME_DIR"])
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "sts-wire"
    if _tmpfs("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path(f"/dev/shm/sts-wire-{os.getuid()}")
    return Path.home() / ".cache" / "sts-wire" / "run"


def ensure_private_dir(path: Path) -> Path:
    """Create (or accept) a folder that only we can enter: ours, a real folder, mode 0700."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StsWireError(f"cannot create the private runtime folder {path}: {e.strerror}",
                           Exit.FAILURE, "choose another with --runtime-dir") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StsWireError(f"runtime folder {path} is not a folder (a symlink?)", Exit.FAILURE,
                           "remove it or choose another with --runtime-dir")
    if st.st_uid != os.getuid():
        raise StsWireError(f"runtime folder {path} belongs to uid {st.st_uid}, not to us", Exit.FAILURE,
                           "choose another with --runtime-dir")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write a 0600 file atomically: a reader sees the old or the new content, never a mix."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Runtime:
    """The running instance's private folder."""

    def __init__(self, base: Path | None = None, log_dir: Path | None = None, pid: int | None = None):
        self.base = ensure_private_dir(Path(base) if base else default_base())
        self.pid = pid or os.getpid()
        self.dir = self.base / str(self.pid)
        if self.dir.exists():               # a PID reused after a crash: clear the old state
            shutil.rmtree(self.dir, ignore_errors=True)
        ensure_private_dir(self.dir)
        self.log_dir = Path(log_dir) if log_dir else self.dir / "logs"
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.empty = self.dir / "empty"
        write_private(self.empty, "")

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def keys_file(self) -> Path:
        return self.dir / "keys.json"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def rc_socket(self, mid: str) -> Path:
        # unix socket paths are limited to 107 bytes
        p = self.dir / f"rc-{mid}.sock"
        if len(str(p)) > 100:
            p = self.dir / f"rc-{abs(hash(mid)) % 10**8}.sock"
        return p

    def write_state(self, state: dict) -> None:
        write_private(self.state_file, json.dumps(state, indent=1, default=str))

    def remove(self) -> None:
        """Remove this instance's folder (keys, token, sockets); logs stay if kept elsewhere."""
        for f in (self.keys_file, self.token_file):
            with contextlib.suppress(OSError):
                f.unlink()
        if self.log_dir.is_relative_to(self.dir):
            # Keep logs next to the base for a post-mortem, without secrets (none are logged).
            keep = self.base / "last-logs"
            shutil.rmtree(keep, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.move(str(self.log_dir), str(keep))
        shutil.rmtree(self.dir, ignore_errors=True)


def instances(base: Path) -> list[tuple[int, Path]]:
    """(pid, folder) of every sts-wire that left a state file under base."""
    out = []
    try:
        for d in Path(base).iterdir():
            if d.name.isdigit() and (d / "state.json").exists():
                out.append((int(d.name), d))
    except OSError:
        pass
    return sorted(out)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
