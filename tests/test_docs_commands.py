"""Every shell command shown in the docs (the ```sh blocks of docs/*.md, images/README.md and
README.md) is run here against the test services, with the docs' example addresses (IdP, S3, hub)
and the test CA put in their place; the few that need a real site are listed in NEEDS_A_SITE with
the reason, and those another test runs (a demo, an image build) in RUN_ELSEWHERE with that test.
Each doc's test ends by checking that it ran every command of its doc."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.sts_wire_helpers import refresh_token_setup, wait_until
from tests.testbed.cloudhub import CloudHub
from tests.testbed.paths import REPO, VENV_BIN, free_port
from tests.testbed.procs import mounts_under, stop_pid, unmount_all_under

DOCS = REPO / "docs"
PLAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Commands that cannot run on a test machine, as written in the docs, and why.
NEEDS_A_SITE = {
    "apt-get install -y python3-venv fuse3 nodejs npm":
        "installs system packages; scripts/setup.sh installs these on every test machine",
    "python3 -m venv /opt/jhub-cloud/venv":
        "would replace the venv these tests run in; the sts-wire-alone test builds a fresh venv the same way",
    "/opt/jhub-cloud/venv/bin/pip install ./sts_wire .":
        "would replace the editable install these tests run; scripts/setup.sh runs it on every test machine",
    "npm install -g configurable-http-proxy@5":
        "global npm install; scripts/setup.sh installs the same version under /opt/jhub-cloud/node",
    "JHUB_CLOUD_CONFIG=/etc/jhub-cloud/jhub-cloud.yaml jupyterhub -f config/jupyterhub_config.py":
        "needs the site's identity provider; tests/test_examples.py starts this configuration with the test IdP",
    "kubectl auth can-i create pods --as=system:serviceaccount:jhub:hub -n jhub":
        "needs a Kubernetes cluster (none here); pods are checked against the official schemas in test_kube_*",
    "nvidia-smi -L":
        "needs an NVIDIA GPU (none on the test machines)",
    "ssh -L 17800:127.0.0.1:17800 -L 17801:127.0.0.1:17801 root@the-demo-host":
        "needs a second machine running the demo; tests/test_demo.py opens the demo at its loopback ports",
    "scripts/test.sh":
        "runs the whole test suite, this file included: it is how these tests are run",
    "jupyterhub -f config/jupyterhub_config.py":
        "needs the site's identity provider; tests/testbed/hub.py starts jupyterhub from this file (loaded as a "
        "subconfig) with the test IdP for every hub test",
    "images/build.py hub --base quay.io/jupyterhub/k8s-hub:4.2.0 --no-proxy --hub-user 1000":
        "pulls the chart's hub image from a registry (none reachable here); no test builds the Kubernetes flavour",
}

# Per doc, commands that another test runs as written (bases and ports aside), with that test and what in its
# file shows it runs them (checked below).
RUN_ELSEWHERE = {
    "docs/demo.md": {
        "scripts/demo.sh": ("tests/test_demo.py", ['"scripts" / "demo.sh"', 'RunningDemo(run_dir / "demo-state")']),
        "scripts/demo.sh --backend docker": ("tests/test_demo.py", ['"--backend", backend', '["docker", "slurm"]']),
        "scripts/demo.sh --backend slurm": ("tests/test_demo.py", ['"--backend", backend', '["docker", "slurm"]']),
    },
    "images/README.md": {
        "images/build.py lab": ("tests/test_images.py", ['build_image(dockerd, "lab"']),
        "images/build.py lab --base python:3.12-slim-bookworm --tag registry.example.org/lab:1":
            ("tests/testbed/images.py", ['"--tag", tag, "--base", base', 'build_image(dockerd, "lab"']),
        "images/build.py lab-gpu --base nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04":
            ("tests/test_images.py", ['build_image(dockerd, "lab-gpu"']),
        "images/build.py hub": ("tests/testbed/images.py", ['build_image(dockerd, "hub"']),
    },
    "README.md": {
        "scripts/demo.sh": ("tests/test_demo.py", ['"scripts" / "demo.sh"', 'RunningDemo(run_dir / "demo-state")']),
        "sts-wire run --spec env:STS_WIRE_SPEC -- jupyterhub-singleuser":
            ("tests/test_spawner_storage.py",
             ['["run", "--spec", "env:STS_WIRE_SPEC", "--"]', "/jupyterhub-singleuser"]),
        # The same commands in docs/sts-wire-alone.md and docs/scientists.md, run by the tests below.
        "sts-wire mount alice ~/s3/alice":
            ("tests/test_docs_commands.py", ['doc.start("sts-wire mount alice ~/s3/alice")']),
        "sts-wire status": ("tests/test_docs_commands.py", ['doc.run("sts-wire status")']),
    },
}

# Every doc with ```sh commands, and the test here that runs them (docs/sts-wire.md,
# identity-providers.md, backends.md and spawner.md show none).
COVERED = {
    "docs/admin.md": "test_admin_guide_commands",
    "docs/scientists.md": "test_scientists_guide_commands",
    "docs/sts-wire-alone.md": "test_sts_wire_alone_commands",
    "docs/demo.md": "test_demo_guide_commands",
    "docs/slurm-over-ssh.md": "test_slurm_over_ssh_commands",
    "images/README.md": "test_images_readme_commands",
    "README.md": "test_readme_commands",
}


def doc_commands(path: Path) -> list[str]:
    """The commands of the ```sh blocks, one per logical line (continuations joined, a here-document
    kept with its command), comment-only lines left out."""
    out, block, lines = [], False, iter(path.read_text().splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            block = not block and stripped == "```sh"
            continue
        if not block or not stripped or stripped.startswith("#"):
            continue
        cmd = re.sub(r"\s+#\s[^'\"]*$", "", stripped)  # a trailing comment that explains the command
        while cmd.endswith("\\"):
            cmd = cmd[:-1].rstrip() + " " + next(lines).strip()
        heredoc = re.search(r"<<'?(\w+)'?", cmd)
        if heredoc:
            body = []
            for more in lines:
                body.append(more.strip("\n"))
                if more.strip() == heredoc.group(1):
                    break
            cmd = cmd + "\n" + "\n".join(x[len(line) - len(line.lstrip()):] for x in body)
        out.append(cmd)
    return out


class Doc:
    """The commands of one doc, run with substitutions, device sign-ins approved as `user`."""

    def __init__(self, name: str, subst: dict[str, str], env: dict, cwd: Path, logs: Path, idp=None,
                 user: str = "alice", wrap=None, root: Path = DOCS):
        self.commands = doc_commands(root / name)
        self.elsewhere = RUN_ELSEWHERE.get(str((root / name).relative_to(REPO)), {})
        self.ran: set[str] = set()
        self.subst, self.env, self.cwd, self.idp, self.user = subst, env, cwd, idp, user
        self.wrap = wrap or (lambda cmd: ["bash", "-c", cmd])
        self.logs = logs / f"{name}.logs"
        self.logs.mkdir(exist_ok=True)

    def find(self, prefix: str) -> str:
        found = [c for c in self.commands if c.startswith(prefix) and c not in NEEDS_A_SITE and c not in self.elsewhere]
        assert found, f"no command starting with {prefix!r} in the doc"
        return next((c for c in found if c not in self.ran), found[0])  # the next one not run yet

    def command(self, prefix: str) -> str:
        written = self.find(prefix)
        self.ran.add(written)
        cmd = written
        for old, new in self.subst.items():
            cmd = cmd.replace(old, new)
        return cmd

    def start(self, prefix: str) -> tuple[subprocess.Popen, Path]:
        cmd = self.command(prefix)
        log = self.logs / f"{len(self.ran)}.log"
        with log.open("wb") as f:
            p = subprocess.Popen(self.wrap(cmd), cwd=self.cwd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        p.log = log
        return p, log

    def approve_when_asked(self, log: Path, approved: set) -> None:
        text = log.read_text(errors="replace")
        for code in re.findall(r"enter the code:\s*(\S+)", text):
            if code not in approved:
                approved.add(code)
                self.idp.approve_device(code, self.user)

    def run(self, prefix: str, expect: int = 0, timeout: float = 300) -> str:
        p, log = self.start(prefix)
        approved: set = set()
        deadline = time.monotonic() + timeout
        while p.poll() is None and time.monotonic() < deadline:
            if self.idp is not None:
                self.approve_when_asked(log, approved)
            time.sleep(0.2)
        if p.poll() is None:
            stop_pid(p.pid, group=True)
        text = log.read_text(errors="replace")
        assert p.returncode == expect, f"{prefix}: exit {p.returncode}, expected {expect}:\n{text[-3000:]}"
        return text

    def until(self, p: subprocess.Popen, what: str, timeout: float = 120) -> str:
        approved: set = set()

        def seen():
            assert p.poll() is None, f"ended with {p.returncode}: {p.log.read_text(errors='replace')[-3000:]}"
            if self.idp is not None:
                self.approve_when_asked(p.log, approved)
            return what in p.log.read_text(errors="replace")

        wait_until(seen, timeout, what)
        return p.log.read_text(errors="replace")

    def finish(self) -> None:
        missing = [c for c in self.commands if c not in self.ran and c not in NEEDS_A_SITE and c not in self.elsewhere]
        assert missing == [], f"commands of the doc that no test ran: {missing}"


def test_every_excused_command_is_still_in_the_docs():
    shown = {c for name in COVERED for c in doc_commands(REPO / name)}
    assert set(NEEDS_A_SITE) <= shown, set(NEEDS_A_SITE) - shown
    for name, commands in RUN_ELSEWHERE.items():
        assert set(commands) <= set(doc_commands(REPO / name)), set(commands) - set(doc_commands(REPO / name))


def test_every_doc_with_commands_is_covered():
    with_commands = {str(p.relative_to(REPO)) for p in [*DOCS.glob("*.md"), *REPO.glob("*/README.md"),
                                                        REPO / "README.md"] if doc_commands(p)}
    assert with_commands == set(COVERED), with_commands ^ set(COVERED)
    tests_here = Path(__file__).read_text()
    for name, test in COVERED.items():
        assert f"def {test}(" in tests_here, f"{name}: no {test} here"


def test_commands_run_elsewhere_are_in_those_tests():
    for cmd, (test_file, needles) in [x for commands in RUN_ELSEWHERE.values() for x in commands.items()]:
        text = (REPO / test_file).read_text()
        for needle in needles:
            assert needle in text, f"{cmd!r}: {test_file} no longer has {needle!r}"


def test_a_heredoc_and_continuations_are_one_command(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("```sh\n# a comment\nls -l \\\n    /tmp\ncat > f <<'EOF'\na: 1\n  b: 2\nEOF\necho done\n```\n"
                  "```yaml\nnot: a command\n```\n")
    assert doc_commands(md) == ["ls -l /tmp", "cat > f <<'EOF'\na: 1\n  b: 2\nEOF", "echo done"]


# --- docs/admin.md -----------------------------------------------------------------------------
def test_admin_guide_commands(idp, dockerd, slurm, run_dir, tmp_path):
    # /etc inside a private mount namespace is an overlay whose changes land in tmp_path/etc: the
    # commands write /etc/jhub-cloud exactly as written, and the machine's /etc is untouched.
    upper, work = tmp_path / "etc", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"

    def in_overlay(cmd: str) -> list[str]:
        return ["unshare", "-m", "--propagation", "private", "bash", "-c", f'{mount} && exec bash -c "$0"', cmd]

    hub = None
    etc_before = Path("/etc/jhub-cloud").exists()
    env = dict(os.environ, PATH=f"{VENV_BIN}:{PLAIN_PATH}", DOCKER_HOST=dockerd.host, HOME=str(tmp_path))
    doc = Doc("admin.md", {}, env, REPO, tmp_path, wrap=in_overlay)
    network = dockerd.client().networks
    for n in network.list(names=["jhub-cloud"]):
        n.remove()
    try:
        doc.run("install -d -m 700 /etc/jhub-cloud")
        doc.run("cp config/examples/docker.yaml")
        for _ in [c for c in doc.commands if c.startswith("(umask 077;")]:
            doc.run("(umask 077;")
        for what in ("crypt-key", "metrics-token", "client-secret"):
            assert (upper / "jhub-cloud" / what).stat().st_mode & 0o777 == 0o600
        assert (upper / "jhub-cloud").stat().st_mode & 0o777 == 0o700
        assert "OK (2 profiles" in doc.run("jhub-cloud check /etc")
        doc.run("jhub-cloud check --secrets")
        assert "lab-gpu" in doc.run("jhub-cloud explain")
        assert "crw-rw-rw-" in doc.run("ls -l /dev/fuse")
        doc.run("docker network create jhub-cloud")
        assert network.list(names=["jhub-cloud"])
        doc.env = {**env, **slurm.env}  # the test cluster: its partition with its GPU GRES
        out = doc.run("sinfo -o")
        assert f"{slurm.partition}" in out and f"gpu:{slurm.gpu_type}:{slurm.gpu_count}" in out, out
        doc.env = env

        # Metrics with the token just made, from a hub that was given it.
        token_file = upper / "jhub-cloud" / "metrics-token"
        hub = CloudHub(idp, run_dir / "hub-docs-admin",
                       extra={"metrics": {"scrape_token": {"file": str(token_file)}}}).start()
        doc.subst = {"https://hub.example.org": hub.url}
        out = doc.run("curl -s -H")
        assert out.startswith("jupyterhub_running_servers")
        doc.finish()
    finally:
        if hub is not None:
            hub.stop()
        for n in network.list(names=["jhub-cloud"]):
            n.remove()
    assert Path("/etc/jhub-cloud").exists() == etc_before  # the machine's /etc was not touched


# --- docs/scientists.md ------------------------------------------------------------------------
def test_scientists_guide_commands(idp, seaweedfs, tmp_path):
    """The commands a scientist types in a terminal of their server: children of `sts-wire run`
    (which tells them where its state is), with /s3 at a folder of this test."""
    root = tmp_path / "s3"
    root.mkdir()
    token, _ = refresh_token_setup(idp, "alice", tmp_path / "tokens")
    runtime = tmp_path / "runtime"
    env = dict(os.environ, PATH=f"{VENV_BIN}:{PLAIN_PATH}", STS_WIRE_RUNTIME_DIR=str(runtime), HOME=str(tmp_path))
    doc = Doc("scientists.md", {"/s3": str(root)}, env, tmp_path, tmp_path)

    def server(mounts: list[dict]) -> subprocess.Popen:
        spec = {"user": "alice", "token": token, "mounts": mounts,
                "sts": {"endpoint": seaweedfs.endpoint, "provider": "SeaweedFS",
                        "role_arn": seaweedfs.role_arn_for("alice"), "region": seaweedfs.region}}
        return subprocess.Popen([str(VENV_BIN / "sts-wire"), "run", "--spec", "env:SPEC", "--allowed-root", str(root),
                                 "--", "sleep", "600"], env=dict(env, SPEC=json.dumps(spec)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    healthy = [{"remote": "alice", "path": f"{root}/alice"},
               {"remote": "scratch", "path": f"{root}/scratch", "read_only": True}]
    p = server(healthy)
    try:
        wait_until(lambda: len(mounts_under(root)) == 2, 60, "alice's folders mounted")
        listing = doc.run("ls /s3").split()
        assert listing == ["alice", "scratch"]
        status = doc.run("sts-wire status")
        assert status.count(" ready") == 2 and "renewals: 0" in status
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)

    # A bucket that cannot be used: the note says so, and status says which folder is not ready.
    p = server([{"remote": "alice", "path": f"{root}/alice"}, {"remote": "no-such-bucket", "path": f"{root}/project"}])
    try:
        wait_until(lambda: (root / "project.sts-wire-error.txt").exists(), 60, "the note")
        note = doc.run("cat /s3/*.sts-wire-error.txt")
        assert "no-such-bucket" in note, note
        status = doc.run("sts-wire status", expect=12)
        assert f"{root}/project" in status and "ready" in status
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        unmount_all_under(root)
    doc.finish()


# --- docs/sts-wire-alone.md --------------------------------------------------------------------
def test_sts_wire_alone_commands(idp, seaweedfs, tmp_path):
    """A person on a laptop: a fresh venv with sts-wire alone, device sign-in, a mount, a spec."""
    home, work = tmp_path / "home", tmp_path / "clone"
    home.mkdir()
    shutil.copytree(REPO / "sts_wire", work / "sts_wire",
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    (work / "results.csv").write_text("x,y\n1,2\n")
    slash_tmp = tmp_path / "tmp"  # the spec's /tmp/{username}: a folder of this test instead
    (work / "analysis.py").write_text(
        "from pathlib import Path\n"
        f"s3 = Path({str(slash_tmp)!r}) / 'alice' / 's3'\n"
        "seen = sorted(p.name for p in (s3 / 'scratch').iterdir())\n"
        "(s3 / 'alice' / 'analysis-out.txt').write_text('scratch has %d files\\n' % len(seen))\n")
    ca = str(idp.pki.ca_cert)
    arn = seaweedfs.role_arn_for("alice")
    subst = {
        "https://iam.example.org/": idp.issuer,
        "--client-id sts-wire-public": f"--client-id sts-wire-public --ca-file {ca} "
                                       "--scope 'openid profile groups offline_access'",
        "  client_id: sts-wire-public\n": f"  client_id: sts-wire-public\n  ca_file: {ca}\n"
                                          "  scope: openid profile groups offline_access\n",
        "https://s3.example.org": seaweedfs.endpoint,
        "Ceph": "SeaweedFS",
        "arn:aws:iam:::role/notebooks": arn,
        "/tmp/{username}": f"{slash_tmp}/{{username}}",
    }
    env = {"PATH": PLAIN_PATH, "HOME": str(home), "LANG": "C.UTF-8", "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    (tmp_path / "run").mkdir(mode=0o700)
    # How this machine reaches the package index (its CA, proxies, pip settings), as a person's
    # own login would have them.
    env.update({k: v for k, v in os.environ.items()
                if k.startswith(("PIP_", "SSL_CERT_")) or k.lower().endswith("_proxy")})
    user_pip_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if user_pip_conf.exists() and "PIP_CONFIG_FILE" not in env:
        env["PIP_CONFIG_FILE"] = str(user_pip_conf)
    doc = Doc("sts-wire-alone.md", subst, env, work, tmp_path, idp=idp, user="alice")
    s3 = seaweedfs.admin_s3()
    mount = None
    try:
        doc.run("python3 -m venv ~/sts-wire")
        doc.run("~/sts-wire/bin/pip install ./sts_wire", timeout=900)
        export = doc.command("export PATH=~/sts-wire/bin:$PATH")
        env["PATH"] = subprocess.run(["bash", "-c", f'{export} && printf %s "$PATH"'], env=env, check=True,
                                     capture_output=True, text=True).stdout
        assert not (home / "sts-wire" / "bin" / "jupyterhub").exists()

        doc.run("mkdir -p ~/s3/alice")
        mount, _ = doc.start("sts-wire mount alice ~/s3/alice")
        doc.until(mount, "press Ctrl-C to unmount")
        doc.run("cp results.csv ~/s3/alice/")
        assert "results.csv" in doc.run("ls -l ~/s3/alice")
        status = doc.run("sts-wire status")
        assert f"{home}/s3/alice" in status and " ready" in status
        mount.send_signal(signal.SIGINT)
        assert mount.wait(timeout=120) == 0
        assert s3.get_object(Bucket="alice", Key="results.csv")["Body"].read() == b"x,y\n1,2\n"
        assert mounts_under(home) == []

        doc.run("mkdir -p ~/.config/sts-wire")
        doc.run("cat > ~/.config/sts-wire/spec.yaml")
        out = doc.run("sts-wire check --spec")
        assert "Signed in." in out or "signed in" in out.lower(), out
        doc.run("sts-wire run --spec")
        body = s3.get_object(Bucket="alice", Key="analysis-out.txt")["Body"].read()
        assert body.startswith(b"scratch has ")
        assert mounts_under(slash_tmp) == []
        doc.finish()
    finally:
        if mount is not None and mount.poll() is None:
            stop_pid(mount.pid, group=True)
        unmount_all_under(home)
        unmount_all_under(slash_tmp)


# --- docs/demo.md ------------------------------------------------------------------------------
def test_demo_guide_commands(tmp_path):
    """The demos themselves run in tests/test_demo.py (RUN_ELSEWHERE); its help is run here."""
    env = dict(os.environ, PATH=f"{VENV_BIN}:{PLAIN_PATH}", HOME=str(tmp_path))
    doc = Doc("demo.md", {}, env, REPO, tmp_path)
    out = doc.run("scripts/demo.sh --help", timeout=60)
    assert "--backend {local,docker,slurm}" in out, out
    doc.finish()


# --- docs/slurm-over-ssh.md --------------------------------------------------------------------
def test_slurm_over_ssh_commands(tmp_path):
    """The SSH CA, made in a folder of this test instead of /etc/jhub-cloud."""
    etc = tmp_path / "etc-jhub-cloud"
    etc.mkdir()
    env = dict(os.environ, PATH=PLAIN_PATH, HOME=str(tmp_path))
    doc = Doc("slurm-over-ssh.md", {"/etc/jhub-cloud": str(etc)}, env, tmp_path, tmp_path)
    doc.run("ssh-keygen -t ed25519")
    doc.run("chmod 600")
    assert (etc / "ssh-ca").stat().st_mode & 0o777 == 0o600
    public = (etc / "ssh-ca.pub").read_text()
    assert public.startswith("ssh-ed25519 ") and public.strip().endswith(" jhub-cloud-ca"), public
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(etc / "ssh-ca")], capture_output=True, text=True,
                             check=True).stdout
    assert derived.split()[:2] == public.split()[:2]  # a usable key pair, without a passphrase

    # The gate, installed from its folder in the repository into a folder of this test (the
    # command came with the gate itself: run it whenever the doc shows it).
    if any(c.startswith("install ") for c in doc.commands):
        gate = REPO / "jhub_cloud" / "spawner" / "ssh" / "slurm-gate.sh"
        doc.subst["/usr/local/libexec"] = str(tmp_path)
        doc.cwd = gate.parent
        doc.run("install -o root -g root -m 755 slurm-gate.sh")
        installed = tmp_path / "jhub-cloud-slurm-gate"
        assert installed.read_bytes() == gate.read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o755 and installed.stat().st_uid == 0
    doc.finish()


# --- images/README.md --------------------------------------------------------------------------
def test_images_readme_commands(tmp_path):
    """Image builds run in tests/test_images.py FROM the testbed base (RUN_ELSEWHERE); nothing is
    left for this test but the check that every command is accounted for."""
    doc = Doc("README.md", {}, dict(os.environ), REPO, tmp_path, root=REPO / "images")
    assert doc.commands
    doc.finish()


# --- README.md ---------------------------------------------------------------------------------
def test_readme_commands(tmp_path):
    """The hub's environment, `jhub-cloud check/explain` on the docker example (its secrets made the
    admin guide's way, all under a folder of this test instead of /etc/jhub-cloud), and
    `sts-wire check` on a spec whose IdP cannot be reached."""
    etc = tmp_path / "etc-jhub-cloud"
    etc.mkdir(mode=0o700)
    config = etc / "jhub-cloud.yaml"
    config.write_text((REPO / "config/examples/docker.yaml").read_text().replace("/etc/jhub-cloud", str(etc)))
    for what in ("crypt-key", "metrics-token", "client-secret"):
        (etc / what).touch(mode=0o600)
        (etc / what).write_text(os.urandom(16).hex())
    env = dict(os.environ, PATH=f"{VENV_BIN}:{PLAIN_PATH}", HOME=str(tmp_path))
    subst = {"explain ... --json": "explain /etc/jhub-cloud/jhub-cloud.yaml --groups physics,cms --json",
             "/etc/jhub-cloud": str(etc), "/etc/sts-wire": str(tmp_path / "etc-sts-wire")}
    doc = Doc("README.md", subst, env, REPO, tmp_path, root=REPO)

    exports = " && ".join(doc.command(f"export {name}=") for name in ("JHUB_CLOUD_CONFIG", "JUPYTERHUB_CRYPT_KEY"))
    show = 'printf "%s %s" "$JHUB_CLOUD_CONFIG" "$JUPYTERHUB_CRYPT_KEY"'
    hub_env = subprocess.run(["bash", "-c", f"{exports} && {show}"], env=env, check=True, capture_output=True,
                             text=True).stdout.split()
    assert hub_env[0] == str(config)
    assert re.fullmatch(r"[0-9a-f]{64}", hub_env[1]), hub_env  # 32 random bytes, as the hub wants

    assert "OK (2 profiles" in doc.run("jhub-cloud check /etc")
    assert "OK (2 profiles" in doc.run("jhub-cloud check --secrets")
    (etc / "client-secret").unlink()
    out = doc.run("jhub-cloud check --secrets", expect=1)  # the same command, now with a secret missing
    assert "client-secret" in out, out
    out = doc.run("jhub-cloud explain /etc/jhub-cloud/jhub-cloud.yaml --groups physics,cms")
    assert "Groups: cms, physics" in out and "Can log in: yes" in out, out
    explained = json.loads(doc.run("jhub-cloud explain ... --json"))
    assert explained["groups"] == ["cms", "physics"] and explained["can_log_in"] is True, explained

    spec = tmp_path / "etc-sts-wire" / "spec.yaml"
    spec.parent.mkdir()
    idp = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    spec.write_text(f"token: {{source: device, issuer: '{idp}', client_id: sts-wire-public}}\n"
                    "sts: {endpoint: 'http://127.0.0.1:9', provider: Ceph, role_arn: 'arn:aws:iam:::role/notebooks'}\n"
                    f"mounts:\n  - {{remote: '{{username}}', path: '{tmp_path}/s3/{{username}}'}}\n")
    out = doc.run("sts-wire check --spec", expect=4)
    assert "FAIL  token" in out and idp in out and "1 problem found" in out, out
    assert not (tmp_path / "s3").exists()  # it changed nothing
    doc.finish()
