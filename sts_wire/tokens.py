"""Token sources: the JupyterHub API, a token file, a refresh-token grant, the device-code flow.

Each source's ``fetch()`` returns a fresh :class:`Token` or raises StsWireError with a plain
message and the right exit code. Tokens never appear in ``repr``, logs, URLs or arguments:
client secrets go in the request body or the Basic header, never in a query string.

Talking to the identity provider (TLS, discovery, JWT verification, the OAuth client) is in
sts_wire.idp.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .core.secretfile import SecretFileError, read_secret_file
from .errors import Exit, StsWireError
from .idp import Http, OAuthClient, _idp_error, _json, _origin, default_verify, jwt_claims_unverified
from .runtime import write_private
from .spec import TokenSpec
from .urls import require_secure

log = logging.getLogger("sts_wire.tokens")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Token:
    """An OIDC access token and what is known of its lifetime. The secret never shows in repr."""

    access_token: str = field(repr=False)
    expires_at: float | None
    obtained_at: float
    source: str
    refresh_token: str | None = field(default=None, repr=False)
    user: str | None = None

    def remaining(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)


def _expiry(resp: dict, access_token: str, now: float) -> float | None:
    if isinstance(resp.get("expires_at"), int | float):
        return float(resp["expires_at"])
    if isinstance(resp.get("expires_in"), int | float):
        return now + float(resp["expires_in"])
    exp = jwt_claims_unverified(access_token).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _user_of(access_token: str) -> str | None:
    c = jwt_claims_unverified(access_token)
    return c.get("preferred_username") or c.get("username")


def token_from(resp: dict, now: float, source: str, refresh_token: str | None) -> Token:
    """The token in an IdP's token-endpoint answer (a refresh token not sent again is kept)."""
    at = resp.get("access_token")
    if not at:
        raise StsWireError("the identity provider's answer has no access_token", Exit.TOKEN)
    return Token(at, _expiry(resp, at, now), now, source,
                 refresh_token=resp.get("refresh_token") or refresh_token, user=_user_of(at))


class TokenSource:
    """Base class: ``fetch()`` a fresh token; ``describe()`` says where tokens come from."""

    name = "token"

    def fetch(self) -> Token:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def changed(self) -> bool:
        """True when the source has a newer token than the last fetch (file sources)."""
        return False


# --- the JupyterHub API ------------------------------------------------------------------------
class HubSource(TokenSource):
    """The user's current access token from the hub's token endpoint, read with the server's own
    API token (scope ``custom:jhub-cloud:access-token!user``): ``GET
    $JUPYTERHUB_API_URL/jhub-cloud/users/<name>/token`` answers ``{access_token, expires_at}``
    only; the hub refreshes the token first when it is near expiry. The server's token can read
    nothing else: no refresh token, no ID token."""

    name = "hub"

    def __init__(self, api_url: str, api_token: str, verify: str | bool, cert: tuple[str, str] | None = None,
                 user: str | None = None):
        self.api_url = api_url.rstrip("/")
        self._api_token = api_token
        self.http = Http(verify, cert)
        self.user = user

    def describe(self) -> str:
        return f"JupyterHub API at {_origin(self.api_url)}"

    def _get(self, path: str) -> requests.Response:
        return self.http.request("GET", self.api_url + path, "JupyterHub API", Exit.IDP_UNREACHABLE,
                                 headers={"Authorization": f"token {self._api_token}"})

    def _whoami(self) -> str:
        r = self._get("/user")
        name = _json(r).get("name") if r.status_code == 200 else None
        if not name:
            raise StsWireError(f"the JupyterHub API did not say whose server this is (HTTP {r.status_code})",
                               Exit.TOKEN, "set JUPYTERHUB_USER (JupyterHub sets it in every server)")
        return name

    def fetch(self) -> Token:
        now = time.time()
        if self.user is None:
            self.user = self._whoami()
        path = f"/jhub-cloud/users/{urllib.parse.quote(self.user, safe='')}/token"
        r = self._get(path)
        doc = _json(r)
        msg = str(doc.get("message") or "")[:200]
        if r.status_code == 401:
            raise StsWireError(f"the hub can no longer renew {self.user}'s token: the identity provider "
                               f"refused it{' (' + msg + ')' if msg else ''}", Exit.TOKEN,
                               "log in to the hub again (log out, then in); the mounts come back by themselves")
        if r.status_code == 403:
            raise StsWireError(f"the JupyterHub API refused the server's token for {self.user}'s access token "
                               "(HTTP 403)", Exit.TOKEN,
                               "is JUPYTERHUB_API_TOKEN this server's own token, with the scope "
                               "custom:jhub-cloud:access-token!user?")
        if r.status_code == 404:
            raise StsWireError(f"the hub has no token endpoint for {self.user} (HTTP 404 for {path})", Exit.TOKEN,
                               "is this hub running jhub-cloud's authenticator, and is JUPYTERHUB_USER right?")
        if r.status_code == 503 or r.status_code >= 500:
            raise StsWireError(f"the hub cannot renew the token now (HTTP {r.status_code}"
                               f"{': ' + msg if msg else ''})", Exit.IDP_UNREACHABLE,
                               "the identity provider is unreachable from the hub; nothing to do: sts-wire keeps "
                               "trying and renews the keys by itself once it answers again")
        if r.status_code != 200:
            raise StsWireError(f"the JupyterHub API answered HTTP {r.status_code} for {path}", Exit.IDP_UNREACHABLE)
        at = doc.get("access_token")
        if not isinstance(at, str) or not at:
            raise StsWireError(f"the hub's answer for {path} has no access_token", Exit.TOKEN)
        exp = _expiry(doc, at, now)
        if exp is not None and exp <= now:
            raise StsWireError("the hub's access token for this user has expired", Exit.TOKEN,
                               "log in to the hub again")
        return Token(at, exp, now, self.name, user=self.user)


# --- a token file ------------------------------------------------------------------------------
class FileSource(TokenSource):
    """A file holding a JWT, or a JSON token response ({"access_token": ..., "expires_at"|
    "expires_in": ...}); re-read when it changes. Like every secret file, it must be mode 600."""

    name = "file"

    def __init__(self, path: str):
        self.path = Path(path)
        self._seen: tuple | None = None

    def describe(self) -> str:
        return f"token file {self.path}"

    def _stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        s = self._stamp()
        return s is not None and s != self._seen

    def fetch(self) -> Token:
        now = time.time()
        stamp = self._stamp()
        try:
            text = read_secret_file(self.path, allow_empty=True).strip()
        except SecretFileError as e:
            raise StsWireError(f"token {e}", Exit.TOKEN) from None
        resp: dict[str, Any] = {}
        if text.startswith("{"):
            try:
                resp = json.loads(text)
            except ValueError:
                raise StsWireError(f"token file {self.path} is not valid JSON", Exit.TOKEN) from None
            at = str(resp.get("access_token") or "")
        else:
            at = text.split()[0] if text else ""
        if not at:
            raise StsWireError(f"token file {self.path} holds no access token", Exit.TOKEN)
        self._seen = stamp
        exp = _expiry(resp, at, now)
        if exp is not None and exp <= now:
            raise StsWireError(f"the token in {self.path} has expired", Exit.TOKEN,
                               "whoever writes that file must renew it")
        return Token(at, exp, now, self.name, user=_user_of(at))


# --- OAuth clients: refresh-token grant and device-code flow -----------------------------------
def read_secret(spec: TokenSpec, env: dict | None = None) -> str | None:
    """The client secret, from a file or from the environment (never from the command line)."""
    env = os.environ if env is None else env
    if spec.client_secret_file:
        try:
            return read_secret_file(spec.client_secret_file).strip()
        except SecretFileError as e:
            raise StsWireError(f"client secret: {e}", Exit.SPEC) from None
    if spec.client_secret_env and env.get(spec.client_secret_env):
        return env[spec.client_secret_env].strip()
    return None


class RefreshSource(TokenSource):
    """The refresh-token grant against the issuer's token endpoint; a rotated refresh token is
    written back (0600) to the file it came from."""

    name = "refresh"

    def __init__(self, client: OAuthClient, refresh_token: str | None = None, file: str | None = None):
        self.client = client
        self.file = Path(file) if file else None
        self._refresh_token = refresh_token

    def describe(self) -> str:
        return f"refresh-token grant at {self.client.spec.issuer}"

    def _current(self) -> str:
        if self._refresh_token is None and self.file is not None:
            try:
                self._refresh_token = read_secret_file(self.file).strip()
            except SecretFileError as e:
                raise StsWireError(f"refresh token: {e}", Exit.TOKEN) from None
        if not self._refresh_token:
            raise StsWireError("no refresh token", Exit.TOKEN,
                               "set token.refresh_token_file, or STS_WIRE_REFRESH_TOKEN in the environment")
        return self._refresh_token

    def fetch(self) -> Token:
        now = time.time()
        rt = self._current()
        data = {"grant_type": "refresh_token", "refresh_token": rt}
        if self.client.spec.scope:
            data["scope"] = self.client.spec.scope
        if self.client.spec.audience:
            data["audience"] = self.client.spec.audience
        status, resp = self.client.post_token(data, "refresh-token grant")
        if status != 200:
            raise _idp_error(status, resp, "refresh-token grant")
        tok = token_from(resp, now, self.name, rt)
        if tok.refresh_token and tok.refresh_token != rt:
            self._refresh_token = tok.refresh_token
            if self.file is not None:
                write_private(self.file, tok.refresh_token + "\n")
                log.info("the identity provider rotated the refresh token; saved to %s", self.file)
        return tok


class DeviceSource(TokenSource):
    """The device-code flow for a person at a terminal; afterwards the refresh token it gave
    (kept in memory only) renews the access token."""

    name = "device"

    def __init__(self, client: OAuthClient, out=None, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.out = out or sys.stderr
        self.sleep = sleep
        self._refresh: RefreshSource | None = None

    def describe(self) -> str:
        return f"device-code flow at {self.client.spec.issuer}"

    def fetch(self) -> Token:
        if self._refresh is not None:
            try:
                return self._refresh.fetch()
            except StsWireError as e:
                if e.code != Exit.TOKEN:
                    raise
                print(f"sts-wire: the session ended ({e.message}); please sign in again.", file=self.out)
        tok = self.login()
        if tok.refresh_token:
            self._refresh = RefreshSource(self.client, refresh_token=tok.refresh_token)
        return tok

    def login(self) -> Token:
        meta = self.client.meta
        endpoint = meta.get("device_authorization_endpoint")
        if not endpoint:
            raise StsWireError(f"{self.client.spec.issuer} does not offer the device-code flow", Exit.TOKEN)
        data = {"scope": self.client.spec.scope or "openid"}
        if self.client.spec.audience:
            data["audience"] = self.client.spec.audience
        data, auth = self.client._auth(data)
        r = self.client.http.request("POST", endpoint, "device authorization", Exit.IDP_UNREACHABLE,
                                     data=data, auth=auth, headers={"Accept": "application/json"})
        dev = _json(r)
        if r.status_code != 200 or "device_code" not in dev:
            raise _idp_error(r.status_code, dev, "device authorization")
        uri = dev.get("verification_uri") or dev.get("verification_url")
        print(f"\nTo sign in, open {uri}\nand enter the code:  {dev['user_code']}", file=self.out)
        if dev.get("verification_uri_complete"):
            print(f"(or open {dev['verification_uri_complete']})", file=self.out)
        print("Waiting for you to approve...", file=self.out, flush=True)
        interval = float(dev.get("interval") or 5)
        deadline = time.monotonic() + float(dev.get("expires_in") or 600)
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            self.sleep(interval)
            now = time.time()
            status, resp = self.client.post_token(
                {"grant_type": DEVICE_GRANT, "device_code": dev["device_code"]}, "device-code flow")
            if status == 200:
                print("Signed in.", file=self.out, flush=True)
                return token_from(resp, now, self.name, None)
            err = resp.get("error")
            if err == "authorization_pending":
                if time.monotonic() - last_note > 30:
                    left = int(deadline - time.monotonic())
                    print(f"still waiting for approval ({left} s left)...", file=self.out, flush=True)
                    last_note = time.monotonic()
                continue
            if err == "slow_down":
                interval += 5
                continue
            if err == "access_denied":
                raise StsWireError("the sign-in was denied", Exit.TOKEN)
            if err == "expired_token":
                break
            raise _idp_error(status, resp, "device-code flow")
        raise StsWireError("the device code expired before the sign-in was approved", Exit.TOKEN,
                           "run the command again and approve within the time shown")


def make_source(spec: TokenSpec, env: dict | None = None, out=None, allow_plain_http: tuple[str, ...] = ()
                ) -> TokenSource:
    """The token source the spec asks for, with its secrets read from files or the environment."""
    env = os.environ if env is None else env
    if spec.source == "hub":
        url = spec.hub_api_url or env.get("JUPYTERHUB_API_URL")
        tok = env.get("JUPYTERHUB_API_TOKEN") or env.get("JPY_API_TOKEN")
        if not url or not tok:
            raise StsWireError("token source hub needs JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN", Exit.SPEC,
                               "run inside a JupyterHub single-user server, or choose another token.source")
        where = "token.hub_api_url" if spec.hub_api_url else "JUPYTERHUB_API_URL"
        require_secure(url, where, allow_plain_http)
        ca = spec.ca_file or env.get("JUPYTERHUB_SSL_CLIENT_CA")
        cert = None
        if env.get("JUPYTERHUB_SSL_CERTFILE") and env.get("JUPYTERHUB_SSL_KEYFILE"):
            cert = (env["JUPYTERHUB_SSL_CERTFILE"], env["JUPYTERHUB_SSL_KEYFILE"])
        return HubSource(url, tok, default_verify(ca), cert, user=env.get("JUPYTERHUB_USER") or None)
    if spec.source == "file":
        return FileSource(spec.path)
    client = OAuthClient(spec, default_verify(spec.ca_file), read_secret(spec, env))
    if spec.source == "refresh":
        rt = None
        if not spec.refresh_token_file:
            rt = env.get("STS_WIRE_REFRESH_TOKEN")
        return RefreshSource(client, refresh_token=rt, file=spec.refresh_token_file)
    return DeviceSource(client, out=out)


# Environment variables sts-wire may read secrets from: removed from the environment of CMD.
def secret_env_names(spec: TokenSpec) -> set[str]:
    names = {"STS_WIRE_REFRESH_TOKEN", "STS_WIRE_CLIENT_SECRET"}
    if spec.client_secret_env:
        names.add(spec.client_secret_env)
    return names
