"""OIDC token -> STS keys on the real S3 servers (SeaweedFS, Ceph RGW): bucket policy and forgery.

Each server's own STS verifies the IdP's JWT (signature against the JWKS over HTTPS, issuer,
audience, expiry) and the keys it hands out only reach the buckets the role policy allows.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid

import jwt
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.testbed.s3 import assume_role, error_code, s3_client

SERVERS = ["seaweedfs", "ceph_rgw"]


@pytest.fixture(params=SERVERS)
def s3srv(request):
    return request.getfixturevalue(request.param)


def keys_for(srv, idp, user: str) -> dict:
    token = idp.login(user)["access_token"]
    return assume_role(srv.endpoint, srv.role_arn_for(user), token, user)


def can_write(s3, bucket: str) -> bool:
    key = f"smoke-{uuid.uuid4().hex}"
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    except ClientError as e:
        assert error_code(e) == "AccessDenied", e
        return False
    s3.delete_object(Bucket=bucket, Key=key)
    return True


def test_own_bucket_read_write_and_others_refused(s3srv, idp):
    s3 = s3_client(s3srv.endpoint, keys_for(s3srv, idp, "alice"))
    key = f"hello-{uuid.uuid4().hex[:8]}.txt"
    body = f"alice was here {time.time()}".encode()
    s3.put_object(Bucket="alice", Key=key, Body=body)
    assert s3.get_object(Bucket="alice", Key=key)["Body"].read() == body
    assert key in [o["Key"] for o in s3.list_objects_v2(Bucket="alice").get("Contents", [])]
    s3.delete_object(Bucket="alice", Key=key)

    admin = s3srv.admin_s3()
    admin.put_object(Bucket="bob", Key=key, Body=b"bob's")
    try:
        for call in (lambda: s3.put_object(Bucket="bob", Key="x", Body=b"x"),
                     lambda: s3.get_object(Bucket="bob", Key=key),
                     lambda: s3.list_objects_v2(Bucket="bob")):
            with pytest.raises(ClientError) as e:
                call()
            assert error_code(e.value) == "AccessDenied"
    finally:
        admin.delete_object(Bucket="bob", Key=key)


def test_shared_and_group_buckets(s3srv, idp):
    s3 = s3_client(s3srv.endpoint, keys_for(s3srv, idp, "alice"))   # groups: physics, cms
    assert can_write(s3, "scratch")
    assert can_write(s3, "cms")
    assert can_write(s3, "physics")
    assert not can_write(s3, "admins")
    carol = s3_client(s3srv.endpoint, keys_for(s3srv, idp, "carol"))  # admins, physics
    assert can_write(carol, "admins")
    assert can_write(carol, "scratch")
    assert not can_write(carol, "cms")


def test_short_lived_keys_expire(s3srv, request, idp):
    """Keys can be made to expire within seconds, and then the server refuses them.

    SeaweedFS: only through its default lifetime (sts.tokenDuration; an explicit DurationSeconds
    must be >= 900). Ceph RGW: through DurationSeconds (its minimum is lowered in ceph.conf)."""
    if s3srv.rclone_provider == "SeaweedFS":
        srv, duration, lifetime = request.getfixturevalue("seaweedfs_factory")("10s"), None, 10
        with pytest.raises(ClientError):
            assume_role(srv.endpoint, srv.role_arn, idp.login("alice")["access_token"], "alice",
                        duration=60)
    else:
        srv, duration, lifetime = s3srv, s3srv.min_duration, s3srv.min_duration
    creds = assume_role(srv.endpoint, srv.role_arn_for("alice"),
                        idp.login("alice")["access_token"], "alice", duration=duration)
    left = (creds["Expiration"] - datetime.datetime.now(datetime.UTC)).total_seconds()
    assert lifetime - 5 < left <= lifetime + 1, left
    s3 = s3_client(srv.endpoint, creds)
    s3.list_objects_v2(Bucket="alice")
    time.sleep(left + 2)
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="alice")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.value


# --- forged tokens -----------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _as_bob(token: str) -> tuple[dict, dict]:
    """Header and claims of alice's token, rewritten to claim to be bob, in the admins group."""
    head, payload, _sig = token.split(".")
    claims = json.loads(_unb64(payload))
    claims.update(sub="bob", preferred_username="bob", groups=["physics", "admins"])
    return json.loads(_unb64(head)), claims


def _sign(claims: dict, header: dict, pem: bytes) -> str:
    key = serialization.load_pem_private_key(pem, password=None)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": header.get("kid")})


def _refused(srv, role_arn: str, token: str) -> None:
    """STS says no (SeaweedFS: 400/403 with a code; RGW: a bare 403)."""
    with pytest.raises(ClientError) as e:
        assume_role(srv.endpoint, role_arn, token, "bob")
    status = e.value.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    assert status in (400, 401, 403), e.value


def test_tampered_tokens_are_refused(s3srv, idp):
    token = idp.login("alice")["access_token"]
    header, claims = _as_bob(token)
    role = s3srv.role_arn_for("bob")

    # 1. Payload changed, alice's signature kept.
    head, _payload, sig = token.split(".")
    _refused(s3srv, role, ".".join([head, _b64(json.dumps(claims).encode()), sig]))

    # 2. Signed by another key under the IdP's key id.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    _refused(s3srv, role, _sign(claims, header, other))

    # 3. Signed by the IdP's real key but expired.
    real = idp.pki.sig_key.read_bytes()
    expired = {**claims, "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    _refused(s3srv, role, _sign(expired, header, real))

    # 4. Signed by the IdP's real key but for another audience (a token meant for another
    # client of the same IdP; client_id stays "jupyterhub", which alone satisfies RGW's own
    # check: the testbed's trust policy checks aud too).
    _refused(s3srv, role, _sign({**claims, "aud": "another-service"}, header, real))

    # Control: the same forged claims with the IdP's real key are accepted, so the refusals
    # above are the signature, expiry and audience checks at work, not a malformed forgery.
    creds = assume_role(s3srv.endpoint, role, _sign(claims, header, real), "bob")
    assert creds["AccessKeyId"]
