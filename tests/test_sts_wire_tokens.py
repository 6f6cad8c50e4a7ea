"""sts-wire token sources against the real OpenID provider (HTTPS, test CA).

The hub source is tested against the real hub in test_sts_wire_hub.py.
"""

import http.server
import json
import os
import threading
import time

import pytest

from sts_wire.errors import Exit, StsWireError
from sts_wire.idp import OAuthClient, verified_claims
from sts_wire.spec import TokenSpec
from sts_wire.tokens import DeviceSource, FileSource, RefreshSource
from tests.testbed.idp import IdP
from tests.testbed.paths import free_port


def oauth(idp, client_id="sts-wire", secret="sts-wire-secret", auth=None, ca=True,  # noqa: S107
          **kw) -> OAuthClient:
    spec = TokenSpec(source="refresh", issuer=idp.issuer, client_id=client_id, client_auth=auth,
                     ca_file=str(idp.pki.ca_cert) if ca else None, **kw)
    return OAuthClient(spec, str(idp.pki.ca_cert) if ca else "/etc/ssl/certs/ca-certificates.crt", secret)


def groups_of(idp, token: str) -> list[str]:
    return sorted(verified_claims(token, idp.issuer, str(idp.pki.ca_cert))["groups"])


# --- token file ----------------------------------------------------------------------------------
def test_file_source_reads_jwt_and_rereads_on_change(idp, tmp_path):
    f = tmp_path / "token"
    first = idp.login("alice")
    f.write_text(first["access_token"] + "\n")
    f.chmod(0o600)
    src = FileSource(str(f))
    tok = src.fetch()
    assert tok.access_token == first["access_token"] and tok.user == "alice"
    assert 500 < tok.remaining() <= 600
    assert not src.changed()
    second = idp.refresh(first["refresh_token"])
    f.write_text(json.dumps({"access_token": second["access_token"], "expires_in": 300}))
    assert src.changed()
    tok2 = src.fetch()
    assert tok2.access_token == second["access_token"] and 290 < tok2.remaining() <= 300
    assert second["access_token"] not in repr(tok2)


def test_file_source_problems_are_plain(tmp_path):
    with pytest.raises(StsWireError, match="does not exist") as e:
        FileSource(str(tmp_path / "missing")).fetch()
    assert e.value.code == Exit.TOKEN
    (tmp_path / "empty").write_text("")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(StsWireError, match="holds no access token"):
        FileSource(str(tmp_path / "empty")).fetch()
    (tmp_path / "old").write_text(json.dumps({"access_token": "x", "expires_at": time.time() - 5}))
    (tmp_path / "old").chmod(0o600)
    with pytest.raises(StsWireError, match="has expired"):
        FileSource(str(tmp_path / "old")).fetch()
    (tmp_path / "open").write_text(idp_free_jwt())
    (tmp_path / "open").chmod(0o644)
    with pytest.raises(StsWireError, match="open to group or others") as e:
        FileSource(str(tmp_path / "open")).fetch()
    assert e.value.code == Exit.TOKEN


def idp_free_jwt() -> str:
    import jwt

    return jwt.encode({"exp": time.time() + 600, "preferred_username": "x"}, "k" * 32, algorithm="HS256")


# --- refresh-token grant -------------------------------------------------------------------------
@pytest.mark.parametrize(("client_id", "secret", "auth"), [
    ("sts-wire", "sts-wire-secret", "post"),       # client_secret_post
    ("jupyterhub", "jupyterhub-secret", "basic"),  # client_secret_basic
    ("sts-wire-public", None, None),               # public client
])
def test_refresh_grant_with_each_client_authentication(idp, tmp_path, client_id, secret, auth):
    login = idp.login("bob", client_id=client_id)
    rt_file = tmp_path / "rt"
    rt_file.write_text(login["refresh_token"])
    rt_file.chmod(0o600)
    src = RefreshSource(oauth(idp, client_id, secret, auth), file=str(rt_file))
    tok = src.fetch()
    assert tok.access_token != login["access_token"] and tok.user == "bob"
    assert groups_of(idp, tok.access_token) == ["physics"]
    assert 500 < tok.remaining() <= 600


def test_secret_goes_in_body_or_header_never_in_url(tmp_path):
    """Look at the wire: a loopback server stands in for the token endpoint and records requests."""
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # discovery
            base = f"http://127.0.0.1:{self.server.server_port}"
            body = json.dumps({"issuer": base, "token_endpoint": base + "/token", "jwks_uri": base + "/jwks"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", ""),
                         "body": self.rfile.read(n).decode()})
            body = json.dumps({"access_token": "at-new", "expires_in": 60}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        issuer = f"http://127.0.0.1:{srv.server_port}"
        for auth in ("post", "basic"):
            spec = TokenSpec(source="refresh", issuer=issuer, client_id="cid", client_auth=auth)
            RefreshSource(OAuthClient(spec, True, "s3cr:et&"), refresh_token="rt-value").fetch()
    finally:
        srv.shutdown()
    post, basic = seen
    for r in seen:
        assert "s3cr" not in r["path"] and "rt-value" not in r["path"] and "?" not in r["path"]
    assert "client_secret=s3cr%3Aet%26" in post["body"] and not post["auth"]
    assert "client_secret" not in basic["body"] and basic["auth"].startswith("Basic ")


def test_rotated_refresh_token_is_written_back(tmp_path):
    """Written 0600; the next grant uses the new one."""
    f = tmp_path / "rt"
    f.write_text("old")
    os.chmod(f, 0o644)
    from sts_wire.runtime import write_private

    write_private(f, "new\n")
    assert f.read_text() == "new\n" and (f.stat().st_mode & 0o777) == 0o600


def test_secret_files_open_to_others_are_refused(idp, tmp_path):
    """A refresh token or client secret that group or others can read is a leak: refused, with
    the fix, and nothing is sent to the IdP."""
    from sts_wire.tokens import read_secret

    rt = tmp_path / "rt"
    rt.write_text("some-refresh-token\n")
    rt.chmod(0o644)
    with pytest.raises(StsWireError) as e:
        RefreshSource(oauth(idp), file=str(rt)).fetch()
    assert e.value.code == Exit.TOKEN and f"chmod 600 {rt}" in e.value.message and "some-refresh" not in str(e.value)
    sec = tmp_path / "secret"
    sec.write_text("s3cret\n")
    sec.chmod(0o640)
    spec = TokenSpec(source="refresh", issuer=idp.issuer, client_id="sts-wire", client_secret_file=str(sec))
    with pytest.raises(StsWireError) as e:
        read_secret(spec)
    assert e.value.code == Exit.SPEC and "open to group or others (mode 0640)" in e.value.message
    sec.chmod(0o600)
    assert read_secret(spec) == "s3cret"


def test_revoked_refresh_token_says_log_in_again(idp, tmp_path):
    login = idp.login("carol", client_id="sts-wire")
    idp.revoke(login["refresh_token"], client_id="sts-wire")
    src = RefreshSource(oauth(idp), refresh_token=login["refresh_token"])
    with pytest.raises(StsWireError) as e:
        src.fetch()
    assert e.value.code == Exit.TOKEN
    assert "refresh token is expired, revoked" in e.value.message and "log in again" in e.value.hint


def test_expired_refresh_token_says_log_in_again(pki, run_dir):
    short = IdP(pki, run_dir / "idp-short-rt", rt_ttl=2).start()
    try:
        login = short.login("alice", client_id="sts-wire")
        time.sleep(3)
        with pytest.raises(StsWireError) as e:
            RefreshSource(oauth(short), refresh_token=login["refresh_token"]).fetch()
        assert e.value.code == Exit.TOKEN and "expired" in e.value.message
    finally:
        short.stop()


def test_wrong_client_secret_is_named(idp):
    login = idp.login("alice", client_id="sts-wire")
    with pytest.raises(StsWireError) as e:
        RefreshSource(oauth(idp, secret="wrong", auth="post"), refresh_token=login["refresh_token"]).fetch()
    assert e.value.code == Exit.TOKEN and "refused the client" in e.value.message


def test_tls_uses_the_given_ca_even_with_requests_ca_bundle_set(idp, monkeypatch):
    """The machine sets REQUESTS_CA_BUNDLE to the system bundle: our explicit CA must still win,
    and without it the IdP's test certificate is refused with a plain message."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    login = idp.login("alice", client_id="sts-wire")
    assert RefreshSource(oauth(idp), refresh_token=login["refresh_token"]).fetch().user == "alice"
    with pytest.raises(StsWireError) as e:
        RefreshSource(oauth(idp, ca=False), refresh_token=login["refresh_token"]).fetch()
    assert e.value.code == Exit.IDP_UNREACHABLE and "TLS certificate is not trusted" in e.value.message


def test_unreachable_idp(idp):
    spec = TokenSpec(source="refresh", issuer=f"https://127.0.0.1:{free_port()}", client_id="sts-wire")
    with pytest.raises(StsWireError) as e:
        RefreshSource(OAuthClient(spec, True, None), refresh_token="x").fetch()
    assert e.value.code == Exit.IDP_UNREACHABLE and "the IdP cannot be reached" in e.value.message


# --- device-code flow ----------------------------------------------------------------------------
class Terminal:
    """Stands for the person's terminal: reads the code sts-wire prints and approves it."""

    def __init__(self, idp, user):
        self.idp, self.user, self.text = idp, user, ""
        self.approver: threading.Thread | None = None

    def write(self, s):
        self.text += s
        if "enter the code:" in self.text and self.approver is None:
            code = self.text.split("enter the code:")[1].split()[0]
            self.approver = threading.Thread(target=self.idp.approve_device, args=(code, self.user))
            self.approver.start()

    def flush(self):
        pass


def test_device_flow_prints_url_and_code_then_renews_with_refresh(idp):
    term = Terminal(idp, "carol")
    src = DeviceSource(oauth(idp, "sts-wire-public", None, None, scope="openid groups offline_access"),
                       out=term)
    tok = src.fetch()
    term.approver.join()
    assert f"open {idp.issuer}/device" in term.text and "Signed in." in term.text
    assert tok.user == "carol" and "admins" in groups_of(idp, tok.access_token)
    again = src.fetch()                  # the refresh token from the flow, no second prompt
    assert again.access_token != tok.access_token and term.text.count("enter the code") == 1


def test_a_dropped_connection_is_tried_again_with_jitter():
    """Connections that are dropped are retried (3 attempts in all) after short random waits; then
    the failure is named."""
    import socket

    from sts_wire.idp import RETRIES, Http

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted = []

    def drop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            c.close()

    threading.Thread(target=drop, daemon=True).start()
    try:
        with pytest.raises(StsWireError) as e:
            Http(True).request("GET", f"http://127.0.0.1:{srv.getsockname()[1]}/x", "JupyterHub API",
                               Exit.IDP_UNREACHABLE)
    finally:
        srv.close()
    assert e.value.code == Exit.IDP_UNREACHABLE and "JupyterHub API: cannot reach http://127.0.0.1" in e.value.message
    assert len(accepted) == RETRIES == 3


def test_a_refresh_grant_whose_answer_is_late_is_not_sent_again(idp, tmp_path, monkeypatch):
    """The IdP got the grant but its answer came after the time-out: sending the refresh token
    again could spend one the IdP has already rotated, so the grant is sent once and the failure
    named; a GET (discovery) is still tried again."""
    import sts_wire.idp as stsidp
    from tests.sts_wire_helpers import refresh_token_setup

    token, login = refresh_token_setup(idp, "alice", tmp_path)
    client = oauth(idp, scope=token["scope"])
    client.meta  # discovery before the fault: only the grant is slow  # noqa: B018
    monkeypatch.setattr(stsidp, "TIMEOUT", (5, 1))
    since = time.time()
    with idp.fault("/token", delay=2.5):
        with pytest.raises(StsWireError) as e:
            client.post_token({"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
                              "refresh-token grant")
        time.sleep(2)  # the IdP logs the (single) grant after its delay
    assert e.value.code == Exit.IDP_UNREACHABLE and "did not answer in time" in e.value.message
    sent = [ev for ev in idp.events(since) if ev.get("path") == "/token"]
    assert len(sent) == 1, sent


def test_a_refresh_grant_is_sent_again_when_it_never_left():
    """Connection refused: nothing reached the IdP, so trying again is safe."""
    import socket

    from sts_wire.idp import Http, _never_sent

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    import requests

    with pytest.raises(requests.exceptions.ConnectionError) as e:
        requests.post(f"http://127.0.0.1:{port}/token", timeout=2)
    assert _never_sent(e.value)
    with pytest.raises(StsWireError, match="cannot reach"):
        Http(True).request("POST", f"http://127.0.0.1:{port}/token", "refresh-token grant",
                           Exit.IDP_UNREACHABLE, resend=False)
