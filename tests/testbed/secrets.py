"""A secret scanner for end-to-end runs: collect the secrets of a run, then search every place
where none may be, and check the files that must hold them.

Secrets of a run: every access, refresh and ID token of the hub's users (read from their
auth_state through the hub API, several times while the run goes on: each refresh issues new
ones), the hub's OAuth client secret and crypt key, and the S3 keys sts-wire got (the secret
access key and the session token; the access key id is not secret). Any JWT at all counts too
in the places that belong to the run (the IdP's access and ID tokens are JWTs), so a token the
scanner did not collect is still found.

Places: log files, process command lines and environments, `ps` snapshots, Slurm job scripts
and their output, `docker inspect`, Kubernetes objects, the hub's database (raw bytes: auth_state
is stored encrypted). A value may be allowed in one place only (a server's own
JUPYTERHUB_API_TOKEN in its own environment), never a secret from the list.

    scan = SecretScan()
    scan.collect_hub(hub, ["alice"])
    scan.collect_sts_keys(pid_of_sts_wire)
    scan.scan_logs(run_dir)
    scan.scan_processes(user_processes("alice"))
    assert scan.leaks == [], scan.leaks
    reliability.record("secrets.local", scan.summary())
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sqlite3
import stat
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from cryptography.fernet import Fernet

from .hub import CLIENT_SECRET

JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
TOKEN_KEYS = ("access_token", "refresh_token", "id_token")
SECRET_FILE_NAMES = ("keys.json", "token")  # in sts-wire's runtime folder
LOG_SUFFIXES = (".log", ".out", ".err", ".txt", ".jsonl")


@dataclass
class SecretScan:
    secrets: dict[bytes, str] = field(default_factory=dict)   # value -> what it is
    leaks: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)           # places scanned, by kind
    private_files: list[str] = field(default_factory=list)    # secret files checked (0600, owner)

    # --- what is secret --------------------------------------------------------------------------
    def add(self, kind: str, value: str | bytes | None) -> None:
        if value and len(value) >= 8:
            raw = value.encode() if isinstance(value, str) else value
            self.secrets.setdefault(raw, kind)

    def collect_hub(self, hub, users: list[str]) -> None:
        """The users' tokens from auth_state, the hub's client secret, crypt key, cookie secret
        and proxy token."""
        self.add("OAuth client secret", CLIENT_SECRET)
        self.add("crypt key", hub.crypt_key)
        with contextlib.suppress(OSError):
            self.add("cookie secret", (hub.dir / "data" / "jupyterhub_cookie_secret").read_text().strip())
        with contextlib.suppress(psutil.Error, TypeError):
            self.add("proxy auth token", psutil.Process(hub.daemon.pid).environ().get("CONFIGPROXY_AUTH_TOKEN"))
        for user in users:
            state = hub.user(user).get("auth_state") or {}
            for key in TOKEN_KEYS:
                self.add(f"{user}'s {key}", state.get(key))

    def collect_db(self, db: Path, crypt_key: str) -> dict[str, dict]:
        """Every user's tokens from the hub's database, auth_state decrypted with the hub's key
        (users the API was not asked about too); returns the decrypted states by user."""
        states = auth_states(db, crypt_key)
        for user, state in states.items():
            for key in TOKEN_KEYS:
                self.add(f"{user}'s {key}", state.get(key))
        return states

    def collect_sts_keys(self, pid: int) -> int:
        """The S3 keys of the sts-wire process `pid` (read through its own root, so that a
        container's files are found too). Returns how many key files were read."""
        n = 0
        for f in sts_wire_files(pid, "keys.json"):
            with contextlib.suppress(OSError, ValueError):
                keys = json.loads(f.read_text())
                self.add("S3 secret access key", keys.get("SecretAccessKey"))
                self.add("S3 session token", keys.get("SessionToken"))
                n += 1
        for f in sts_wire_files(pid, "token"):
            with contextlib.suppress(OSError):
                self.add("access token (sts-wire's copy)", f.read_text().strip())
        return n

    # --- where none may be -------------------------------------------------------------------------
    def scan_text(self, place: str, data: str | bytes, kind: str, jwts: bool = True,
                  allowed: tuple[str, ...] = ()) -> None:
        """Search one place. `jwts`: any JWT is a leak too (places of this run only: the machine
        is shared with other tests). `allowed`: values that may be here (the place's own token)."""
        raw = data.encode(errors="replace") if isinstance(data, str) else data
        for a in allowed:
            if a:
                raw = raw.replace(a.encode(), b"<allowed>")
        self.counts[kind] += 1
        for value, what in self.secrets.items():
            if value in raw:
                self.leaks.append(f"{place}: {what} in clear ({value[:6].decode(errors='replace')}...)")
        if jwts and (m := JWT_RE.search(raw)):
            self.leaks.append(f"{place}: a JWT in clear ({m.group(0)[:12].decode()}...)")

    def scan_file(self, path: Path, kind: str, jwts: bool = True) -> None:
        with contextlib.suppress(OSError):
            self.scan_text(str(path), Path(path).read_bytes(), kind, jwts)

    def scan_logs(self, folder: Path, jwts: bool = True) -> None:
        """Every log-like file below `folder` (the hub's, the services', sts-wire's and rclone's)."""
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file() and (f.suffix in LOG_SUFFIXES or ".log" in f.name) and f.name not in SECRET_FILE_NAMES:
                self.scan_file(f, "log file", jwts)

    def scan_sts_wire_folder(self, pid: int) -> list[Path]:
        """Everything in sts-wire's own runtime folder but its key and token files (state,
        rclone and AWS config, logs); returns the runtime bases, whose last-logs hold the logs
        after the stop."""
        for own in sts_wire_dirs(pid):
            self.scan_folder(own, "sts-wire runtime file")
        return [own.parent for own in sts_wire_dirs(pid)]

    def scan_folder(self, folder: Path, kind: str) -> None:
        """Every regular file below `folder` but sts-wire's key and token files."""
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file() and f.name not in SECRET_FILE_NAMES:
                self.scan_file(f, kind)

    def scan_ps(self, label: str) -> None:
        """`ps -eo args` of the whole machine (known secrets only: other tests run beside us)."""
        out = subprocess.run(["ps", "-eo", "pid,user,args", "-ww"], capture_output=True).stdout
        self.scan_text(f"ps -eo args ({label})", out, "ps snapshot", jwts=False)

    def scan_processes(self, procs: list[psutil.Process], label: str = "", jwts: bool = True,
                       allowed_env: tuple[str, ...] = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")) -> None:
        """Command line and /proc/<pid>/environ of each process; a process's own API token is allowed."""
        for p in procs:
            try:
                env_raw = Path(f"/proc/{p.pid}/environ").read_bytes()
                cmd_raw = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            except OSError:  # ended meanwhile
                continue
            env = dict(kv.split(b"=", 1) for kv in env_raw.split(b"\0") if b"=" in kv)
            own = tuple(env[k.encode()].decode(errors="replace") for k in allowed_env if k.encode() in env)
            self.scan_text(f"/proc/{p.pid}/environ {label}", env_raw, "process environment", jwts, own)
            self.scan_text(f"/proc/{p.pid}/cmdline {label}", cmd_raw, "process command line", jwts)

    def scan_db(self, db: Path) -> None:
        """The hub's sqlite database and its journals, byte for byte (auth_state is encrypted)."""
        for f in (db, *db.parent.glob(db.name + "-*")):
            if f.is_file():
                self.scan_file(f, "hub database")

    # --- files that hold them ----------------------------------------------------------------------
    def check_private(self, path: Path, uid: int) -> None:
        """A file holding a secret: mode 0600 and owned by `uid`."""
        st = os.stat(path)
        mode = stat.S_IMODE(st.st_mode)
        self.private_files.append(str(path))
        if mode != 0o600:
            self.leaks.append(f"{path}: holds a secret but its mode is {mode:o}, not 600")
        if st.st_uid != uid:
            self.leaks.append(f"{path}: holds a secret but belongs to uid {st.st_uid}, not {uid}")

    def check_sts_wire_files(self, pid: int) -> int:
        """sts-wire's keys and token files are 0600 and belong to the user sts-wire runs as."""
        uid = psutil.Process(pid).uids().real
        files = [*sts_wire_files(pid, "keys.json"), *sts_wire_files(pid, "token")]
        for f in files:
            self.check_private(f, uid)
        return len(files)

    def summary(self) -> str:
        kinds = Counter(self.secrets.values())
        places = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(self.counts.items()))
        files = f"; {len(self.private_files)} secret files 0600 and owned" if self.private_files else ""
        return (f"{len(self.secrets)} secrets ({len(kinds)} kinds) searched in {places}: "
                f"{len(self.leaks)} in clear{files}")


def auth_states(db: Path, crypt_key: str) -> dict[str, dict]:
    """The users' auth_state in a JupyterHub sqlite database, decrypted as JupyterHub does
    (jupyterhub/crypto.py: Fernet with the 32-byte key, JSON inside)."""
    fernet = Fernet(base64.urlsafe_b64encode(bytes.fromhex(crypt_key)))
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        rows = con.execute("SELECT name, encrypted_auth_state FROM users WHERE encrypted_auth_state IS NOT NULL")
        return {name: json.loads(fernet.decrypt(blob)) for name, blob in rows}


def sts_wire_bases(pid: int) -> list[Path]:
    """The runtime folders sts-wire (pid) may use (sts_wire/runtime.py), seen through the
    process's root (a container's files too); those that exist."""
    root = Path(f"/proc/{pid}/root")
    try:
        env = psutil.Process(pid).environ()
        uid = psutil.Process(pid).uids().real
    except psutil.Error:
        return []
    bases = {env.get("STS_WIRE_RUNTIME_DIR"), f"{env['XDG_RUNTIME_DIR']}/sts-wire" if env.get("XDG_RUNTIME_DIR")
             else None, f"/dev/shm/sts-wire-{uid}", f"{env.get('HOME', '/nonexistent')}/.cache/sts-wire/run"}
    return [root / b.lstrip("/") for b in sorted(filter(None, bases)) if (root / b.lstrip("/")).is_dir()]


def on_host(path: Path) -> Path:
    """/proc/<pid>/root/x -> /x: the same file once the process is gone (not in a container)."""
    parts = Path(path).parts
    return Path("/", *parts[4:]) if parts[:2] == ("/", "proc") and parts[3] == "root" else Path(path)


def sts_wire_dirs(pid: int) -> list[Path]:
    """sts-wire's own folder, named by its PID as it sees it (in a container: its namespace's)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    nspid = next(line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:"))
    return [base / nspid for base in sts_wire_bases(pid) if (base / nspid).is_dir()]


def sts_wire_files(pid: int, name: str) -> list[Path]:
    """`name` in sts-wire's own folder."""
    return [d / name for d in sts_wire_dirs(pid) if (d / name).is_file()]


def descendants(pid: int) -> list[psutil.Process]:
    """The process and everything below it (a container's processes, a job's)."""
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []
