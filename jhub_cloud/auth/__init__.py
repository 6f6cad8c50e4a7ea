"""OpenID Connect login against the institute's identity provider."""
