"""Mounts that stay up: the supervision part of sts-wire (keys: sts_wire.credentials).

Everything runs from one loop in the main thread (``tick``): renew the token and the keys ahead
of time, watch every rclone process, probe every mount with a time limit, remount with bounded
backoff. Renewals go on while a mount is being (re)started. rclone processes are only ever
started from the main thread with a parent-death signal (``setpriv --pdeathsig TERM``, else
prctl), so they end if sts-wire is killed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import mounts as fs
from . import notes, repairs
from . import rclone as rc
from .cachefull import NoSpaceWatch
from .credentials import Credentials
from .errors import Exit, StsWireError
from .mountstate import Mount
from .process import die_with_parent
from .runtime import Runtime, write_private
from .schedule import backoff, iso, retry_delay
from .spec import Spec, mount_id
from .strays import Strays
from .sts import probe_bucket, s3_client
from .tokens import TokenSource
from .uploads import wait_for_uploads

log = logging.getLogger("sts_wire")

HEALTHY_AFTER = 10.0   # seconds of passed health checks after which failures are forgotten



# --- all mounts --------------------------------------------------------------------------------
class Supervisor:
    def __init__(self, spec: Spec, runtime: Runtime, source: TokenSource, *, rclone_bin: str,
                 allowed_roots: list[str], cache_base: Path, health_interval: float = 5.0,
                 health_timeout: float = 10.0, ready_timeout: float = 30.0, flush_timeout: float = 120.0,
                 max_backoff: float = 60.0, log_level: str = "INFO", progress=None,
                 should_stop: Callable[[], bool] = lambda: False):
        self.spec, self.runtime = spec, runtime
        self.creds = Credentials(source, spec, runtime)
        self.rclone_bin = rclone_bin
        self.allowed_roots = allowed_roots
        self.health_interval, self.health_timeout = health_interval, health_timeout
        self.ready_timeout, self.flush_timeout, self.max_backoff = ready_timeout, flush_timeout, max_backoff
        self.log_level = log_level
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self.should_stop = should_stop
        self.started = time.time()
        self.mounts: list[Mount] = []
        for m in spec.mounts:
            mid = mount_id(m.path)
            self.mounts.append(Mount(m, mid, runtime.log_dir / f"rclone-{mid}.log", cache_base / mid,
                                     runtime.rc_socket(mid)))
        self._write_configs()
        self._setpriv = shutil.which("setpriv")
        self._last_state = 0.0
        self._noted_error: StsWireError | None = None   # the renewal failure the notes tell of
        self._strays: dict[str, Strays] = {}             # mounts being remounted
        self._logs = {m.mid: repairs.LogTail(m.log_file) for m in self.mounts}
        self._pending_dirs: dict[str, set[str]] = {}     # folders with uploads left from before
        self._no_space = {m.mid: NoSpaceWatch(str(m.cache_dir), m.spec.bucket, m.spec.prefix or "")
                          for m in self.mounts}
        self.fuse_error: StsWireError | None = None

    def _write_configs(self) -> None:
        self.rclone_conf = self.runtime.path("rclone.conf")
        self.aws_conf = self.runtime.path("aws.conf")
        write_private(self.rclone_conf, rc.config_text(self.spec.sts))
        write_private(self.aws_conf, rc.aws_config_text(self.runtime.keys_file))
        self.env = rc.environment(os.environ, self.rclone_conf, self.aws_conf, self.runtime.empty)

    def processes(self) -> list[subprocess.Popen]:
        """The rclone processes (for the reaper)."""
        return [m.proc for m in self.mounts if m.proc is not None]

    # ---- start ----
    def start(self) -> list[Mount]:
        """Get keys, check buckets, start every rclone, wait until all are ready (or failed).
        Returns the mounts that failed (each with last_error). Returns early, leaving the rest
        pending, as soon as ``should_stop()`` is true."""
        t0 = time.monotonic()
        try:
            fs.check_fuse()
        except StsWireError as e:
            self.fuse_error = e
            for m in self.mounts:
                self._fail(m, e, time.time())
            self.write_state(force=True)
            return list(self.mounts)
        try:
            self.creds.start()
        except StsWireError as e:
            self.creds.last_error = e
            self.creds.failures = 1
            self.creds.next_try = time.time() + retry_delay(0, time.time(), None)
            for m in self.mounts:
                self._fail(m, e, time.time())
            self.write_state(force=True)
            return list(self.mounts)
        if self.should_stop():
            return list(self.mounts)
        self._start_mounts(self.mounts)
        self.wait_ready([m for m in self.mounts if m.state == "starting"])
        self._after_start(self.mounts)
        failed = [m for m in self.mounts if m.state != "ready"]
        ready = len(self.mounts) - len(failed)
        self.progress(f"{ready} of {len(self.mounts)} mounts ready in {time.monotonic() - t0:.2f} s")
        self.write_state(force=True)
        return failed

    def _check_buckets(self, ms: list[Mount]) -> dict[str, StsWireError | None]:
        """List each bucket/prefix once with the keys (in parallel) for a clear error early."""
        client = s3_client(self.spec.sts, self.creds.keys)

        def one(m: Mount):
            try:
                probe_bucket(client, m.spec.bucket, m.spec.prefix, 1)
                return None
            except StsWireError as e:
                return e

        with cf.ThreadPoolExecutor(max(1, min(8, len(ms)))) as ex:
            return dict(zip([m.mid for m in ms], ex.map(one, ms), strict=True))

    def _start_mounts(self, ms: list[Mount]) -> None:
        """Prepare each folder and start its rclone at once; meanwhile list each bucket with
        boto3 (in threads) so a refused or missing bucket gets a plain message: its rclone is
        then stopped again."""
        now = time.time()
        if not ms:
            return
        with cf.ThreadPoolExecutor(1) as pool:
            checks = pool.submit(self._check_buckets, ms)
            for m in ms:
                try:
                    for note in fs.prepare_path(m.path, self.allowed_roots):
                        log.info("%s", note)
                except StsWireError as e:
                    self._fail(m, e, now)
                    continue
                self._spawn(m)
            try:
                problems = checks.result()
            except Exception as e:  # noqa: BLE001 - the mounts themselves will tell
                log.debug("bucket check failed: %s", e)
                problems = {}
        for m in ms:
            err = problems.get(m.mid)
            if err is not None and m.state == "starting":
                self._kill(m)
                fs.lazy_unmount(m.path)
                self._fail(m, err, now)

    def _after_start(self, ms: list[Mount]) -> None:
        """A new rclone uploads what its cache held from before: have it list those folders
        again afterwards (in a thread; see repairs.refresh_after_uploads)."""
        for m in ms:
            dirs = self._pending_dirs.pop(m.mid, None)
            if dirs and m.state == "ready":
                fs.Probe(lambda m=m, d=dirs: repairs.refresh_after_uploads(m, d), 0).start()

    def _spawn(self, m: Mount) -> None:
        if not m.spec.read_only:
            self._pending_dirs[m.mid] = repairs.dirty_dirs(m.cache_dir, m.spec.bucket, m.spec.prefix or "")
        m.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            m.rc_socket.unlink()
        argv = rc.mount_argv(self.rclone_bin, m.spec, log_file=m.log_file, cache_dir=m.cache_dir,
                             rc_socket=m.rc_socket, implementation=self.spec.implementation,
                             # a remount: a file may land in the bare folder as it starts
                             global_flags=[*self.spec.flags, *(["--allow-non-empty"] if m.mid in self._strays
                                                                else [])],
                             ca_file=self.spec.sts.ca_file,
                             log_level=self.log_level)
        if self._setpriv:
            argv = [self._setpriv, "--pdeathsig", "TERM", "--", *argv]
        self._log_mark(m, "starting rclone")
        self._logs[m.mid].skip_to_end()
        with open(m.log_file, "ab") as log_fd:
            m.proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=log_fd, start_new_session=True, cwd="/",
                                      preexec_fn=None if self._setpriv else die_with_parent)
        m.started_at = time.time()
        m.state = "starting"
        m.probe = None

    def _log_mark(self, m: Mount, what: str) -> None:
        with contextlib.suppress(OSError), open(m.log_file, "a") as f:
            f.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} STS-WIRE : {what}\n")

    def wait_ready(self, ms: list[Mount]) -> None:
        """Ready = the kernel shows the mount and listing its root answers."""
        deadline = time.monotonic() + self.ready_timeout
        pending = {m.mid: m for m in ms}
        listing: dict[str, fs.Probe] = {}
        last_note = time.monotonic()
        while pending and time.monotonic() < deadline and not self.should_stop():
            if self.creds.keys is not None:
                self.creds.tick(time.time())     # renewals go on while mounts (re)start
            table = fs.mount_table()
            for mid, m in list(pending.items()):
                code = m.proc.poll() if m.proc else -1
                if code is not None:
                    self._rclone_failed(m, code)
                    del pending[mid]
                    continue
                if mid not in listing and m.path in table and table[m.path].fstype.startswith("fuse"):
                    listing[mid] = fs.Probe(fs.list_fn(m.path), self.ready_timeout).start()
                p = listing.get(mid)
                if p is not None and p.done.is_set():
                    if p.error is None:
                        m.state, m.ready_at = "ready", time.time()
                        m.next_probe = time.time() + self.health_interval
                        m.last_error = None
                        self._clear_note(m)
                        log.info("%s ready (%s)", m.path, m.spec.remote)
                    else:
                        self._fail(m, StsWireError(f"{m.path} is mounted but cannot be listed: "
                                                   f"{p.error.strerror or p.error}", Exit.MOUNT_FAILED), time.time())
                        self._kill(m)
                    del pending[mid]
            if pending and time.monotonic() - last_note > 5:
                self.progress(f"waiting for {', '.join(m.path for m in pending.values())} to be ready...")
                last_note = time.monotonic()
            time.sleep(0.01)
        if self.should_stop():
            return
        for m in pending.values():
            self._kill(m)
            self._fail(m, StsWireError(f"{m.path} was not ready after {self.ready_timeout:.0f} s "
                                       f"({rc.explain(None, self._log_tail(m))})", Exit.MOUNT_FAILED), time.time())

    def _log_tail(self, m: Mount, n: int = 4000) -> str:
        try:
            with open(m.log_file, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _rclone_failed(self, m: Mount, code: int) -> None:
        tail = self._log_tail(m)
        why = rc.explain(code, tail)
        lines = rc.error_lines(tail, 2)
        detail = f" (rclone: {lines[-1].split(' : ', 1)[-1][:200]})" if lines else ""
        ecode = Exit.FUSE if "FUSE" in why or "fusermount" in why else (
            Exit.MOUNT_PATH if "folder" in why else Exit.MOUNT_FAILED)
        self._fail(m, StsWireError(f"mounting {m.spec.remote} on {m.path} failed: {why}{detail}", ecode),
                   time.time())
        fs.lazy_unmount(m.path)

    def _fail(self, m: Mount, err: StsWireError, now: float) -> None:
        m.state = "failed"
        m.last_error = err
        delay = backoff(m.failures, 1.0, self.max_backoff)
        m.failures += 1
        m.next_attempt = now + delay
        log.error("%s: %s", m.path, err.message)
        self._write_note(m, delay)

    def _write_note(self, m: Mount, retry_in: float) -> None:
        notes.put(m, notes.failure_text(m, retry_in, self.runtime.log_dir))

    def _renewal_note(self, err: StsWireError) -> None:
        """The token can no longer be renewed (the user must log in again): say so beside every
        mounted folder while the keys still work, so that the user learns it before files fail."""
        for m in self.mounts:
            if m.state == "ready":
                notes.put(m, notes.renewal_text(m, err, self.creds.keys))
                m.renewal_note = True

    def _clear_note(self, m: Mount) -> None:
        notes.clear(m)

    # ---- running ----
    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        had_keys = self.creds.keys is not None
        self.creds.tick(now)
        err = self.creds.last_error
        if err is not None and had_keys and self.creds.worth_telling(now):
            if err is not self._noted_error:
                self._renewal_note(err)
                self._noted_error = err
        elif self._noted_error is not None and err is None:
            self._noted_error = None
            for m in self.mounts:
                if m.renewal_note:
                    m.renewal_note = False
                    self._clear_note(m)
        if not had_keys and self.creds.keys is not None:
            log.info("keys obtained after an earlier failure; mounting")
            for m in self.mounts:
                m.failures, m.next_attempt = 0, now
        due = []
        for m in self.mounts:
            if m.proc is not None:
                self._remove_incomplete(m)
            if m.state == "ready":
                self._health(m, now)
            if m.state == "failed" and now >= m.next_attempt and self.creds.keys is not None \
                    and self.fuse_error is None:
                due.append(m)
        if due:
            for m in due:
                m.remounts += 1
                log.info("remounting %s (attempt %d)", m.path, m.failures)
                self._cleanup_proc(m)
                self._strays.setdefault(m.mid, Strays(m.path)).before_mount()
            self._start_mounts(due)
            self.wait_ready([m for m in due if m.state == "starting"])
            for m in due:
                if m.state == "ready":
                    repairs.adopt_strays(m, self._strays.pop(m.mid), self.ready_timeout)
            self._after_start(due)
            self.write_state(force=True)
        self.write_state()

    def _health(self, m: Mount, now: float) -> None:
        code = m.proc.poll() if m.proc else -1
        if code is not None:
            why = rc.explain(code, self._log_tail(m))
            self._fail(m, StsWireError(f"rclone for {m.path} stopped: {why}", Exit.MOUNT_FAILED), now)
            m.next_attempt = now if m.failures <= 1 else m.next_attempt
            # The dead mount stays until the remount (see _dead).
            return
        if m.probe is not None:
            if m.probe.done.is_set():
                p, m.probe = m.probe, None
                if p.error is not None:
                    self._dead(m, f"the mount does not answer ({os.strerror(p.error.errno or errno.EIO)})", now)
                    return
                m.next_probe = now + self.health_interval
                # Served well for a while: the next failure is not a crash loop, remount at once.
                if m.ready_at and now - m.ready_at > HEALTHY_AFTER:
                    m.failures = 0
            elif now - m.probe_started > self.health_timeout:
                m.probe = None
                self._dead(m, f"the mount hung (no answer within {self.health_timeout:.0f} s)", now)
            return
        if now >= m.next_probe:
            m.probe = fs.Probe(fs.health_fn(m.path), self.health_timeout).start()
            m.probe_started = now

    def _remove_incomplete(self, m: Mount) -> None:
        lines = self._logs[m.mid].new_lines()
        if lines:
            repairs.remove_incomplete(m, self._no_space[m.mid].feed(lines), self.health_timeout)

    def _dead(self, m: Mount, why: str, now: float) -> None:
        # Kill, but leave the dead mount in place until the remount: until then every access
        # fails (ENOTCONN) instead of landing, unnoticed, in the bare folder beneath it.
        self._kill(m)
        self._fail(m, StsWireError(f"{m.path}: {why}; remounting", Exit.MOUNT_FAILED), now)
        if m.failures <= 1:
            m.next_attempt = now

    def _kill(self, m: Mount) -> None:
        if m.proc and m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.proc.wait(timeout=5)

    def _cleanup_proc(self, m: Mount) -> None:
        self._kill(m)
        fs.lazy_unmount(m.path)

    # ---- status ----
    def write_state(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_state < 2:
            return
        self._last_state = now
        state = {"pid": os.getpid(), "started": iso(self.started), "updated": iso(now),
                 "user": self.spec.user, "sts_endpoint": self.spec.sts.endpoint,
                 "role_arn": self.spec.sts.role_arn, **self.creds.state(),
                 "mounts": [m.state_dict() for m in self.mounts], "log_dir": str(self.runtime.log_dir)}
        with contextlib.suppress(OSError):
            self.runtime.write_state(state)

    # ---- stop ----
    def flush(self, timeout: float | None = None) -> None:
        """Wait until rclone has uploaded what was written (see sts_wire.uploads)."""
        wait_for_uploads(self.mounts, self.flush_timeout if timeout is None else timeout, self.progress)

    def stop(self, flush: bool = True) -> None:
        """Flush uploads, unmount (lazily when busy), end every rclone. Leaves nothing behind."""
        if flush:
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - unmounting matters more
                log.exception("flush failed")
        for m in self.mounts:
            if m.proc is not None and fs.ours(m.path) is not None:
                ok, how = fs.unmount(m.path)
                (log.info if ok else log.error)("%s: %s", m.path, how)
            if m.proc and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(timeout=5)
            m.state = "stopped"
            self._clear_note(m)
            with contextlib.suppress(OSError):
                m.rc_socket.unlink()
        self.write_state(force=True)
