"""Hub API: a user's current access token, for their own server (and nothing more).

    GET /hub/api/jhub-cloud/users/<name>/token      Authorization: token $JUPYTERHUB_API_TOKEN
    200 {"access_token": "<jwt>", "expires_at": <epoch seconds>}
    401 {"message": ...}  the IdP refused the refresh: the user must log in again
    403                   the caller lacks custom:jhub-cloud:access-token for that user
    404                   no such user (callers allowed for any user only)
    503 {"message": ...}  the IdP cannot be reached and the current token has expired

The token is refreshed first when it is within the authenticator's `refresh_margin` of expiry,
one refresh at a time per user. The refresh token, ID token and the rest of auth_state never
leave the hub.
"""

from __future__ import annotations

import time

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado.web import HTTPError

from .refresh import Outcome

SCOPE = "custom:jhub-cloud:access-token"
CUSTOM_SCOPES = {
    SCOPE: {
        "description": "Read the user's current OIDC access token (refreshed when near expiry).",
    },
}
ROUTE = r"/api/jhub-cloud/users/([^/]+)/token"


class AccessTokenHandler(APIHandler):
    async def get(self, user_name: str):
        if not self.current_user:
            raise HTTPError(403, "Missing or invalid credentials.")
        # Checked here, not with @needs_scope: custom scopes exist only once the hub has started.
        # A caller without the scope for this user gets 403 whether the user exists or not.
        if not has_scope(f"{SCOPE}!user={user_name}", self.parsed_scopes, db=self.db):
            raise HTTPError(403, f"This token may not read the access token of {user_name} (needs {SCOPE}).")
        user = self.find_user(user_name)
        if user is None:
            raise HTTPError(404, f"No such user: {user_name}")
        if not hasattr(self.authenticator, "access_token_for"):
            raise HTTPError(501, "The hub's authenticator keeps no access tokens.")
        r = await self.authenticator.access_token_for(user, self)
        state = r.state or {}
        if r.outcome is Outcome.REFUSED:
            # The reason names no secret (e.g. "the IdP refused the refresh (HTTP 400)").
            self._reply(401, message=f"The login of {user_name} cannot be renewed ({r.reason}): log in again.")
            return
        if r.outcome is Outcome.UNAVAILABLE and state.get("expires_at", 0) <= time.time():
            self._reply(503, message="The identity provider cannot be reached and the access token has expired; "
                                     "try again later.")
            return
        self.set_header("Cache-Control", "no-store")
        self._reply(200, access_token=state["access_token"], expires_at=float(state["expires_at"]))

    def _reply(self, status: int, **body) -> None:
        self.set_status(status)
        self.write(body)


HANDLERS = [(ROUTE, AccessTokenHandler)]
