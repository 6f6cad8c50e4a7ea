"""The shared core (sts_wire.core.jwt, sts_wire.core.oidc) against the real IdP."""

import time

import jwt as pyjwt
import pytest
import requests

from sts_wire.core.jwt import ALGORITHMS, AsyncVerifier, SyncVerifier, TokenInvalid, check_audiences
from sts_wire.core.oidc import DiscoveryError, check_document, discover, fetch_jwks, url_is_secure


def _sig_key(idp):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(idp.pki.sig_key.read_bytes(), password=None)


def signed(idp, **claims) -> str:
    now = int(time.time())
    body = {"iss": idp.issuer, "sub": "alice", "iat": now, "exp": now + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return pyjwt.encode(body, _sig_key(idp), algorithm="RS256", headers={"kid": "sig-1"})


@pytest.fixture
def verifier(idp):
    doc = discover(idp.issuer, verify=str(idp.pki.bundle))
    return lambda audiences: SyncVerifier(doc["issuer"], lambda: fetch_jwks(doc["jwks_uri"],
                                                                            verify=str(idp.pki.bundle)), audiences)


def test_real_token_verifies_with_one_of_several_audiences(idp, verifier):
    tok = idp.login("alice")["access_token"]
    claims = verifier(["account", "jupyterhub"]).verify(tok)
    assert claims["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="audience is none of"):
        verifier(["account", "other"]).verify(tok)


@pytest.mark.parametrize("aud", [None, "account", ["account", "x"]])
def test_audience_list_and_explicit_none(idp, verifier, aud):
    tok = signed(idp, aud=aud)
    if aud is None:
        # No aud at all: refused when audiences are listed, accepted only when the site said so.
        with pytest.raises(TokenInvalid, match="audience"):
            verifier(["account"]).verify(tok)
    else:
        assert verifier(["account"]).verify(tok)["sub"] == "alice"
    assert verifier(None).verify(tok)["sub"] == "alice"
    # None checks no audience but still everything else.
    with pytest.raises(TokenInvalid, match="expired"):
        verifier(None).verify(signed(idp, aud=aud, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))
    with pytest.raises(TokenInvalid, match="issuer"):
        verifier(None).verify(signed(idp, aud=aud, iss="https://evil.example"))


def test_empty_audience_list_is_a_mistake_not_a_wildcard():
    with pytest.raises(ValueError, match="say explicitly"):
        check_audiences([])
    assert check_audiences("jupyterhub") == ["jupyterhub"]
    assert check_audiences(None) is None


def test_only_asymmetric_algorithms():
    assert not {"none", "HS256", "HS384", "HS512"} & set(ALGORITHMS)
    with pytest.raises(ValueError, match="no accepted JWT algorithm"):
        SyncVerifier("https://x", dict, None, algorithms=["HS256"])


async def test_async_verifier_fetches_keys_once(idp):
    doc = discover(idp.issuer, verify=str(idp.pki.bundle))
    calls = []

    async def fetch():
        calls.append(1)
        return fetch_jwks(doc["jwks_uri"], verify=str(idp.pki.bundle))

    v = AsyncVerifier(doc["issuer"], fetch, ["jupyterhub"])
    tok = idp.login("bob")["access_token"]
    assert (await v.verify(tok))["sub"] == "bob"
    assert (await v.verify(tok))["sub"] == "bob"
    assert len(calls) == 1


def test_discovery_of_the_real_idp(idp):
    doc = discover(idp.issuer, verify=str(idp.pki.bundle))
    assert doc["issuer"] == idp.issuer and doc["jwks_uri"].startswith(idp.issuer)


def test_discovery_names_the_wrong_issuer(idp):
    # The IdP calls itself https://localhost:<port>; the same server as 127.0.0.1 is another issuer.
    other = idp.issuer.replace("localhost", "127.0.0.1")
    with pytest.raises(DiscoveryError, match=r"names issuer .*, not .*write the issuer URL exactly"):
        discover(other, verify=str(idp.pki.bundle))


def test_discovery_with_an_untrusted_certificate_says_so(idp):
    # The system CAs do not include the test CA.
    with pytest.raises(DiscoveryError, match="TLS certificate is not trusted"):
        discover(idp.issuer, verify=requests.certs.where())


def test_discovery_of_something_that_is_not_an_issuer(idp):
    with pytest.raises(DiscoveryError, match="HTTP 404"):
        discover(idp.issuer + "/nothing-here", verify=str(idp.pki.bundle))


def test_unreachable_idp_fails_fast():
    t = time.monotonic()
    with pytest.raises(DiscoveryError, match="cannot be reached") as e:
        discover("https://127.0.0.1:9")
    assert e.value.unreachable
    assert time.monotonic() - t < 5


def test_http_issuer_refused_unless_loopback():
    with pytest.raises(DiscoveryError, match="not https"):
        discover("http://iam.example.org")
    assert url_is_secure("http://127.0.0.1:8081/x") and url_is_secure("http://[::1]/x")
    assert not url_is_secure("http://iam.example.org/token")


@pytest.mark.parametrize("doc, message", [
    ([], "did not answer a JSON object"),
    ({"issuer": "https://i.example"}, "has no 'token_endpoint', 'jwks_uri'"),
    ({"issuer": "https://i.example", "token_endpoint": "http://i.example/token", "jwks_uri": "https://i.example/k"},
     "token_endpoint 'http://i.example/token', which is not https"),
    ({"issuer": "https://j.example", "token_endpoint": "https://i.example/t", "jwks_uri": "https://i.example/k"},
     "names issuer 'https://j.example'"),
])
def test_wrong_documents(doc, message):
    with pytest.raises(DiscoveryError, match=message):
        check_document("https://i.example", doc)
