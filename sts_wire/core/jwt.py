"""JWT verification against an issuer's JWKS: signature, issuer, audience, expiry.

One implementation for both halves (the hub's authenticator and sts-wire). The verification itself
is pure: `KeySet` holds keys, `verify` checks a token with them; fetching the JWKS is the caller's
(sync with requests in sts-wire, async with tornado in the hub), through `SyncVerifier` /
`AsyncVerifier`, which re-fetch the key set on an unknown key id at most every
`min_refetch_seconds`.

Audiences: a list of accepted audiences (the token's `aud` must name at least one), or None,
meaning the site said explicitly that its IdP sets no usable `aud` (then `aud` is not checked).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import jwt

# The one list of accepted algorithms. Asymmetric only: 'none' and HMAC (which would let the
# issuer's public key act as a shared secret) never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class TokenInvalid(Exception):
    """The token failed verification; the message says why, never the token itself."""


def check_audiences(audiences: Iterable[str] | None) -> list[str] | None:
    """The accepted audiences as a list, or None (explicitly: do not check `aud`)."""
    if audiences is None:
        return None
    if isinstance(audiences, str):
        audiences = [audiences]
    out = [a for a in audiences if isinstance(a, str) and a]
    if not out:
        raise ValueError("the list of accepted audiences is empty: name at least one audience, "
                         "or say explicitly that the IdP sets no usable aud (None)")
    return out


class KeySet:
    """Signing keys of one issuer, by key id (pure: the caller fetches the JWKS document)."""

    def __init__(self, jwks: Mapping | None = None):
        self.keys: dict[str, jwt.PyJWK] = {}
        self.loaded_at = float("-inf")
        if jwks is not None:
            self.load(jwks)

    def load(self, jwks: Mapping, now: float | None = None) -> None:
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise TokenInvalid("the issuer's JWKS is not a JSON object with a 'keys' list")
        keys = {}
        for k in jwks["keys"]:
            if not isinstance(k, Mapping) or k.get("use", "sig") != "sig":
                continue  # encryption keys sign nothing
            try:
                keys[k.get("kid", "")] = jwt.PyJWK(dict(k))
            except (jwt.PyJWTError, ValueError, TypeError):
                continue  # a key type PyJWT cannot use
        self.keys = keys
        self.loaded_at = time.monotonic() if now is None else now

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self.keys.get(kid)


# Real access tokens are a few KiB even with many groups; anything far larger is not one of them
# and is refused before any parsing.
MAX_TOKEN_CHARS = 64 * 1024


def header(token: str) -> dict:
    if not isinstance(token, str):
        raise TokenInvalid(f"not a JWT (a {type(token).__name__}, not a string)")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid(f"{len(token)} characters long, more than the {MAX_TOKEN_CHARS} a token may have")
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise TokenInvalid(f"not a JWT ({e})") from None


def verify(token: str, keys: KeySet, issuer: str, audiences: list[str] | None,
           algorithms: Iterable[str] = ALGORITHMS, leeway: float = 30) -> dict:
    """The token's claims after checking signature, `iss`, `aud` (unless audiences is None), `exp`."""
    algorithms = [a for a in algorithms if a in ALGORITHMS]
    h = header(token)
    alg = h.get("alg")
    if alg not in algorithms:
        raise TokenInvalid(f"algorithm {alg!r} is not accepted (accepted: {', '.join(algorithms)})")
    kid = h.get("kid", "")
    key = keys.get(kid)
    if key is None:
        raise TokenInvalid(f"signed with an unknown key (kid {kid!r} is not in the issuer's JWKS)")
    try:
        return jwt.decode(token, key.key, algorithms=[alg], audience=audiences, issuer=issuer, leeway=leeway,
                          options={"require": ["exp", "iss"], "verify_aud": audiences is not None})
    except jwt.ExpiredSignatureError:
        raise TokenInvalid("expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenInvalid("not valid yet (nbf or iat in the future: is a clock wrong?)") from None
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as e:
        if isinstance(e, jwt.MissingRequiredClaimError) and e.claim != "aud":
            raise TokenInvalid(f"has no {e.claim!r} claim") from None
        raise TokenInvalid(f"audience is none of {audiences!r} (a site whose IdP sets no usable aud "
                           "must say so explicitly)") from None
    except jwt.InvalidIssuerError:
        raise TokenInvalid(f"issuer is not {issuer!r}") from None
    except jwt.InvalidSignatureError:
        raise TokenInvalid("signature does not match the issuer's key") from None
    except jwt.PyJWTError as e:
        raise TokenInvalid(str(e)) from None


class _Verifier:
    def __init__(self, issuer: str, fetch_jwks, audiences: Iterable[str] | None,
                 algorithms: Iterable[str] = ALGORITHMS, leeway: float = 30, min_refetch_seconds: float = 30):
        self.issuer = issuer
        self.fetch_jwks = fetch_jwks
        self.audiences = check_audiences(audiences)
        self.algorithms = [a for a in algorithms if a in ALGORITHMS]
        if not self.algorithms:
            raise ValueError(f"no accepted JWT algorithm: choose among {', '.join(ALGORITHMS)}")
        self.leeway = leeway
        self.min_refetch_seconds = min_refetch_seconds
        self.keys = KeySet()

    def _wants_fetch(self, token: str) -> bool:
        # An unknown key id re-fetches (the IdP may have rotated keys), at most once per interval
        # so that forged key ids cannot make us hammer the IdP.
        kid = header(token).get("kid", "")
        return self.keys.get(kid) is None and time.monotonic() - self.keys.loaded_at > self.min_refetch_seconds

    def _verify(self, token: str, audiences) -> dict:
        auds = self.audiences if audiences is _DEFAULT else check_audiences(audiences)
        return verify(token, self.keys, self.issuer, auds, self.algorithms, self.leeway)


_DEFAULT = object()


class SyncVerifier(_Verifier):
    """`fetch_jwks()` returns the JWKS document (a dict)."""

    fetch_jwks: Callable[[], Mapping]

    def verify(self, token: str, audiences=_DEFAULT) -> dict:
        if self._wants_fetch(token):
            self.keys.load(self.fetch_jwks())
        return self._verify(token, audiences)


class AsyncVerifier(_Verifier):
    """`fetch_jwks()` is a coroutine function returning the JWKS document (a dict)."""

    fetch_jwks: Callable[[], Awaitable[Mapping]]

    async def verify(self, token: str, audiences=_DEFAULT) -> dict:
        if self._wants_fetch(token):
            self.keys.load(await self.fetch_jwks())
        return self._verify(token, audiences)


def unverified_claims(token: str) -> dict:
    """Claims WITHOUT verification: only for a token we obtained ourselves from the token endpoint,
    to schedule its renewal. Never use them to decide anything about a user."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return {}
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def unverified_exp(token: str) -> float | None:
    exp = unverified_claims(token).get("exp")
    try:
        return float(exp) if exp is not None else None
    except (TypeError, ValueError):
        return None
