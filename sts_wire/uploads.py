"""Waiting, at exit, until rclone has uploaded what was written through the mounts (rclone's
remote control: vfs/stats), before they are unmounted."""

from __future__ import annotations

import http.client
import logging
import time

from .mountstate import Mount, rc_call

log = logging.getLogger("sts_wire")

FLUSH_MAX_UNANSWERED = 5     # vfs/stats calls in a row without an answer before a mount is given up on
FLUSH_SETTLE = 0.5           # seconds "no upload pending" must hold before unmounting


def wait_for_uploads(mounts: list[Mount], timeout: float, progress) -> None:
    """Wait until rclone has uploaded what was written (vfs/stats), with progress messages.
    A mount whose rclone does not answer (a busy machine) is asked again, not taken as done:
    only after several failures in a row is it given up on."""
    deadline = time.monotonic() + timeout
    last_note = 0.0
    unanswered: dict[str, int] = {}
    # A file closed just before (CMD wrote it and ended) reaches rclone's upload queue only
    # when the kernel's asynchronous FUSE release is handled: "nothing pending" counts once
    # it has held for FLUSH_SETTLE seconds.
    quiet_since: float | None = None
    while True:
        pending: dict[str, int | str] = {}
        asked = False
        for m in mounts:
            if m.state != "ready" or not m.proc or m.proc.poll() is not None or m.spec.read_only:
                continue
            if unanswered.get(m.path, 0) >= FLUSH_MAX_UNANSWERED:
                continue
            try:
                st = rc_call(m.rc_socket, "vfs/stats", timeout=3).get("diskCache") or {}
            except (OSError, ValueError, http.client.HTTPException) as e:
                unanswered[m.path] = unanswered.get(m.path, 0) + 1
                if unanswered[m.path] >= FLUSH_MAX_UNANSWERED:
                    log.warning("%s: rclone does not say whether uploads are pending (%s); unmounting "
                                "anyway (pending files stay in its cache folder)", m.path, type(e).__name__)
                else:
                    pending[m.path] = "?"
                continue
            unanswered.pop(m.path, None)
            asked = True
            n = int(st.get("uploadsInProgress", 0)) + int(st.get("uploadsQueued", 0))
            if n:
                pending[m.path] = n
        if not pending and not asked:
            return
        if not pending:
            now = time.monotonic()
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= FLUSH_SETTLE or now > deadline:
                return
            time.sleep(0.1)
            continue
        quiet_since = None
        if time.monotonic() > deadline:
            log.warning("giving up waiting for uploads after %.0f s: %s (they stay in the cache "
                        "folder and are uploaded at the next start)", timeout, pending)
            return
        if time.monotonic() - last_note > 2:
            progress("waiting for uploads to finish: "
                          + ", ".join(f"{p} ({n} file{'s' if n != 1 else ''})" for p, n in pending.items()))
            last_note = time.monotonic()
        time.sleep(0.2)
