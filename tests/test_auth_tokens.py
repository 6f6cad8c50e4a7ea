"""IAMAuthenticator against the real IdP: a token is used only after full verification."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.web import HTTPError

from jhub_cloud.auth.authenticator import IAMAuthenticator
from sts_wire.errors import Exit, StsWireError
from sts_wire.idp import verified_claims
from tests.testbed.idp import AUDIENCE


@pytest.fixture
def authenticator(idp):
    return IAMAuthenticator(issuer=idp.issuer, client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)},
                            allowed_groups={"physics", "cms", "admins"}, admin_groups={"admins"})


def _sig_key(idp):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(idp.pki.sig_key.read_bytes(), password=None)


def forge(idp, claims_update: dict, key=None, headers=None) -> str:
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "preferred_username": "alice",
              "groups": ["physics", "cms", "admins"], "iat": now, "exp": now + 600, **claims_update}
    return jwt.encode(claims, key or _sig_key(idp), algorithm="RS256", headers={"kid": "sig-1", **(headers or {})})


def signed_raw(idp, claims) -> str:
    """Signed by the IdP's key with claims PyJWT's encoder would refuse (wrong types)."""
    return jwt.api_jws.encode(json.dumps(claims).encode(), _sig_key(idp), algorithm="RS256", headers={"kid": "sig-1"})


def alg_none(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT', 'kid': 'sig-1'})}.{enc(claims)}."


def hmac_signed(claims: dict, secret: bytes) -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    signing_input = f"{enc(json.dumps({'alg': 'HS256', 'kid': 'sig-1'}).encode())}.{enc(json.dumps(claims).encode())}"
    return f"{signing_input}.{enc(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


async def test_real_login_tokens_give_groups_and_admin(idp, authenticator):
    model = await authenticator._token_to_auth_model(idp.login("carol"))
    assert model["name"] == "carol"
    assert model["groups"] == ["admins", "physics"]
    assert model["admin"] is True
    assert model["auth_state"]["expires_at"] > time.time()


async def test_forged_token_with_the_real_key_is_accepted(idp, authenticator):
    # Control: the forging helper itself makes valid tokens, so the refusals below are meaningful.
    tok = idp.login("alice")
    model = await authenticator._token_to_auth_model({**tok, "access_token": forge(idp, {})})
    assert model["groups"] == ["admins", "cms", "physics"]


def tampered(idp) -> str:
    # A real token of bob's with "admins" slipped into its claims; the signature is the IdP's own.
    h, payload, sig = idp.login("bob")["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = [*claims.get("groups", []), "admins"]
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{h}.{body}.{sig}"


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(header)}.{_b64(claims)}."


_OTHER = []


def _other_key():
    if not _OTHER:  # one attacker key for the corpus (RSA key generation is slow)
        _OTHER.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _OTHER[0]


def _public_jwk(key) -> dict:
    return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))


def _claims(idp, **update) -> dict:
    now = int(time.time())
    return {"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "groups": ["admins"], "exp": now + 600, **update}


def _without(claims: dict, key: str) -> dict:
    return {k: v for k, v in claims.items() if k != key}


# (case, token maker, words the refusal must contain): each must be refused by the hub's
# authenticator and by sts-wire's check, with the reason named.
BAD_TOKENS = [
    ("other-key", lambda idp: forge(idp, {}, key=_other_key()), "signature does not match"),
    ("tampered-claims", tampered, "signature does not match"),
    ("tampered-signature", lambda idp: forge(idp, {})[:-8] + "AAAAAAAA", "signature does not match"),
    ("alg-none", lambda idp: alg_none(_claims(idp)), "algorithm 'none' is not accepted"),
    ("alg-none-capitalised", lambda idp: _unsigned({"alg": "NoNe", "kid": "sig-1"}, _claims(idp)),
     "algorithm 'NoNe' is not accepted"),
    ("empty-signature", lambda idp: forge(idp, {}).rsplit(".", 1)[0] + ".", "signature does not match"),
    # Headers that point at the attacker's own key: never followed, the issuer's JWKS decides.
    ("embedded-jwk", lambda idp: forge(idp, {}, key=_other_key(), headers={"jwk": _public_jwk(_other_key())}),
     "signature does not match"),
    ("jku-elsewhere", lambda idp: forge(idp, {}, key=_other_key(), headers={"jku": "https://evil.example/jwks"}),
     "signature does not match"),
    ("kid-path-traversal", lambda idp: forge(idp, {}, headers={"kid": "../../../../etc/passwd"}), "unknown key"),
    # The classic confusion attack: HMAC "signed" with the issuer's public key as the secret.
    ("hmac-with-public-key", lambda idp: hmac_signed(_claims(idp), idp.pki.sig_cert.read_bytes()),
     "algorithm 'HS256' is not accepted"),
    ("expired", lambda idp: forge(idp, {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}), "expired"),
    ("not-yet-valid", lambda idp: forge(idp, {"nbf": int(time.time()) + 3600}), "not valid yet"),
    ("issued-in-the-future", lambda idp: forge(idp, {"iat": int(time.time()) + 3600}), "not valid yet"),
    ("other-issuer", lambda idp: forge(idp, {"iss": "https://evil.example"}), "issuer"),
    ("other-audience", lambda idp: forge(idp, {"aud": "some-other-service"}), "audience"),
    ("missing-exp", lambda idp: jwt.encode(_without(_claims(idp), "exp"), _sig_key(idp), algorithm="RS256",
                                           headers={"kid": "sig-1"}), "no 'exp' claim"),
    ("exp-not-a-number", lambda idp: forge(idp, {"exp": "tomorrow"}), "exp"),
    ("iss-a-list", lambda idp: signed_raw(idp, _claims(idp, iss=[idp.issuer, "https://evil.example"])), "ssuer"),
    ("aud-an-object", lambda idp: signed_raw(idp, _claims(idp, aud={"aud": AUDIENCE})), "audience"),
    ("claims-not-an-object", lambda idp: signed_raw(idp, [idp.issuer, AUDIENCE]), "must be a json object"),
    ("missing-iss", lambda idp: jwt.encode(_without(_claims(idp), "iss"), _sig_key(idp), algorithm="RS256",
                                           headers={"kid": "sig-1"}), "no 'iss' claim"),
    ("unknown-kid", lambda idp: forge(idp, {}, headers={"kid": "rotated-away"}), "unknown key"),
    # 1 MB, signed with the IdP's real key: refused for its size alone, before any parsing.
    ("oversized", lambda idp: forge(idp, {"pad": "x" * (1 << 20)}), "more than the 65536"),
    ("garbage", lambda idp: "not.a.jwt", "not a JWT"),
    ("four-parts", lambda idp: forge(idp, {}) + ".extra", "not a JWT"),
    ("not-base64", lambda idp: "%%%.&&&.***", "not a JWT"),
    ("no-dots", lambda idp: "x" * 300, "not a JWT"),
    ("a-number", lambda idp: 12345, "not a JWT"),
]
_IDS = [c[0] for c in BAD_TOKENS]


async def hub_refusal(idp, authenticator, bad) -> str:
    """The hub's refusal message for a login whose access token is `bad` (no model is made)."""
    tok = idp.login("alice")
    with pytest.raises(HTTPError) as e:
        await authenticator._token_to_auth_model({**tok, "access_token": bad})
    assert e.value.status_code == 403
    assert "access token is invalid" in e.value.log_message
    return e.value.log_message


def sts_wire_refusal(idp, bad) -> str:
    """sts-wire's refusal (`sts-wire check` verifies the token it would send to the STS)."""
    with pytest.raises(StsWireError) as e:
        verified_claims(bad, idp.issuer, str(idp.pki.ca_cert), audience=AUDIENCE)
    assert e.value.code == Exit.TOKEN
    return e.value.message


@pytest.mark.parametrize("case,make,expected", BAD_TOKENS, ids=_IDS)
async def test_bad_access_token_gives_no_groups_and_no_login(idp, authenticator, case, make, expected):
    msg = await hub_refusal(idp, authenticator, make(idp))
    assert expected in msg, msg
    assert len(msg) < 400 and "x" * 100 not in msg  # the reason, never the token


@pytest.mark.parametrize("case,make,expected", BAD_TOKENS, ids=_IDS)
def test_bad_access_token_is_refused_by_sts_wire(idp, case, make, expected):
    msg = sts_wire_refusal(idp, make(idp))
    assert expected in msg or (case == "expired" and "has expired" in msg), msg
    assert len(msg) < 400 and "x" * 100 not in msg


async def test_the_bad_token_corpus_is_refused_everywhere(idp, authenticator, reliability):
    """The whole corpus once more, counted for the reliability report; a good token passes both."""
    refused = 0
    for case, make, expected in BAD_TOKENS:
        bad = make(idp)
        hub_msg = await hub_refusal(idp, authenticator, bad)
        sts_msg = sts_wire_refusal(idp, bad)
        assert expected in hub_msg, (case, hub_msg)
        assert expected in sts_msg or "has expired" in sts_msg, (case, sts_msg)
        refused += 1
    good = forge(idp, {})
    assert verified_claims(good, idp.issuer, str(idp.pki.ca_cert), audience=AUDIENCE)["sub"] == "alice"
    model = await authenticator._token_to_auth_model({**idp.login("alice"), "access_token": good})
    assert model["name"] == "alice"
    reliability.record("bad.tokens", f"{refused} of {len(BAD_TOKENS)} bad access tokens refused by the hub "
                                     "and by sts-wire, each naming the reason; a well-signed one passes both")


async def test_bad_id_token_is_refused(idp, authenticator):
    tok = idp.login("alice")
    with pytest.raises(HTTPError) as e:
        await authenticator._token_to_auth_model({**tok, "id_token": forge(idp, {"aud": "someone-else"})})
    assert "id token is invalid" in e.value.log_message


async def test_unknown_key_id_refetches_jwks_at_most_once_per_interval(idp, authenticator):
    tok = idp.login("alice")
    calls = []
    fetch = authenticator.verifier.fetch_jwks

    async def counting_fetch():
        calls.append(1)
        return await fetch()

    authenticator.verifier.fetch_jwks = counting_fetch
    await authenticator._token_to_auth_model(tok)
    assert len(calls) == 1
    for _ in range(3):
        with pytest.raises(HTTPError):
            await authenticator._token_to_auth_model({**tok, "access_token": forge(idp, {}, headers={"kid": "new"})})
    assert len(calls) == 1  # a flood of unknown key ids does not hammer the IdP
    authenticator.verifier.keys.loaded_at -= authenticator.verifier.min_refetch_seconds + 1
    with pytest.raises(HTTPError):
        await authenticator._token_to_auth_model({**tok, "access_token": forge(idp, {}, headers={"kid": "new"})})
    assert len(calls) == 2  # after the interval an unknown key id re-fetches (key rotation)


async def test_groups_from_the_id_token_with_rename(idp):
    auth = IAMAuthenticator(issuer=idp.issuer, client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)}, groups_source="id_token",
                            group_rename={"cms": "cms-vo"}, admin_groups={"admins"})
    model = await auth._token_to_auth_model(idp.login("alice"))
    assert model["groups"] == ["cms-vo", "physics"]
    assert model["admin"] is False


def test_discovery_failure_says_what_to_check(pki):
    from sts_wire.core.oidc import DiscoveryError

    auth = IAMAuthenticator(issuer="https://127.0.0.1:9", client_id="x", discovery_timeout=1)
    with pytest.raises(DiscoveryError, match=r"OpenID discovery at https://127.0.0.1:9/.well-known/openid-config"
                                             r"uration: the IdP cannot be reached"):
        _ = auth.discovered


async def test_discovery_in_the_hub_never_blocks_the_event_loop(pki):
    """An unreachable IdP: the loop keeps running while discovery retries, then a clear 503."""
    auth = IAMAuthenticator(issuer="https://127.0.0.1:9", client_id="x", discovery_timeout=2)
    ticks, max_gap = 0, 0.0

    async def ticker():
        nonlocal ticks, max_gap
        last = time.monotonic()
        while True:
            ticks += 1
            await asyncio.sleep(0.05)
            now = time.monotonic()
            max_gap, last = max(max_gap, now - last), now

    t = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(HTTPError) as e:
            await auth.ensure_discovered()
    finally:
        t.cancel()
    assert e.value.status_code == 503 and "cannot be reached" in e.value.log_message
    # About 2 s of retries during which the loop kept turning: a blocking discovery would hold it
    # for the whole 2 s (the gap bound leaves room for a machine busy with other work).
    assert ticks >= 5 and max_gap < 1.5, (ticks, max_gap)


async def test_issuer_written_with_a_trailing_slash(idp):
    # Tokens carry the issuer exactly as the IdP names itself; the setting may differ by a '/'.
    auth = IAMAuthenticator(issuer=idp.issuer + "/", client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)})
    _ = auth.verifier  # built before discovery, as a hub might
    model = await auth._token_to_auth_model(idp.login("bob"))
    assert model["name"] == "bob" and model["groups"] == ["physics"]
