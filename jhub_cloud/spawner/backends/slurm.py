"""SlurmChild: batchspawner.SlurmSpawner with the changes CloudSpawner needs.

- the job script gets only the validated req_* values and the shell-quoted command (never
  user_options, which batchspawner would merge in), and the hub's log never shows the job's
  environment (it holds the server's API token);
- a failing squeue/sudo is "unknown" (the job is kept), only a job Slurm no longer has, or one in
  a final state, is "gone": the hub never forgets a job that still runs;
- a job that ends while the server starts (before or after it got a node) fails the start at
  once, not at start_timeout;
- progress shows the job's state and Slurm's reason while it waits, then the node;
- poll answers why a job ended (cancelled, time limit, out of memory, ...) in words;
- ip and port are kept in the state, and get_url answers from them after a hub restart;
- the port comes through jhub_cloud.spawner.slurm_port (an int from the job's own token only);
- with `login_host` (a hub outside the cluster), every command runs on the login node over SSH
  and the server is reached directly or through a tunnel: jhub_cloud.spawner.ssh.
"""

from __future__ import annotations

import asyncio
import pwd
import re
import shlex

from batchspawner import JobStatus, SlurmSpawner
from batchspawner.batchspawner import format_template
from jupyterhub.utils import url_path_join
from traitlets import Dict, Unicode

from .. import slurm_port
from ..builders.slurm import NAME, PATH, TIME

# A job in one of these states still holds (or may again hold) resources: not gone.
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
           "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}
RUNNING = {"RUNNING"}
# How a final state reads in the reason the user sees.
ENDINGS = {"CANCELLED": "was cancelled (scancel)", "TIMEOUT": "reached its time limit",
           "OUT_OF_MEMORY": "ran out of memory (the profile's memory limit)",
           "NODE_FAIL": "ended because its node failed", "FAILED": "failed",
           "COMPLETED": "ended", "COMPLETING": "is ending", "PREEMPTED": "was preempted",
           "BOOT_FAIL": "could not boot its node", "DEADLINE": "reached its deadline"}
# Slurm's answer for a job it has forgotten (ended longer than MinJobAge ago).
FORGOTTEN = "Invalid job id specified"

_CHECKS = {
    "job_name": re.compile(r"^[a-z0-9-]+$"),
    "partition": NAME, "account": NAME, "runtime": TIME,
    "nprocs": re.compile(r"^[1-9][0-9]*$"),
    "memory": re.compile(r"^[1-9][0-9]*M$"),
    "gres": re.compile(r"^gpu(:[A-Za-z0-9_.-]+)?:[1-9][0-9]*$"),
    "homedir": PATH,
    "keepvars": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*$"),
    "srun": re.compile(r"^(srun)?$"),
}
_TEMPLATE_VARS = ("job_name", "partition", "account", "runtime", "nprocs", "memory", "gres",
                  "homedir", "keepvars", "srun")


class SlurmChild(SlurmSpawner):
    req_job_name = Unicode("", help="Slurm job name (--job-name).").tag(config=True)
    listen_ip = Unicode(
        "0.0.0.0",  # noqa: S104 (compute nodes: the hub connects from another machine)
        help="Address the server listens on in the job; 0.0.0.0 (all): the hub connects to the "
             "node's name, otherwise to this address.",
    ).tag(config=True)

    # State, node and reason in one call: '%r' is why a job waits (Resources, Priority, ...).
    batch_query_cmd = Unicode("squeue -h -j {job_id} -o '%T %B %r'").tag(config=True)
    state_exechost_re = Unicode(r"^\S+\s+(\S+)").tag(config=True)
    # Asked once, when a job has left squeue's default list: its final state while Slurm still
    # keeps it (MinJobAge), for the reason the user sees. A gate that refuses it costs only that.
    ended_query_cmd = Unicode(
        "squeue -h -t all -j {job_id} -o '%T %B %r'",
        help="Command that shows a job in any state (format: state, node, reason).",
    ).tag(config=True)

    login_host = Dict(
        help="backends.slurm.login_host (validated): run sbatch, squeue and scancel on this login "
             "node over SSH as the user (jhub_cloud.spawner.ssh). Empty: on the hub's machine.",
    ).tag(config=True)

    _query_error = Unicode("")
    _login = None
    _tunnel_state: dict | None = None

    @property
    def login(self):
        """The login node (jhub_cloud.spawner.ssh.login.LoginNode), or None: the hub submits."""
        if not self.login_host:
            return None
        if self._login is None:
            from ..ssh.login import LoginNode
            from ..ssh.settings import login_host

            settings = login_host(self.login_host)
            self._login = LoginNode(settings, settings.account(self.user.name), self._log_name)
        return self._login

    async def run_command(self, cmd, input=None, env=None):
        if self.login is not None:
            return await self.login.run(super().run_command, cmd, input=input, env=env)
        return await super().run_command(cmd, input=input, env=env)

    # --- the job script ---------------------------------------------------------------------
    def template_vars(self) -> dict:
        """The req_* values the template uses, each checked again; ValueError names a bad one."""
        subvars = self.get_req_subvars()
        out = {}
        for name in _TEMPLATE_VARS:
            value = subvars.get(name, "")
            if value and not _CHECKS[name].fullmatch(value):
                raise ValueError(f"Slurm job setting {name}={value!r} is not allowed in a job script")
            out[name] = value
        for name in ("job_name", "nprocs", "memory", "homedir", "keepvars"):
            if not out[name]:
                raise ValueError(f"Slurm job setting {name} is missing")
        return out

    def cmd_formatted_for_batch(self):
        # The wrapper may be several words (python -m ...), each checked by the builder.
        return shlex.join([*self.batchspawner_singleuser_cmd.split(), *self.cmd, *self.get_args()])

    async def _get_batch_script(self, **_merged):
        # batchspawner passes req_* merged with user_options: rebuild from checked values only.
        return format_template(self.batch_script, **self.template_vars(),
                               cmd=self.cmd_formatted_for_batch())

    def _command(self, template: str, **extra) -> str:
        subvars = {**self.get_req_subvars(), **extra}
        command = format_template(template, **subvars)
        if self.login is not None:  # one argument for ssh, parsed by the login node's shell
            command = shlex.quote(command)
        return " ".join((format_template(self.exec_prefix, **subvars), command))

    async def submit_batch_script(self):
        try:
            if self.login is None:  # over SSH the account is the cluster's, not the hub's
                pwd.getpwnam(self.user.name)
        except KeyError:
            raise RuntimeError(f"{self.user.name} has no account on the hub's machine: Slurm jobs run as "
                               "the user's own account, which the site must create first") from None
        script = await self._get_batch_script()
        cmd = self._command(self.batch_submit_cmd)
        self.log.info("Submitting Slurm job for %s: %s", self._log_name, cmd)
        self.log.debug("Job script:\n%s", script)
        out = await self.run_command(cmd, input=script, env=self.get_env())
        self.job_id = self.parse_job_id(out)
        return self.job_id

    # --- job state --------------------------------------------------------------------------
    @property
    def slurm_state(self) -> str:
        return self.job_status.split(None, 1)[0] if self.job_status else ""

    @property
    def slurm_reason(self) -> str:
        parts = self.job_status.split(None, 2)
        return parts[2] if len(parts) == 3 else ""

    async def query_job_status(self):
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        cmd = self._command(self.batch_query_cmd, job_id=self.job_id)
        try:
            out = await self.run_command(cmd)
        except Exception as e:  # noqa: BLE001 (any failure to ask is "unknown", never "gone")
            if FORGOTTEN in str(e):
                self.job_status = ""
                return JobStatus.NOTFOUND
            self._query_error = str(e) or type(e).__name__
            self.log.warning("Slurm job %s: cannot query it (%s); keeping it", self.job_id,
                             self._query_error)
            return JobStatus.UNKNOWN
        self._query_error = ""
        lines = out.strip().splitlines()
        self.job_status = lines[-1].strip() if lines else ""
        state = self.slurm_state
        if state in RUNNING:
            return JobStatus.RUNNING
        if state in WAITING:
            return JobStatus.PENDING
        # Empty (no longer listed) or a final state (COMPLETED, FAILED, CANCELLED, TIMEOUT,
        # OUT_OF_MEMORY, NODE_FAIL, ...; COMPLETING: the server has already ended).
        return JobStatus.NOTFOUND

    def state_isrunning(self):
        return self.slurm_state in RUNNING

    def state_ispending(self):
        return self.slurm_state in WAITING

    async def poll(self):
        status = await self.query_job_status()
        if status == JobStatus.RUNNING and self._tunnel_state and self.login is not None:
            await self._reopen_tunnel()  # the first poll after a hub restart
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        if self.job_id and self.slurm_state in ("", "COMPLETING"):
            await self._query_final_state()
        reason = self.end_reason()
        if self.job_id:
            self.log.warning("%s of %s", reason, self._log_name)
        await self._close_tunnel()
        self.clear_state()
        return reason

    async def _query_final_state(self, tries: int = 5, pause: float = 0.4) -> None:
        # COMPLETING hides how it ended (cancelled, failed, ...) for the second or so that
        # Slurm takes to clean the node up.
        for attempt in range(tries):
            try:
                out = await self.run_command(self._command(self.ended_query_cmd, job_id=self.job_id))
            except Exception as e:  # noqa: BLE001 (only the reason's wording depends on it)
                self.log.debug("Slurm job %s: no final state (%s)", self.job_id, e)
                return
            lines = out.strip().splitlines()
            self.job_status = lines[-1].strip() if lines else self.job_status
            if self.slurm_state != "COMPLETING" or attempt == tries - 1:
                return
            await asyncio.sleep(pause)

    def end_reason(self) -> str:
        """Why the job is gone, in words for its user (the hub shows poll's answer)."""
        state = self.slurm_state
        what = ENDINGS.get(state, state or "is no longer listed by Slurm")
        reason = self.slurm_reason
        if reason and reason != "None":
            what += f" (Slurm's reason: {reason})"
        return f"Slurm job {self.job_id or '?'} {what}"

    # --- start, port, stop ------------------------------------------------------------------
    def accept_port(self, port: int) -> None:
        """The port the job's server listens on (called by slurm_port's handler)."""
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError("port must be a whole number from 1 to 65535")
        if not self.job_id or self.port:
            raise ValueError("this server is not waiting for a port")
        self.port = port

    def _ended(self, when: str) -> RuntimeError:
        final = self.job_status or "no longer listed"
        job = self.job_id
        self.clear_state()
        return RuntimeError(f"Slurm job {job} ended {when} ({final}); its output is in "
                            f"~/.jhub-cloud-slurm-{job}.log on the node")

    async def start(self):
        listen_ip = self.ip = self.listen_ip  # JUPYTERHUB_SERVICE_URL (get_env) uses self.ip
        self.port = 0
        await self.submit_batch_script()
        if not self.job_id:
            raise RuntimeError("sbatch gave no job id")
        while (status := await self.query_job_status()) != JobStatus.RUNNING:
            if status == JobStatus.NOTFOUND:
                raise self._ended("before it started")
            await asyncio.sleep(self.startup_poll_interval)
        # Connect where the server listens; all interfaces means: at the node's name.
        self.ip = self.state_gethost() if listen_ip in ("0.0.0.0", "::", "") else listen_ip  # noqa: S104
        while self.port == 0:
            await asyncio.sleep(self.startup_poll_interval)
            if self.port == 0 and await self.query_job_status() == JobStatus.NOTFOUND:
                raise self._ended("before its server reported a port")
        if self.login is not None:  # directly, or through a tunnel via the login node
            self.ip, self.port = await self.login.reach(self.ip, self.port)
        self.log.info("Slurm job %s: server at %s:%s", self.job_id, self.ip, self.port)
        return self.ip, self.port

    async def stop(self, now=False):
        try:
            if self.job_id:
                await super().stop(now=now)
        finally:
            await self._close_tunnel()

    async def _close_tunnel(self) -> None:
        if self._login is not None:
            await self._login.close()
        self._tunnel_state = None

    async def _reopen_tunnel(self) -> None:
        from ..ssh.login import end_old_tunnel

        saved, self._tunnel_state = self._tunnel_state, None
        login = self.login
        if login.tunnel_pid is None:
            await asyncio.to_thread(end_old_tunnel, saved.get("pid"), saved["port"])
            login.remote, login.tunnel_port = (saved["host"], saved["remote_port"]), saved["port"]
            await login.open_tunnel()

    async def progress(self):
        shown = None
        while True:
            if not self.job_id:
                event = (5, "Submitting the Slurm job")
            elif self._query_error:
                event = (20, f"Slurm job {self.job_id}: cannot ask Slurm about it yet ({self._query_error})")
            elif self.state_ispending():
                reason = self.slurm_reason
                event = (20, f"Slurm job {self.job_id} is {self.slurm_state}"
                             + (f" (reason: {reason})" if reason and reason != "None" else ""))
            elif self.state_isrunning() and not self.port:
                event = (50, f"Slurm job {self.job_id} is running on {self.state_gethost()}; "
                             "waiting for the server to report its port")
            elif self.port:
                yield {"progress": 80, "message": f"Server of Slurm job {self.job_id} listens on "
                                                  f"{self.ip}:{self.port}; waiting for it to answer"}
                return
            else:
                event = (10, f"Slurm job {self.job_id} submitted")
            if event != shown:
                shown = event
                yield {"progress": event[0], "message": event[1]}
            await asyncio.sleep(0.5)

    # --- hub restarts -----------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self.job_id and self.port:
            state["ip"] = self.ip
            state["port"] = self.port
            login = self._login
            if login is not None and login.tunnel_port and login.remote:
                state["tunnel"] = {"host": login.remote[0], "remote_port": login.remote[1],
                                   "port": login.tunnel_port, "pid": login.tunnel_pid}
            elif self._tunnel_state:
                state["tunnel"] = self._tunnel_state
        return state

    def load_state(self, state):
        super().load_state(state)
        if state.get("port"):
            self.ip = state.get("ip", self.ip)
            self.port = int(state["port"])
        self._tunnel_state = dict(state["tunnel"]) if state.get("tunnel") else None

    async def get_url(self):
        if self.job_id and self.port and self.server:
            proto = "https" if self.internal_ssl else "http"
            return url_path_join(f"{proto}://{self.ip}:{self.port}", self.server.base_url)
        return await super().get_url()


slurm_port.register()
