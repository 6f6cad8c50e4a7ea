"""The test OpenID provider (panva oidc-provider over HTTPS) and a headless login helper.

The provider can look like each real IdP the suite supports, chosen per instance (`shape`):

- ``default``: access-token ``aud`` ``jupyterhub``; ``groups`` (plain names) in the access token,
  the ID token and userinfo; refresh tokens not rotated. What the existing tests use.
- ``keycloak``: access-token ``aud`` ``account`` (``at_audience`` overrides it, ``"-"`` leaves it
  out), ``azp``, ``typ: Bearer``; ``groups`` as full paths (``/physics``) in the access token, the
  ID token and userinfo; the groups also as roles in ``realm_access.roles`` (with Keycloak's
  ``offline_access``, ``uma_authorization``, ``default-roles-test``); refresh tokens rotated on every
  use (the old one is then refused, and using it again revokes the whole grant, as Keycloak's
  "revoke refresh token" does).
- ``iam`` (INDIGO IAM): groups only in the access token's ``wlcg.groups`` (``/physics``); no
  ``aud`` unless the client asks for one (``audience`` in the authorization request or the token
  request, kept for the refresh tokens that follow); ID token and userinfo without groups; a
  refresh token only with ``offline_access``.
- ``egi`` (EGI Check-in style): no groups in any token; the userinfo endpoint gives
  ``eduperson_entitlement`` URNs ``urn:mace:egi.eu:group:<group>:role=member#aai.egi.eu``;
  access-token ``aud`` is the client id.

Every shape: JWT access tokens signed with the key in the JWKS (kid ``sig-1``, with ``x5c``),
``preferred_username`` = the user name, and a userinfo endpoint (``/me``) that answers for the
provider's own access tokens. Options per instance: ``rotate`` (None: the shape's habit, on for
keycloak), ``refresh_id_token`` (False: refresh answers carry no ``id_token``, OIDC Core 12.2),
``at_ttl`` / ``rt_ttl`` (seconds).

Fixtures (tests/testbed/fixtures.py): ``idp`` is the session's default-shape provider;
``idp_factory(shape="keycloak", rotate=None, refresh_id_token=True, at_ttl=600, at_audience=...)``
starts another provider (stopped at the end of the session) and returns its ``IdP``.

Test controls on an instance: ``set_groups(user, groups)``; ``fault(path, status=503)`` or
``fault(path, delay=15)``, ``fault(path, body="<html>")``, ``fault(path, huge_mb=30)`` as a context
manager (the provider answers that path with the status, a body as it is, a huge JSON document,
or only after the delay, e.g. ``"/token"``, ``"/me"``); ``events(since=...)`` lists its token
endpoint answers (``grant``, ``client``, ``status``, ``sub``, ``rotated``) and userinfo calls;
``refreshes(sub)`` counts successful refresh grants.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .paths import NODE_DIR, free_port
from .pki import PKI
from .procs import Daemon

SHAPES = ("default", "keycloak", "iam", "egi")
USERS = {
    "alice": {"password": "alice-pw", "groups": ["physics", "cms"]},
    "bob": {"password": "bob-pw", "groups": ["physics"]},
    "carol": {"password": "carol-pw", "groups": ["admins", "physics"]},
    "dave": {"password": "dave-pw", "groups": ["visitors"]},
}
# client id -> secret (None: public client). Audience of every JWT access token: "jupyterhub".
CLIENTS = {"jupyterhub": "jupyterhub-secret", "sts-wire": "sts-wire-secret", "sts-wire-public": None}
AUDIENCE = "jupyterhub"
SCOPE = "openid profile email groups offline_access"


@dataclass
class IdP:
    pki: PKI
    dir: Path
    at_ttl: int = 600
    rt_ttl: int = 86400
    shape: str = "default"
    rotate: bool | None = None          # None: as the shape does (keycloak rotates)
    refresh_id_token: bool = True
    at_audience: str | None = None      # None: as the shape does; "-": no aud at all
    port: int = field(default_factory=free_port)
    daemon: Daemon | None = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown IdP shape {self.shape!r}: one of {', '.join(SHAPES)}")
        if self.rotate is None:
            self.rotate = self.shape == "keycloak"

    @property
    def issuer(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def users_file(self) -> Path:
        return self.dir / "users.json"

    @property
    def faults_file(self) -> Path:
        return self.dir / "faults.json"

    @property
    def events_file(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    def session(self) -> requests.Session:
        # trust_env=False: REQUESTS_CA_BUNDLE from the machine would silently override verify=.
        s = requests.Session()
        s.trust_env = False
        s.verify = str(self.pki.ca_cert)
        return s

    def start(self) -> IdP:
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).with_name("idp.mjs"), self.dir / "idp.mjs")
        # Node resolves 'oidc-provider' from node_modules next to the script.
        link = self.dir / "node_modules"
        if not link.exists():
            link.symlink_to(NODE_DIR / "node_modules")
        (self.dir / "package.json").write_text('{"type": "module"}')
        self.users_file.write_text(json.dumps(USERS))
        self.faults_file.write_text("{}")
        self.events_file.write_text("")
        env = dict(os.environ, ISSUER=self.issuer, PORT=str(self.port), TLS_KEY=str(self.pki.server_key),
                   TLS_CERT=str(self.pki.server_cert), SIG_KEY=str(self.pki.sig_key),
                   SIG_CERT=str(self.pki.sig_cert), USERS=str(self.users_file), AT_TTL=str(self.at_ttl),
                   RT_TTL=str(self.rt_ttl), AUDIENCE=AUDIENCE, SHAPE=self.shape, ROTATE=str(int(self.rotate)),
                   REFRESH_ID_TOKEN=str(int(self.refresh_id_token)), FAULTS=str(self.faults_file),
                   EVENTS=str(self.events_file))
        if self.at_audience is not None:
            env["AT_AUD"] = self.at_audience
        self.daemon = Daemon("oidc-provider", ["node", str(self.dir / "idp.mjs")], self.dir / "idp.log",
                             env=env, cwd=self.dir, stop_timeout=5).start()
        s = self.session()
        self.daemon.wait_ready(lambda: s.get(self.issuer + "/.well-known/openid-configuration", timeout=2).ok,
                               timeout=30)
        return self

    def stop(self) -> None:
        if self.daemon:
            self.daemon.stop()

    # --- test users -------------------------------------------------------------------------
    def set_groups(self, user: str, groups: list[str]) -> None:
        """Change a user's groups at the IdP; the next token issued carries them."""
        users = json.loads(self.users_file.read_text())
        users[user]["groups"] = list(groups)
        tmp = self.users_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(users))
        tmp.replace(self.users_file)

    @contextlib.contextmanager
    def fault(self, path: str, status: int | None = None, delay: float | None = None,
              body: str | None = None, content_type: str = "json", huge_mb: int | None = None):
        """While inside: the provider answers `path` ("/token", "/me", ...) with `status`, or only
        after `delay` seconds (a hung IdP), or with `body` as it is (a malformed answer), or with a
        JSON document of `huge_mb` MiB."""
        f = {}
        if body is not None:
            f.update(body=body, type=content_type)
        if huge_mb is not None:
            f["huge_mb"] = huge_mb
        if status is not None:
            f["status"] = status
        if delay is not None:
            f["delay_ms"] = int(delay * 1000)
        faults = json.loads(self.faults_file.read_text())
        faults[path] = f
        self.faults_file.write_text(json.dumps(faults))
        try:
            yield
        finally:
            faults = json.loads(self.faults_file.read_text())
            faults.pop(path, None)
            self.faults_file.write_text(json.dumps(faults))

    def events(self, since: float = 0) -> list[dict]:
        """The provider's token-endpoint answers and userinfo calls, oldest first."""
        out = []
        for line in self.events_file.read_text().splitlines():
            e = json.loads(line)
            if e["t"] >= since:
                out.append(e)
        return out

    def refreshes(self, sub: str | None = None, since: float = 0) -> int:
        """How many refresh grants the provider answered with new tokens (for `sub`)."""
        return sum(1 for e in self.events(since) if e.get("grant") == "refresh_token" and e.get("status") == 200
                   and (sub is None or e.get("sub") == sub))

    def password(self, user: str) -> str:
        return json.loads(self.users_file.read_text())[user]["password"]

    # --- headless flows ---------------------------------------------------------------------
    def _client_auth(self, client_id: str) -> tuple[dict, tuple | None]:
        secret = CLIENTS[client_id]
        if secret is None:
            return {"client_id": client_id}, None
        if client_id == "sts-wire":  # client_secret_post
            return {"client_id": client_id, "client_secret": secret}, None
        return {}, (client_id, secret)

    def submit_login(self, s: requests.Session, interaction_url: str, user: str,
                     password: str | None = None) -> requests.Response:
        """POST the login form; follow the IdP's own redirects, stop at the first foreign one."""
        r = s.post(interaction_url, data={"login": user, "password": password or self.password(user)},
                   allow_redirects=False)
        while r.status_code in (302, 303) and r.headers["location"].startswith(("/", self.issuer)):
            r = s.get(urllib.parse.urljoin(self.issuer, r.headers["location"]), allow_redirects=False)
        return r

    def login(self, user: str, password: str | None = None, client_id: str = "jupyterhub",
              scope: str = SCOPE, **extra_params: str) -> dict:
        """Authorization-code login without a browser; returns the token response. `extra_params`
        go into the authorization request (e.g. audience="jupyterhub" for the iam shape)."""
        redirect = "http://127.0.0.1:9/cb"
        s = self.session()
        r = s.get(self.issuer + "/auth", params={"client_id": client_id, "response_type": "code", "scope": scope,
                                                  "redirect_uri": redirect, "state": "st", "prompt": "consent",
                                                  **extra_params})
        if "/interaction/" not in r.url:
            raise RuntimeError(f"IdP did not show a login page: {r.status_code} {r.text[:300]}")
        r = self.submit_login(s, r.url, user, password)
        q = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers.get("location", "")).query)
        if "code" not in q:
            raise RuntimeError(f"login of {user} failed: {r.status_code} {r.text[:300]}")
        data, auth = self._client_auth(client_id)
        t = s.post(self.token_endpoint, auth=auth, data={**data, "grant_type": "authorization_code",
                                                          "code": q["code"][0], "redirect_uri": redirect})
        t.raise_for_status()
        return t.json()

    def refresh(self, refresh_token: str, client_id: str = "jupyterhub") -> dict:
        data, auth = self._client_auth(client_id)
        t = self.session().post(self.token_endpoint, auth=auth,
                                data={**data, "grant_type": "refresh_token", "refresh_token": refresh_token})
        t.raise_for_status()
        return t.json()

    def revoke(self, token: str, client_id: str = "jupyterhub") -> None:
        data, auth = self._client_auth(client_id)
        self.session().post(self.issuer + "/token/revocation", auth=auth,
                            data={**data, "token": token}).raise_for_status()

    def approve_device(self, user_code: str, user: str, password: str | None = None) -> None:
        """Play the person at the browser in the device-code flow: enter the code, confirm, log in."""
        s = self.session()
        page = s.get(self.issuer + "/device").text
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page).group(1)
        r = s.post(self.issuer + "/device", data={"xsrf": xsrf, "user_code": user_code})
        if "deviceConfirmForm" not in r.text:
            raise RuntimeError(f"device code {user_code} not accepted: {r.status_code}")
        r = s.post(self.issuer + "/device", data={"xsrf": xsrf, "user_code": user_code, "confirm": "yes"},
                   allow_redirects=False)
        while r.status_code in (302, 303):
            loc = urllib.parse.urljoin(self.issuer, r.headers["location"])
            if "/interaction/" in loc and s.get(loc, allow_redirects=False).status_code == 200:
                r = self.submit_login(s, loc, user, password)
            else:
                r = s.get(loc, allow_redirects=False)
        if r.status_code >= 400 or "success" not in r.text.lower():
            raise RuntimeError(f"device approval failed: {r.status_code} {r.text[-300:]}")
