"""LoginNode: what SlurmChild does through the login node when `login_host` is set.

- run(): one Slurm command over ssh (batchspawner's run_command does the running; the command
  is exec_prefix + batch_*_cmd), with a certificate made for it and deleted after it, an
  environment holding only what the job must get, and ssh's own failures in plain words;
- reach(): where the hub connects to the server: directly when the node's port answers from
  the hub, else through `ssh -N -L` via the login node, which a task restarts when it dies (same
  local port, so the proxy's route stays right) until close() ends it by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

from .certs import credentials
from .settings import ALIAS, NOT_SENT, LoginHost, explain

log = logging.getLogger(__name__)
TUNNEL_READY_TIMEOUT = 30.0
SUPERVISE_EVERY = 1.0


class LoginNodeError(RuntimeError):
    """ssh could not reach the login node, or the node refused the hub; the message says which."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LoginNode:
    def __init__(self, login: LoginHost, account: str, name: str = ""):
        self.login, self.account, self.name = login, account, name or account
        self.tunnel_port = 0          # the hub's end of the tunnel, 127.0.0.1:<port>
        self.remote: tuple[str, int] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self.restarts = 0

    # --- Slurm commands -----------------------------------------------------------------------
    def command_env(self, env: dict | None) -> dict[str, str]:
        """ssh's environment: the job's variables (sent with SendEnv) and a plain PATH. Nothing
        else of the hub's environment (its crypt key, client secret) reaches ssh."""
        out = {k: v for k, v in (env or {}).items() if k not in NOT_SENT}
        out["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        return out

    async def run(self, runner, cmd: str, input: str | None = None, env: dict | None = None) -> str:
        """`runner` is batchspawner's run_command; the command names $JHUB_CLOUD_SSH_DIR."""
        env = self.command_env(env)
        async with credentials(self.login, self.account, send_env=env) as folder:
            try:
                return await runner(cmd, input=input, env={**env, "JHUB_CLOUD_SSH_DIR": str(folder)})
            except RuntimeError as e:
                message = explain(str(e), self.login, self.account)
                if message:
                    raise LoginNodeError(message) from None
                raise

    # --- reaching the server ----------------------------------------------------------------
    async def reach(self, host: str, port: int) -> tuple[str, int]:
        """Where the hub connects to a server at host:port (as the login node names it)."""
        self.remote = (host, port)
        if self.login.tunnel == "never" or (
                self.login.tunnel == "auto" and await asyncio.to_thread(_answers, host, port)):
            return host, port
        await self.open_tunnel()
        return "127.0.0.1", self.tunnel_port

    async def open_tunnel(self) -> None:
        self.tunnel_port = self.tunnel_port or _free_port()
        await self._start_tunnel()
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.ensure_future(self._supervise())

    async def _start_tunnel(self) -> None:
        host, port = self.remote
        async with credentials(self.login, self.account, forwarding=True) as folder:
            argv = ["ssh", "-F", str(folder / "config"), "-N",
                    "-L", f"127.0.0.1:{self.tunnel_port}:{host}:{port}", ALIAS]
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                start_new_session=True)  # the hub's Ctrl-C is not the tunnel's: close() ends it
            # Local forwards are set up after authentication: once the port answers, ssh has
            # read its key and certificate, and the folder may go.
            deadline = time.monotonic() + TUNNEL_READY_TIMEOUT
            while not await asyncio.to_thread(_answers, "127.0.0.1", self.tunnel_port, 1.0):
                if self._proc.returncode is not None or time.monotonic() > deadline:
                    err = await self._tunnel_error()
                    raise LoginNodeError(explain(err, self.login, self.account)
                                         or f"the SSH tunnel via {self.login.host} did not open: {err}")
                await asyncio.sleep(0.1)
        log.info("SSH tunnel for %s: 127.0.0.1:%s -> %s:%s via %s (pid %s)", self.name, self.tunnel_port,
                 host, port, self.login.host, self._proc.pid)

    async def _tunnel_error(self) -> str:
        proc = self._proc
        if proc.returncode is None:
            self._kill(proc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
        return err or f"ssh exited with {proc.returncode}"

    async def _supervise(self) -> None:
        """Reopen the tunnel when its ssh dies (network break, login node restart)."""
        while self.remote is not None:
            await asyncio.sleep(SUPERVISE_EVERY)
            proc = self._proc
            if self.remote is None or proc is None or proc.returncode is None:
                continue
            log.warning("SSH tunnel for %s ended (exit %s); reopening", self.name, proc.returncode)
            try:
                await self._start_tunnel()
                self.restarts += 1
            except Exception as e:  # noqa: BLE001 (keep trying: the server may still run)
                log.warning("SSH tunnel for %s cannot be reopened yet: %s", self.name, e)

    @property
    def tunnel_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @staticmethod
    def _kill(proc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)

    async def close(self) -> None:
        """End the tunnel (by its PID) and its supervisor; nothing of it is left."""
        self.remote = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            self._kill(proc)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        self.tunnel_port = 0


def end_old_tunnel(pid: int | None, port: int) -> None:
    """After a hub restart: end the previous hub's tunnel to this server, if it is still there
    (checked to be that ssh by its command line, so a reused PID is left alone)."""
    if not pid:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return
    if argv and os.path.basename(argv[0]) == b"ssh" and f"127.0.0.1:{port}:".encode() in b" ".join(argv):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
