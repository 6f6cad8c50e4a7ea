"""Answers from the IdP and the STS server that are malformed, huge or slow.

The IdP's discovery document, key set, token and userinfo answers are broken one at a time with
the test IdP's fault injection (tests/testbed/idp.py `fault`), on an IdP of this module's own; the
STS answers come from a loopback fault injector below (a real STS's success is proven by the
sts-wire tests). Each broken answer must give a clear error naming what was wrong, within the
configured time-out (no hang), with a huge answer cut off instead of read whole, and must change
nothing: no login, no keys, no cached discovery document or key set.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from dataclasses import dataclass, field

import pytest
from tornado.web import HTTPError

import sts_wire.idp as sts_idp
import sts_wire.sts as sts_client
from jhub_cloud.auth.authenticator import IAMAuthenticator
from jhub_cloud.auth.discovery import discover_for_login
from jhub_cloud.auth.refresh import Outcome, _is_transient
from sts_wire.core.oidc import DiscoveryError
from sts_wire.errors import Exit, StsWireError
from sts_wire.spec import StsSpec, TokenSpec
from sts_wire.tokens import RefreshSource

TIMEOUT = 2     # seconds: the time-out configured on both sides for these tests
DELAY = 4       # seconds: how late the slow answers come (longer than the time-out)
HUGE_MB = 30    # a huge answer
LIMIT = "1048576"  # the byte limit on answers, as the messages name it


@pytest.fixture(scope="module")
def bad_idp(idp_factory):
    return idp_factory()


@pytest.fixture
def short_timeouts(monkeypatch):
    """sts-wire's time-outs are module settings (connect, read); shortened for the slow cases."""
    monkeypatch.setattr(sts_idp, "TIMEOUT", (TIMEOUT, TIMEOUT))
    monkeypatch.setattr(sts_client, "TIMEOUT", (TIMEOUT, TIMEOUT))
    sts_idp._DISCOVERY.clear()
    yield
    sts_idp._DISCOVERY.clear()


class StoredUser:
    """What the authenticator uses of JupyterHub's User: a name and the stored auth_state (as in
    tests/test_auth_refresh.py; the hub-level tests run the same code in a real hub)."""

    def __init__(self, name: str, auth_state: dict):
        self.name, self.auth_state = name, auth_state

    async def get_auth_state(self):
        return self.auth_state


def hub_authenticator(idp, **kw) -> IAMAuthenticator:
    return IAMAuthenticator(issuer=idp.issuer, client_id="jupyterhub", client_secret="jupyterhub-secret",
                            http_request_kwargs={"ca_certs": str(idp.pki.bundle)}, allowed_groups={"physics"},
                            discovery_timeout=0, idp_timeout=TIMEOUT, **kw)


# The broken answers: (name, fault arguments). `bodies` lists the malformed ones per endpoint.
HUGE = ("huge", {"huge_mb": HUGE_MB})
SLOW = ("slow", {"delay": DELAY})
NOT_JSON = ("html-page", {"body": "<html><body>Service Unavailable</body></html>", "content_type": "html"})
JSON_LIST = ("json-list", {"body": "[1, 2, 3]"})
TRUNCATED = ("truncated-json", {"body": '{"issuer": "https://x", "keys": ['})


@dataclass
class Tally:
    refused: int = 0
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)

    def check(self, label: str, seconds: float, ok: bool, detail: str) -> None:
        self.slowest = max(self.slowest, seconds)
        # The slow cases may take the time-out a few times over (retries), never more.
        if ok and seconds < 5 * TIMEOUT + 2:
            self.refused += 1
        else:
            self.failures.append(f"{label}: {seconds:.1f} s: {detail}")


def timed(fn):
    """(seconds, what fn raised or else returned)."""
    t0 = time.monotonic()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - each kind is judged by the caller
        result = e
    return time.monotonic() - t0, result


def run(coro_fn):
    return lambda: asyncio.run(coro_fn())


# --- the IdP ------------------------------------------------------------------------------------
DISCOVERY_CASES = [
    (*NOT_JSON, "not JSON"),
    (*JSON_LIST, "did not answer a JSON object"),
    (*TRUNCATED, "not JSON"),
    ("missing-endpoints", {"body": '{"issuer": "ISSUER"}'}, "has no 'token_endpoint', 'jwks_uri'"),
    ("wrong-types", {"body": '{"issuer": "ISSUER", "authorization_endpoint": 1, "token_endpoint": [], '
                             '"jwks_uri": {}}'}, "has no"),
    ("other-issuer", {"body": '{"issuer": "https://evil.example", "authorization_endpoint": "https://e/a", '
                              '"token_endpoint": "https://e/t", "jwks_uri": "https://e/k"}'}, "names issuer"),
    ("plain-http-endpoint", {"body": '{"issuer": "ISSUER", "authorization_endpoint": "http://evil.example/a", '
                                     '"token_endpoint": "ISSUER/token", "jwks_uri": "ISSUER/jwks"}'},
     "not https://"),
    (*HUGE, LIMIT),
    (*SLOW, "cannot be reached"),
]
JWKS_CASES = [  # (name, fault, words from the hub, words from sts-wire)
    (*NOT_JSON, "not JSON", "not JSON"),
    (*JSON_LIST, "not a JSON object", "JWKS is not a JSON object"),
    ("keys-not-a-list", {"body": '{"keys": "sig-1"}'}, "JWKS is not a JSON object with a 'keys' list",
     "JWKS is not a JSON object with a 'keys' list"),
    ("keys-unusable", {"body": '{"keys": [{"kty": "XYZ", "kid": "sig-1"}, 7]}'}, "unknown key", "unknown key"),
    (*HUGE, LIMIT, LIMIT),
    (*SLOW, f"did not answer in {TIMEOUT} s", "ReadTimeout"),
]
TOKEN_CASES = [  # the token endpoint answering a refresh
    (*NOT_JSON, "not JSON", "has no access_token"),
    (*JSON_LIST, "not a JSON object", "has no access_token"),
    ("no-access-token", {"body": '{"token_type": "Bearer", "refresh_token": "rt-secret-value"}'},
     "has no access_token", "has no access_token"),
    ("access-token-a-number", {"body": '{"access_token": 42, "token_type": "Bearer"}'}, "not text", "not text"),
    (*HUGE, LIMIT, LIMIT),
    (*SLOW, f"did not answer in {TIMEOUT} s", "did not answer in time"),
]
USERINFO_CASES = [
    (*NOT_JSON, "not JSON"),
    (*JSON_LIST, "not a JSON object"),
    (*HUGE, LIMIT),
    (*SLOW, f"did not answer in {TIMEOUT} s"),
]


def _fault(idp, kw: dict) -> dict:
    kw = dict(kw)
    if "body" in kw:
        kw["body"] = kw["body"].replace("ISSUER", idp.issuer)
    return kw


def discovery_refusals(idp, out: Tally) -> None:
    path = "/.well-known/openid-configuration"
    for name, kw, words in DISCOVERY_CASES:
        with idp.fault(path, **_fault(idp, kw)):
            # The hub: at start-up (discover_at_startup's worker) and on first use (ensure_discovered).
            seconds, e = timed(lambda: discover_for_login(idp.issuer, str(idp.pki.bundle), 0, TIMEOUT))
            out.check(f"discovery/{name}/hub", seconds, isinstance(e, DiscoveryError) and words in str(e), repr(e))
            auth = hub_authenticator(idp)
            seconds, e = timed(run(auth.ensure_discovered))
            out.check(f"discovery/{name}/hub-login", seconds,
                      isinstance(e, HTTPError) and e.status_code == 503 and words in e.log_message
                      and not auth.oidc_configuration, repr(e))
            # sts-wire
            sts_idp._DISCOVERY.clear()
            seconds, e = timed(lambda: sts_idp.discover(sts_idp.Http(str(idp.pki.ca_cert)), idp.issuer))
            out.check(f"discovery/{name}/sts-wire", seconds, isinstance(e, StsWireError) and words in e.message
                      and e.code == Exit.IDP_UNREACHABLE and not sts_idp._DISCOVERY, repr(e))


def jwks_refusals(idp, out: Tally) -> None:
    for name, kw, hub_words, sts_words in JWKS_CASES:
        tok = idp.login("alice")
        auth = hub_authenticator(idp)
        with idp.fault("/jwks", **_fault(idp, kw)):
            seconds, e = timed(run(lambda: auth._token_to_auth_model(tok)))  # noqa: B023
            ok = isinstance(e, HTTPError) and hub_words in e.log_message and not auth.verifier.keys.keys
            out.check(f"jwks/{name}/hub", seconds, ok, repr(e))
            sts_idp._DISCOVERY.clear()
            seconds, e = timed(lambda: sts_idp.verified_claims(tok["access_token"], idp.issuer,  # noqa: B023
                                                               str(idp.pki.ca_cert)))
            out.check(f"jwks/{name}/sts-wire", seconds,
                      isinstance(e, StsWireError) and sts_words in e.message, repr(e))


def token_refusals(idp, out: Tally) -> None:
    for name, kw, hub_words, sts_words in TOKEN_CASES:
        hub_tok, sts_tok = idp.login("alice"), idp.login("alice", client_id="sts-wire")
        auth = hub_authenticator(idp)
        model = asyncio.run(auth._token_to_auth_model(hub_tok))
        user = StoredUser(model["name"], model["auth_state"])
        client = sts_idp.OAuthClient(TokenSpec(source="refresh", issuer=idp.issuer, client_id="sts-wire"),
                                     str(idp.pki.ca_cert), "sts-wire-secret")
        source = RefreshSource(client, refresh_token=sts_tok["refresh_token"])
        _ = client.meta  # discovery before the fault
        with idp.fault("/token", **_fault(idp, kw)):
            params = auth.build_refresh_token_request_params(hub_tok["refresh_token"])
            seconds, e = timed(run(lambda: auth.get_token_info(None, params)))  # noqa: B023
            # A broken answer is the IdP in trouble: a refresh keeps the user logged in (transient).
            ok = (isinstance(e, HTTPError) and hub_words in e.log_message and _is_transient(e)
                  and "rt-secret-value" not in e.log_message)
            out.check(f"token/{name}/hub", seconds, ok, repr(e))
            # The hub's refresh as a whole: the IdP is in trouble, the user stays logged in as before.
            seconds, r = timed(run(lambda: auth.refresh_tokens(user, force=True)))  # noqa: B023
            ok = getattr(r, "outcome", None) is Outcome.UNAVAILABLE and r.state is user.auth_state
            out.check(f"token/{name}/hub-refresh", seconds, ok, repr(r))
            seconds, e = timed(source.fetch)
            ok = (isinstance(e, StsWireError) and sts_words in e.message
                  and source._refresh_token == sts_tok["refresh_token"] and "rt-secret-value" not in str(e))
            out.check(f"token/{name}/sts-wire", seconds, ok, repr(e))


def userinfo_refusals(idp, out: Tally) -> None:
    for name, kw, words in USERINFO_CASES:
        tok = idp.login("alice")
        auth = hub_authenticator(idp, groups_source="userinfo")
        with idp.fault("/me", **_fault(idp, kw)):
            seconds, e = timed(run(lambda: auth._token_to_auth_model(tok)))  # noqa: B023
            out.check(f"userinfo/{name}/hub", seconds, isinstance(e, HTTPError) and words in e.log_message, repr(e))


def test_the_fault_injection_answers_what_it_is_told(bad_idp):
    """Control: the broken answers really reach the clients (else every refusal below is moot)."""
    import requests

    s = bad_idp.session()
    with bad_idp.fault("/jwks", body="[1, 2, 3]"):
        assert s.get(bad_idp.issuer + "/jwks").json() == [1, 2, 3]
    with bad_idp.fault("/jwks", huge_mb=2):
        r = s.get(bad_idp.issuer + "/jwks")
        assert len(r.content) > 2 << 20 and r.json()["pad"].startswith("xxx")
    with bad_idp.fault("/jwks", delay=DELAY), pytest.raises(requests.Timeout):
        s.get(bad_idp.issuer + "/jwks", timeout=TIMEOUT)
    assert s.get(bad_idp.issuer + "/jwks").json()["keys"][0]["kid"] == "sig-1"


def test_bad_idp_answers_are_refused_by_the_hub_and_sts_wire(bad_idp, short_timeouts, reliability):
    out = Tally()
    discovery_refusals(bad_idp, out)
    jwks_refusals(bad_idp, out)
    token_refusals(bad_idp, out)
    userinfo_refusals(bad_idp, out)
    assert not out.failures, "\n".join(out.failures)
    # And with the IdP answering properly again, both sides work (nothing was left broken).
    tok = bad_idp.login("alice")
    model = asyncio.run(hub_authenticator(bad_idp)._token_to_auth_model(tok))
    assert model["name"] == "alice"
    sts_idp._DISCOVERY.clear()
    assert sts_idp.verified_claims(tok["access_token"], bad_idp.issuer, str(bad_idp.pki.ca_cert))["sub"] == "alice"
    n = len(DISCOVERY_CASES) + len(JWKS_CASES) + len(TOKEN_CASES) + len(USERINFO_CASES)
    reliability.record("bad.idp-answers", f"{n} broken IdP answers (discovery, JWKS, token, userinfo: malformed, "
                                          f"{HUGE_MB} MB, {DELAY} s late) refused on every path that reads them "
                                          f"({out.refused} refusals by the hub and sts-wire); huge cut at 1 MiB; "
                                          f"slowest {out.slowest:.1f} s with a {TIMEOUT} s time-out; no login, "
                                          "nothing cached")


# --- the STS ------------------------------------------------------------------------------------
NS = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"'


def _result(credentials: str) -> bytes:
    return (f"<AssumeRoleWithWebIdentityResponse {NS}><AssumeRoleWithWebIdentityResult>{credentials}"
            "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>").encode()


GOOD_CREDENTIALS = ("<Credentials><AccessKeyId>AKIAFAULT</AccessKeyId><SecretAccessKey>sk-fault</SecretAccessKey>"
                    "<SessionToken>st-fault</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
                    "</Credentials>")

# (name, answer, words of the refusal)
STS_CASES = [
    ("html-page", {"body": b"<html><body>Welcome to nginx</body></html>", "type": "text/html"}, "KeyError"),
    ("json", {"body": b'{"Credentials": {"AccessKeyId": "A"}}', "type": "application/json"}, "ResponseParserError"),
    ("empty", {"body": b""}, "ResponseParserError"),
    ("truncated-xml", {"body": _result(GOOD_CREDENTIALS)[:120]}, "ResponseParserError"),
    ("no-credentials", {"body": _result("")}, "no usable 'Credentials'"),
    ("no-secret-key", {"body": _result(GOOD_CREDENTIALS.replace("<SecretAccessKey>sk-fault</SecretAccessKey>", ""))},
     "no usable 'SecretAccessKey'"),
    ("empty-keys", {"body": _result(GOOD_CREDENTIALS.replace("AKIAFAULT", "").replace("st-fault", ""))},
     "empty keys"),
    ("expiration-not-a-date", {"body": _result(GOOD_CREDENTIALS.replace("2099-01-01T00:00:00Z", "soon"))},
     "ValueError"),
    ("error-without-xml", {"status": 500, "body": b"oops", "type": "text/plain"}, "HTTP 500"),
    ("cut-short", {"body": _result(GOOD_CREDENTIALS)[:100], "missing": 1000}, "HTTP 200, ResponseParserError"),
    ("huge-declared", {"huge_mb": HUGE_MB}, f"more than {LIMIT} bytes"),
    ("huge-undeclared", {"huge_mb": HUGE_MB, "declare": False}, f"more than {LIMIT} bytes"),
    ("slow", {"delay": DELAY}, "did not answer in time"),
    ("dripping", {"drip": True}, f"still arriving after {TIMEOUT} s"),
]


class StsFaults(http.server.ThreadingHTTPServer):
    """A loopback stand-in for a broken STS: answers every POST as `self.answer` says."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StsHandler)
        self.answer: dict = {}
        self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _StsHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        a = self.server.answer
        time.sleep(a.get("delay", 0))
        self.send_response(a.get("status", 200))
        self.send_header("Content-Type", a.get("type", "text/xml"))
        try:
            if a.get("huge_mb") or a.get("drip"):
                size = (a.get("huge_mb") or 1) << 20
                if a.get("declare", True):
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"<x>" + b"y" * 65533 if a.get("huge_mb") else b"<"
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if a.get("drip"):
                        time.sleep(0.2)
                return
            body = a.get("body", b"")
            self.send_header("Content-Length", str(len(body) + a.get("missing", 0)))  # more: closes early
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sts_faults():
    server = StsFaults()
    yield server
    server.shutdown()
    server.server_close()


def test_the_sts_fault_injector_gives_keys_when_told_to(sts_faults, short_timeouts):
    """Control: a well-formed answer from the injector is taken, so the refusals are about the answers."""
    sts_faults.answer = {"body": _result(GOOD_CREDENTIALS)}
    keys = sts_client.assume_role(StsSpec(endpoint=sts_faults.url), "a.b.c")
    assert keys.access_key_id == "AKIAFAULT" and keys.secret_access_key == "sk-fault"


def test_bad_sts_answers_are_refused(sts_faults, short_timeouts, reliability):
    out = Tally()
    for name, answer, words in STS_CASES:
        sts_faults.answer = answer
        seconds, e = timed(lambda: sts_client.assume_role(StsSpec(endpoint=sts_faults.url), "a.b.c"))
        ok = (isinstance(e, StsWireError) and e.code == Exit.STS_UNREACHABLE and words in e.message
              and "sk-fault" not in str(e) and "yyyy" not in str(e))
        out.check(f"sts/{name}", seconds, ok, repr(e))
    assert not out.failures, "\n".join(out.failures)
    reliability.record("bad.sts-answers", f"{out.refused} of {len(STS_CASES)} broken AssumeRoleWithWebIdentity "
                                          f"answers refused by sts-wire (HTML, JSON, empty, truncated, missing or "
                                          f"mistyped credentials, {HUGE_MB} MB, {DELAY} s late, dripping); "
                                          f"slowest {out.slowest:.1f} s with a {TIMEOUT} s time-out")


def test_a_login_through_the_hub_with_a_broken_idp_answer_says_why_and_logs_nobody_in(bad_idp, run_dir):
    """The same refusals as a person meets them: the hub's error page names the problem, and the
    user is not created; with the IdP well again, the login works."""
    import html

    from tests.testbed.hub import Hub

    hub = Hub(bad_idp, run_dir / "hub-bad-answers", extra_config=f"c.IAMAuthenticator.idp_timeout = {TIMEOUT}\n")
    hub.start()
    try:
        for path, (name, kw), status, words in [
                ("/token", NOT_JSON, 502, "not JSON"), ("/token", JSON_LIST, 502, "not a JSON object"),
                ("/token", HUGE, 502, f"more than the {LIMIT} bytes"), ("/token", SLOW, 504, "did not answer"),
                ("/jwks", NOT_JSON, 502, "not JSON"), ("/jwks", HUGE, 502, f"more than the {LIMIT} bytes")]:
            with bad_idp.fault(path, **kw):
                _, r = hub.login("alice")
            page = html.unescape(r.text)
            assert r.status_code == status and words in page, (path, name, r.status_code, page[-600:])
            assert hub.api("GET", "/users/alice").status_code == 404, (path, name)
        _, r = hub.login("alice")
        assert r.status_code == 302 and hub.user("alice")["name"] == "alice"
    finally:
        hub.stop()
