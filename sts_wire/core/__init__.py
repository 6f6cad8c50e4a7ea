"""The core shared by sts-wire and the hub (jhub-cloud depends on sts-wire, never the reverse).

- `jwt`: JWKS key sets and JWT verification (signature, issuer, audience, expiry).
- `oidc`: OpenID Connect discovery with clear errors.
"""
