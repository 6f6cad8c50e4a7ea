"""sts-wire command line: the options of mount, run, check and status (each command is a
module in sts_wire.commands).

Exit codes: see sts_wire.errors.Exit and docs/sts-wire.md. ``run`` exits with CMD's status.
"""

from __future__ import annotations

import argparse
import sys

from . import spec as specmod
from .app import DEFAULT_ROOTS
from .errors import StsWireError


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
    # A hung mount is working again within interval + timeout + ~1 s: under 10 s by default.
    g.add_argument("--health-interval", type=float, default=1.0, metavar="S",
                   help="seconds between health checks of each mount (default: 1)")
    g.add_argument("--health-timeout", type=float, default=4.0, metavar="S",
                   help="a mount that does not answer within this many seconds is hung and is "
                        "remounted (default: 4)")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "mount":
            from .commands.mount import cmd_mount

            return cmd_mount(args)
        if args.command == "run":
            from .commands.run import cmd_run

            return cmd_run(args)
        if args.command == "check":
            from .commands.check import cmd_check

            return cmd_check(args)
        from .commands.status import cmd_status

        return cmd_status(args)
    except StsWireError as e:
        print(f"sts-wire: {e}", file=sys.stderr)
        return int(e.code)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
