"""Start daemons, wait until they answer, stop them by PID (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A testbed service did not come up; the message carries its log tail."""


def log_tail(path: Path | str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(check: Callable[[], object], timeout: float, what: str, log: Path | None = None,
             proc: subprocess.Popen | None = None, interval: float = 0.1):
    """Poll ``check`` until it returns a true value; fail with the log tail if the process dies."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what}: process exited with {proc.returncode}\n{log_tail(log) if log else ''}")
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # the service is not up yet; keep the last reason for the report
            last_exc = e
        time.sleep(interval)
    raise ServiceError(f"{what}: not ready after {timeout:.0f} s (last error: {last_exc!r})\n"
                       f"{log_tail(log) if log else ''}")


class Daemon:
    """One background process of ours, in its own process group, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, stop_timeout: float = 10.0, preexec_fn=None):
        self.name, self.argv, self.log = name, list(argv), Path(log)
        self.env = dict(env) if env is not None else None
        self.cwd, self.stop_timeout, self.preexec_fn = cwd, stop_timeout, preexec_fn
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.cwd, start_new_session=True, stdin=subprocess.DEVNULL,
                                         preexec_fn=self.preexec_fn)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check: Callable[[], object], timeout: float = 30.0):
        return wait_for(check, timeout, f"{self.name} ({' '.join(self.argv[:2])})", self.log, self.proc)

    def stop(self) -> None:
        """SIGTERM our process group, then SIGKILL what is left after ``stop_timeout``."""
        if self.proc is None:
            return
        stop_pid(self.proc.pid, self.stop_timeout, group=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 10.0, group: bool = False) -> None:
    """Stop one process we started (or its group), by PID: TERM, wait, then KILL."""
    sender = os.killpg if group else os.kill
    try:
        sender(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        sender(pid, signal.SIGKILL)


def read_pid(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    targets = (line.split()[1].replace("\\040", " ") for line in lines)
    return [t for t in targets if t.startswith(str(root) + "/")]


def unmount_all_under(root: Path) -> None:
    """A leftover FUSE mount makes the next rm fail: lazily unmount anything under root first."""
    for target in mounts_under(root):
        subprocess.run(["fusermount3", "-uz", target], capture_output=True)
        subprocess.run(["umount", "-l", target], capture_output=True)


def stop_services(started: Sequence) -> None:
    """Stop services in the reverse order of their start; one that fails to stop is reported on
    stderr and the others are stopped all the same."""
    for svc in reversed(started):
        try:
            svc.stop()
        except Exception as e:  # noqa: BLE001 (stop the others all the same)
            print(f"stopping {svc.__class__.__name__}: {e}", file=sys.stderr)
