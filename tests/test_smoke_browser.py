"""configurable-http-proxy routes to a loopback server; headless Chromium renders it through CHP."""

import asyncio
import http.server
import struct
import threading
from pathlib import Path

import pytest
import requests

from tests.testbed.paths import ARTIFACTS, free_port

PAGE = b"""<!doctype html>
<html><head><title>jhub-cloud smoke</title></head>
<body style="margin:0">
<h1 id="greeting">Hello from loopback</h1>
<div id="box" style="position:absolute;left:300px;top:200px;width:120px;height:80px;background:#c33"></div>
<p id="js">script did not run</p>
<script>document.getElementById("js").textContent = "script ran";</script>
</body></html>"""


@pytest.fixture(scope="module")
def site():
    """A tiny HTTP server on loopback that serves PAGE at every path."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def loopback() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (signature, then the IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_proxy_routes_to_loopback_server(chp, site):
    assert loopback().get(chp.url + "/routed/", timeout=5).status_code == 404
    chp.add_route("/routed", site)
    try:
        assert chp.routes()["/routed"]["target"] == site
        r = loopback().get(chp.url + "/routed/page.html", timeout=5)
        assert r.status_code == 200
        assert "Hello from loopback" in r.text
    finally:
        chp.delete_route("/routed")
    assert loopback().get(chp.url + "/routed/", timeout=5).status_code == 404


def test_proxy_api_needs_the_token_and_keeps_it_off_argv(chp):
    assert loopback().get(chp.api_url + "/routes", timeout=5).status_code == 403
    cmdline = Path(f"/proc/{chp.daemon.pid}/cmdline").read_bytes()
    assert chp.token.encode() not in cmdline


def test_chromium_renders_page_through_proxy(browser, chp, site):
    chp.add_route("/rendered", site)
    context = browser.new_context(viewport={"width": 800, "height": 600})
    try:
        page = context.new_page()
        response = page.goto(chp.url + "/rendered/")
        assert response.status == 200
        assert page.title() == "jhub-cloud smoke"
        assert page.inner_text("#greeting") == "Hello from loopback"
        assert page.inner_text("#js") == "script ran"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "smoke-browser-page.png"
        page.screenshot(path=str(shot))
        assert png_size(shot) == (800, 600)
        # The element's own screenshot has its CSS size only if Chromium really laid it out.
        box = ARTIFACTS / "smoke-browser-box.png"
        page.locator("#box").screenshot(path=str(box))
        assert png_size(box) == (120, 80)
    finally:
        context.close()
        chp.delete_route("/rendered")


def test_chromium_trusts_the_test_ca(browser, idp):
    page = browser.new_page()
    try:
        response = page.goto(idp.issuer + "/.well-known/openid-configuration")
        assert response.status == 200
        assert response.json()["issuer"] == idp.issuer
    finally:
        page.close()


async def test_async_tests_still_work_beside_the_browser(browser, site):
    # Playwright runs in its own thread, so this session's asyncio loop is still free to run.
    def visit():
        page = browser.new_page()
        try:
            page.goto(site)
            return page.inner_text("#greeting")
        finally:
            page.close()

    await asyncio.sleep(0)
    assert await asyncio.to_thread(visit) == "Hello from loopback"
