#!/usr/bin/env python3
"""The jhub-cloud demo: the whole suite on this machine until Ctrl-C (started by scripts/demo.sh).

It starts, on loopback, with the testbed's own service launchers (tests/testbed/):
- an OpenID Connect provider (panva oidc-provider, HTTPS with a demo CA) with demo users and groups;
- SeaweedFS with S3 and OIDC STS, a bucket per user, ``scratch`` and group buckets;
- JupyterHub with the IAM authenticator and CloudSpawner: the spawn page offers each user the
  profiles of their groups; servers run under sts-wire, which mounts the user's bucket and scratch.

Backends: ``local`` (default: servers are processes of the system users alice, bob, carol, dave,
each in a private mount namespace), ``docker`` (containers of images/lab under a private dockerd;
the first run builds the images), ``slurm`` (batch jobs of a one-node Slurm cluster of its own).
Ctrl-C stops every server, then every service, by PID, and unmounts what is left.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402

from tests.testbed.cloudhub import CloudHub, spawner_profiles  # noqa: E402
from tests.testbed.idp import USERS, IdP  # noqa: E402
from tests.testbed.pki import PKI, make_pki  # noqa: E402
from tests.testbed.procs import Daemon, log_tail, mounts_under, unmount_all_under  # noqa: E402
from tests.testbed.seaweedfs import SeaweedFS  # noqa: E402

STATE = Path(os.environ.get("JHUB_CLOUD_DEMO_DIR", "/var/lib/jhub-cloud-demo"))
HUB_PORT, IDP_PORT = 17800, 17801       # fixed and unusual: easy to tunnel, clear of test ports
CGROUP_PARENT = "jhub-cloud-demo"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The demo's dockerd keeps its images here (apart from the tests' own, so both can run at once).
DOCKER_DATA = Path(os.environ.get("JHUB_CLOUD_DEMO_DOCKER", "/var/cache/jhub-cloud-demo/docker"))
DEMO_LAB_IMAGE = "jhub-cloud/lab:demo"
S3_ROOT = Path("/s3")   # where servers see their buckets (local backend: private to each server)
BACKENDS = ("local", "docker", "slurm")


class DemoError(RuntimeError):
    pass


def build_lab_image(dockerd, base: str, say) -> None:
    """images/build.py lab, showing each build step as it starts (BuildKit's plain output)."""
    argv = [sys.executable, str(REPO / "images" / "build.py"), "lab", "--tag", DEMO_LAB_IMAGE, "--base", base]
    env = {**os.environ, **dockerd.env}
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        for line in p.stdout:
            tail = (tail + [line.rstrip()])[-30:]
            m = re.match(r"#\d+ (\[\S+ \d+/\d+\] .*)", line)
            if m:
                say("  " + m.group(1)[:100])
    if p.returncode != 0:
        raise DemoError("building images/lab failed:\n" + "\n".join(tail))


class Progress:
    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[demo {time.monotonic() - self.t0:4.0f}s] {msg}", flush=True)


@dataclass
class DemoHub(CloudHub):
    """The testbed's CloudHub, with the demo's own cgroup folder for the local servers."""

    cgroup: str = CGROUP_PARENT

    @property
    def cgroup_parent(self) -> str:
        return self.cgroup


def demo_pki(folder: Path) -> PKI:
    """The demo CA and certificates, kept between runs (a browser told to trust the CA once
    keeps trusting it) and made anew when the server certificate is within two days of expiry."""
    p = PKI(folder, folder / "ca.crt", folder / "bundle.crt", folder / "server.crt", folder / "server.key",
            folder / "sig.crt", folder / "sig.key")
    with contextlib.suppress(OSError, ValueError):
        cert = x509.load_pem_x509_certificate(p.server_cert.read_bytes())
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if left > datetime.timedelta(days=2) and all(f.exists() for f in (p.ca_cert, p.bundle, p.server_key,
                                                                          p.sig_cert, p.sig_key)):
            return p
    return make_pki(folder)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As servers bind: connections of an earlier run in TIME-WAIT do not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def profiles_of(user: str, profiles: list[dict]) -> list[str]:
    groups = set(USERS[user]["groups"])
    return [p["name"] for p in profiles if groups & set(p["groups"])]


class Demo:
    def __init__(self, args, say: Progress):
        self.args, self.say = args, say
        self.state = Path(args.state)
        self.s3_root = self.state / "s3"
        # One cgroup folder per demo state folder: a second demo (a test run) keeps to its own.
        digest = hashlib.sha256(str(self.state.resolve()).encode()).hexdigest()[:8]
        self.cgroup = CGROUP_PARENT if self.state.resolve() == STATE.resolve() else f"{CGROUP_PARENT}-{digest}"
        self.started: list = []          # services, in start order (stopped in reverse)
        self.hub: DemoHub | None = None
        self.dockerd = None

    # --- start --------------------------------------------------------------------------------
    def start(self) -> None:
        needs = {"docker": ("dockerd", "debootstrap"), "slurm": ("slurmctld", "slurmd", "munged")}
        missing = [tool for tool in needs.get(self.args.backend, ()) if not shutil.which(tool)]
        if missing:
            raise DemoError(f"--backend {self.args.backend} needs {', '.join(missing)}, not found on this machine: "
                            "run scripts/demo.sh (it installs them) or choose another backend")
        for port in (self.args.port, self.args.idp_port):
            if not port_free(port):
                raise DemoError(f"port {port} on 127.0.0.1 is in use (another demo?): stop it, or pass "
                                "--port and --idp-port with free ports")
        self.say("demo CA and certificates")
        pki = demo_pki(self.state / "pki")
        self.say(f"OpenID provider on https://localhost:{self.args.idp_port}")
        idp = IdP(pki, self.state / "idp", port=self.args.idp_port)
        self.started.append(idp)
        idp.start()
        self.say("SeaweedFS (S3 + STS) with the buckets")
        s3 = SeaweedFS(idp, self.state / "seaweedfs")
        self.started.append(s3)
        s3.start()
        extra, hub_config = self.backend_config(s3)
        self.say(f"JupyterHub with CloudSpawner ({self.args.backend} backend) on http://127.0.0.1:{self.args.port}")
        shutil.rmtree(self.state / "hub", ignore_errors=True)   # a fresh hub database each run
        self.hub = DemoHub(idp, self.state / "hub", extra=extra, hub_config=hub_config, port=self.args.port,
                           auth={"login_service": "the demo identity provider"}, cgroup=self.cgroup)
        self.started.append(self.hub)
        self.hub.start(timeout=120)
        self.idp, self.s3 = idp, s3

    def storage(self, s3: SeaweedFS, root: Path) -> dict:
        return {"s3_endpoint": s3.endpoint, "provider": "SeaweedFS", "role_arn": s3.role_arn,
                "region": s3.region, "mount_roots": [str(root)]}

    def backend_config(self, s3: SeaweedFS) -> tuple[dict, str]:
        if self.args.backend == "docker":
            return self.docker_config(s3)
        if self.args.backend == "slurm":
            return self.slurm_config(s3)
        return self.local_config(s3)

    def local_config(self, s3: SeaweedFS) -> tuple[dict, str]:
        # Each local server gets a private mount namespace with its own tmpfs on /s3
        # (jhub_cloud/spawner/mountns.py): alice's and bob's /s3/scratch do not collide, and this
        # machine's /s3 stays an empty folder.
        S3_ROOT.mkdir(mode=0o755, exist_ok=True)
        mounts = [{"bucket": "{username}", "path": f"{S3_ROOT}/{{username}}"},
                  {"bucket": "scratch", "path": f"{S3_ROOT}/scratch"}]
        extra = {**spawner_profiles(mounts), "storage": self.storage(s3, S3_ROOT)}
        return extra, f"c.Spawner.notebook_dir = {str(S3_ROOT)!r}\nc.Spawner.default_url = '/lab'\n"

    def slurm_config(self, s3: SeaweedFS) -> tuple[dict, str]:
        """A one-node Slurm cluster of our own (own munged, free ports); servers are batch jobs
        of the demo users, with the local layout of mount folders (the node is this machine)."""
        from tests.testbed.paths import VENV_BIN
        from tests.testbed.slurm import Slurm

        shutil.rmtree(self.state / "slurm", ignore_errors=True)   # a fresh munge key, queue and spool
        slurm = Slurm(self.state / "slurm")
        self.started.append(slurm)
        self.say("Slurm (munged, slurmctld, slurmd) with one partition and two stand-in GPUs")
        slurm.start()
        # sbatch, squeue and scancel of the hub find this cluster through SLURM_CONF.
        os.environ.update(slurm.env)
        # Jobs share this machine's file system (no private namespace as local servers have):
        # each user's mounts go into a folder of their own, the root of their file browser.
        self.s3_root.mkdir(parents=True, exist_ok=True)
        self.s3_root.chmod(0o1777)
        mounts = [{"bucket": "{username}", "path": f"{self.s3_root}/{{username}}/{{username}}"},
                  {"bucket": "scratch", "path": f"{self.s3_root}/{{username}}/scratch"}]
        extra = {**spawner_profiles(mounts), "storage": self.storage(s3, self.s3_root)}
        hub_config = (f"c.Spawner.notebook_dir = {str(self.s3_root)!r} + '/{{username}}'\n"
                      "c.Spawner.default_url = '/lab'\n")
        extra["backends"] = {"slurm": {"partition": slurm.partition, "exec_prefix": "runuser -u {username} --",
                                       "batchspawner_singleuser": str(VENV_BIN / "batchspawner-singleuser"),
                                       "server_ip": "127.0.0.1"}}
        for p in extra["profiles"]:
            p["backend"] = "slurm"
        return extra, hub_config + "c.SlurmChild.poll_interval = 3\n"

    def docker_config(self, s3: SeaweedFS) -> tuple[dict, str]:
        """A private dockerd (no bridge: containers share the host's loopback) and images/lab."""
        from tests.testbed.docker import BASE_IMAGE, Dockerd

        d = Dockerd(self.state / "docker", data_root=DOCKER_DATA)
        self.started.append(d)
        self.say(f"dockerd (images kept in {DOCKER_DATA})")
        d.start(say=self.say)
        if not d.image_exists(BASE_IMAGE):
            self.say("Debian base image, made with debootstrap (first run only: a few minutes)")
            d.build_base_image(BASE_IMAGE, say=self.say)
        self.say(f"images/lab -> {DEMO_LAB_IMAGE} (first run: a few minutes; then from the build cache)")
        build_lab_image(d, BASE_IMAGE, self.say)
        # DockerSpawner finds the daemon through DOCKER_HOST in the hub's environment.
        os.environ["DOCKER_HOST"] = d.host
        mounts = [{"bucket": "{username}", "path": "/s3/{username}"}, {"bucket": "scratch", "path": "/s3/scratch"}]
        extra = {**spawner_profiles(mounts), "storage": self.storage(s3, S3_ROOT),
                 "backends": {"docker": {"network": "host", "host_ip": "127.0.0.1", "pull_policy": "never",
                                         "home_volume": "jhub-demo-home-{username}"}}}
        for p in extra["profiles"]:
            p["backend"] = "docker"
            p["choices"]["image"] = {"options": [DEMO_LAB_IMAGE], "default": DEMO_LAB_IMAGE}
        return extra, "c.Spawner.notebook_dir = '/s3'\nc.Spawner.default_url = '/lab'\n"

    # --- run ----------------------------------------------------------------------------------
    def banner(self) -> str:
        url = f"http://127.0.0.1:{self.args.port}"
        profiles = self.hub.extra["profiles"]
        hp, ip = self.args.port, self.args.idp_port
        lines = ["", "=" * 78, f"  jhub-cloud demo is up: {url}", "",
                 "  Log in at the demo identity provider as:"]
        for user, info in USERS.items():
            offered = profiles_of(user, profiles)
            what = ("profiles " + ", ".join(offered)) if offered else "refused: not in an allowed group"
            admin = " (admin)" if "admins" in info["groups"] else ""
            lines.append(f"    {user:6} password {info['password']:9} groups {', '.join(info['groups']):16} "
                         f"{what}{admin}")
        lines += ["",
                  f"  The provider is https://localhost:{self.args.idp_port} with a demo CA: trust",
                  f"  {self.state / 'pki' / 'ca.crt'} in your browser, or accept its warning.",
                  f"  From another machine: ssh -L {hp}:127.0.0.1:{hp} -L {ip}:127.0.0.1:{ip} <this host>,",
                  f"  then open {url} there.",
                  f"  In a server: your bucket and scratch are folders in JupyterLab (S3 at {self.s3.endpoint}).",
                  f"  Logs: {self.state}/{{idp,seaweedfs,hub}}/*.log     Stop: Ctrl-C",
                  "=" * 78, ""]
        return "\n".join(lines)

    def daemons(self) -> list[Daemon]:
        out = []
        for svc in self.started:
            d = getattr(svc, "daemon", None)
            if d is not None:
                out.append(d)
        return out

    def watch(self, stop_requested) -> None:
        while not stop_requested():
            for d in self.daemons():
                if not d.alive():
                    raise DemoError(f"{d.name} stopped unexpectedly; the end of {d.log}:\n{log_tail(d.log, 20)}")
            time.sleep(0.5)

    # --- stop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        for svc in reversed(self.started):
            name = type(svc).__name__
            try:
                if isinstance(svc, CloudHub):
                    self.say("stopping the notebook servers and JupyterHub")
                else:
                    self.say(f"stopping {name}")
                svc.stop()
            except Exception as e:  # stop the others all the same
                self.say(f"stopping {name} failed: {e}")
        self.started.clear()
        root = self.s3_root
        if mounts_under(root):
            self.say(f"unmounting {', '.join(mounts_under(root))}")
            unmount_all_under(root)
        for c in ("cpu", "memory"):
            d = CGROUP_ROOT / c / self.cgroup
            with contextlib.suppress(OSError):
                for sub in d.iterdir():
                    if sub.is_dir():
                        sub.rmdir()
                d.rmdir()


def take_lock(state: Path):
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    lock = open(state / "demo.lock", "a+")  # noqa: SIM115 (held while the demo runs)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise DemoError(f"another demo is running on {state} (PID {lock.read().strip() or '?'}): "
                        "stop it with Ctrl-C first, or set JHUB_CLOUD_DEMO_DIR to another folder") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=BACKENDS, default="local",
                    help="where notebook servers run (default local)")
    ap.add_argument("--port", type=int, default=HUB_PORT, help=f"the hub's port on 127.0.0.1 (default {HUB_PORT})")
    ap.add_argument("--idp-port", type=int, default=IDP_PORT,
                    help=f"the identity provider's port on localhost (default {IDP_PORT})")
    ap.add_argument("--state", default=str(STATE), help=f"state and logs (default {STATE}; $JHUB_CLOUD_DEMO_DIR)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: run it as root (servers run as the demo's system users)", file=sys.stderr)
        return 1
    say = Progress()
    stop = {"asked": False}

    def on_signal(signum, frame):
        if stop["asked"]:
            print("\n(still stopping; it takes a few seconds)", flush=True)
        stop["asked"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    demo = None
    try:
        lock = take_lock(Path(args.state))
        demo = Demo(args, say)
        demo.start()
        if not stop["asked"]:
            print(demo.banner(), flush=True)
            say(f"ready in {time.monotonic() - say.t0:.0f} s")
            demo.watch(lambda: stop["asked"])
        print(flush=True)
        say("Ctrl-C: stopping")
        rc = 0
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr, flush=True)
        rc = 1
    except Exception as e:
        print(f"demo: failed: {e}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        if demo is not None:
            demo.stop()
            say("stopped: nothing of the demo is running")
    with contextlib.suppress(NameError):
        lock.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
