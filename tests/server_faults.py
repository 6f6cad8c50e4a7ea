"""What the server-fault tests of every backend ask the hub: a user's token, the server's API
through the proxy, how long until the hub shows a server stopped, and why it says it stopped."""

from __future__ import annotations

import html
import re
import time

import requests


def user_token(hub, user: str) -> str:
    """A fresh API token of `user` (made by the tester service), as a script of theirs would use."""
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "fault test", "expires_in": 600})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


def server_api(hub, user: str, token: str, server: str = "") -> requests.Response:
    """GET the server's /api/status (which needs a token) through the hub's proxy, as the user."""
    path = f"/user/{user}/{server + '/' if server else ''}api/status"
    return requests.get(hub.url + path, headers={"Authorization": f"token {token}"}, timeout=30)


def seconds_until_stopped(hub, user: str, server: str = "", since: float | None = None,
                          timeout: float = 30) -> float:
    """Seconds from `since` (monotonic; default now) until the hub's API no longer lists the server."""
    t0 = time.monotonic() if since is None else since
    while server in hub.servers(user) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    assert server not in hub.servers(user), f"the hub still shows {user}/{server!r} after {timeout} s"
    return time.monotonic() - t0


def last_stop_reason(hub, user: str, server: str = "") -> str:
    """Why the hub says a stopped server ended (its stored state, as the admin API shows it)."""
    r = hub.api("GET", f"/users/{user}?include_stopped_servers=1")
    r.raise_for_status()
    return r.json()["servers"][server]["state"]["last_stop"]["reason"]


def spawn_page_notice(hub, user: str, server: str = "") -> str:
    """The notice the user's spawn page opens with after a server ended on its own ('' if none)."""
    session, _ = hub.login(user)
    path = f"/hub/spawn/{user}/{server}" if server else f"/hub/spawn/{user}"
    page = session.get(hub.url + path, timeout=30)
    assert page.status_code == 200, page.text[:300]
    m = re.search(r'id="jhub-cloud-last-stop">(.*?)</div>', page.text, re.S)
    return html.unescape(m.group(1)) if m else ""
