"""The demo (scripts/demo.sh, the README's first command) as a person uses it, in Chromium.

The demo runs as a subprocess on free ports with its own state folder. Alice logs in at the demo
identity provider, sees her two profiles, starts a server, finds her bucket and scratch as folders
in JupyterLab's file browser and saves a notebook into her bucket, which the test then reads from
S3; dave (no allowed group) gets one clear refusal. Ctrl-C (SIGINT) then stops everything the demo
started. Screenshots: test-artifacts/demo/ (copies in docs/images/ illustrate the README).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.testbed.browser import Chromium, descendants
from tests.testbed.cloudhub import CloudHub
from tests.testbed.docker import pids_with_arg
from tests.testbed.idp import IdP
from tests.testbed.paths import ARTIFACTS, CACHE, REPO, free_port
from tests.testbed.pki import PKI
from tests.testbed.procs import mounts_under, pid_alive, stop_pid
from tests.testbed.s3 import static_s3_client
from tests.testbed.seaweedfs import ADMIN_KEY, ADMIN_SECRET

pytestmark = pytest.mark.slow
SHOTS = ARTIFACTS / "demo"


def fuse_mounts_seen_by(pids, root: Path) -> set[str]:
    """FUSE mounts under root in the mount namespaces of these processes."""
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/mounts").read_text().splitlines():
                _, target, fstype, *_ = line.split()
                if fstype.startswith("fuse") and target.startswith(f"{root}/"):
                    out.add(target)
    return out


class RunningDemo:
    def __init__(self, state: Path, *args: str):
        self.state, self.args = state, list(args)
        self.port, self.idp_port = free_port(), free_port()
        self.out = state.parent / f"{state.name}.out"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 900) -> str:
        """scripts/demo.sh until it says it is ready; returns what it printed."""
        argv = [str(REPO / "scripts" / "demo.sh"), "--port", str(self.port), "--idp-port", str(self.idp_port),
                "--state", str(self.state), *self.args]
        # The docker backend's images: in the tests' cache, apart from a person's demo.
        env = {**os.environ, "JHUB_CLOUD_DEMO_DOCKER": str(CACHE / "demo-docker")}
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(r"\] ready in \d+ s", text):
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo ended ({self.proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.5)
        raise AssertionError(f"the demo was not ready after {timeout} s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def s3(self):
        endpoint = re.search(r"S3 at (http://127\.0\.0\.1:\d+)", self.text()).group(1)
        return static_s3_client(endpoint, ADMIN_KEY, ADMIN_SECRET)

    def hub(self) -> CloudHub:
        """The demo's hub, driven as the tests drive theirs (its API token is in the state folder)."""
        pki_dir = self.state / "pki"
        pki = PKI(pki_dir, *(pki_dir / f for f in ("ca.crt", "bundle.crt", "server.crt", "server.key",
                                                   "sig.crt", "sig.key")))
        hub = CloudHub(IdP(pki, self.state / "idp", port=self.idp_port), self.state / "hub", port=self.port)
        hub.api_token = (self.state / "hub" / "api_token").read_text().strip()
        return hub

    def stop(self) -> None:
        """SIGINT (Ctrl-C), then: the demo ended well and nothing it started remains."""
        pids = descendants(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGINT)
        assert self.proc.wait(timeout=120) == 0, self.text()[-2000:]
        assert "stopped: nothing of the demo is running" in self.text()
        left = [p for p in pids if pid_alive(p)]
        assert left == [], left
        assert mounts_under(self.state) == []
        # Container shims and slurmstepd are not our children: they name the demo's folder.
        assert pids_with_arg(str(self.state)) == []

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                stop_pid(pid, timeout=5)
            stop_pid(self.proc.pid, timeout=5)


@pytest.fixture(scope="module")
def demo(run_dir, user_fuse):
    d = RunningDemo(run_dir / "demo-state")
    try:
        d.banner = d.start()
        yield d
    finally:
        d.kill()   # only if a test failed before the Ctrl-C test stopped it


@pytest.fixture(scope="module")
def chromium(demo, run_dir):
    """Chromium trusting the demo's CA (as a person would after importing it)."""
    c = Chromium(run_dir / "demo-browser", ca_cert=demo.state / "pki" / "ca.crt")
    try:
        c.start()
        yield c.browser
    finally:
        c.stop()


def login(chromium, demo, user: str):
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(demo.url)
    page.click("text=Sign in with the demo identity provider")
    page.wait_for_url("**/interaction/**", timeout=20000)
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", f"{user}-pw")
    return context, page


def test_banner_gives_the_url_and_the_logins(demo):
    assert f"jhub-cloud demo is up: {demo.url}" in demo.banner
    for user in ("alice", "bob", "carol", "dave"):
        assert re.search(rf"{user}\s+password {user}-pw", demo.banner)
    assert re.search(r"dave .*refused", demo.banner)
    assert "Stop: Ctrl-C" in demo.banner


def test_alice_starts_a_server_and_saves_a_notebook_into_her_bucket(demo, chromium):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page = login(chromium, demo, "alice")
    try:
        page.screenshot(path=str(SHOTS / "login.png"), clip={"x": 0, "y": 0, "width": 640, "height": 160})
        page.click("button[type=submit]")
        page.wait_for_url("**/hub/spawn", timeout=30000)
        profiles = page.eval_on_selector_all("input[name=profile]", "els => els.map(e => e.value)")
        assert profiles == ["physics-cpu", "cms-cpu"]
        page.screenshot(path=str(SHOTS / "spawn-page.png"), full_page=True)

        page.click("button[type=submit]")          # the preselected profile and values
        page.wait_for_url("**/spawn-pending/**", timeout=30000)
        page.wait_for_selector("#progress-message", timeout=10000)
        page.screenshot(path=str(SHOTS / "progress.png"))
        page.wait_for_url("**/user/alice/lab**", timeout=120000)
        # JupyterLab restores alice's last layout (kept in her home): start from the default one.
        page.goto(demo.url + "/user/alice/lab?reset")

        # JupyterLab's file browser: her bucket and scratch, as folders.
        items = ".jp-DirListing-content .jp-DirListing-itemText"
        page.wait_for_selector(f"{items} >> text=scratch", timeout=60000)
        names = page.eval_on_selector_all(items, "els => els.map(e => e.textContent.trim())")
        assert {"alice", "scratch"} <= set(names), names
        with contextlib.suppress(Exception):   # JupyterLab's "notify me of news?" toast, if it comes
            page.click(".Toastify__toast button:text-is('No')", timeout=5000)
            page.wait_for_selector(".Toastify__toast", state="detached", timeout=5000)
        page.screenshot(path=str(SHOTS / "jupyterlab.png"))

        # Into her bucket; a new notebook there from a launcher that opens in that folder.
        page.dblclick(f"{items} >> text=alice")
        page.wait_for_selector(".jp-FileBrowser-crumbs >> text=alice", timeout=20000)
        page.click(".jp-FileBrowser-toolbar [data-command='launcher:create']")
        page.click(".jp-LauncherCard[data-category='Notebook'] >> visible=true")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell .cm-content", timeout=60000)
        page.click(".jp-NotebookPanel .jp-Cell .cm-content")
        page.keyboard.type("print('saved from the jhub-cloud demo')")
        page.keyboard.press("Control+s")
        # JupyterLab asks for a name when an untitled notebook is first saved.
        dialog = page.wait_for_selector(".jp-Dialog input", timeout=10000)
        dialog.fill("demo.ipynb")
        page.click(".jp-Dialog .jp-mod-accept")
        page.wait_for_selector(".jp-DirListing-itemText >> text=demo.ipynb", timeout=30000)
    finally:
        context.close()

    s3, body = demo.s3(), None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):   # rclone uploads after close()
            body = s3.get_object(Bucket="alice", Key="demo.ipynb")["Body"].read()
        if body and b"saved from the jhub-cloud demo" in body:
            break
        time.sleep(0.5)
    assert body is not None, "demo.ipynb never reached alice's bucket"
    nb = json.loads(body)
    assert "saved from the jhub-cloud demo" in "".join(nb["cells"][0]["source"])


def test_a_user_outside_the_allowed_groups_sees_one_clear_refusal(demo, chromium):
    context, page = login(chromium, demo, "dave")
    try:
        page.click("button[type=submit]")
        page.wait_for_url("**/hub/oauth_callback**", timeout=30000)
        text = page.inner_text("body")
        reason = "Your account is not a member of any group allowed on this hub"
        assert text.count(reason) == 1, text
        assert "403 : Access refused" in text
        page.screenshot(path=str(SHOTS / "refused.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 360})
    finally:
        context.close()


def test_ctrl_c_stops_everything_the_demo_started(demo):
    pids = descendants(demo.proc.pid)
    assert len(pids) >= 5, pids           # IdP, SeaweedFS, hub, proxy, alice's server and its rclone...
    hub = demo.hub()
    assert hub.servers("alice").get("", {}).get("ready"), hub.log_tail(60)   # still running
    # Her mounts, in her server's private mount namespace.
    assert fuse_mounts_seen_by(pids, Path("/s3")) == {"/s3/alice", "/s3/scratch"}
    demo.stop()


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("backend", ["docker", "slurm"])
def test_demo_with_another_backend(backend, run_dir, user_fuse):
    """--backend docker (images/lab under the demo's dockerd; the first run builds it) and
    --backend slurm: alice's server starts there with her bucket mounted, a file written through
    the server lands in S3, and Ctrl-C leaves no process, container, job or mount."""
    demo = RunningDemo(run_dir / f"demo-{backend}", "--backend", backend)
    try:
        demo.start(timeout=1500)
        hub = demo.hub()
        session, _ = hub.login("alice")
        r = hub.spawn("alice", options={"profile": "physics-cpu", "cpu": 1, "memory": "1G"})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("alice", timeout=180)
        child = hub.user("alice")["servers"][""]["state"]["child"]
        assert ("job_id" if backend == "slurm" else "object_id") in child, child
        # A token that may use her server, made in her own logged-in session (as on the hub's token page).
        session.get(f"{demo.url}/hub/token", timeout=30)           # sets the _xsrf cookie
        r = session.post(f"{demo.url}/hub/api/users/alice/tokens", timeout=30,
                         headers={"X-XSRFToken": session.cookies.get("_xsrf", "")},
                         json={"scopes": ["access:servers!user=alice"], "note": "demo test"})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        url = f"{demo.url}/user/alice/api/contents/alice/from-{backend}.txt"
        r = requests.put(url, headers={"Authorization": f"token {token}"}, timeout=60,
                         json={"type": "file", "format": "text", "content": f"written on {backend}\n"})
        assert r.status_code in (200, 201), r.text
        s3, body = demo.s3(), None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            with contextlib.suppress(Exception):   # rclone uploads after close()
                body = s3.get_object(Bucket="alice", Key=f"from-{backend}.txt")["Body"].read()
            time.sleep(0.5)
        assert body == f"written on {backend}\n".encode()
        demo.stop()
    finally:
        demo.kill()


def test_a_busy_port_is_refused_before_anything_starts(run_dir):
    state = run_dir / "demo-busy"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--port", str(busy),
                            "--idp-port", str(free_port()), "--state", str(state)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"port {busy} on 127.0.0.1 is in use" in r.stderr and "--port" in r.stderr
    assert "OpenID provider" not in r.stdout and not (state / "idp").exists()
