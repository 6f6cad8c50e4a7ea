"""Verify JWTs (signature, issuer, audience, expiry) with keys from the issuer's JWKS."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import jwt

# Asymmetric algorithms only: 'none' and HMAC (which would let a public key act as a secret) never pass.
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class TokenInvalid(Exception):
    """The token failed verification; the message says why, never the token itself."""


class JWKSVerifier:
    """Keys cached by key id; an unknown key id re-fetches the JWKS (the IdP may have rotated keys),
    at most once per ``min_refetch_seconds`` so forged key ids cannot make us hammer the IdP."""

    def __init__(self, issuer: str, fetch_jwks: Callable[[], Awaitable[dict]],
                 algorithms=DEFAULT_ALGORITHMS, leeway: int = 30, min_refetch_seconds: float = 30):
        self.issuer = issuer
        self.fetch_jwks = fetch_jwks
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0

    async def _refresh_keys(self) -> None:
        data = await self.fetch_jwks()
        keys = {}
        for k in data.get("keys", []):
            try:
                pk = jwt.PyJWK(k)
            except jwt.PyJWTError:
                continue  # a key type we cannot use (e.g. an encryption key)
            keys[k.get("kid", "")] = pk
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys and time.monotonic() - self._fetched_at > self.min_refetch_seconds:
            await self._refresh_keys()
        if kid not in self._keys:
            raise TokenInvalid(f"signed with an unknown key (kid {kid!r} is not in the issuer's JWKS)")
        return self._keys[kid]

    async def verify(self, token: str, audience: str | list[str] | None) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise TokenInvalid(f"not a JWT ({e})") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenInvalid(f"algorithm {alg!r} is not accepted (accepted: {', '.join(self.algorithms)})")
        key = await self._key_for(header.get("kid", ""))
        try:
            return jwt.decode(token, key.key, algorithms=[alg], audience=audience, issuer=self.issuer,
                              leeway=self.leeway,
                              options={"require": ["exp", "iss"], "verify_aud": audience is not None})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid(f"audience is not {audience!r}") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid(f"issuer is not {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise TokenInvalid("signature does not match the issuer's key") from None
        except jwt.PyJWTError as e:
            raise TokenInvalid(str(e)) from None


def unverified_exp(token: str) -> float | None:
    """Expiry of a token we obtained ourselves from the token endpoint, only to schedule refreshes."""
    try:
        return float(jwt.decode(token, options={"verify_signature": False})["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None

