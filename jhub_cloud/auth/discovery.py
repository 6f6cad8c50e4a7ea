"""OpenID discovery for the hub, off the event loop.

The hub's configuration (`hub_config.apply`) fetches the document once at start-up in a worker
thread and fails fast with a clear message; an authenticator built without it (tests, other
setups) fetches it with `asyncio.to_thread` on first use.
"""

from __future__ import annotations

import concurrent.futures

from sts_wire.core.oidc import DiscoveryError, discover

# A login needs the authorization endpoint as well as what every client needs.
LOGIN_REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


def discover_for_login(issuer: str, ca_file: str | None = None, retry_seconds: float = 0,
                       timeout: float = 10) -> dict:
    return discover(issuer, verify=ca_file or True, timeout=timeout, retry_seconds=retry_seconds,
                    required=LOGIN_REQUIRED)


def discover_at_startup(issuer: str, ca_file: str | None = None, retry_seconds: float = 60) -> dict:
    """The discovery document, fetched in a worker thread at hub start (nothing is served yet).

    Raises DiscoveryError with a message that says what to check.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="oidc-discovery") as pool:
        return pool.submit(discover_for_login, issuer, ca_file, retry_seconds).result()


__all__ = ["LOGIN_REQUIRED", "DiscoveryError", "discover_at_startup", "discover_for_login"]
