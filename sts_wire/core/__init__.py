"""The core shared by sts-wire and the hub (jhub-cloud depends on sts-wire, never the reverse).

- `jwt`: JWKS key sets and JWT verification (signature, issuer, audience, expiry).
- `oidc`: OpenID Connect discovery with clear errors.
- `yamlfile`: YAML reading with duplicate keys refused and line numbers kept.
- `problems`: one problem type (key path, message, line) for every validation report.
- `secretfile`: reading secret files, refused unless mode 600.
- `placeholders`: the one placeholder syntax, `{username}`.
"""
