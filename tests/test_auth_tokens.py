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


@pytest.mark.parametrize("case", ["other-key", "alg-none", "other-issuer", "other-audience", "expired",
                                  "hmac-with-public-key", "garbage"])
async def test_bad_access_token_gives_no_groups_and_no_login(idp, authenticator, case):
    now = int(time.time())
    if case == "other-key":
        bad = forge(idp, {}, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif case == "alg-none":
        bad = alg_none({"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "groups": ["admins"], "exp": now + 600})
    elif case == "other-issuer":
        bad = forge(idp, {"iss": "https://evil.example"})
    elif case == "other-audience":
        bad = forge(idp, {"aud": "some-other-service"})
    elif case == "expired":
        bad = forge(idp, {"iat": now - 7200, "exp": now - 3600})
    elif case == "hmac-with-public-key":
        # The classic confusion attack: HMAC "signed" with the issuer's public key as the secret.
        bad = hmac_signed({"iss": idp.issuer, "aud": AUDIENCE, "sub": "alice", "exp": now + 600},
                          idp.pki.sig_cert.read_bytes())
    else:
        bad = "not.a.jwt"
    tok = idp.login("alice")
    with pytest.raises(HTTPError) as e:
        await authenticator._token_to_auth_model({**tok, "access_token": bad})
    assert e.value.status_code == 403
    assert "access token is invalid" in e.value.log_message


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
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    t = asyncio.ensure_future(ticker())
    try:
        with pytest.raises(HTTPError) as e:
            await auth.ensure_discovered()
    finally:
        t.cancel()
    assert e.value.status_code == 503 and "cannot be reached" in e.value.log_message
    assert ticks >= 20  # about 2 s of retries, during which the loop ran


async def test_issuer_written_with_a_trailing_slash(idp):
    # Tokens carry the issuer exactly as the IdP names itself; the setting may differ by a '/'.
    auth = IAMAuthenticator(issuer=idp.issuer + "/", client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)})
    _ = auth.verifier  # built before discovery, as a hub might
    model = await auth._token_to_auth_model(idp.login("bob"))
    assert model["name"] == "bob" and model["groups"] == ["physics"]
