"""The default OAuth scopes: one source of truth, the schema's default for `auth.scopes`.

`offline_access` is in it: without it most IdPs (INDIGO IAM, Keycloak) give no refresh token, and
users would be logged out when their access token expires.
"""

from __future__ import annotations

from jhub_cloud.config.schema import load_schema

DEFAULT_SCOPES: tuple[str, ...] = tuple(load_schema()["properties"]["auth"]["properties"]["scopes"]["default"])
