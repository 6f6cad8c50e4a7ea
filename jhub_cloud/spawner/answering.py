"""Wait, in short steps, until a new server answers HTTP.

JupyterHub checks a new server with an exponential back-off (0.2 s, 0.4 s, ... up to 5 s between
tries), so a server that comes up just after one try waits seconds for the next: with storage
mounted first, servers come up later and fell into the long gaps. CloudSpawner asks every 0.1 s
for a few seconds before it hands the server to the hub, whose own check then finds it at once.
"""

from __future__ import annotations

import asyncio
import time

from tornado.httpclient import AsyncHTTPClient, HTTPClientError


def server_api_url(ip: str, port: int, base_url: str) -> str:
    """The URL the hub itself checks (the server's base URL + ``api``)."""
    host = ip or "127.0.0.1"  # '' means every interface: loopback is one of them
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{base_url.rstrip('/')}/api"


async def wait_answering(url: str, seconds: float, interval: float = 0.1) -> bool:
    """True as soon as `url` gives any HTTP answer (a 403 too: the server is up); False when
    nothing answered within `seconds` (the hub's own check decides then)."""
    client = AsyncHTTPClient()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            r = await client.fetch(url, raise_error=False, follow_redirects=False,
                                   connect_timeout=1, request_timeout=2)
            if r.code != 599:  # 599: no connection (not listening yet)
                return True
        except (HTTPClientError, OSError):
            pass
        await asyncio.sleep(interval)
    return False
