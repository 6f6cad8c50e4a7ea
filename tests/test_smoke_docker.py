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
