"""One supervised mount: its rclone process, state, failures and note file; and rclone's remote
control over the mount's private unix socket."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import mounts as fs
from .errors import StsWireError
from .schedule import iso
from .spec import MountSpec


@dataclass
class Mount:
    spec: MountSpec
    mid: str
    log_file: Path
    cache_dir: Path
    rc_socket: Path
    state: str = "pending"          # pending, starting, ready, failed, stopped
    proc: subprocess.Popen | None = None
    started_at: float | None = None
    ready_at: float | None = None
    failures: int = 0
    remounts: int = 0
    next_attempt: float = 0.0
    last_error: StsWireError | None = None
    probe: fs.Probe | None = None
    probe_started: float = 0.0
    next_probe: float = 0.0
    history: list[str] = field(default_factory=list)
    renewal_note: bool = False      # its note says that renewals fail (the mount itself works)

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def note_file(self) -> Path:
        p = Path(self.path)
        return p.parent / f"{p.name}.sts-wire-error.txt"

    def state_dict(self) -> dict:
        return {"path": self.path, "remote": self.spec.remote, "read_only": self.spec.read_only,
                "cache_mode": self.spec.cache_mode, "state": self.state,
                "rclone_pid": self.proc.pid if self.proc and self.proc.poll() is None else None,
                "ready_since": iso(self.ready_at), "remounts": self.remounts,
                "last_error": self.last_error.message if self.last_error else None,
                "log": str(self.log_file)}


def rc_call(sock: Path, method: str, params: dict | None = None, timeout: float = 5.0) -> dict:
    """Call rclone's remote control over its private unix socket."""

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(sock))

    c = Conn("localhost", timeout=timeout)
    try:
        c.request("POST", "/" + method, body=json.dumps(params or {}), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return json.loads(r.read() or b"{}")
    finally:
        c.close()
