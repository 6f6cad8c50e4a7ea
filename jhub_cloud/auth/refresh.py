"""Token refresh: one at a time per user; only a refusal by the IdP logs anyone out.

Outcomes of a refresh attempt:
- fresh: the access token is valid beyond `refresh_margin`, nothing to do;
- refreshed: new tokens, re-verified, and the user passes the Authenticator's checks again
  (blocked_users, allowed groups / users) under the same name;
- refused: the IdP said no (invalid_grant, any 4xx), the new tokens failed verification, or the
  user may no longer log in: a new login is needed;
- unavailable: the IdP timed out or answered 5xx: the current state is kept (the user stays
  logged in; a token that has expired meanwhile cannot be handed out until the IdP is back).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import defaultdict
from dataclasses import dataclass

from jupyterhub.utils import maybe_future
from tornado.httpclient import HTTPClientError
from tornado.web import HTTPError
from traitlets import HasTraits, Int, default


class Outcome(enum.Enum):
    FRESH = "fresh"
    REFRESHED = "refreshed"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


@dataclass
class Refresh:
    outcome: Outcome
    state: dict | None = None   # the auth_state to use from now on
    model: dict | None = None   # the auth model to persist (when refreshed)
    reason: str = ""


class _Transient(Exception):
    """The IdP could not answer now (timeout, connection error, 5xx)."""


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, HTTPClientError):
        return e.code >= 500  # tornado reports timeouts and connection errors as 599
    if isinstance(e, HTTPError):
        return e.status_code >= 500
    return isinstance(e, OSError | asyncio.TimeoutError)


class RefreshMixin(HasTraits):
    """Mixed into IAMAuthenticator (which provides the token → model path)."""

    refresh_margin = Int(
        300,
        help="""Refresh the access token when it expires within this many seconds: before a spawn,
        on requests (at most every `auth_refresh_age` seconds) and when a server asks the hub for
        its user's access token.""",
    ).tag(config=True)

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self):
        return True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # The newest auth_state per user, until JupyterHub has stored it: a refresh running right
        # after another must not reuse a refresh token that the IdP has just rotated.
        self._latest: dict[str, dict] = {}

    def user_lock(self, name: str) -> asyncio.Lock:
        return self._locks[name]

    async def current_state(self, user) -> dict | None:
        state = await user.get_auth_state()
        newer = self._latest.get(user.name)
        if newer and (not state or newer.get("expires_at", 0) >= state.get("expires_at", 0)):
            return newer
        return state

    async def refresh_tokens(self, user, handler=None, force: bool = False) -> Refresh:
        """Refresh the user's tokens if near expiry. Call it holding `user_lock(user.name)`."""
        state = await self.current_state(user)
        if not state or not state.get("access_token"):
            return Refresh(Outcome.REFUSED, reason="no tokens in auth_state")
        left = state.get("expires_at", 0) - time.time()
        if not force and left > self.refresh_margin:
            return Refresh(Outcome.FRESH, state)
        refresh_token = state.get("refresh_token")
        if not refresh_token:
            if left > 0:
                return Refresh(Outcome.FRESH, state)
            return Refresh(Outcome.REFUSED, reason="the access token expired and there is no refresh token")
        try:
            token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
        except Exception as e:
            code = getattr(e, "code", None) or getattr(e, "status_code", None) or type(e).__name__
            if _is_transient(e):
                return Refresh(Outcome.UNAVAILABLE, state, reason=f"the IdP did not answer the refresh ({code})")
            if isinstance(e, HTTPClientError | HTTPError):
                return Refresh(Outcome.REFUSED, reason=f"the IdP refused the refresh (HTTP {code})")
            raise
        token_info.setdefault("refresh_token", refresh_token)  # not rotated: keep the one we have
        try:
            model = await self._token_to_auth_model(token_info, previous=state)
        except Exception as e:
            if not _is_transient(e):
                if isinstance(e, HTTPError):
                    return Refresh(Outcome.REFUSED, reason=f"the refreshed tokens are not usable ({e.log_message})")
                raise
            # New tokens, but their claims cannot be checked now (keys or userinfo unreachable):
            # keep the new tokens (the old refresh token may be spent) and the last verified claims.
            model = {"name": user.name, "groups": state.get("groups", []),
                     "auth_state": {**state, **_token_fields(token_info)}}
        if model["name"] != user.name:
            return Refresh(Outcome.REFUSED, reason=f"the refreshed tokens are for {model['name']!r}")
        if not await maybe_future(self.check_blocked_users(user.name, model)):
            return Refresh(Outcome.REFUSED, reason="the user is blocked")
        if not await maybe_future(self.check_allowed(user.name, model)):
            return Refresh(Outcome.REFUSED, reason="the user may no longer log in (allowed groups or users)")
        self._latest[user.name] = model["auth_state"]
        return Refresh(Outcome.REFRESHED, model["auth_state"], model)

    def forget(self, name: str) -> None:
        self._latest.pop(name, None)

    async def refresh_user(self, user, handler=None, **kwargs):
        """JupyterHub's hook (on requests, before spawns): True keeps the user as they are, False
        asks for a new login, a dict updates the user."""
        if not self.enable_auth_state:
            return True
        async with self.user_lock(user.name):
            r = await self.refresh_tokens(user, handler)
        if r.outcome is Outcome.FRESH:
            return True
        if r.outcome is Outcome.UNAVAILABLE:
            self.log.warning("Could not refresh the tokens of %s: %s; keeping the current ones", user.name, r.reason)
            return True
        if r.outcome is Outcome.REFUSED:
            self.forget(user.name)
            self.log.info("Refresh of %s refused: %s; a new login is needed", user.name, r.reason)
            return False
        self.log.info("Refreshed the access token of %s", user.name)
        return r.model

    async def pre_spawn_start(self, user, spawner):
        """Before every spawn, refresh at the IdP (not only near expiry): the server starts with a
        fresh token, and with the groups and admin the IdP says now (the policy reads them)."""
        await maybe_future(super().pre_spawn_start(user, spawner))
        if not (self.enable_auth_state and self.refresh_pre_spawn):
            return
        state = await self.current_state(user)
        if not state or not state.get("refresh_token"):
            return  # nothing to refresh (e.g. a user made through the API, never logged in)
        async with self.user_lock(user.name):
            r = await self.refresh_tokens(user, force=True)
            if r.outcome is Outcome.REFRESHED:
                await _store(user, r.model, self.manage_groups)
                self.log.info("Refreshed the access token of %s before a spawn", user.name)
        if r.outcome is Outcome.UNAVAILABLE:
            self.log.warning("Could not refresh the tokens of %s before a spawn: %s; starting with the "
                             "current ones", user.name, r.reason)
        elif r.outcome is Outcome.REFUSED:
            self.forget(user.name)
            raise HTTPError(403, f"The login of {user.name} cannot be renewed ({r.reason}): log in again "
                                 "before starting a server.")

    async def access_token_for(self, user, handler) -> Refresh:
        """The user's access token, refreshed first when near expiry; a refresh is persisted (auth
        state, groups, admin) before the lock is released, so concurrent callers cause one refresh."""
        async with self.user_lock(user.name):
            r = await self.refresh_tokens(user, handler)
            if r.outcome is Outcome.REFRESHED:
                await handler.auth_to_user(r.model, user)
                self.log.info("Refreshed the access token of %s for its server", user.name)
            elif r.outcome is Outcome.REFUSED:
                self.forget(user.name)
                self.log.info("Refresh of %s refused: %s; a new login is needed", user.name, r.reason)
            elif r.outcome is Outcome.UNAVAILABLE:
                self.log.warning("Could not refresh the tokens of %s: %s", user.name, r.reason)
        return r


async def _store(user, model: dict, manage_groups: bool) -> None:
    """Persist a refreshed model as JupyterHub's auth_to_user does (outside a request)."""
    from jupyterhub import roles

    await user.save_auth_state(model["auth_state"])
    if manage_groups and model.get("groups") is not None:
        user.sync_groups(model["groups"])
    if model.get("admin") is not None and model["admin"] != user.admin:
        user.admin = model["admin"]
        roles.assign_default_roles(user.db, entity=user)
        user.db.commit()


def _token_fields(token_info: dict) -> dict:
    from .authenticator import expires_at

    out = {"access_token": token_info["access_token"], "refresh_token": token_info.get("refresh_token"),
           "expires_at": expires_at(token_info)}
    if token_info.get("id_token"):
        out["id_token"] = token_info["id_token"]
    return out
