"""IAMAuthenticator: OAuthenticator's GenericOAuthenticator plus what research IdPs need.

Adds: endpoints by discovery from the issuer, verified JWTs (ID token and access token), groups
from any claim, login refused outside `allowed_groups`, admin from `admin_groups`, IdP groups kept
as JupyterHub groups, tokens in auth_state refreshed ahead of expiry.
"""

from __future__ import annotations

import time

import requests
from oauthenticator.generic import GenericOAuthenticator
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential
from tornado.httpclient import HTTPClientError
from tornado.web import HTTPError
from traitlets import Dict, Enum, Int, List, Unicode, default

from .groups import admin_from_groups, groups_from_claims, is_allowed
from .jwt_verify import DEFAULT_ALGORITHMS, JWKSVerifier, TokenInvalid, unverified_exp


class IAMAuthenticator(GenericOAuthenticator):
    """Log in with an OpenID Connect provider (INDIGO IAM, Keycloak, EGI Check-in, ...)."""

    issuer = Unicode(
        config=True,
        help="""The OpenID Connect issuer URL. Endpoints (authorize, token, userinfo, JWKS) are
        found by discovery at <issuer>/.well-known/openid-configuration.""",
    )
    groups_claim = Unicode(
        "groups", config=True,
        help="""Claim holding the user's groups: 'groups', 'wlcg.groups' (INDIGO IAM), or a dotted
        path into nested claims such as 'realm_access.roles'.""",
    )
    groups_source = Enum(
        ["access_token", "id_token", "userinfo"], "access_token", config=True,
        help="""Where the groups claim is read: the JWT access token (verified against the issuer's
        keys; INDIGO IAM puts wlcg.groups there), the ID token (verified), or the userinfo endpoint.""",
    )
    group_rename = Dict(
        Unicode(), config=True,
        help="""Map IdP group names to hub group names, applied after normalising (leading '/'
        removed), e.g. {"cms/users": "cms"}.""",
    )
    access_token_audience = Unicode(
        config=True,
        help="Audience the JWT access token must carry. Default: the client id.",
    )
    jwt_algorithms = List(
        Unicode(), list(DEFAULT_ALGORITHMS), config=True,
        help="Signature algorithms accepted on JWTs. 'none' and HMAC algorithms are never accepted.",
    )
    jwt_leeway = Int(30, config=True, help="Seconds of clock skew tolerated when checking expiry.")
    refresh_margin = Int(
        300, config=True,
        help="""Refresh the access token when it expires within this many seconds. Refreshes happen
        before a spawn and on requests (at most every `auth_refresh_age` seconds).""",
    )
    discovery_timeout = Int(60, config=True, help="Seconds to keep retrying discovery at hub start.")

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
        return ["openid", "profile", "email", "offline_access"]

    @default("username_claim")
    def _username_claim_default(self):
        return "preferred_username"

    @default("custom_403_message")
    def _custom_403_message_default(self):
        allowed = ", ".join(sorted(self.allowed_groups)) or "(none configured)"
        return (f"Your account is not a member of any group allowed on this hub ({allowed}). "
                "If you should have access, ask your group manager to add you at the identity "
                "provider, then log in again.")

    @default("access_token_audience")
    def _access_token_audience_default(self):
        return self.client_id

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._discovered = None
        self._verifier = None

    # --- discovery and keys ---------------------------------------------------------------------
    @property
    def discovered(self) -> dict:
        """The issuer's discovery document, fetched once, retried while the IdP is unreachable.

        Synchronous on purpose: OAuthenticator reads the endpoint URLs as plain attributes, and this
        runs once per hub process.
        """
        if self._discovered is None:
            if not self.issuer:
                raise ValueError("IAMAuthenticator.issuer is not set: give the OpenID Connect issuer URL")
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            verify = self.http_request_kwargs.get("ca_certs") or True
            if not self.validate_server_cert:
                verify = False

            @retry(stop=stop_after_delay(self.discovery_timeout), wait=wait_exponential(max=5), reraise=True,
                   retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout)))
            def fetch():
                r = requests.get(url, verify=verify, timeout=10, headers={"Accept": "application/json"})
                r.raise_for_status()
                return r.json()

            try:
                doc = fetch()
            except (requests.RequestException, ValueError) as e:
                raise RuntimeError(f"OpenID discovery at {url} failed: {e}. Check auth.issuer and that "
                                   "the hub trusts the IdP's TLS certificate (auth.ca_file).") from None
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "issuer"):
                if not isinstance(doc.get(key), str):
                    raise RuntimeError(f"OpenID discovery at {url} has no {key!r}: is this an OIDC issuer?")
            if doc["issuer"].rstrip("/") != self.issuer.rstrip("/"):
                raise RuntimeError(f"OpenID discovery at {url} names issuer {doc['issuer']!r}, not {self.issuer!r}")
            self._discovered = doc
        return self._discovered

    @default("authorize_url")
    def _authorize_url_default(self):
        return self.discovered["authorization_endpoint"] if self.issuer else ""

    @default("token_url")
    def _token_url_default(self):
        return self.discovered["token_endpoint"] if self.issuer else ""

    @default("userdata_url")
    def _userdata_url_default(self):
        return self.discovered.get("userinfo_endpoint", "") if self.issuer else ""

    @property
    def verifier(self) -> JWKSVerifier:
        if self._verifier is None:
            async def fetch_jwks():
                return await self.httpfetch(self.discovered["jwks_uri"], "Fetching JWKS", method="GET",
                                            validate_cert=self.validate_server_cert)

            self._verifier = JWKSVerifier(self.discovered["issuer"], fetch_jwks, self.jwt_algorithms,
                                          self.jwt_leeway)
        return self._verifier

    # --- token → user model (shared by login and refresh) --------------------------------------
    async def _verified(self, token_info: dict, which: str) -> dict:
        token = token_info.get(which)
        if not token:
            raise HTTPError(403, f"The identity provider returned no {which.replace('_', ' ')}.")
        audience = self.client_id if which == "id_token" else self.access_token_audience
        try:
            return await self.verifier.verify(token, audience)
        except TokenInvalid as e:
            self.log.warning("Refusing a login: the %s is invalid: %s", which, e)
            raise HTTPError(403, f"The identity provider's {which.replace('_', ' ')} is invalid ({e}).") from None

    async def token_to_user(self, token_info):
        if self.userdata_from_id_token:
            return await self._verified(token_info, "id_token")
        return await super().token_to_user(token_info)

    async def update_auth_model(self, auth_model):
        state = auth_model["auth_state"]
        token_info = state["token_response"]
        if self.groups_source == "userinfo":
            claims = state[self.user_auth_state_key] if not self.userdata_from_id_token else \
                await GenericOAuthenticator.token_to_user(self, token_info)
        elif self.groups_source == "id_token" and self.userdata_from_id_token:
            claims = state[self.user_auth_state_key]
        else:
            claims = await self._verified(token_info, self.groups_source)
        groups = groups_from_claims(claims, self.groups_claim, self.group_rename)
        state["groups"] = groups
        state["expires_at"] = self._expires_at(token_info)
        # Keep no second copy of the tokens: token_response holds them already, and the raw
        # response carries nothing else we need.
        state["token_response"] = {k: v for k, v in token_info.items() if k in ("access_token", "refresh_token",
                                                                               "id_token", "token_type", "scope",
                                                                               "expires_in")}
        if auth_model["admin"] is None and self.admin_groups:
            auth_model["admin"] = admin_from_groups(groups, self.admin_groups)
        return auth_model

    @staticmethod
    def _expires_at(token_info: dict) -> float:
        exp = unverified_exp(token_info["access_token"])
        if exp is None and token_info.get("expires_in"):
            exp = time.time() + float(token_info["expires_in"])
        return exp or 0.0

    async def check_allowed(self, username, auth_model):
        allowed = await super().check_allowed(username, auth_model)
        if not allowed and auth_model is not None:
            groups = auth_model.get("auth_state", {}).get("groups", [])
            self.log.warning("Refusing login of %s: groups %s, none in allowed_groups", username, groups)
        return allowed

    # --- refresh -------------------------------------------------------------------------------
    async def refresh_user(self, user, handler=None, **kwargs):
        """Renew the access token when it is near expiry; a refusal by the IdP means a new login.

        Group changes at the IdP take effect here too: leaving `admin_groups` takes admin away,
        leaving every allowed group ends the session.
        """
        if not self.enable_auth_state:
            return True
        state = await user.get_auth_state()
        if not state or not state.get("token_response"):
            return False
        if state.get("expires_at", 0) - time.time() > self.refresh_margin:
            return True
        refresh_token = state.get("refresh_token")
        if not refresh_token:
            self.log.info("Access token of %s expires and there is no refresh token: new login needed", user.name)
            return False
        try:
            token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
        except (HTTPClientError, HTTPError) as e:
            code = getattr(e, "code", getattr(e, "status_code", "?"))
            self.log.info("The IdP refused to refresh the token of %s (HTTP %s): new login needed", user.name, code)
            return False
        token_info.setdefault("refresh_token", refresh_token)
        try:
            model = await self._token_to_auth_model(token_info)
        except HTTPError as e:
            self.log.warning("Refreshed token of %s is not usable (%s): new login needed", user.name, e.log_message)
            return False
        if self.allowed_groups and not self.allow_all and user.name not in self.admin_users \
                and not is_allowed(model["auth_state"]["groups"], self.allowed_groups):
            self.log.info("%s is no longer in an allowed group: new login needed", user.name)
            return False
        self.log.info("Refreshed the access token of %s", user.name)
        return model
