"""Docker testbed: dockerd answers, the cached base image runs Python, host networking is loopback."""

import http.server
import threading

import pytest

from tests.testbed.paths import free_port


def test_dockerd_answers_on_private_socket(dockerd):
    assert dockerd.host.startswith("unix:///")
    info = dockerd.client().info()
    assert info["DockerRootDir"] == str(dockerd.data_root)


def test_container_runs_python(dockerd, base_image):
    code = "import sys, venv, ssl; print('hello', sys.version_info[0], ssl.get_default_verify_paths().cafile)"
    r = dockerd.docker("run", "--rm", "--network", "none", base_image, "python3", "-c", code)
    assert r.stdout.split() == ["hello", "3", "/usr/lib/ssl/cert.pem"]


@pytest.fixture
def loopback_http():
    """A tiny HTTP server on loopback, answering every GET with a fixed body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    srv.server_close()


def test_host_network_reaches_loopback_service(dockerd, base_image, loopback_http):
    code = f"import urllib.request; print(urllib.request.urlopen('{loopback_http}', timeout=5).read().decode())"
    r = dockerd.docker("run", "--rm", "--network", "host", base_image, "python3", "-c", code)
    assert r.stdout.strip() == "hello from the host"


def test_no_network_container_is_cut_off_from_host(dockerd, base_image, loopback_http):
    code = (f"import urllib.request\ntry: urllib.request.urlopen('{loopback_http}', timeout=5)\n"
            "except OSError as e: print('refused', type(e).__name__)")
    r = dockerd.docker("run", "--rm", "--network", "none", base_image, "python3", "-c", code)
    assert r.stdout.startswith("refused")


VENV_BINDS = ["-v", "/opt/jhub-cloud/venv:/opt/jhub-cloud/venv:ro"]


def test_lab_image_runs_the_host_venv_as_jovyan(dockerd, lab_image):
    from tests.testbed.paths import REPO, VENV

    code = "import os, jupyterhub, sts_wire; print(os.getuid(), os.environ['HOME'], jupyterhub.__version__)"
    r = dockerd.docker("run", "--rm", "--network", "none", "-v", f"{VENV}:{VENV}:ro", "-v", f"{REPO}:{REPO}:ro",
                       lab_image, f"{VENV}/bin/python", "-c", code)
    uid, home, version = r.stdout.split()
    assert (uid, home) == ("1000", "/home/jovyan")
    import jupyterhub

    assert version == jupyterhub.__version__


def test_lab_image_fuse_without_privileged(dockerd, lab_image):
    # The least FUSE needs: the device, CAP_SYS_ADMIN (for the setuid fusermount3) and an AppArmor
    # profile that allows mounts. The user stays jovyan with no capability of its own.
    r = dockerd.docker("run", "--rm", "--network", "none", "--device", "/dev/fuse:/dev/fuse:rwm",
                       "--cap-add", "SYS_ADMIN", "--security-opt", "apparmor=unconfined", lab_image,
                       "bash", "-c", "ls -l /dev/fuse; grep CapEff /proc/self/status; stat -c %a /usr/bin/fusermount3",
                       check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert lines[2] == "4755"
