"""IAMAuthenticator: OAuthenticator's GenericOAuthenticator plus what research IdPs need.

Adds: endpoints by discovery from the issuer (never on the event loop), verified JWTs (ID token
and access token, with `sts_wire.core.jwt`), groups from any claim of the access token, the ID
token or the userinfo endpoint, login refused outside `allowed_groups`, admin from
`admin_groups`, IdP groups kept as JupyterHub groups, and tokens refreshed ahead of expiry
(`refresh.py`). One path from tokens to the user model serves login and refresh.
"""

from __future__ import annotations

import asyncio
import json
from inspect import isawaitable

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado.httpclient import HTTPClientError
from tornado.simple_httpclient import HTTPTimeoutError
from tornado.web import HTTPError
from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, default, validate

from sts_wire.core.jwt import ALGORITHMS, AsyncVerifier, TokenInvalid, unverified_exp
from sts_wire.core.oidc import DiscoveryError

from .discovery import discover_for_login
from .groups import admin_from_groups, groups_from_claims
from .refresh import RefreshMixin
from .scopes import DEFAULT_SCOPES
from .spawn_page import HANDLERS as SPAWN_PAGE_HANDLERS
from .token_api import HANDLERS as TOKEN_API_HANDLERS

# Token response fields worth keeping (the raw response may carry provider-specific extras).
_TOKEN_FIELDS = ("access_token", "refresh_token", "id_token", "token_type", "scope", "expires_in")


class AnswerTooLarge(Exception):
    """The IdP's answer grew past idp_max_answer_bytes (raised inside the streaming callback)."""


class IAMLoginHandler(OAuthLoginHandler):
    """The login redirect, after discovery has resolved (asynchronously, off the event loop)."""

    async def get(self):
        await self.authenticator.ensure_discovered()
        return super().get()


class IAMAuthenticator(RefreshMixin, GenericOAuthenticator):
    """Log in with an OpenID Connect provider (INDIGO IAM, Keycloak, EGI Check-in, ...)."""

    login_handler = IAMLoginHandler

    issuer = Unicode(
        config=True,
        help="""The OpenID Connect issuer URL. Endpoints (authorize, token, userinfo, JWKS) are
        found by discovery at <issuer>/.well-known/openid-configuration.""",
    )
    oidc_configuration = Dict(
        config=True,
        help="""The issuer's discovery document, when already fetched (jhub-cloud's hub
        configuration fetches it at start-up in a worker thread and stops the hub with a clear
        message if it cannot). Empty: fetched in a worker thread on first use.""",
    )
    groups_claim = Unicode(
        "groups", config=True,
        help="""Claim holding the user's groups: 'groups', 'wlcg.groups' (INDIGO IAM),
        'eduperson_entitlement' (EGI Check-in), or a dotted path into nested claims such as
        'realm_access.roles'.""",
    )
    groups_source = Enum(
        ["access_token", "id_token", "userinfo"], "access_token", config=True,
        help="""Where the groups claim is read: the JWT access token (verified against the issuer's
        keys; INDIGO IAM puts wlcg.groups there), the ID token (verified), or the issuer's userinfo
        endpoint, called with the access token (EGI Check-in's entitlements).""",
    )
    group_rename = Dict(
        Unicode(), config=True,
        help="""Map IdP group names to hub group names, applied after normalising (leading '/'
        removed), e.g. {"cms/users": "cms"}.""",
    )
    access_token_audiences = List(
        Unicode(), config=True,
        help="""Audiences accepted on the JWT access token (it must name at least one). Empty: the
        client id.""",
    )
    access_token_audience_unchecked = Bool(
        False, config=True,
        help="""The IdP puts no usable 'aud' in access tokens (Keycloak without an audience mapper,
        INDIGO IAM when no audience is requested): do not check it. Signature, issuer, expiry and
        subject are still checked. Exclusive with access_token_audiences.""",
    )
    jwt_algorithms = List(
        Unicode(), list(ALGORITHMS), config=True,
        help="Signature algorithms accepted on JWTs. 'none' and HMAC algorithms are never accepted.",
    )
    jwt_leeway = Int(30, config=True, help="Seconds of clock skew tolerated when checking expiry.")
    discovery_timeout = Int(60, config=True,
                            help="Seconds to keep retrying discovery while the IdP cannot be reached.")
    idp_timeout = Float(10, config=True,
                        help="Seconds to wait for the IdP on each request (token, userinfo, keys).")
    idp_max_answer_bytes = Int(1 << 20, config=True,
                               help="""Largest answer accepted from the IdP (token, userinfo, keys), in
                               bytes; a larger one is cut off and refused (real answers are a few KiB).""")

    @validate("jwt_algorithms")
    def _validate_algorithms(self, proposal):
        bad = [a for a in proposal.value if a not in ALGORITHMS]
        if bad:
            raise ValueError(f"JWT algorithms {bad} are not accepted; choose among {', '.join(ALGORITHMS)}")
        return proposal.value

    # Sensible defaults for this authenticator (each still configurable as in OAuthenticator).
    @default("enable_auth_state")
    def _enable_auth_state_default(self):
        return True

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("userdata_from_id_token")
    def _userdata_from_id_token_default(self):
        return True

    @default("enable_pkce")
    def _enable_pkce_default(self):
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self):
        return "groups"

    @default("scope")
    def _scope_default(self):
        return list(DEFAULT_SCOPES)

    @default("username_claim")
    def _username_claim_default(self):
        return "preferred_username"

    @default("custom_403_message")
    def _custom_403_message_default(self):
        allowed = ", ".join(sorted(self.allowed_groups)) or "(none configured)"
        return (f"Your account is not a member of any group allowed on this hub ({allowed}). "
                "If you should have access, ask your group manager to add you at the identity "
                "provider, then log in again.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.access_token_audience_unchecked and self.access_token_audiences:
            raise ValueError("IAMAuthenticator: access_token_audiences and access_token_audience_unchecked "
                             "exclude each other: list the accepted audiences, or say the IdP sets none")
        self._verifier = None
        self._discovery_lock = asyncio.Lock()

    @property
    def audiences(self) -> list[str] | None:
        """Accepted access-token audiences; None when the site said its IdP sets no usable aud."""
        if self.access_token_audience_unchecked:
            return None
        return list(self.access_token_audiences) or [self.client_id]

    # --- discovery and keys ---------------------------------------------------------------------
    def _ca_file(self) -> str | None:
        return self.http_request_kwargs.get("ca_certs")

    async def ensure_discovered(self) -> dict:
        if not self.oidc_configuration:
            async with self._discovery_lock:
                if not self.oidc_configuration:
                    try:
                        self.oidc_configuration = await asyncio.to_thread(
                            discover_for_login, self.issuer, self._ca_file(), self.discovery_timeout, self.idp_timeout)
                    except DiscoveryError as e:
                        self.log.error("%s", e)
                        raise HTTPError(503, f"The identity provider cannot be used right now: {e}") from None
        return self.oidc_configuration

    @property
    def discovered(self) -> dict:
        """The discovery document; fetched here (blocking) only when nothing resolved it before."""
        if not self.oidc_configuration:
            self.oidc_configuration = discover_for_login(self.issuer, self._ca_file(), self.discovery_timeout,
                                                         self.idp_timeout)
        return self.oidc_configuration

    @default("authorize_url")
    def _authorize_url_default(self):
        return self.discovered["authorization_endpoint"] if self.issuer else ""

    @default("token_url")
    def _token_url_default(self):
        return self.discovered["token_endpoint"] if self.issuer else ""

    def get_handlers(self, app):
        # The access-token endpoint for users' servers (token_api.py) and the spawn page that
        # refuses non-UTF-8 forms (spawn_page.py) ride on the login's handlers, routed first.
        return super().get_handlers(app) + TOKEN_API_HANDLERS + SPAWN_PAGE_HANDLERS

    async def httpfetch(self, url, label="fetching", parse_json=True, raise_error=True, **kwargs):
        """OAuthenticator's fetch, bounded: a hung IdP must not hold a login or a refresh forever,
        and a huge answer is cut off at `idp_max_answer_bytes` instead of filling memory. A JSON
        answer must be an object; a broken answer is a 502 (504 when too slow) that says so, which
        a refresh treats as the IdP being in trouble (the user stays logged in)."""
        kwargs.setdefault("request_timeout", self.idp_timeout)
        kwargs.setdefault("connect_timeout", self.idp_timeout)
        if not parse_json or "streaming_callback" in kwargs:
            return await super().httpfetch(url, label, parse_json, raise_error, **kwargs)
        body = bytearray()
        limit = self.idp_max_answer_bytes

        def collect(chunk: bytes) -> None:
            body.extend(chunk)
            if len(body) > limit:
                # Raising is tornado's only way to drop the connection; the fetch then fails (599).
                raise AnswerTooLarge(f"more than the {limit} bytes accepted (idp_max_answer_bytes)")

        what = f"{label[:1].lower()}{label[1:]}"  # "Fetching JWKS" -> "fetching JWKS"
        try:
            resp = await super().httpfetch(url, label, False, raise_error, streaming_callback=collect, **kwargs)
        except (AnswerTooLarge, HTTPClientError) as e:
            if len(body) > limit:
                self.log.error("Refusing the identity provider's answer while %s: more than %d bytes", what, limit)
                raise HTTPError(502, f"The identity provider's answer while {what} is more than the {limit} "
                                     "bytes accepted (idp_max_answer_bytes).") from None
            if isinstance(e, HTTPTimeoutError):
                raise HTTPError(504, f"The identity provider did not answer in {self.idp_timeout:g} s while "
                                     f"{what}: try again later.") from None
            raise
        try:
            doc = json.loads(body.decode("utf-8"))
        except ValueError:
            ctype = resp.headers.get("Content-Type", "no content type")
            self.log.error("The identity provider's answer while %s is not JSON (%s)", what, ctype)
            raise HTTPError(502, f"The identity provider's answer while {what} is not JSON ({ctype}).") from None
        if not isinstance(doc, dict):
            raise HTTPError(502, f"The identity provider's answer while {what} is not a JSON object.")
        return doc

    async def get_token_info(self, handler, params):
        await self.ensure_discovered()
        try:
            token_info = await super().get_token_info(handler, params)
        except HTTPError as e:
            if e.status_code == 500 and str(e.log_message).startswith("Bad response"):
                # OAuthenticator's message quotes the whole answer, which may hold a refresh token.
                raise HTTPError(502, "The identity provider's token answer has no access_token.") from None
            raise
        if not isinstance(token_info.get("access_token"), str):
            raise HTTPError(502, "The identity provider's token answer has an access_token that is not text.")
        return token_info

    @property
    def verifier(self) -> AsyncVerifier:
        if self._verifier is None:
            async def fetch_jwks():
                doc = await self.ensure_discovered()
                return await self.httpfetch(doc["jwks_uri"], "Fetching JWKS", method="GET",
                                            validate_cert=self.validate_server_cert)

            issuer = self.oidc_configuration.get("issuer") or self.issuer
            self._verifier = AsyncVerifier(issuer, fetch_jwks, self.audiences, self.jwt_algorithms, self.jwt_leeway)
        return self._verifier

    # --- tokens → user model (shared by login and refresh) -------------------------------------
    async def _verified(self, token: str | None, label: str, audiences) -> dict:
        if not token:
            raise HTTPError(403, f"The identity provider returned no {label}.")
        doc = await self.ensure_discovered()
        self.verifier.issuer = doc["issuer"]  # exactly as the IdP names itself (a trailing '/' counts)
        try:
            return await self.verifier.verify(token, audiences)
        except TokenInvalid as e:
            self.log.warning("Refusing a token: the %s is invalid: %s", label, e)
            raise HTTPError(403, f"The identity provider's {label} is invalid ({e}).") from None

    async def userinfo(self, access_token: str) -> dict:
        """The userinfo endpoint's answer for this access token (OIDC Core 5.3)."""
        doc = await self.ensure_discovered()
        url = doc.get("userinfo_endpoint")
        if not url:
            raise HTTPError(403, "groups_source is userinfo, but the identity provider has no userinfo endpoint.")
        try:
            info = await self.httpfetch(url, "Fetching userinfo", method="GET", validate_cert=self.validate_server_cert,
                                        headers={"Authorization": f"Bearer {access_token}",
                                                 "Accept": "application/json"})
        except HTTPClientError as e:
            if e.code >= 500:
                raise  # the IdP is in trouble: a refresh keeps the current state
            raise HTTPError(403, f"The identity provider's userinfo endpoint refused the access token "
                                 f"(HTTP {e.code}).") from None
        if not isinstance(info, dict):
            raise HTTPError(403, "The identity provider's userinfo answer is not a JSON object.")
        return info

    async def _user_claims(self, token_info: dict, previous: dict | None) -> dict:
        """Who the user is: the verified ID token, or on a refresh without one (allowed by OIDC
        Core 12.2) the claims verified at the last login or refresh."""
        if token_info.get("id_token") or not previous:
            claims = await self._verified(token_info.get("id_token"), "id token", [self.client_id])
        else:
            claims = previous.get(self.user_auth_state_key) or {}
        if previous:
            before = (previous.get(self.user_auth_state_key) or {}).get("sub")
            if before and claims.get("sub") != before:
                raise HTTPError(403, "The refreshed tokens are for another subject than the logged-in user.")
        return claims

    async def _groups_claims(self, token_info: dict, user_claims: dict) -> dict:
        if self.groups_source == "id_token":
            return user_claims
        if self.groups_source == "access_token":
            claims = await self._verified(token_info.get("access_token"), "access token", self.audiences)
        else:
            claims = await self.userinfo(token_info["access_token"])
        if claims.get("sub") and user_claims.get("sub") and claims["sub"] != user_claims["sub"]:
            raise HTTPError(403, f"The {self.groups_source.replace('_', ' ')} names another subject than the "
                                 "ID token.")
        return claims

    async def _token_to_auth_model(self, token_info, previous: dict | None = None):
        """The auth model from a token response; `previous` is the auth_state being refreshed."""
        user_claims = await self._user_claims(token_info, previous)
        username = self.normalize_username(self.user_info_to_username(user_claims))
        groups = groups_from_claims(await self._groups_claims(token_info, user_claims), self.groups_claim,
                                    self.group_rename)
        token_info = {k: v for k, v in token_info.items() if k in _TOKEN_FIELDS}
        if previous and not token_info.get("id_token") and previous.get("id_token"):
            token_info["id_token"] = previous["id_token"]  # the last one, e.g. for an id_token_hint
        state = self.build_auth_state_dict(token_info, user_claims)
        if isawaitable(state):
            state = await state
        state["groups"] = groups
        state["expires_at"] = expires_at(token_info)
        if self.modify_auth_state_hook is not None:
            state = await self._call_modify_auth_state_hook(state)
        if previous is None:
            self.forget(username)  # a new login replaces whatever a refresh left in memory
        model = {"name": username, "admin": True if username in self.admin_users else None, "auth_state": state}
        if self.manage_groups:
            model = await self._apply_managed_groups(model)
        elif self.admin_groups and not model["admin"]:
            model["admin"] = admin_from_groups(groups, self.admin_groups)
        return model

    async def check_allowed(self, username, auth_model):
        allowed = await super().check_allowed(username, auth_model)
        if not allowed and auth_model is not None:
            groups = auth_model.get("auth_state", {}).get("groups", [])
            self.log.warning("Refusing login of %s: groups %s, none in allowed_groups", username, groups)
        return allowed


def expires_at(token_info: dict) -> float:
    """When the access token expires: its `exp` (a token we got from the token endpoint ourselves),
    else `expires_in` from now."""
    import time

    exp = unverified_exp(token_info["access_token"])
    if exp is None and token_info.get("expires_in"):
        exp = time.time() + float(token_info["expires_in"])
    return exp or 0.0
