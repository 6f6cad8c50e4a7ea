"""CloudSpawner's short-step wait for a new server to answer (jhub_cloud/spawner/answering.py),
against a real HTTP server on loopback."""

import asyncio
import http.server
import threading
import time

from jhub_cloud.spawner.answering import server_api_url, wait_answering
from tests.testbed.paths import free_port


def test_the_url_is_the_one_the_hub_checks():
    assert server_api_url("127.0.0.1", 8888, "/user/alice/") == "http://127.0.0.1:8888/user/alice/api"
    assert server_api_url("", 8888, "/user/alice/gpu/") == "http://127.0.0.1:8888/user/alice/gpu/api"
    assert server_api_url("::1", 8888, "/user/a%40b/") == "http://[::1]:8888/user/a%40b/api"


class Forbidden(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(403)  # any answer means the server is up
        self.end_headers()

    def log_message(self, *a):
        pass


def test_returns_once_a_server_comes_up_and_gives_up_when_none_does():
    port = free_port()
    url = f"http://127.0.0.1:{port}/user/alice/api"
    srv: list = []

    def late_server():
        time.sleep(0.6)
        s = http.server.HTTPServer(("127.0.0.1", port), Forbidden)
        srv.append(s)
        s.serve_forever()

    threading.Thread(target=late_server, daemon=True).start()
    try:
        t0 = time.monotonic()
        assert asyncio.run(wait_answering(url, 10)) is True
        took = time.monotonic() - t0
        assert srv and 0.5 < took < 9, took  # after it came up, long before the budget
    finally:
        if srv:
            srv[0].shutdown()
            srv[0].server_close()
    t0 = time.monotonic()
    assert asyncio.run(wait_answering(f"http://127.0.0.1:{free_port()}/api", 0.5)) is False
    assert time.monotonic() - t0 < 3
