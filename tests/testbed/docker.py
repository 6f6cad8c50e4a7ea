"""dockerd for tests, and a Debian base image built without any container registry.

Images live in a data root under paths.CACHE so that a second run reuses them; everything else
(exec root, API socket, pid file, logs) is per session. Our dockerd creates no bridge and touches
no iptables rules: containers in tests use ``--network host`` (to reach loopback services) or
``--network none``, so nothing they do leaves loopback.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .paths import CACHE
from .procs import Daemon, ServiceError, pid_alive, stop_pid, unmount_all_under

# Debian's CLI matches Debian's dockerd; another `docker` earlier in PATH may be much newer.
DOCKER_CLI = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
BASE_IMAGE = "jhub-cloud/base:bookworm"
LAB_IMAGE = "jhub-cloud/lab"  # tagged with a hash of what goes into it (see lab_image)
# A test lab image: the base image plus what sts-wire and the notebook server need that the
# host cannot lend at run time. The host's venv (same Debian python3) and the project source
# are bind-mounted read-only by the backend's `binds`, so a code change needs no rebuild.
LAB_DOCKERFILE = """\
FROM {base}
COPY fusermount3 /usr/bin/fusermount3
RUN chmod 4755 /usr/bin/fusermount3 && useradd -m -u 1000 -s /bin/bash jovyan \\
 && mkdir -m 1777 /s3
USER jovyan
WORKDIR /home/jovyan
ENV PATH=/opt/jhub-cloud/venv/bin:/usr/local/bin:/usr/bin:/bin
"""
DATA_ROOT = CACHE / "docker"


def debian_mirror(suite: str = "bookworm") -> str:
    """The Debian mirror this machine's apt uses for ``suite`` (deb822 .sources, then .list)."""
    apt = Path("/etc/apt")
    for f in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    for f in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            # deb [options] URI SUITE COMPONENTS...
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == suite:
                return m.group(1)
    raise ServiceError(f"no Debian mirror for {suite} configured in /etc/apt")


def terminal(config, label: str) -> Callable[[str], None]:
    """A print that reaches the terminal even while pytest captures output (slow builds)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    t0 = time.monotonic()

    def say(msg: str) -> None:
        line = f"[{label} {time.monotonic() - t0:5.0f}s] {msg}"
        if capman is None or reporter is None:
            print(line, file=sys.stderr, flush=True)
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)

    return say


def pids_with_arg(marker: str, exact: bool = False) -> list[int]:
    """Live processes with ``marker`` in (or, if exact, as) a command-line argument."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            args = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == marker if exact else marker in a for a in args) and pid_alive(int(p.name)):
            pids.append(int(p.name))
    return pids


@dataclass
class Dockerd:
    dir: Path
    data_root: Path = DATA_ROOT
    lock_timeout: float = 900
    daemon: Daemon | None = None
    _lock: object = None

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """Merge into a process environment: the docker CLI, docker-py and DockerSpawner read it."""
        return {"DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               **kw) -> subprocess.CompletedProcess:
        r = subprocess.run([DOCKER_CLI, *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **self.env}, **kw)
        if check and r.returncode != 0:
            raise ServiceError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.host)

    def image_exists(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    # --- life cycle -------------------------------------------------------------------------
    def _take_data_root(self, say) -> None:
        """One dockerd per data root: another test session on this machine makes us wait."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        # One lock per data root (the demo's dockerd in the tests has its own beside the tests' one).
        lock = self.data_root.with_name(self.data_root.name + ".lock")
        self._lock = open(lock, "w")  # noqa: SIM115 (held until stop)
        deadline = time.monotonic() + self.lock_timeout
        told = False
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.data_root} stayed in use by another test session") from None
                if not told:
                    say(f"waiting for another test session's dockerd to release {self.data_root}")
                    told = True
                time.sleep(1)
        # We hold the lock, so a dockerd still on this data root belongs to a test session that
        # was killed before its teardown ran: stop it before ours uses the same files.
        for pid in pids_with_arg(f"--data-root={self.data_root}", exact=True):
            say(f"stopping dockerd {pid}, left behind by a test session that died")
            stop_pid(pid, timeout=30)

    def start(self, say=print) -> Dockerd:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_data_root(say)
        # Our own (empty) daemon.json: the machine's /etc/docker/daemon.json must not apply.
        (self.dir / "daemon.json").write_text("{}\n")
        argv = ["dockerd", f"--config-file={self.dir / 'daemon.json'}",
                f"--data-root={self.data_root}", f"--exec-root={self.dir / 'exec'}",
                f"--pidfile={self.dir / 'dockerd.pid'}", f"--host={self.host}",
                # No docker0 bridge, no NAT, no firewall changes: containers stay on loopback.
                "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                "--shutdown-timeout=5"]
        self.daemon = Daemon("dockerd", argv, self.dir / "dockerd.log", stop_timeout=30).start()
        self.daemon.wait_ready(lambda: self.docker("version", check=False, timeout=5).returncode == 0,
                               timeout=60)
        return self

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()
        # dockerd normally ends its containerd and the container shims; if it died hard they
        # remain. Every one of them names our exec root on its command line.
        for pid in pids_with_arg(str(self.dir / "exec")):
            stop_pid(pid, timeout=5)
        unmount_all_under(self.dir / "exec")  # dockerd leaves its network namespace mounted there
        if self._lock:
            self._lock.close()  # releases the flock
            self._lock = None

    # --- images -----------------------------------------------------------------------------
    def build_base_image(self, tag: str = BASE_IMAGE, say=print) -> None:
        """debootstrap a minimal bookworm with python3 and import it (no registry needed)."""
        mirror = debian_mirror("bookworm")
        rootfs = self.dir / "rootfs"
        log = self.dir / "debootstrap.log"
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            say(f"debootstrap --variant=minbase bookworm from {mirror} (log: {log})")
            self._debootstrap(rootfs, mirror, log, say)
            # Package downloads and indexes only make the image bigger.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for f in (rootfs / junk).glob("*"):
                    if f.is_file():
                        f.unlink()
            say(f"docker import -> {tag}")
            with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."],
                                  stdout=subprocess.PIPE) as tar:
                self.docker("import", "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["/bin/bash"]', "-", tag,
                            stdin=tar.stdout, timeout=600)
            if tar.returncode != 0:
                raise ServiceError(f"tar of {rootfs} failed ({tar.returncode})")
            say(f"{tag} ready")
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)

    def build_lab_image(self, base: str = BASE_IMAGE, say=print) -> str:
        """The lab image (fusermount3 setuid, user jovyan uid 1000), built once per content."""
        dockerfile = LAB_DOCKERFILE.format(base=base)
        helper = Path(shutil.which("fusermount3") or "/usr/bin/fusermount3")
        digest = hashlib.sha256(dockerfile.encode() + helper.read_bytes()).hexdigest()[:12]
        tag = f"{LAB_IMAGE}:{digest}"
        if self.image_exists(tag):
            return tag
        ctx = self.dir / "lab-build"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(dockerfile)
        shutil.copy2(helper, ctx / "fusermount3")  # a static-enough binary: only libc
        say(f"docker build {tag}")
        # No network in the build: everything it needs is in the context.
        self.docker("build", "--network", "none", "-q", "-t", tag, str(ctx), timeout=600)
        shutil.rmtree(ctx, ignore_errors=True)
        return tag

    @staticmethod
    def _debootstrap(rootfs: Path, mirror: str, log: Path, say) -> None:
        argv = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                "bookworm", str(rootfs), mirror]
        last_verb = None
        with open(log, "w") as out, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True) as p:
            for line in p.stdout:
                out.write(line)
                # One terminal line per phase (Unpacking, Configuring, ...), not one per package.
                if not line.startswith("I: "):
                    continue
                verb = line[3:].split(" ", 1)[0]
                if re.match(r"I: (Retrieving|Validating) \S+ \S+$", line.strip()):
                    verb, line = "fetch", "I: Retrieving and validating packages..."
                if verb != last_verb:
                    say("debootstrap: " + line[3:].strip())
                last_verb = verb
        if p.returncode != 0:
            raise ServiceError(f"debootstrap failed ({p.returncode}); see {log}:\n"
                               + "\n".join(log.read_text().splitlines()[-20:]))


@pytest.fixture(scope="session")
def dockerd(run_dir, request) -> Dockerd:
    """A running dockerd on a private socket; its image store persists in paths.CACHE."""
    d = Dockerd(run_dir / "docker")
    try:
        d.start(say=terminal(request.config, "dockerd"))
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def base_image(dockerd, request) -> str:
    """``jhub-cloud/base:bookworm`` (python3, venv, CA certificates), built once and cached."""
    if not dockerd.image_exists(BASE_IMAGE):
        dockerd.build_base_image(BASE_IMAGE, say=terminal(request.config, "base image"))
    return BASE_IMAGE


@pytest.fixture(scope="session")
def lab_image(dockerd, base_image, request) -> str:
    """The test lab image (from the base image, cached by content): run it with the host's venv
    and the project bind-mounted read-only at the same paths."""
    return dockerd.build_lab_image(base_image, say=terminal(request.config, "lab image"))


@pytest.fixture(scope="session")
def user_fuse():
    """/dev/fuse usable by every user, as on a standard Debian host (udev makes it 0666).

    Some test machines have it 0600; then neither a container's user nor a Slurm job's user
    can mount. Left so afterwards (scripts/setup.sh does the same): putting 0600 back would break
    another test session running at the same time.
    """
    dev = Path("/dev/fuse")
    if not dev.exists():
        pytest.skip("no /dev/fuse on this machine")
    if dev.stat().st_mode & 0o777 != 0o666:
        dev.chmod(0o666)  # noqa: S103 (udev's own mode for it)
    return dev
