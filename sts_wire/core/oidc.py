"""OpenID Connect discovery: `<issuer>/.well-known/openid-configuration`, checked, clear errors.

`check_document` is pure; `discover` fetches with requests (synchronous: the hub calls it once at
start-up in a thread, sts-wire calls it directly). Both raise `DiscoveryError`, whose message says
what was wrong and what to check.
"""

from __future__ import annotations

import ipaddress
import random
import time
import urllib.parse
from collections.abc import Iterable, Mapping

import requests

from .answers import AnswerError, bounded_json

# What every user of the document needs; callers add more (authorization_endpoint for a login,
# device_authorization_endpoint for the device flow).
REQUIRED = ("issuer", "token_endpoint", "jwks_uri")
_ENDPOINT_KEYS = ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint",
                  "device_authorization_endpoint", "revocation_endpoint", "introspection_endpoint")


class DiscoveryError(Exception):
    """Discovery failed; `unreachable` says whether retrying later may help."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_is_secure(url: str) -> bool:
    """https://, or http:// to loopback only (tokens must not cross a network in clear)."""
    u = urllib.parse.urlsplit(url)
    return u.scheme == "https" and bool(u.hostname) or (u.scheme == "http" and is_loopback(u.hostname))


def same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def check_document(issuer: str, doc, required: Iterable[str] = REQUIRED) -> dict:
    """The discovery document if it is usable for `issuer`, else DiscoveryError naming the problem."""
    url = discovery_url(issuer)
    if not isinstance(doc, Mapping):
        raise DiscoveryError(f"OpenID discovery at {url} did not answer a JSON object: is {issuer} an "
                             "OpenID Connect issuer?")
    missing = [k for k in dict.fromkeys([*REQUIRED, *required]) if not isinstance(doc.get(k), str) or not doc[k]]
    if missing:
        raise DiscoveryError(f"OpenID discovery at {url} has no {', '.join(repr(k) for k in missing)}: is "
                             f"{issuer} an OpenID Connect issuer (and does it offer what is needed)?")
    if not same_issuer(doc["issuer"], issuer):
        raise DiscoveryError(f"OpenID discovery at {url} names issuer {doc['issuer']!r}, not {issuer!r}: write "
                             "the issuer URL exactly as the provider names itself")
    for key in _ENDPOINT_KEYS:
        if isinstance(doc.get(key), str) and not url_is_secure(doc[key]):
            raise DiscoveryError(f"OpenID discovery at {url} gives {key} {doc[key]!r}, which is not https://: "
                                 "tokens must not travel in clear (http:// is allowed on loopback only)")
    return dict(doc)


def discover(issuer: str, *, verify: bool | str = True, timeout: float = 10, retry_seconds: float = 0,
             required: Iterable[str] = REQUIRED, session: requests.Session | None = None) -> dict:
    """Fetch and check the issuer's discovery document.

    `verify`: True (system CAs) or the path of a CA bundle (passed per request, so the
    environment's REQUESTS_CA_BUNDLE cannot override it). While the IdP cannot be reached, retry
    for up to `retry_seconds` (with jitter); a wrong answer fails at once.
    """
    if not issuer:
        raise DiscoveryError("no issuer URL is set: give the OpenID Connect issuer's URL")
    url = discovery_url(issuer)
    if not url_is_secure(url):
        raise DiscoveryError(f"the issuer {issuer!r} is not https://: tokens must not travel in clear "
                             "(http:// is allowed on loopback only)")
    http = session or requests.Session()
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    while True:
        try:
            r = http.get(url, verify=verify, timeout=timeout, headers={"Accept": "application/json"}, stream=True)
            break
        except requests.exceptions.SSLError as e:
            raise DiscoveryError(f"OpenID discovery at {url}: the IdP's TLS certificate is not trusted ({e}). "
                                 "Give the CA bundle that signed it (auth.ca_file)") from None
        except (requests.ConnectionError, requests.Timeout) as e:
            if time.monotonic() + delay > deadline:
                raise DiscoveryError(f"OpenID discovery at {url}: the IdP cannot be reached "
                                     f"({type(e).__name__}). Check the issuer URL and that this machine "
                                     "can reach it", unreachable=True) from None
            time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not a secret)
            delay = min(delay * 2, 5)
    if r.status_code != 200:
        r.close()
        raise DiscoveryError(f"OpenID discovery at {url} answered HTTP {r.status_code}: check the issuer URL",
                             unreachable=r.status_code >= 500)
    try:
        doc = bounded_json(r, deadline=timeout)
    except AnswerError as e:
        raise DiscoveryError(f"OpenID discovery at {url}: {e}: check the issuer URL") from None
    return check_document(issuer, doc, required)


def fetch_jwks(jwks_uri: str, *, verify: bool | str = True, timeout: float = 10,
               session: requests.Session | None = None) -> dict:
    """The issuer's key set (for jwt.SyncVerifier)."""
    http = session or requests.Session()
    try:
        r = http.get(jwks_uri, verify=verify, timeout=timeout, headers={"Accept": "application/json"}, stream=True)
        r.raise_for_status()
        return bounded_json(r, deadline=timeout)
    except AnswerError as e:
        raise DiscoveryError(f"fetching the issuer's keys at {jwks_uri} failed: {e}", unreachable=True) from None
    except requests.RequestException as e:
        raise DiscoveryError(f"fetching the issuer's keys at {jwks_uri} failed ({type(e).__name__})",
                             unreachable=True) from None
