"""Waiting for a server of a test to answer over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback URLs of the tests)
        return r.read().decode()


async def wait_up(url: str, timeout: float = 30) -> str:
    """The body of the first answer from `url`, asking five times a second until `timeout`."""
    for _ in range(int(timeout * 5)):
        try:
            return await asyncio.to_thread(get, url)
        except OSError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never answered")
