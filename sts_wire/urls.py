"""Which URLs may carry a token or keys: https, or plain http on loopback only (the shared
core's loopback test), or to a host the site lists in ``allow_plain_http``. Pure."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from .core.oidc import is_loopback
from .errors import Exit, StsWireError


def host_of(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").lower()


def insecure_problem(url: str, what: str, allowed_http_hosts: Iterable[str] = ()) -> str | None:
    """Why ``url`` must not carry a token or keys, or None when it may: https anywhere; http only
    to loopback or to a host the site listed in ``allow_plain_http`` (a private link it trusts)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https":
        return None
    host = host_of(url)
    if scheme == "http" and (is_loopback(host) or host in {h.lower() for h in allowed_http_hosts}):
        return None
    if scheme != "http":
        return f"{what}: {url} is not an http(s) URL"
    return (f"{what}: {url} is plain http to {host or 'a remote host'}; tokens and keys must go over "
            "https (plain http is accepted on loopback only)")


def require_secure(url: str, what: str, allowed_http_hosts: Iterable[str] = (), code: Exit = Exit.SPEC) -> str:
    """Return ``url`` or raise a clear error before anything secret is sent to it."""
    problem = insecure_problem(url, what, allowed_http_hosts)
    if problem:
        raise StsWireError(problem, code,
                           "use the https:// URL of that service (for the hub: JupyterHub's internal_ssl, or "
                           "the proxy's public https URL), or, for a private link you trust, list its host "
                           "in the spec's allow_plain_http")
    return url
