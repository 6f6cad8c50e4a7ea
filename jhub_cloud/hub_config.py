"""Set JupyterHub up from the suite's validated configuration (the `hub` and `auth` sections)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from .auth.authenticator import IAMAuthenticator
from .auth.discovery import DiscoveryError, discover_at_startup
from .auth.token_api import CUSTOM_SCOPES
from .auth.token_api import SCOPE as ACCESS_TOKEN_SCOPE

# What a user's server may do with its own $JUPYTERHUB_API_TOKEN: the defaults, plus reading its
# own user's current access token from the hub's token endpoint (auth/token_api.py), so sts-wire
# can renew its S3 keys. Not auth_state: the refresh token and ID token stay in the hub.
SERVER_TOKEN_SCOPES = ["access:servers!server", "users:activity!user", f"{ACCESS_TOKEN_SCOPE}!user"]

# Users hold the scope for themselves (a server's token gets the part of server_token_scopes that
# its user holds), and nothing of auth_state.
USER_ROLE = {"name": "user", "scopes": ["self", f"{ACCESS_TOKEN_SCOPE}!user"]}

# The only variables a user's server inherits from the hub's environment, which may hold the client
# secret and the crypt key: those must never reach a user's server.
SERVER_ENV_KEEP = ["PATH", "LANG", "LC_ALL", "TZ"]

# auth section key -> IAMAuthenticator trait, copied when set.
_AUTH_TRAITS = (("scopes", "scope"), ("username_claim", "username_claim"), ("groups_claim", "groups_claim"),
                ("groups_source", "groups_source"), ("group_rename", "group_rename"), ("pkce", "enable_pkce"),
                ("login_service", "login_service"), ("refresh_margin_seconds", "refresh_margin"),
                ("access_token_audiences", "access_token_audiences"),
                ("access_token_audience_unchecked", "access_token_audience_unchecked"),
                ("extra_authorize_params", "extra_authorize_params"))


def apply(c, hub: Mapping, auth: Mapping, resolve_secret: Callable[[object, str], str]) -> None:
    """Fill the traitlets config `c` from the `hub` and `auth` sections of the suite config."""
    _apply_hub(c, hub, resolve_secret)
    _apply_auth(c, auth, resolve_secret)


def _apply_hub(c, hub: Mapping, resolve_secret) -> None:
    data_dir = Path(hub.get("data_dir", "/var/lib/jhub-cloud"))
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    c.JupyterHub.bind_url = hub.get("bind_url", "http://127.0.0.1:8000")
    if hub.get("hub_bind_url"):
        c.JupyterHub.hub_bind_url = hub["hub_bind_url"]
    if hub.get("hub_connect_url"):
        c.JupyterHub.hub_connect_url = hub["hub_connect_url"]
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
    if hub.get("proxy_api_url"):
        c.ConfigurableHTTPProxy.api_url = hub["proxy_api_url"]
    chp = hub.get("proxy_command")
    if chp:
        c.ConfigurableHTTPProxy.command = [chp]
    if hub.get("crypt_key") is not None:
        c.CryptKeeper.keys = [resolve_secret(hub["crypt_key"], "hub.crypt_key").encode()]

    # The single-user server comes from the same environment as the hub unless configured.
    c.Spawner.cmd = [hub.get("singleuser_cmd") or str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
    c.Spawner.server_token_scopes = SERVER_TOKEN_SCOPES
    c.Spawner.env_keep = SERVER_ENV_KEEP
    c.JupyterHub.custom_scopes = {**CUSTOM_SCOPES}
    # Roles defined before ours (e.g. Zero to JupyterHub's hub.loadRoles) stay; ours replaces `user`.
    earlier = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    c.JupyterHub.load_roles = [r for r in earlier if r.get("name") != "user"] + [USER_ROLE]
    # Our page templates before JupyterHub's (error.html: a refusal's message shown once).
    c.JupyterHub.template_paths = [str(Path(__file__).with_name("templates"))]


def _apply_auth(c, auth: Mapping, resolve_secret) -> None:
    c.JupyterHub.authenticator_class = IAMAuthenticator
    a = c.IAMAuthenticator
    a.issuer = auth["issuer"]
    a.client_id = auth["client_id"]
    if auth.get("client_secret") is not None:  # None: a public client, protected by PKCE
        a.client_secret = resolve_secret(auth["client_secret"], "auth.client_secret")
    for key, trait in _AUTH_TRAITS:
        if auth.get(key) is not None:
            setattr(a, trait, auth[key])
    a.allowed_groups = set(auth.get("allowed_groups", []))
    a.admin_groups = set(auth.get("admin_groups", []))
    if auth.get("auth_refresh_age") is not None:
        c.Authenticator.auth_refresh_age = auth["auth_refresh_age"]
    if auth.get("ca_file"):
        # Trust exactly this bundle for the IdP's TLS (TLS verification always stays on).
        a.http_request_kwargs = {"ca_certs": str(auth["ca_file"])}
    # Discovery once, now, in a worker thread: the hub serves nothing yet, and no request will
    # ever wait on the IdP's discovery document. A wrong issuer stops the hub with the reason.
    try:
        a.oidc_configuration = discover_at_startup(auth["issuer"], auth.get("ca_file"))
    except DiscoveryError as e:
        sys.exit(f"jhub-cloud: the identity provider (auth.issuer) cannot be used: {e}")
