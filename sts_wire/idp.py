"""Talking to the identity provider: TLS settings, HTTP with jittered retries, discovery and JWT
verification (both from the shared core, sts_wire.core), and the OAuth client used by the
refresh-token grant and the device-code flow.

TLS: every request passes ``verify=`` explicitly (the CA file of the spec, else the system
bundle), so a ``REQUESTS_CA_BUNDLE`` in the environment can not silently replace it. Client
secrets go in the request body or the Basic header, never in a query string.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import requests
import tenacity
import urllib3

from .core import jwt as corejwt
from .core.answers import AnswerError, NotJson, bounded_json
from .core.oidc import DiscoveryError, fetch_jwks
from .core.oidc import discover as core_discover
from .errors import Exit, StsWireError
from .spec import TokenSpec

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TIMEOUT = (5, 20)
RETRIES = 3


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

    def request(self, method: str, url: str, what: str, unreachable: Exit, resend: bool = True,
                **kw) -> requests.Response:
        """One request; a refused connection or a timeout is tried again twice after a short
        random wait (jitter: many servers that lost the IdP together do not come back together).
        TLS failures are not retried: they do not heal by themselves. resend=False is for requests
        that spend something at the server (a refresh token an IdP rotates): those are tried again
        only when they surely never reached it (connection refused, connect time-out)."""
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("stream", True)  # the body is read by _json, bounded in size and time
        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(_transient if resend else _never_sent),
                                     reraise=True,
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


def _never_sent(e: BaseException) -> bool:
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(e, requests.exceptions.ConnectionError) and not isinstance(
            e, (requests.exceptions.SSLError, requests.exceptions.ReadTimeout)):
        reason = getattr(e.args[0], "reason", None) if e.args else None
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


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
    """The JSON object of an answer, {} if it is not one; an answer too large or too slow to read
    (a broken or hostile server) is an error, never read unbounded into memory."""
    try:
        doc = bounded_json(r, deadline=TIMEOUT[1])
    except NotJson:
        return {}
    except AnswerError as e:
        raise StsWireError(f"{_origin(r.url)}: {e}", Exit.IDP_UNREACHABLE) from None
    return doc if isinstance(doc, dict) else {}


_DISCOVERY: dict[tuple[str, str | bool], dict] = {}


def discover(http: Http, issuer: str, required: tuple[str, ...] = ()) -> dict:
    """The issuer's checked OpenID configuration (cached per process, per issuer and CA)."""
    key = (issuer, http.verify)
    if key not in _DISCOVERY:
        try:
            _DISCOVERY[key] = core_discover(issuer, verify=http.verify, session=http.session, retry_seconds=2,
                                            timeout=TIMEOUT[1])
        except DiscoveryError as e:
            raise StsWireError(str(e), Exit.IDP_UNREACHABLE,
                               None if e.unreachable else "is token.issuer the issuer URL of the identity "
                               "provider, and token.ca_file the CA that signed its certificate?") from None
    meta = _DISCOVERY[key]
    missing = [k for k in required if not meta.get(k)]
    if missing:
        raise StsWireError(f"{issuer} does not offer {', '.join(missing)}", Exit.TOKEN)
    return meta


def verified_claims(token: str, issuer: str, verify: str | bool, audience: str | None = None) -> dict:
    """Verify a JWT access token against the issuer's JWKS (discovery); return its claims. The
    audience is checked when one is given (the STS checks it in any case)."""
    http = Http(verify)
    meta = discover(http, issuer)
    verifier = corejwt.SyncVerifier(meta["issuer"], lambda: fetch_jwks(meta["jwks_uri"], verify=verify,
                                                                       session=http.session, timeout=TIMEOUT[1]),
                                    [audience] if audience else None)
    try:
        return verifier.verify(token)
    except DiscoveryError as e:
        raise StsWireError(str(e), Exit.IDP_UNREACHABLE) from None
    except corejwt.TokenInvalid as e:
        if str(e) == "expired":
            raise StsWireError("the access token has expired", Exit.TOKEN) from None
        raise StsWireError(f"the access token does not verify against {issuer}: {e}", Exit.TOKEN) from None


def jwt_claims_unverified(token: str) -> dict:
    """Claims of a JWT without checking its signature. Used only as a *scheduling hint* (when
    to renew) and to show a name; the STS verifies the token before any key is given."""
    return corejwt.unverified_claims(token)


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
        # A refresh grant whose answer was lost may have rotated the refresh token at the IdP:
        # sending it again would spend the old one and log the user out.
        r = self.http.request("POST", self.meta["token_endpoint"], what, Exit.IDP_UNREACHABLE,
                              resend=data.get("grant_type") != "refresh_token",
                              data=data, auth=auth, headers={"Accept": "application/json"})
        resp = _json(r)
        for key in ("access_token", "refresh_token", "id_token", "error", "error_description"):
            if resp.get(key) is not None and not isinstance(resp[key], str):
                raise StsWireError(f"{what}: the identity provider's answer has a {key} that is not text "
                                   f"({type(resp[key]).__name__})", Exit.IDP_UNREACHABLE)
        return r.status_code, resp


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
