"""The mount spec: parsing, schema, validation. Pure: no file system, no network.

A spec (YAML or JSON) says where the token comes from, which STS to ask, and what to mount::

    token:  {source: hub}                       # or file / refresh / device, see TokenSpec
    sts:    {endpoint: https://s3.example.org, role_arn: "arn:aws:iam:::role/{username}"}
    mounts:
      - {remote: "{username}", path: "/s3/{username}"}
      - {remote: scratch, path: /s3/scratch}
      - {remote: cms/shared, path: /s3/cms, read_only: true, cache_mode: full,
         flags: ["--vfs-read-ahead", "64M"]}

``{username}`` in ``remote``, ``path``, ``role_arn`` and ``session_name`` is replaced by the user name.
Every problem is reported with the key it concerns (``mounts[1].path: ...``), all at once.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
    # jsonschema imports the optional 'iri' format checker rfc3987_syntax, which builds a parser
    # at import time: ~3 s of CPU on the test machines, at every start of every notebook server.
    # The spec schema uses no format keywords, so skip it for this import only.
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        import jsonschema
    finally:
        del sys.modules["rfc3987_syntax"]
else:
    import jsonschema

from .core.placeholders import fill, has_placeholder, unknown_placeholder_messages
from .core.problems import Problem
from .core.yamlfile import Lines, read_yaml
from .errors import SpecError
from .flags import ALLOWED_FLAGS, check_flags  # noqa: F401 - part of the spec's interface
from .urls import insecure_problem

TOKEN_SOURCES = ("hub", "file", "refresh", "device")
CLIENT_AUTH = ("basic", "post", "none")
CACHE_MODES = ("off", "minimal", "writes", "full")
RW_CACHE_MODES = ("writes", "full")  # notebooks open files read+write and seek while writing
PROVIDERS = ("Other", "AWS", "Ceph", "Minio", "SeaweedFS")
IMPLEMENTATIONS = ("mount", "mount2")
DEFAULT_CACHE_MODE = "writes"
DEFAULT_REGION = "us-east-1"

USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["sts", "mounts"],
    "properties": {
        "version": {"const": 1},
        "user": {"type": "string", "minLength": 1},
        "allow_plain_http": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9.:-]+$"}},
        "token": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {"enum": list(TOKEN_SOURCES)},
                "path": {"type": "string", "minLength": 1},
                "issuer": {"type": "string", "pattern": "^https?://"},
                "client_id": {"type": "string", "minLength": 1},
                "client_secret_file": {"type": "string", "minLength": 1},
                "client_secret_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "client_auth": {"enum": list(CLIENT_AUTH)},
                "refresh_token_file": {"type": "string", "minLength": 1},
                "scope": {"type": "string"},
                "audience": {"type": "string", "minLength": 1},
                "ca_file": {"type": "string", "minLength": 1},
                "hub_api_url": {"type": "string", "pattern": "^https?://"},
            },
        },
        "sts": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpoint"],
            "properties": {
                "endpoint": {"type": "string", "pattern": "^https?://"},
                "s3_endpoint": {"type": "string", "pattern": "^https?://"},
                "region": {"type": "string", "minLength": 1},
                "role_arn": {"type": "string"},
                "session_name": {"type": "string", "minLength": 2, "maxLength": 64},
                "duration": {"type": "integer", "minimum": 1, "maximum": 43200},
                "provider": {"enum": list(PROVIDERS)},
                "ca_file": {"type": "string", "minLength": 1},
            },
        },
        "rclone": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "implementation": {"enum": list(IMPLEMENTATIONS)},
                "flags": {"type": "array", "items": {"type": "string"}},
            },
        },
        "mounts": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["remote", "path"],
                "properties": {
                    "remote": {"type": "string", "minLength": 1},
                    "path": {"type": "string", "minLength": 1},
                    "read_only": {"type": "boolean"},
                    "cache_mode": {"enum": list(CACHE_MODES)},
                    "flags": {"type": "array", "items": {"type": "string"}},
                    "optional": {"type": "boolean"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class TokenSpec:
    source: str = "hub"
    path: str | None = None              # file: a JWT, or a JSON token response, re-read on change
    issuer: str | None = None            # refresh/device (discovery); file: to verify the JWT
    client_id: str | None = None
    client_secret_file: str | None = None
    client_secret_env: str = "STS_WIRE_CLIENT_SECRET"  # noqa: S105 - a variable name
    client_auth: str | None = None       # default: basic with a secret, none without
    refresh_token_file: str | None = None
    scope: str = "openid offline_access"
    audience: str | None = None
    ca_file: str | None = None
    hub_api_url: str | None = None


@dataclass(frozen=True)
class StsSpec:
    endpoint: str | None = None
    s3_endpoint: str | None = None
    region: str = DEFAULT_REGION
    role_arn: str | None = None
    session_name: str | None = None
    duration: int | None = None
    provider: str = "Other"
    ca_file: str | None = None

    @property
    def s3_url(self) -> str | None:
        return self.s3_endpoint or self.endpoint


@dataclass(frozen=True)
class MountSpec:
    remote: str
    path: str
    read_only: bool = False
    cache_mode: str = DEFAULT_CACHE_MODE
    flags: tuple[str, ...] = ()
    optional: bool = False

    @property
    def bucket(self) -> str:
        return self.remote.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.remote.split("/", 1)[1].strip("/") if "/" in self.remote else ""


@dataclass(frozen=True)
class Spec:
    token: TokenSpec = field(default_factory=TokenSpec)
    sts: StsSpec = field(default_factory=StsSpec)
    mounts: tuple[MountSpec, ...] = ()
    user: str | None = None
    implementation: str = "mount2"       # go-fuse: reads 1.2x boto3 where `mount` gives 0.9x
    flags: tuple[str, ...] = ()          # extra rclone flags for every mount
    allow_plain_http: tuple[str, ...] = ()  # hosts of a trusted private link where http is accepted


# --- parsing ----------------------------------------------------------------------------------
def load_text(text: str, source: str = "mount spec") -> dict:
    """YAML or JSON text to a dict (JSON is YAML); see load_text_lines."""
    return load_text_lines(text, source)[0]


def load_text_lines(text: str, source: str = "mount spec") -> tuple[dict, Lines]:
    """YAML or JSON text to a dict and the line of each key; a syntax error, a key given twice
    or a key that is not text is a problem with its line."""
    doc, lines, problems = read_yaml(text)
    if problems:
        raise SpecError(problems, source)
    if not isinstance(doc, dict):
        raise SpecError([f"the top level must be a mapping, not {type(doc).__name__}"], source)
    return doc, lines


def schema_problems(doc: Mapping) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        parts = tuple(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            known = ", ".join(sorted(err.schema.get("properties", {})))
            for key in extra:
                problems.append(Problem((*parts, key), f"unknown key (known: {known})"))
        elif err.validator == "enum":
            choices = ", ".join(map(str, err.validator_value))
            problems.append(Problem(parts, f"{err.instance!r} is not one of {choices}"))
        else:
            problems.append(Problem(parts, err.message))
    return problems


def parse(doc: Mapping, source: str = "mount spec", lines: Lines | None = None) -> Spec:
    """Validate a loaded spec against the schema and the rules; raise SpecError with every problem
    (with its line in the file when ``lines`` is given)."""
    problems = schema_problems(doc)
    if problems:
        raise SpecError(problems, source, lines)
    t = dict(doc.get("token") or {})
    s = dict(doc.get("sts") or {})
    r = dict(doc.get("rclone") or {})
    mounts = []
    for m in doc.get("mounts") or []:
        m = dict(m)
        m["flags"] = tuple(m.get("flags") or ())
        m.setdefault("cache_mode", DEFAULT_CACHE_MODE)
        mounts.append(MountSpec(**m))
    spec = Spec(token=TokenSpec(**t), sts=StsSpec(**s), mounts=tuple(mounts), user=doc.get("user"),
                implementation=r.get("implementation", "mount2"), flags=tuple(r.get("flags") or ()),
                allow_plain_http=tuple(doc.get("allow_plain_http") or ()))
    problems = rule_problems(spec)
    if problems:
        raise SpecError(problems, source, lines)
    return spec


def parse_text(text: str, source: str = "mount spec") -> Spec:
    doc, lines = load_text_lines(text, source)
    return parse(doc, source, lines)


# --- rules beyond the schema ------------------------------------------------------------------
def _placeholder_problems(value: str | None, where: str) -> list[str]:
    return [f"{where}: {m}" for m in unknown_placeholder_messages(value)]


def rule_problems(spec: Spec) -> list[str]:
    p: list[str] = []
    t = spec.token
    if t.source == "file" and not t.path:
        p.append("token.path: the file token source needs the path of the token file")
    if t.source in ("refresh", "device"):
        if not t.issuer:
            p.append(f"token.issuer: the {t.source} token source needs the issuer URL (for discovery)")
        if not t.client_id:
            p.append(f"token.client_id: the {t.source} token source needs the OAuth client id")
    if t.client_auth in ("basic", "post") and not (t.client_secret_file or t.client_secret_env):
        p.append(f"token.client_auth: {t.client_auth} needs client_secret_file or client_secret_env")
    for where, v in (("token.issuer", t.issuer), ("token.hub_api_url", t.hub_api_url),
                     ("sts.endpoint", spec.sts.endpoint), ("sts.s3_endpoint", spec.sts.s3_endpoint)):
        problem = insecure_problem(v, where, spec.allow_plain_http) if v else None
        if problem:
            p.append(problem)
    if spec.user is not None and not USER_RE.fullmatch(spec.user):
        p.append(f"user: {spec.user!r} is not a valid user name")
    p += _placeholder_problems(spec.sts.role_arn, "sts.role_arn")
    p += _placeholder_problems(spec.sts.session_name, "sts.session_name")
    p += check_flags(spec.flags, "rclone.flags")
    for i, m in enumerate(spec.mounts):
        w = f"mounts[{i}]"
        p += _placeholder_problems(m.remote, f"{w}.remote")
        p += _placeholder_problems(m.path, f"{w}.path")
        p += remote_problems(m.remote, f"{w}.remote")
        p += path_syntax_problems(m.path, f"{w}.path")
        if not m.read_only and m.cache_mode not in RW_CACHE_MODES:
            p.append(f"{w}.cache_mode: {m.cache_mode!r} cannot open files for read+write; use writes or "
                     "full, or set read_only: true")
        p += check_flags(m.flags, f"{w}.flags")
    return p


def remote_problems(remote: str, where: str) -> list[str]:
    """bucket or bucket/prefix; placeholders are checked after substitution."""
    if has_placeholder(remote):
        return []
    bucket, _, prefix = remote.partition("/")
    p = []
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        p.append(f"{where}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, '.', '-')")
    if prefix:
        parts = prefix.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            p.append(f"{where}: the prefix {prefix!r} has an empty, '.' or '..' part")
        if any(c in prefix for c in "\n\r\x00"):
            p.append(f"{where}: the prefix has control characters")
    return p


def path_syntax_problems(path: str, where: str) -> list[str]:
    """Absolute, normalised, no '..' part; roots are checked by check_roots after substitution."""
    p = []
    if any(c in path for c in "\n\r\x00"):
        return [f"{where}: has control characters"]
    if not path.startswith("/"):
        p.append(f"{where}: {path!r} must be an absolute path")
    parts = path.split("/")
    if ".." in parts:
        p.append(f"{where}: {path!r} must not contain '..'")
    elif path != "/" and posixpath.normpath(path) != path.rstrip("/") and not has_placeholder(path):
        p.append(f"{where}: {path!r} is not normalised (write {posixpath.normpath(path)!r})")
    return p


def under_root(path: str, roots: Sequence[str]) -> bool:
    """Strictly below one of the roots (mounting over a root itself would hide it)."""
    path = posixpath.normpath(path)
    for r in roots:
        r = posixpath.normpath(r)
        if r == "/":
            if path != "/":
                return True
        elif path.startswith(r + "/"):
            return True
    return False


# --- resolution: placeholders, roots, overlaps -------------------------------------------------
def substitute(value: str | None, user: str) -> str | None:
    return None if value is None else fill(value, user)


def resolve(spec: Spec, user: str, allowed_roots: Sequence[str]) -> Spec:
    """Fill in {username}, then check every mount path against the allowed roots and the others."""
    problems = []
    if not USER_RE.fullmatch(user or "") or user in (".", ".."):
        raise SpecError([f"user: {user!r} is not a valid user name (needed for {{username}})"])
    mounts = []
    for i, m in enumerate(spec.mounts):
        w = f"mounts[{i}]"
        m = replace(m, remote=substitute(m.remote, user), path=posixpath.normpath(substitute(m.path, user)))
        problems += remote_problems(m.remote, f"{w}.remote")
        problems += path_syntax_problems(m.path, f"{w}.path")
        if m.path.startswith("/") and not under_root(m.path, allowed_roots):
            problems.append(f"{w}.path: {m.path} is not below an allowed root "
                            f"({', '.join(allowed_roots) or 'none configured'}; see --allowed-root)")
        mounts.append(m)
    for i, a in enumerate(mounts):
        for j in range(i + 1, len(mounts)):
            b = mounts[j]
            if a.path == b.path:
                problems.append(f"mounts[{j}].path: {b.path} is already used by mounts[{i}]")
            elif b.path.startswith(a.path + "/") or a.path.startswith(b.path + "/"):
                problems.append(f"mounts[{j}].path: {b.path} and mounts[{i}].path {a.path} are nested")
    if problems:
        raise SpecError(problems)
    sts = replace(spec.sts, role_arn=substitute(spec.sts.role_arn, user),
                  session_name=substitute(spec.sts.session_name, user) or f"sts-wire-{user}"[:64])
    return replace(spec, mounts=tuple(mounts), sts=sts, user=user)


def mount_id(path: str) -> str:
    """A short, readable, unique name for a mount (cache folder, log file): /s3/alice -> s3-alice."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.strip("/")).strip("-")[:40] or "root"
    return f"{slug}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"
