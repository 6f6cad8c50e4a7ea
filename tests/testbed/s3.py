"""Shared S3 helpers for the testbed: the bucket layout, STS web-identity exchange, S3 clients.

Both S3 servers (SeaweedFS, Ceph RGW) get the same buckets:

- one bucket per user, named after the user (``alice``, ``bob``, ``carol``, ``dave``);
- ``scratch``, read/write for every authenticated user;
- one bucket per group (``physics``, ``cms``, ``admins``), for members of that group only.
"""

from __future__ import annotations

import boto3
import botocore.config
from botocore import UNSIGNED

from .idp import USERS
from .paths import free_port

REGION = "us-east-1"
USER_BUCKETS: tuple[str, ...] = tuple(USERS)
SHARED_BUCKET = "scratch"
GROUP_BUCKETS: tuple[str, ...] = ("physics", "cms", "admins")
ALL_BUCKETS: tuple[str, ...] = (*USER_BUCKETS, SHARED_BUCKET, *GROUP_BUCKETS)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (free_port() alone may repeat one)."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def user_groups(user: str) -> list[str]:
    """The test user's groups as the IdP starts with them."""
    return list(USERS[user]["groups"])


def buckets_of(user: str) -> list[str]:
    """The buckets a user may read and write: their own, scratch, their groups' buckets."""
    return [user, SHARED_BUCKET, *(g for g in user_groups(user) if g in GROUP_BUCKETS)]


def boto_config(**kw) -> botocore.config.Config:
    # Loopback test servers: fail fast instead of botocore's long default retries.
    return botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                  connect_timeout=5, read_timeout=60, **kw)


def sts_client(endpoint: str, region: str = REGION):
    """An unsigned STS client: AssumeRoleWithWebIdentity needs no keys, only the token.

    botocore's own parameter check is off so that a DurationSeconds below AWS's 900 reaches
    the server, which decides (Ceph RGW here accepts less, SeaweedFS refuses)."""
    return boto3.client("sts", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="unused", aws_secret_access_key="unused",
                        config=boto_config(signature_version=UNSIGNED, parameter_validation=False))


def assume_role(endpoint: str, role_arn: str, token: str, session_name: str,
                duration: int | None = None, region: str = REGION) -> dict:
    """Exchange an OIDC token for temporary S3 keys; returns the STS ``Credentials`` dict
    (AccessKeyId, SecretAccessKey, SessionToken, Expiration)."""
    kw = {"DurationSeconds": int(duration)} if duration is not None else {}
    r = sts_client(endpoint, region).assume_role_with_web_identity(
        RoleArn=role_arn, RoleSessionName=session_name, WebIdentityToken=token, **kw)
    return r["Credentials"]


def s3_client(endpoint: str, creds: dict, region: str = REGION):
    """A path-style S3 client from STS credentials (or any dict with the same keys)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds.get("SessionToken"),
                        config=boto_config(s3={"addressing_style": "path"}))


def static_s3_client(endpoint: str, access_key: str, secret_key: str, region: str = REGION):
    """A path-style S3 client with long-lived (static) keys."""
    return s3_client(endpoint, {"AccessKeyId": access_key, "SecretAccessKey": secret_key}, region)


def error_code(exc: BaseException) -> str:
    """The S3/STS error code of a botocore ClientError ("AccessDenied", ...), else ""."""
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))
