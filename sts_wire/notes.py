"""The note files sts-wire leaves beside a mount folder (``/s3/bob.sts-wire-error.txt``) to tell
the user, where they look, what failed and what to do. No secret is ever in them."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from .errors import StsWireError
from .mountstate import Mount
from .schedule import iso
from .sts import Keys

log = logging.getLogger("sts_wire")


def failure_text(m: Mount, retry_in: float, log_dir: Path) -> str:
    err = m.last_error
    return (f"sts-wire could not mount {m.spec.remote} on {m.path}\n"
            f"time: {iso(time.time())}\n"
            f"reason: {err.message if err else '?'}\n"
            + (f"what to do: {err.hint}\n" if err and err.hint else "")
            + f"sts-wire tries again in about {int(retry_in)} s; this note goes away once it works.\n"
            f"details: sts-wire status; logs in {log_dir}\n")


def renewal_text(m: Mount, err: StsWireError, keys: Keys | None) -> str:
    if keys is None:
        left = "until then"
    elif keys.expires_at > time.time():
        left = f"the S3 keys stay valid until {iso(keys.expires_at)}; after that"
    else:
        left = f"the S3 keys expired at {iso(keys.expires_at)}; until a renewal works,"
    return (f"sts-wire cannot renew access to {m.spec.remote} (mounted on {m.path})\n"
            f"time: {iso(time.time())}\n"
            f"reason: {err.message}\n"
            + (f"what to do: {err.hint}\n" if err.hint else "")
            + f"{left} files in this folder cannot be read or written.\n"
            "this note goes away once a renewal works again.\n")


def put(m: Mount, text: str) -> None:
    """Write the note atomically (a reader sees the old or the new one)."""
    try:
        tmp = m.note_file.with_name("." + m.note_file.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, m.note_file)
    except OSError as e:
        log.debug("cannot write note %s: %s", m.note_file, e)


def clear(m: Mount) -> None:
    with contextlib.suppress(OSError):
        m.note_file.unlink()
