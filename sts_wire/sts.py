"""STS (AssumeRoleWithWebIdentity) and S3 probes with boto3: keys in, plain errors out.

Flavours: Ceph RGW and AWS need ``role_arn`` (Ceph: ``arn:aws:iam:::role/<name>``); MinIO ignores
it (any value, or leave it out: a placeholder is sent); SeaweedFS takes its configured role ARN.
The token is sent in the POST body (boto3 does that), never in a URL.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from dataclasses import dataclass, field

from .errors import Exit, StsWireError
from .spec import StsSpec

# MinIO ignores RoleArn but botocore requires one of at least 20 characters.
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/sts-wire"


@dataclass
class Keys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float
    obtained_at: float

    def process_json(self, reported_expiry: float) -> str:
        """The credential_process answer rclone's SDK reads (Expiration: our renewal deadline)."""
        exp = datetime.datetime.fromtimestamp(reported_expiry, datetime.UTC)
        return json.dumps({"Version": 1, "AccessKeyId": self.access_key_id,
                           "SecretAccessKey": self.secret_access_key, "SessionToken": self.session_token,
                           "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")})

    def boto_kwargs(self) -> dict:
        return {"aws_access_key_id": self.access_key_id, "aws_secret_access_key": self.secret_access_key,
                "aws_session_token": self.session_token}


# Seconds to connect and to wait for each read; an STS answer is read whole within TIMEOUT[1].
TIMEOUT = (5, 30)
# An AssumeRoleWithWebIdentity answer is about 2 KiB; a larger one is cut off, never read whole.
MAX_ANSWER_BYTES = 1 << 20


def _config(**kw):
    import botocore.config

    # parameter_validation off: botocore refuses DurationSeconds < 900 before asking, but Ceph RGW
    # (rgw sts min session duration) and SeaweedFS (tokenDuration) may allow shorter keys; the
    # server decides and its refusal is explained.
    return botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=TIMEOUT[0],
                                  read_timeout=TIMEOUT[1], parameter_validation=False, **kw)


class AnswerUnusable(Exception):
    """The STS answer is too large, too slow or not an AssumeRoleWithWebIdentity result."""


class _CappedBody:
    """A urllib3 response read in chunks up to `limit` bytes and within `deadline` seconds."""

    def __init__(self, raw, limit: int, deadline: float):
        self.raw, self.limit, self.deadline = raw, limit, deadline

    def stream(self, *args, **kwargs):
        import urllib3.exceptions

        n, end = 0, time.monotonic() + self.deadline
        while True:
            try:
                # read1: whatever has arrived, so that a server dripping bytes meets the deadline too.
                chunk = self.raw.read1(65536)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise AnswerUnusable(f"cut off: {type(e).__name__}") from None
            if not chunk:
                return
            n += len(chunk)
            if n > self.limit or time.monotonic() > end:
                self.raw.close()
                raise AnswerUnusable(f"more than {self.limit} bytes" if n > self.limit
                                     else f"still arriving after {self.deadline:g} s")
            yield chunk


def _bounded(client) -> dict:
    """Send AssumeRoleWithWebIdentity through the client's own HTTP session, but hand botocore
    a body that stops at MAX_ANSWER_BYTES (botocore itself would read any size into memory).
    Returns where the last answer's HTTP status is noted (for messages)."""
    from botocore.awsrequest import AWSResponse

    seen: dict = {}

    def send(request, **_):
        request.stream_output = True  # else the session reads the whole body at once
        r = client._endpoint.http_session.send(request)  # the client's session: its TLS and time-outs
        seen["status"] = r.status_code
        return AWSResponse(r.url, r.status_code, r.headers, _CappedBody(r.raw, MAX_ANSWER_BYTES, TIMEOUT[1]))

    client.meta.events.register("before-send.sts.AssumeRoleWithWebIdentity", send)
    return seen


_local = threading.local()


_loader = None


def session():
    """This thread's boto3 session: boto3's default session is shared and not thread-safe, and
    sts-wire checks buckets and renews keys from several threads. The sessions share botocore's
    model loader (read-only once loaded), so the models are parsed once, early (app._warm_boto3)."""
    global _loader
    import boto3.session
    import botocore.loaders
    import botocore.session

    if getattr(_local, "session", None) is None:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
        core = botocore.session.Session()
        core.register_component("data_loader", _loader)
        _local.session = boto3.session.Session(botocore_session=core)
    return _local.session


def _verify(ca_file: str | None):
    # An explicit path beats AWS_CA_BUNDLE; None lets botocore use its default (or AWS_CA_BUNDLE).
    return ca_file if ca_file else None


def _origin(url: str) -> str:
    return url.split("/")[2] if "//" in url else url


def assume_role(sts: StsSpec, token: str, now: float | None = None) -> Keys:
    import botocore.exceptions
    import botocore.parsers
    from botocore import UNSIGNED

    now = time.time() if now is None else now
    client = session().client("sts", endpoint_url=sts.endpoint, region_name=sts.region,
                          aws_access_key_id="unused", aws_secret_access_key="unused",  # noqa: S106
                          verify=_verify(sts.ca_file), config=_config(signature_version=UNSIGNED))
    seen = _bounded(client)
    kw = {"DurationSeconds": int(sts.duration)} if sts.duration else {}
    unusable = f"STS at {_origin(sts.endpoint)} gave an answer that is not an AssumeRoleWithWebIdentity result"
    hint = "is sts.endpoint the STS endpoint of the S3 server? (the server may be failing: sts-wire tries again)"
    try:
        r = client.assume_role_with_web_identity(RoleArn=sts.role_arn or PLACEHOLDER_ROLE,
                                                 RoleSessionName=sts.session_name or "sts-wire",
                                                 WebIdentityToken=token, **kw)
    except botocore.exceptions.EndpointConnectionError:
        raise StsWireError(f"STS: cannot reach {_origin(sts.endpoint)}", Exit.STS_UNREACHABLE) from None
    except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError):
        raise StsWireError(f"STS: {_origin(sts.endpoint)} did not answer in time", Exit.STS_UNREACHABLE) from None
    except botocore.exceptions.SSLError:
        raise StsWireError(f"STS: TLS verification of {_origin(sts.endpoint)} failed", Exit.STS_UNREACHABLE,
                           "give the S3 server's CA with sts.ca_file") from None
    except botocore.exceptions.ClientError as e:
        raise sts_error(e, sts) from None
    except botocore.exceptions.ParamValidationError as e:
        raise StsWireError(f"STS request is invalid: {e}", Exit.SPEC) from None
    except botocore.exceptions.BotoCoreError as e:
        raise StsWireError(f"STS: request to {_origin(sts.endpoint)} failed: {type(e).__name__}",
                           Exit.STS_UNREACHABLE) from None
    except AnswerUnusable as e:
        raise StsWireError(f"{unusable} ({e})", Exit.STS_UNREACHABLE, hint) from None
    except (botocore.parsers.ResponseParserError, KeyError, ValueError, TypeError) as e:
        # botocore's message would quote the answer, which may hold keys: say only what kind.
        raise StsWireError(f"{unusable} (HTTP {seen.get('status', '?')}, {type(e).__name__})",
                           Exit.STS_UNREACHABLE, hint) from None
    try:
        c = r["Credentials"]
        exp = c["Expiration"]
        exp_ts = exp.timestamp() if hasattr(exp, "timestamp") else float(exp)
        keys = Keys(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], exp_ts, now)
    except (KeyError, TypeError, ValueError) as e:
        raise StsWireError(f"{unusable} (no usable {e if isinstance(e, KeyError) else 'Expiration'})",
                           Exit.STS_UNREACHABLE, hint) from None
    if not all(isinstance(v, str) and v for v in (keys.access_key_id, keys.secret_access_key, keys.session_token)):
        raise StsWireError(f"{unusable} (empty keys)", Exit.STS_UNREACHABLE, hint)
    return keys


def sts_error(e, sts: StsSpec) -> StsWireError:
    err = e.response.get("Error", {})
    code, msg = str(err.get("Code", "")), str(err.get("Message", ""))[:200]
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status >= 500 or code in ("ServiceUnavailable", "InternalError"):
        return StsWireError(f"STS at {_origin(sts.endpoint)} failed: {code} {msg}".strip(), Exit.STS_UNREACHABLE)
    hint = None
    if not code:
        code = f"HTTP {status}" if status else "refused"    # Ceph RGW 16: 403 with an empty body
    low = (code + " " + msg).lower()
    if "expired" in low:
        hint = "the OIDC token had expired: is its source renewing it?"
    elif "role" in low or code in ("AccessDenied", "NoSuchEntity") or status == 403:
        hint = (f"is sts.role_arn ({sts.role_arn or 'not set'}) right, and does the role trust this "
                "identity provider and user? (Ceph RGW and AWS need the role ARN)")
    elif "audience" in low or "aud" in low:
        hint = "the token's audience is not one the S3 server accepts (token.audience)"
    elif "duration" in low:
        hint = "sts.duration is outside what the server allows (SeaweedFS/AWS: at least 900 s)"
    elif code in ("InvalidIdentityToken", "IDPRejectedClaim", "InvalidParameterValue"):
        hint = "the S3 server does not trust this token: issuer, audience or signature"
    return StsWireError(f"STS refused AssumeRoleWithWebIdentity: {code}: {msg}".rstrip(": "),
                        Exit.STS_REFUSED, hint)


def s3_client(sts: StsSpec, keys: Keys):
    return session().client("s3", endpoint_url=sts.s3_url, region_name=sts.region, verify=_verify(sts.ca_file),
                        config=_config(s3={"addressing_style": "path"}), **keys.boto_kwargs())


def probe_bucket(client, bucket: str, prefix: str, max_keys: int = 20) -> list[str]:
    """List up to max_keys entries below bucket/prefix; plain errors for denied, missing, down."""
    import botocore.exceptions

    pre = (prefix.strip("/") + "/") if prefix else ""
    try:
        r = client.list_objects_v2(Bucket=bucket, Prefix=pre, Delimiter="/", MaxKeys=max_keys)
    except botocore.exceptions.EndpointConnectionError:
        raise StsWireError(f"S3: cannot reach {client.meta.endpoint_url}", Exit.S3_UNREACHABLE) from None
    except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError):
        raise StsWireError(f"S3: {client.meta.endpoint_url} did not answer in time", Exit.S3_UNREACHABLE) from None
    except botocore.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            raise StsWireError(f"bucket {bucket} does not exist", Exit.S3_DENIED) from None
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            raise StsWireError(f"access to bucket {bucket} is denied ({code or 'HTTP 403'})",
                               Exit.S3_DENIED, "the role's policy does not give this user that bucket") from None
        if status >= 500:
            raise StsWireError(f"S3 failed listing {bucket}: {code}", Exit.S3_UNREACHABLE) from None
        raise StsWireError(f"S3 refused listing {bucket}: {code}", Exit.S3_DENIED) from None
    names = [p["Prefix"][len(pre):] for p in r.get("CommonPrefixes", [])]
    names += [o["Key"][len(pre):] for o in r.get("Contents", [])]
    return sorted(n for n in names if n)
