"""A one-node Slurm cluster for tests: our own munged, slurmctld and slurmd on free loopback ports.

We never touch the system's munged (/run/munge) or /etc/slurm: munged gets its own key, socket and
pid file, and slurm.conf points Slurm at that socket with ``AuthInfo=socket=...``. All three
daemons daemonize themselves, so they are stopped through their pid files, by PID.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .paths import free_port
from .procs import ServiceError, log_tail, pid_alive, read_pid, stop_pid, wait_for

# sbatch and friends run with this PATH; jobs inherit it (absolute tools, no venv in front).
SLURM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def node_name() -> str:
    """Slurm insists that NodeName equals `hostname -s` on the node itself."""
    return socket.gethostname().split(".")[0]


def node_hardware() -> tuple[str, int]:
    """CPU layout as slurmd sees it, and 95% of its memory (slurmd refuses more than it has)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    mem = int(re.search(r"RealMemory=(\d+)", first).group(1))
    layout = re.sub(r"^NodeName=\S+ |\s*RealMemory=\d+", "", first).strip()
    return layout, mem * 95 // 100


@dataclass
class Slurm:
    dir: Path
    partition: str = "debug"
    # GPUs with no GPU behind them, so GPU profiles are scheduled here for real. Slurm 22.05
    # drops a GPU GRES that has no File= ("Removing file-less GPU"), so each one gets a
    # stand-in device node with /dev/null's numbers: reading or writing it does nothing.
    gpu_type: str = "testgpu"
    gpu_count: int = 2
    ctld_port: int = field(default_factory=free_port)
    slurmd_port: int = field(default_factory=free_port)
    node: str = field(default_factory=node_name)

    # --- where things are -------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.dir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What sbatch/squeue/scontrol need; merge into a process environment."""
        return {"SLURM_CONF": str(self.conf_path), "PATH": SLURM_PATH}

    def _pidfile(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    # --- commands ---------------------------------------------------------------------------
    def run(self, *argv: str, user: str | None = None, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm command (as ``user`` via runuser, else as root) against this cluster."""
        cmd = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env}, cwd="/")
        if check and r.returncode != 0:
            raise ServiceError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def job_state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", job_id, check=False).stdout
        m = re.search(r"JobState=(\S+)", out)
        return m.group(1) if m else "UNKNOWN"

    def wait_job(self, job_id: str, timeout: float = 60) -> str:
        """Wait until a job has left the queue's active states; return its final JobState."""
        active = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}
        return wait_for(lambda: (s := self.job_state(job_id)) not in active and s,
                        timeout, f"Slurm job {job_id}", self.dir / "log" / "slurmctld.log")

    # --- life cycle -------------------------------------------------------------------------
    @property
    def gres_conf_path(self) -> Path:
        return self.dir / "etc" / "gres.conf"  # Slurm reads it next to slurm.conf

    def write_config(self) -> None:
        layout, mem = node_hardware()
        d = self.dir
        dev = self.dir / "dev"
        dev.mkdir(exist_ok=True, mode=0o755)
        for i in range(self.gpu_count):
            node = dev / f"fakegpu{i}"
            if not node.exists():
                os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        self.gres_conf_path.write_text(f"NodeName={self.node} Name=gpu Type={self.gpu_type} "
                                       f"File={dev}/fakegpu[0-{self.gpu_count - 1}]\n")
        gres = f"gpu:{self.gpu_type}:{self.gpu_count}"
        self.conf_path.write_text(f"""\
ClusterName=jhubtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={self._pidfile("slurmctld")}
SlurmdPidFile={self._pidfile("slurmd")}
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
# No cgroup plugins and no accounting daemon: the test machine has neither systemd nor slurmdbd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Refuse impossible jobs at submission; otherwise they pend forever and a test only times out.
EnforcePartLimits=ALL
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=60
KillWait=5
Waittime=0
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 {layout} RealMemory={mem} Gres={gres} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> Slurm:
        for sub in ("etc", "state", "spool", "log", "run", "munge"):
            # World-readable: jobs run as the test users and read their scripts from the spool.
            (self.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        self._start_munged()
        self.write_config()
        env = {**os.environ, **self.env}
        for daemon in ("slurmctld", "slurmd"):
            r = subprocess.run([daemon], env=env, capture_output=True, text=True, cwd=self.dir)
            if r.returncode != 0:
                raise ServiceError(f"{daemon} exited with {r.returncode}: {r.stderr}\n"
                                   f"{log_tail(self.dir / 'log' / f'{daemon}.log')}")
        wait_for(lambda: self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
                 .stdout.strip() == "idle", 30, f"Slurm node {self.node} idle",
                 self.dir / "log" / "slurmd.log", interval=0.2)
        return self

    def _start_munged(self) -> None:
        key = self.dir / "munge" / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        log = self.dir / "log" / "munged.log"
        subprocess.run(["munged", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={self._pidfile('munged')}", f"--log-file={log}",
                        f"--seed-file={self.dir / 'munge' / 'munged.seed'}"],
                       check=True, capture_output=True, text=True)
        wait_for(lambda: subprocess.run(["munge", "-n", f"--socket={self.munge_socket}"],
                                        capture_output=True).returncode == 0, 10, "munged", log)

    def stop(self) -> None:
        """Cancel jobs, stop slurmd, slurmctld, munged by their pid files, then sweep leftovers."""
        if read_pid(self._pidfile("slurmctld")):
            self._cancel_all_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            pid = read_pid(self._pidfile(name))
            if pid:
                stop_pid(pid, timeout=15)
        # A job step (slurmstepd and the job's processes) outlives slurmd if it was still running.
        for pid in self._our_leftover_pids():
            stop_pid(pid, timeout=5)

    def _cancel_all_jobs(self) -> None:
        ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if not ids:
            return
        self.run("scancel", *ids, check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
            time.sleep(0.2)

    def _our_leftover_pids(self) -> list[int]:
        """Processes whose environment names our slurm.conf: only this cluster's steps have it."""
        marker = f"SLURM_CONF={self.conf_path}".encode()
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == os.getpid():
                continue
            try:
                if marker in (p / "environ").read_bytes().split(b"\0") and pid_alive(int(p.name)):
                    pids.append(int(p.name))
            except OSError:
                continue
        return pids


@pytest.fixture(scope="session")
def slurm(run_dir) -> Slurm:
    """A running one-node Slurm cluster; submit as a test user with ``slurm.run(..., user=)``."""
    s = Slurm(run_dir / "slurm")
    try:
        s.start()
        yield s
    finally:
        s.stop()
