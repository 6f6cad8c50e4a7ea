"""Token sources: the JupyterHub API, a token file, a refresh-token grant, the device-code flow.

Each source's ``fetch()`` returns a fresh :class:`Token` or raises StsWireError with a plain
message and the right exit code. Tokens never appear in ``repr``, logs, URLs or arguments:
client secrets go in the request body or the Basic header, never in a query string.

TLS: every request passes ``verify=`` explicitly (the CA file of the spec, else the system
bundle), so a ``REQUESTS_CA_BUNDLE`` in the environment can not silently replace it.
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
import tenacity

from .core.secretfile import SecretFileError, read_secret_file
from .errors import Exit, StsWireError
from .runtime import write_private
from .spec import TokenSpec
from .urls import require_secure

log = logging.getLogger("sts_wire.tokens")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TIMEOUT = (5, 20)
RETRIES = 3


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


def default_verify(ca_file: str | None) -> str | bool:
    """The CA bundle to verify TLS with: the one configured, else the system's."""
    if ca_file:
        if not os.path.isfile(ca_file):
            raise StsWireError(f"CA file {ca_file} does not exist", Exit.SPEC)
        return ca_file
    for var in ("STS_WIRE_CA_FILE",):
        if os.environ.get(var) and os.path.isfile(os.environ[var]):
            return os.environ[var]
    return SYSTEM_BUNDLE if os.path.isfile(SYSTEM_BUNDLE) else True


class Http:
    """A requests session that always passes verify= (environment CA variables cannot win)
    and keeps proxies from the environment."""

    def __init__(self, verify: str | bool, cert: tuple[str, str] | None = None):
        self.verify = verify
        self.cert = cert
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "sts-wire"

    def request(self, method: str, url: str, what: str, unreachable: Exit, **kw) -> requests.Response:
        """One request; a refused connection or a timeout is tried again twice after a short
        random wait (jitter: many servers that lost the IdP together do not come back together).
        TLS failures are not retried: they do not heal by themselves."""
        kw.setdefault("timeout", TIMEOUT)
        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(_transient), reraise=True,
                                     stop=tenacity.stop_after_attempt(RETRIES),
                                     wait=tenacity.wait_random_exponential(multiplier=0.5, max=4))
        try:
            return retrying(self.session.request, method, url, verify=self.verify, cert=self.cert, **kw)
        except requests.exceptions.SSLError as e:
            raise StsWireError(f"{what}: TLS verification of {_origin(url)} failed ({_short(e)})",
                               unreachable, "give the server's CA with ca_file (token.ca_file)") from None
        except requests.exceptions.Timeout:
            raise StsWireError(f"{what}: {_origin(url)} did not answer in time", unreachable) from None
        except requests.exceptions.ConnectionError as e:
            raise StsWireError(f"{what}: cannot reach {_origin(url)} ({_short(e)})", unreachable) from None


def _transient(e: BaseException) -> bool:
    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    return isinstance(e, transient) and not isinstance(e, requests.exceptions.SSLError)


def _origin(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def _short(e: BaseException) -> str:
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "certificate verify failed", "No route to host", "Network is unreachable"):
        if marker in text:
            return marker
    return text.split(":")[-1].strip()[:120] or type(e).__name__


def _json(r: requests.Response) -> dict:
    try:
        doc = r.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def jwt_claims_unverified(token: str) -> dict:
    """Claims of a JWT without checking its signature. Used only as a *scheduling hint* (when
    to renew) and to show a name; the STS verifies the token before any key is given."""
    import jwt

    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


def verified_claims(token: str, issuer: str, verify: str | bool, audience: str | None = None) -> dict:
    """Verify a JWT access token against the issuer's JWKS (discovery); return its claims."""
    import ssl

    import jwt

    http = Http(verify)
    meta = discover(http, issuer)
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    try:
        key = jwt.PyJWKClient(meta["jwks_uri"], ssl_context=ctx).get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                          issuer=meta.get("issuer", issuer), audience=audience,
                          options={"verify_aud": audience is not None})
    except jwt.ExpiredSignatureError:
        raise StsWireError("the access token has expired", Exit.TOKEN) from None
    except jwt.InvalidAudienceError:
        raise StsWireError(f"the access token is not meant for audience {audience!r}", Exit.TOKEN) from None
    except jwt.PyJWTError as e:
        raise StsWireError(f"the access token does not verify against {issuer}: {e}", Exit.TOKEN) from None


_DISCOVERY: dict[str, dict] = {}


def discover(http: Http, issuer: str) -> dict:
    """The issuer's OpenID configuration (cached per process)."""
    if issuer in _DISCOVERY:
        return _DISCOVERY[issuer]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    r = http.request("GET", url, "OpenID discovery", Exit.IDP_UNREACHABLE)
    if r.status_code != 200:
        raise StsWireError(f"OpenID discovery at {url} answered HTTP {r.status_code}", Exit.IDP_UNREACHABLE,
                           "is token.issuer the issuer URL of the identity provider?")
    meta = _json(r)
    if "token_endpoint" not in meta:
        raise StsWireError(f"OpenID discovery at {url} has no token_endpoint", Exit.IDP_UNREACHABLE)
    _DISCOVERY[issuer] = meta
    return meta


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
                               "the identity provider is unreachable from the hub; sts-wire tries again")
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
    "expires_in": ...}); re-read when it changes."""

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
            text = self.path.read_text().strip()
        except FileNotFoundError:
            raise StsWireError(f"token file {self.path} does not exist", Exit.TOKEN) from None
        except OSError as e:
            raise StsWireError(f"cannot read token file {self.path}: {e.strerror}", Exit.TOKEN) from None
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


class OAuthClient:
    def __init__(self, spec: TokenSpec, verify: str | bool, secret: str | None):
        self.spec = spec
        self.http = Http(verify)
        self._secret = secret
        self.auth_method = spec.client_auth or ("basic" if secret else "none")
        if self.auth_method in ("basic", "post") and not secret:
            raise StsWireError(
                f"client authentication {self.auth_method} needs a client secret", Exit.SPEC,
                f"put it in a file (token.client_secret_file) or in ${spec.client_secret_env}")

    @property
    def meta(self) -> dict:
        return discover(self.http, self.spec.issuer)

    def _auth(self, data: dict) -> tuple[dict, Any]:
        data = {**data}
        if self.auth_method == "post":
            data.update(client_id=self.spec.client_id, client_secret=self._secret)
            return data, None
        if self.auth_method == "basic":
            q = urllib.parse.quote_plus
            return data, requests.auth.HTTPBasicAuth(q(self.spec.client_id), q(self._secret))
        data["client_id"] = self.spec.client_id
        return data, None

    def post_token(self, data: dict, what: str) -> tuple[int, dict]:
        data, auth = self._auth(data)
        r = self.http.request("POST", self.meta["token_endpoint"], what, Exit.IDP_UNREACHABLE,
                              data=data, auth=auth, headers={"Accept": "application/json"})
        return r.status_code, _json(r)

    def token_from(self, resp: dict, now: float, source: str, refresh_token: str | None) -> Token:
        at = resp.get("access_token")
        if not at:
            raise StsWireError("the identity provider's answer has no access_token", Exit.TOKEN)
        return Token(at, _expiry(resp, at, now), now, source,
                     refresh_token=resp.get("refresh_token") or refresh_token, user=_user_of(at))


def _idp_error(status: int, resp: dict, what: str) -> StsWireError:
    err = resp.get("error", f"HTTP {status}")
    desc = resp.get("error_description", "")
    if err == "invalid_grant":
        return StsWireError(f"{what}: the refresh token is expired, revoked or not for this client "
                            f"({desc or err})", Exit.TOKEN,
                            "log in again to get a new refresh token (sts-wire mount --token-source device)")
    if err in ("invalid_client", "unauthorized_client"):
        return StsWireError(f"{what}: the identity provider refused the client ({desc or err})", Exit.TOKEN,
                            "check token.client_id, the client secret and token.client_auth (basic/post)")
    if status >= 500:
        return StsWireError(f"{what}: the identity provider failed (HTTP {status})", Exit.IDP_UNREACHABLE)
    return StsWireError(f"{what}: the identity provider refused ({err}{': ' + desc if desc else ''})", Exit.TOKEN)


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
        tok = self.client.token_from(resp, now, self.name, rt)
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
                return self.client.token_from(resp, now, self.name, None)
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
