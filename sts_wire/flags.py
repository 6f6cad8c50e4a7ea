"""Extra rclone flags a spec may give: an allow-list, each flag with the kind of value it takes,
and the reason for each flag that is refused. Pure."""

from __future__ import annotations

import re
from collections.abc import Sequence

# --- extra rclone flags: an allow-list, each with the kind of value it takes ----------------------
_SIZE = re.compile(r"^(off|-1|\d+(\.\d+)?([KMGTP]i?)?B?)$", re.IGNORECASE)
_DURATION = re.compile(r"^(off|\d+(\.\d+)?(ns|us|ms|s|m|h|d|w|M|y)?)+$")
_INT = re.compile(r"^\d{1,6}$")
_OCTAL = re.compile(r"^0?[0-7]{3,4}$")
_TRISTATE = re.compile(r"^(true|false)$", re.IGNORECASE)

ALLOWED_FLAGS: dict[str, str] = {
    # VFS behaviour and caching
    "--vfs-read-ahead": "size", "--vfs-read-chunk-size": "size", "--vfs-read-chunk-size-limit": "size",
    "--vfs-read-chunk-streams": "int", "--vfs-read-wait": "duration", "--vfs-write-wait": "duration",
    "--vfs-write-back": "duration", "--vfs-cache-max-age": "duration", "--vfs-cache-max-size": "size",
    "--vfs-cache-min-free-space": "size", "--vfs-cache-poll-interval": "duration",
    "--vfs-fast-fingerprint": "bool", "--vfs-refresh": "bool", "--vfs-case-insensitive": "bool",
    "--vfs-used-is-size": "bool", "--dir-cache-time": "duration", "--poll-interval": "duration",
    "--attr-timeout": "duration", "--buffer-size": "size", "--max-read-ahead": "size",
    "--async-read": "bool", "--no-checksum": "bool", "--no-modtime": "bool", "--no-seek": "bool",
    "--direct-io": "bool", "--write-back-cache": "bool", "--use-mmap": "bool",
    "--umask": "octal", "--dir-perms": "octal", "--file-perms": "octal",
    # transfers and S3
    "--transfers": "int", "--checkers": "int", "--multi-thread-streams": "int",
    "--low-level-retries": "int", "--retries": "int", "--contimeout": "duration", "--timeout": "duration",
    "--s3-upload-concurrency": "int", "--s3-chunk-size": "size", "--s3-upload-cutoff": "size",
    "--s3-copy-cutoff": "size", "--s3-disable-checksum": "bool", "--s3-no-head": "bool",
    "--s3-no-head-object": "bool", "--s3-list-chunk": "int", "--s3-list-version": "int",
    "--s3-use-multipart-etag": "tristate", "--s3-disable-http2": "bool",
    "--s3-use-unsigned-payload": "tristate",
}
_CHECK = {"size": _SIZE, "duration": _DURATION, "int": _INT, "octal": _OCTAL, "tristate": _TRISTATE}

# Flags that sts-wire sets itself or that would break its guarantees (keys in argv, other users
# reading the mount, a second config file, logs elsewhere, detaching from supervision...).
_WHY_REFUSED = {
    "--config": "sts-wire writes rclone's configuration itself",
    "--cache-dir": "sts-wire gives every mount its own cache folder",
    "--log-file": "sts-wire keeps rclone's logs (rotated) in its log folder",
    "--daemon": "sts-wire supervises rclone in the foreground",
    "--allow-other": "the mount would be readable by other users",
    "--allow-root": "the mount would be readable by root processes of others",
    "--rc": "sts-wire runs rclone's remote control on a private socket itself",
    "--use-server-modtime": "always set by sts-wire",
    "--read-only": "use `read_only: true`",
    "--vfs-cache-mode": "use `cache_mode:`",
}


def check_flags(flags: Sequence[str], where: str) -> list[str]:
    """Each flag must be on the allow-list and carry a value of the right kind."""
    problems = []
    i = 0
    flags = list(flags)
    while i < len(flags):
        raw = flags[i]
        name, eq, value = raw.partition("=")
        if not name.startswith("--"):
            problems.append(f"{where}[{i}]: {raw!r} is not a --flag")
            i += 1
            continue
        kind = ALLOWED_FLAGS.get(name)
        if kind is None:
            why = _WHY_REFUSED.get(name)
            problems.append(f"{where}[{i}]: {name} is not allowed"
                            + (f" ({why})" if why else " (not on the allow-list of rclone flags)"))
            i += 1
            continue
        if kind == "bool":
            if eq and value.lower() not in ("true", "false"):
                problems.append(f"{where}[{i}]: {name} takes true or false, not {value!r}")
            i += 1
            continue
        if not eq:
            if i + 1 >= len(flags):
                problems.append(f"{where}[{i}]: {name} needs a value")
                break
            value = flags[i + 1]
            i += 1
        if not _CHECK[kind].fullmatch(value):  # fullmatch: "$" would let a final newline pass
            want = "true or false" if kind == "tristate" else f"a {kind}"
            problems.append(f"{where}[{i}]: {name} needs {want}, not {value!r}")
        i += 1
    return problems
