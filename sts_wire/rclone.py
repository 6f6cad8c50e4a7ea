"""rclone: configuration text, mount arguments, environment, and exit codes in plain words.

Pure functions (no I/O) used by the supervisor. How keys reach rclone without ever being in its
arguments or environment: the rclone remote has ``env_auth = true`` and a profile whose
``credential_process`` is ``cat`` of a 0600 JSON file that sts-wire rewrites atomically on every
renewal. The ``Expiration`` written there is sts-wire's own renewal deadline, a little before the
keys really expire, so the AWS SDK inside rclone asks for them again only after sts-wire has
renewed them, and requests signed at that moment are still valid when they arrive.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .spec import MountSpec, StsSpec

REMOTE = "stswire"
PROFILE = "sts-wire"

# What every mount gets (the spec's flags come after and may override the tunables). Chosen by
# benchmarks/sts_wire_tune.py (1 GiB, medians of alternating rounds, see docs/sts-wire.md).
BASE_FLAGS: tuple[str, ...] = (
    "--use-server-modtime",        # ls -l of 5,000 objects: 10 s without, 0.7 s with
    "--s3-no-check-bucket",        # never try to create a bucket the keys may not create
    "--dir-cache-time", "10s",     # other writers' objects show up within 10 s
    "--vfs-write-back", "100ms",   # upload right after close: what a notebook saves is in S3
                                   # at once (the default 5 s cost a quarter of the write speed);
                                   # not 0s: rclone then uploads inside the release, and a failed
                                   # upload (keys expired in an IdP outage) is never tried again
    "--no-checksum",               # no MD5 over every byte read: reads 0.6x -> 1.2x boto3; the S3
                                   # server still checks the Content-MD5 sent with each part
    "--s3-upload-concurrency", "4",
    "--s3-chunk-size", "16M",
    "--s3-disable-checksum",       # no whole-file MD5 before an upload (a second full read of the
                                   # cached file): writes 0.63x -> 0.74x boto3; each part still
                                   # carries its Content-MD5
)


def config_text(sts: StsSpec) -> str:
    """The rclone config: one S3 remote that takes its keys from the SDK's credential chain."""
    lines = [
        f"[{REMOTE}]",
        "type = s3",
        f"provider = {sts.provider}",
        "env_auth = true",
        f"profile = {PROFILE}",
        f"region = {sts.region}",
        f"endpoint = {sts.s3_url}",
    ]
    if sts.provider in ("Ceph", "SeaweedFS", "Minio", "Other"):
        lines.append("force_path_style = true")
    return "\n".join(lines) + "\n"


def aws_config_text(keys_file: Path) -> str:
    """The AWS shared config that rclone's SDK reads: a profile whose keys come from our file."""
    return (f"[profile {PROFILE}]\n"
            f"credential_process = /bin/cat {shlex.quote(str(keys_file))}\n")


def environment(base: Mapping[str, str], rclone_config: Path, aws_config: Path,
                empty_file: Path) -> dict[str, str]:
    """rclone's environment: an allow-list of the caller's plain settings plus pointers to our
    files. No AWS_* from the caller (static keys there would win over ours), no tokens."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    env = {k: base[k] for k in keep if k in base}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "RCLONE_CONFIG": str(rclone_config),
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty_file),
        "AWS_PROFILE": PROFILE,
        "AWS_EC2_METADATA_DISABLED": "true",   # never wait for an instance metadata service
        "AWS_SDK_LOAD_CONFIG": "1",
    })
    return env


@dataclass(frozen=True)
class MountPlan:
    """Everything needed to start one rclone mount."""

    mount: MountSpec
    argv: tuple[str, ...]
    log_file: Path
    cache_dir: Path
    rc_socket: Path


def remote_path(m: MountSpec) -> str:
    return f"{REMOTE}:{m.bucket}" + (f"/{m.prefix}" if m.prefix else "")


def mount_argv(rclone: str, m: MountSpec, *, log_file: Path, cache_dir: Path, rc_socket: Path,
               implementation: str = "mount2", global_flags: Sequence[str] = (),
               ca_file: str | None = None, log_level: str = "INFO",
               log_max_size: str = "5M", log_backups: int = 3) -> list[str]:
    argv = [rclone, implementation, remote_path(m), m.path,
            "--cache-dir", str(cache_dir),
            "--vfs-cache-mode", m.cache_mode,
            "--log-file", str(log_file), "--log-level", log_level,
            "--log-file-max-size", log_max_size, "--log-file-max-backups", str(log_backups),
            "--rc", "--rc-addr", f"unix://{rc_socket}", "--rc-no-auth",
            "--devname", f"sts-wire:{m.remote}",
            *BASE_FLAGS]
    if m.read_only:
        argv.append("--read-only")
    if ca_file:
        argv += ["--ca-cert", ca_file]
    argv += list(global_flags)
    argv += list(m.flags)
    return argv


# --- exit codes and log lines in plain words ---------------------------------------------------
EXIT_MEANING = {
    0: "rclone stopped normally",
    1: "rclone refused its command line (syntax or usage error)",
    2: "rclone stopped with an error it did not classify",
    3: "the bucket or folder was not found",
    4: "a file was not found",
    5: "a temporary error (network or server): it may work on a retry",
    6: "a less serious error that retrying will not fix",
    7: "a fatal error (account suspended, quota, permission)",
    8: "the transfer limit was exceeded",
    9: "no files were transferred",
    10: "the time limit was exceeded",
}

# (pattern in rclone's log or stderr, plain explanation): the first match wins.
LOG_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"fusermount3?: .*not found|exec: \"fusermount3?\": executable file not found",
     "fusermount3 is missing: install the fuse3 package"),
    (r"/dev/fuse.*(no such file|not found)|failed to open /dev/fuse|fuse: device not found",
     "FUSE is not available here: /dev/fuse is missing or not usable (containers need "
     "--device /dev/fuse --cap-add SYS_ADMIN)"),
    (r"[Dd]irectory (is )?(already )?mounted|mountpoint .* is already mounted|already mounted",
     "the folder is already mounted (another sts-wire or rclone?)"),
    (r"directory (is )?not empty|mountpoint is not empty|not empty",
     "the folder is not empty: rclone will not mount over existing files"),
    (r"[Pp]ermission denied.*(mount|fuse)|operation not permitted.*mount|fusermount3?: .*permitted",
     "the system refused the mount: FUSE is not permitted for this user or container"),
    (r"InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken",
     "the S3 server refused the keys (expired or invalid): renewal failed?"),
    (r"AccessDenied|403 Forbidden|status code: 403",
     "the S3 server denied access to this bucket for these keys"),
    (r"NoSuchBucket|directory not found",
     "the bucket does not exist"),
    (r"connection refused|no such host|i/o timeout|dial tcp|context deadline exceeded",
     "the S3 server cannot be reached"),
    (r"x509: |certificate signed by unknown authority|tls: ",
     "TLS to the S3 server failed: give its CA with sts.ca_file"),
    (r"failed to (load|read) .*credential|failed to refresh cached credentials|credential_process",
     "rclone could not read its keys from sts-wire"),
)


def explain(code: int | None, log_tail: str = "") -> str:
    """Turn an rclone exit code (None: killed or still running) and its last log lines into
    one plain sentence."""
    for pattern, text in LOG_PATTERNS:
        if re.search(pattern, log_tail, re.IGNORECASE):
            return text
    if code is None:
        return "rclone stopped answering"
    if code < 0:
        return f"rclone was killed by signal {-code}"
    return EXIT_MEANING.get(code, f"rclone exited with code {code}")


def error_lines(log_text: str, limit: int = 5) -> list[str]:
    """The last ERROR/CRITICAL lines of an rclone log, for messages and note files."""
    lines = [ln for ln in log_text.splitlines() if " ERROR " in ln or "CRITICAL" in ln or "Fatal" in ln]
    return lines[-limit:]
