"""Helpers for the sts-wire tests: write a spec, start sts-wire as a real process, wait for its
mounts, collect what a secret scan must look at, and leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.testbed.fixtures import unmount_all_under
from tests.testbed.paths import VENV_BIN
from tests.testbed.procs import pid_alive, stop_pid

STS_WIRE = str(VENV_BIN / "sts-wire")
PYTHON = str(VENV_BIN / "python")
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def fuse_mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        target = parts[1].replace("\\040", " ")
        if target.startswith(str(root) + "/") and parts[2].startswith("fuse"):
            out.append(target)
    return out


def wait_until(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = check()
            if r:
                return r
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last = e
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


def children_of(pid: int) -> list[int]:
    """All descendants of pid (from /proc), depth first."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Secrets:
    """Every secret a test knows of, and everything that must not contain one."""

    values: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)

    def add(self, *vals: str | None) -> None:
        for v in vals:
            if v and len(v) >= 8:
                self.values.add(v)

    def add_keys_file(self, path: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            k = json.loads(path.read_text())
            self.add(k.get("SecretAccessKey"), k.get("SessionToken"))

    def look_at(self, name: str, text: str) -> None:
        self.texts[name] = self.texts.get(name, "") + text

    def snapshot_processes(self, root_pid: int, label: str) -> None:
        """`ps` of the whole machine plus command lines and environments of our process tree."""
        ps = subprocess.run(["ps", "-eo", "pid,ppid,args", "-ww"], capture_output=True, text=True).stdout
        self.look_at(f"ps {label}", ps)
        for pid in [root_pid, *children_of(root_pid)]:
            for what in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    raw = Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b"\n")
                    self.look_at(f"/proc/{pid}/{what} {label}", raw.decode(errors="replace"))

    def look_at_files(self, folder: Path, label: str = "") -> None:
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file() and not f.name.endswith((".json.tmp",)) and f.name != "keys.json":
                with contextlib.suppress(OSError):
                    self.look_at(f"{label}{f}", f.read_text(errors="replace"))

    def leaks(self) -> list[str]:
        found = []
        for name, text in self.texts.items():
            for v in self.values:
                if v in text:
                    found.append(f"{name}: contains a secret ({v[:6]}...)")
            m = JWT_RE.search(text)
            if m:
                found.append(f"{name}: contains a JWT ({m.group(0)[:12]}...)")
        return found


class Wire:
    """One sts-wire process of a test, with its own runtime, log, cache and mount folders."""

    def __init__(self, tmp: Path, name: str = "w"):
        self.tmp = Path(tmp)
        self.root = self.tmp / "s3"              # allowed root for mounts
        self.runtime = self.tmp / f"{name}-run"
        self.logs = self.tmp / f"{name}-logs"
        self.cache = self.tmp / f"{name}-cache"
        self.out = self.tmp / f"{name}.out"
        self.err = self.tmp / f"{name}.err"
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)

    def env(self, extra: dict | None = None) -> dict:
        env = dict(os.environ)
        env["XDG_CACHE_HOME"] = str(self.cache)
        env.pop("JUPYTERHUB_USER", None)
        env.update(extra or {})
        return env

    def common(self) -> list[str]:
        return ["--allowed-root", str(self.root), "--runtime-dir", str(self.runtime), "--log-dir", str(self.logs)]

    def start(self, command: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        argv = [STS_WIRE, command, *args]
        if "--" in argv:
            i = argv.index("--")
            argv[i:i] = self.common()
        else:
            argv += self.common()
        self.proc = subprocess.Popen(argv, stdout=open(self.out, "ab"), stderr=open(self.err, "ab"),  # noqa: SIM115
                                     env=self.env(env), stdin=subprocess.DEVNULL, start_new_session=True)
        return self.proc

    def run(self, command: str, args: list[str], env: dict | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        argv = [STS_WIRE, command, *args]
        if "--" in argv:
            i = argv.index("--")
            argv[i:i] = self.common()
        elif command != "status":
            argv += self.common()
        return subprocess.run(argv, capture_output=True, text=True, env=self.env(env), timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def wait_mounted(self, paths: list[Path], timeout: float = 30) -> None:
        def ok():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"sts-wire exited {self.proc.returncode}: {self.stderr()[-2000:]}")
            mounted = set(fuse_mounts_under(self.root))
            return all(str(p) in mounted for p in paths)
        wait_until(ok, timeout, f"mounts {[str(p) for p in paths]}", 0.05)

    def status(self) -> dict:
        r = subprocess.run([STS_WIRE, "status", "--json", "--runtime-dir", str(self.runtime)],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout)

    def instance(self) -> dict:
        inst = self.status()["instances"]
        assert len(inst) == 1, inst
        return inst[0]

    def keys_file(self) -> Path:
        return self.runtime / str(self.proc.pid) / "keys.json"

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def rclone_pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [p for p in children_of(self.proc.pid)
                if "rclone" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace").split("\0")[0]
                or b"rclone" in Path(f"/proc/{p}/cmdline").read_bytes()[:200]]

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Stop what is left of this sts-wire (by PID, its process group) and its mounts."""
        if self.proc is not None:
            kids = children_of(self.proc.pid)
            if self.proc.poll() is None:
                stop_pid(self.proc.pid, timeout=30, group=True)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
            for k in kids:
                if pid_alive(k):
                    stop_pid(k, timeout=5)
        unmount_all_under(self.root)


def write_spec(path: Path, s3, mounts: list[dict], token: dict, role_arn: str | None = None, **sts) -> Path:
    doc = {"token": token,
           "sts": {"endpoint": s3.endpoint, "region": s3.region, "provider": s3.rclone_provider, **sts},
           "mounts": mounts}
    if role_arn:
        doc["sts"]["role_arn"] = role_arn
    path.write_text(yaml.safe_dump(doc))
    return path


def refresh_token_setup(idp, user: str, folder: Path) -> tuple[dict, dict]:
    """Log in as ``user`` with the confidential client sts-wire; return the token section of a
    spec (refresh grant, client_secret_post, secret in a 0600 file) and the login response."""
    folder.mkdir(parents=True, exist_ok=True)
    login = idp.login(user, client_id="sts-wire")
    rt = folder / f"{user}.refresh"
    rt.write_text(login["refresh_token"])
    rt.chmod(0o600)
    sec = folder / "client.secret"
    sec.write_text("sts-wire-secret\n")
    sec.chmod(0o600)
    token = {"source": "refresh", "issuer": idp.issuer, "client_id": "sts-wire", "client_auth": "post",
             "client_secret_file": str(sec), "refresh_token_file": str(rt), "ca_file": str(idp.pki.ca_cert),
             "scope": "openid profile groups offline_access"}
    return token, login
