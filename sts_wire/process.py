"""sts-wire as a process supervisor (also as a container's PID 1): signals become a flag, every
child is reaped, and children end when sts-wire ends.

- Signal handlers only record the signal and wake the main loop through a pipe: no exception is
  ever raised into whatever code happened to run (a bucket check, a renewal, a log call). The
  main loop looks at the flag at safe points and acts.
- ``reap`` collects every exited child, also the orphans a container's PID 1 inherits (a
  kernel's grandchildren), and hands the exit status of our own children to their Popen.
- ``die_with_parent`` makes the kernel send SIGTERM to a child (rclone) when sts-wire dies,
  even by SIGKILL: no rclone outlives it holding a mount.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import signal
import subprocess
from collections import deque
from collections.abc import Iterable

log = logging.getLogger("sts_wire")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
HANDLED = (*STOP_SIGNALS, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
PR_SET_PDEATHSIG = 1


class Signals:
    """Record signals; ``wait`` sleeps until one arrives or the timeout passes."""

    def __init__(self):
        self.stop: int | None = None        # the first stop signal received
        self.pending: deque[int] = deque()  # signals not yet handled by the main loop
        self._old: dict = {}
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
        self._old_wakeup = None

    def _on(self, sig, frame) -> None:
        # Only plain assignments here: the main loop does everything else.
        self.pending.append(sig)
        if sig in STOP_SIGNALS and self.stop is None:
            self.stop = sig

    def install(self) -> Signals:
        self._old_wakeup = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in HANDLED:
            self._old[sig] = signal.signal(sig, self._on)
        return self

    def restore(self) -> None:
        for sig, h in self._old.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, h)
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(self._old_wakeup if self._old_wakeup is not None else -1)
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def take(self) -> list[int]:
        """The signals received since the last call (oldest first). popleft is atomic: a signal
        that arrives meanwhile is taken now or at the next call, never lost."""
        out = []
        while self.pending:
            out.append(self.pending.popleft())
        return out

    def wait(self, timeout: float) -> None:
        with contextlib.suppress(InterruptedError, OSError, ValueError):
            ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
            if ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._r, 512)

    @property
    def stopping(self) -> bool:
        return self.stop is not None


def reap(children: Iterable[subprocess.Popen | None]) -> list[int]:
    """Collect every exited child. Our own children's status goes to their Popen (so ``poll()``
    sees it); the PIDs of others (orphans a PID 1 inherits) are returned."""
    ours = {p.pid: p for p in children if p is not None and p.returncode is None}
    others = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        p = ours.get(pid)
        if p is not None:
            p.returncode = os.waitstatus_to_exitcode(status)
        else:
            others.append(pid)
    if others:
        log.debug("reaped %d orphaned process(es): %s", len(others), others)
    return others


_libc = None


def die_with_parent() -> None:
    """In a child between fork and exec: SIGTERM when the parent ends (prctl PR_SET_PDEATHSIG).
    Only a system call, so it is safe in a child forked from a threaded parent."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _load_libc() -> None:
    global _libc
    with contextlib.suppress(OSError, TypeError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


_load_libc()   # loaded in the parent: the child must not load libraries after fork
