"""Every shell command shown in docs/admin.md, docs/scientists.md and docs/sts-wire-alone.md is
run here against the test services, with the docs' example addresses (IdP, S3, hub) and the test
CA put in their place; the few that need a real site are listed in NEEDS_A_SITE with the reason.
Each doc's test ends by checking that it ran every command of its doc."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.sts_wire_helpers import refresh_token_setup, wait_until
from tests.testbed.cloudhub import CloudHub
from tests.testbed.paths import REPO, VENV_BIN
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
        cmd = stripped
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
                 user: str = "alice", wrap=None):
        self.commands = doc_commands(DOCS / name)
        self.ran: set[str] = set()
        self.subst, self.env, self.cwd, self.idp, self.user = subst, env, cwd, idp, user
        self.wrap = wrap or (lambda cmd: ["bash", "-c", cmd])
        self.logs = logs / f"{name}.logs"
        self.logs.mkdir(exist_ok=True)

    def find(self, prefix: str) -> str:
        found = [c for c in self.commands if c.startswith(prefix) and c not in NEEDS_A_SITE]
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
        missing = [c for c in self.commands if c not in self.ran and c not in NEEDS_A_SITE]
        assert missing == [], f"commands of the doc that no test ran: {missing}"


def test_every_excused_command_is_still_in_the_docs():
    shown = {c for name in ("admin.md", "scientists.md", "sts-wire-alone.md") for c in doc_commands(DOCS / name)}
    assert set(NEEDS_A_SITE) <= shown, set(NEEDS_A_SITE) - shown


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
        import json

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
