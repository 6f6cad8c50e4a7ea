"""Credential faults, end to end: a hub of its own whose IdP hands out access tokens that live
AT_TTL seconds, a SeaweedFS whose STS keys live KEYS seconds, and alice's running server whose
sts-wire takes her token from the hub (as a spawned notebook server does).

- fault.idp-outage: the IdP's token endpoint fails (HTTP 503, then hangs) for longer than the keys
  live. The mount works until the keys expire; the note beside the folder and `sts-wire status`
  say what is wrong and that nothing needs doing; once the IdP answers again, the hub refreshes the
  token, sts-wire renews the keys, and writes land again, with no restart. alice stays logged in
  to the hub all along. Files written before the outage are intact (sha256).
- fault.keys-expire-mid-write: one file written slowly, across several key renewals, through the
  mount: no write call fails and the object in S3 has the source's sha256.
"""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import os
import time

import pytest

from tests.sts_wire_helpers import Wire, refresh_token_setup, wait_until, write_spec
from tests.test_sts_wire_hub import start_server, stop_server
from tests.testbed.hub import Hub
from tests.testbed.idp import IdP
from tests.testbed.seaweedfs import SeaweedFS

AT_TTL = 20     # seconds an access token lives at this IdP
KEYS = 20       # seconds STS keys live at this SeaweedFS
MARGIN = 15     # the hub refreshes a token with less than this left


@pytest.fixture(scope="module")
def world(pki, run_dir):
    """(idp, s3, hub, alice's server environment)."""
    idp = IdP(pki, run_dir / "idp-fault-creds", at_ttl=AT_TTL).start()
    s3 = SeaweedFS(idp, run_dir / "seaweedfs-fault-creds", token_duration=f"{KEYS}s").start()
    hub = Hub(idp, run_dir / "hub-fault-creds", auth={"refresh_margin_seconds": MARGIN, "auth_refresh_age": 1},
              extra_config="c.IAMAuthenticator.idp_timeout = 2\n").start()
    try:
        env = start_server(hub, "alice")
        yield idp, s3, hub, env
    finally:
        with contextlib.suppress(Exception):
            stop_server(hub, "alice")
        hub.stop()
        s3.stop()
        idp.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_s3(admin, key: str, digest: str) -> bool:
    try:
        body = admin.get_object(Bucket="alice", Key=key)["Body"].read()
    except Exception:  # noqa: BLE001 - not there (yet)
        return False
    return sha(body) == digest


def lands(admin, key: str, digest: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_s3(admin, key, digest):
            return True
        time.sleep(0.25)
    return False


class Prober:
    """Writes new files through the mount and tells whether each reached S3."""

    def __init__(self, folder, admin, prefix: str):
        self.folder, self.admin, self.prefix = folder, admin, prefix
        self.n = 0
        self.pending: dict[str, str] = {}      # written, not (yet) in S3
        self.refused: list[str] = []           # the write itself failed

    def __call__(self, timeout: float) -> bool:
        """True once the new file is in S3. With expired keys the write is refused (EIO) or
        held in rclone's cache until the keys work again."""
        self.n += 1
        name, data = f"probe-{self.n:03d}.txt", f"probe {self.n} {time.time():.3f}\n".encode()
        try:
            (self.folder / name).write_bytes(data)
        except OSError as e:
            self.refused.append(f"{name}: {e.strerror}")
            return False
        ok = lands(self.admin, f"{self.prefix}/{name}", sha(data), timeout)
        if not ok:
            self.pending[name] = sha(data)
        return ok

    def all_landed(self) -> bool:
        return all(in_s3(self.admin, f"{self.prefix}/{k}", d) for k, d in self.pending.items())


def start_wire(tmp_path, s3, env, prefix: str, token: dict | None = None) -> tuple[Wire, os.PathLike]:
    wire = Wire(tmp_path)
    spec = write_spec(tmp_path / "spec.yaml", s3, [{"remote": f"alice/{prefix}", "path": f"{wire.root}/alice"}],
                      token or {"source": "hub"}, role_arn=s3.role_arn_for("alice"))
    wire.start("run", ["--spec", str(spec), "--log-level", "DEBUG", "--", "/bin/sleep", "900"], env=env)
    folder = wire.root / "alice"
    wire.wait_mounted([folder])
    return wire, folder


@pytest.mark.slow
def test_idp_outage_longer_than_the_keys_then_everything_renews_by_itself(world, tmp_path, reliability):
    idp, s3, hub, env = world
    admin = s3.admin_s3()
    prefix = f"outage-{int(time.time())}"
    wire, folder = start_wire(tmp_path, s3, env, prefix)
    note = wire.root / "alice.sts-wire-error.txt"
    browser, r = hub.login("alice")
    assert r.status_code == 302, r.text[:300]
    across = None
    try:
        before = {}
        for i in range(5):
            data = os.urandom(256 << 10)
            (folder / f"before-{i}.bin").write_bytes(data)
            before[f"before-{i}.bin"] = sha(data)
        for name, digest in before.items():
            assert lands(admin, f"{prefix}/{name}", digest, 20), name

        probe = Prober(folder, admin, prefix)
        pending, refused = probe.pending, probe.refused

        def logged_in() -> bool:
            return browser.get(hub.url + "/hub/home", allow_redirects=False).status_code == 200

        assert probe(10)
        # a file opened before the outage and closed once the keys have expired
        across = open(folder / "across.bin", "wb")  # noqa: SIM115 - closed in the outage
        part = os.urandom(1 << 20)
        across.write(part)
        across_sha = hashlib.sha256(part)
        keys_at_start = wire.instance()
        t_out = time.time()
        last_ok = t_out
        sessions_ok = []
        with idp.fault("/token", status=503):
            # the mount works on with the keys it holds (and those the still valid token gets)
            while time.time() - t_out < 3 * (AT_TTL + KEYS):
                if not probe(6):
                    break
                last_ok = time.time()
                sessions_ok.append(logged_in())
                time.sleep(1)
            t_fail = time.time()
            assert pending or refused, f"the writes kept landing for {t_fail - t_out:.0f} s of outage"
            part = os.urandom(1 << 20)
            across.write(part)
            across.close()                           # its upload is refused: the keys expired
            across_sha.update(part)
            pending["across.bin"] = across_sha.hexdigest()
            with idp.fault("/token", delay=30):      # now the IdP hangs instead
                text = wait_until(lambda: note.exists() and note.read_text(), 30, "the note beside the folder")
                status = wire.run("status", ["--runtime-dir", str(wire.runtime)])
                st = wire.instance()
                sessions_ok.append(logged_in())
                assert not probe(3)
                time.sleep(5)
                sessions_ok.append(logged_in())
                state_in = hub.user("alice")["auth_state"]
        t_back = time.time()
        outage = t_back - t_out
        # the hub did try to refresh alice's token during the outage, and failed
        failed_refreshes = [e for e in idp.events(since=t_out) if e.get("path") == "/token" and e.get("fault") == 503]
        assert failed_refreshes, "the hub never asked the IdP during the outage"
        assert outage > KEYS
        # the mount worked on at least until the keys it held when the outage began expired
        # (give or take a probe: rclone's SDK sees them as expired a little before the STS does)
        held_keys_expire = calendar.timegm(time.strptime(keys_at_start["keys_expire"], "%Y-%m-%dT%H:%M:%SZ"))
        assert last_ok >= held_keys_expire - 8, (last_ok - t_out, held_keys_expire - t_out)
        # told: the note and `sts-wire status` name the problem and what to do
        assert "cannot renew access to" in text and "hub cannot renew the token" in text, text
        assert "what to do:" in text and "by itself" in text, text
        assert "hub cannot renew the token" in status.stdout and "by itself" in status.stdout, status.stdout
        assert "hub cannot renew the token" in (st["last_error"] or ""), st
        # nobody was logged out of the hub
        assert sessions_ok and all(sessions_ok), sessions_ok
        assert state_in["refresh_token"], "the hub dropped alice's refresh token"
        # back: new keys, writes land again, the note goes, nothing restarted
        wait_until(lambda: probe(5), 90, "a write landing after the IdP came back", interval=0.5)
        t_ok = time.time()
        st = wait_until(lambda: (s := wire.instance())["last_error"] is None and s, 30, "no error in status")
        assert st["key_renewals"] > keys_at_start["key_renewals"] and st["keys_expire"] > keys_at_start["keys_expire"]
        wait_until(lambda: not note.exists(), 30, "the note going away")
        assert wire.proc.poll() is None and all(m["remounts"] == 0 for m in st["mounts"]), st
        assert hub.user("alice")["auth_state"]["access_token"] != state_in["access_token"]
        assert logged_in()
        # what was written before is intact; what was written during the outage arrives
        for name, digest in before.items():
            assert in_s3(admin, f"{prefix}/{name}", digest), name
        # files closed after the keys expired (their writes succeeded, their uploads were
        # refused) are uploaded once the keys work again: rclone retries them (not with
        # --vfs-write-back 0s: then it never does)
        held = dict(pending)
        wait_until(probe.all_landed, 120, "the writes of the outage reaching S3")
        t_held = time.time()
    finally:
        if across is not None and not across.closed:
            with contextlib.suppress(OSError):
                across.close()
        wire.cleanup()
    result = (f"IdP down {outage:.0f} s (keys live {KEYS} s, tokens {AT_TTL} s): writes landed for "
              f"{last_ok - t_out:.0f} s, then the user was told (note, status); writes landed again "
              f"{t_ok - t_back:.1f} s after the IdP returned, the {len(held)} file(s) closed after the keys expired "
              f"within {t_held - t_back:.0f} s; {len(before)} earlier files intact (sha256); "
              f"hub session kept through {len(failed_refreshes)} failed refreshes (503) and a hung IdP")
    print(result, f"({len(refused)} writes refused while the keys were expired)")
    reliability.record("fault.idp-outage", result)


@pytest.mark.slow
def test_idp_outage_with_the_refresh_token_source(world, tmp_path):
    """sts-wire outside a hub (refresh-token grant straight at the IdP): the same outage, told
    and healed the same way (the report's row is the hub test's)."""
    idp, s3, _, _ = world
    admin = s3.admin_s3()
    prefix = f"outage-refresh-{int(time.time())}"
    token, _ = refresh_token_setup(idp, "alice", tmp_path / "secrets")
    wire, folder = start_wire(tmp_path, s3, None, prefix, token)
    note = wire.root / "alice.sts-wire-error.txt"
    probe = Prober(folder, admin, prefix)
    try:
        assert probe(10)
        t_out = time.time()
        last_ok = t_out
        with idp.fault("/token", status=503):
            while time.time() - t_out < 3 * (AT_TTL + KEYS) and probe(6):
                last_ok = time.time()
                time.sleep(1)
            assert probe.pending or probe.refused, "the writes kept landing"
            # the note, rewritten at each failed retry, says the keys have expired
            text = wait_until(lambda: note.exists() and "the S3 keys expired at" in (t := note.read_text()) and t,
                              30, "the note beside the folder")
            status = wire.run("status", ["--runtime-dir", str(wire.runtime)])
            time.sleep(max(0.0, t_out + KEYS + 5 - time.time()))     # longer than the keys live
        t_back = time.time()
        assert t_back - t_out > KEYS
        assert "identity provider failed (HTTP 503)" in text and "by itself" in text, text
        assert "HTTP 503" in status.stdout and "what to do: nothing to do" in status.stdout, status.stdout
        wait_until(lambda: probe(5), 60, "a write landing after the IdP came back", interval=0.5)
        t_ok = time.time()
        wait_until(lambda: not note.exists(), 30, "the note going away")
        wait_until(probe.all_landed, 120, "the writes of the outage reaching S3")
        st = wire.instance()
        assert wire.proc.poll() is None and all(m["remounts"] == 0 for m in st["mounts"]), st
    finally:
        wire.cleanup()
    result = (f"refresh-token source, IdP answering 503 for {t_back - t_out:.0f} s: writes landed for "
              f"{last_ok - t_out:.0f} s, note and status told the user, writes landed again "
              f"{t_ok - t_back:.1f} s after the IdP returned, no remount")
    print(result)


@pytest.mark.slow
def test_keys_expiring_in_the_middle_of_a_long_write_lose_no_byte(world, tmp_path, reliability):
    """One file written slowly (1 MiB at a time) for longer than the keys live: every write call
    succeeds, the keys are renewed meanwhile, and S3 holds exactly the bytes written."""
    idp, s3, hub, env = world
    admin = s3.admin_s3()
    prefix = f"midwrite-{int(time.time())}"
    wire, folder = start_wire(tmp_path, s3, env, prefix)
    chunks, pause = 40, 0.75
    digest = hashlib.sha256()
    failures: list[str] = []
    try:
        first = wire.instance()
        t0 = time.time()
        with open(folder / "long.bin", "wb") as f:
            for i in range(chunks):
                block = os.urandom(1 << 20)
                try:
                    f.write(block)
                    f.flush()
                except OSError as e:
                    failures.append(f"chunk {i}: {e}")
                    break
                digest.update(block)
                time.sleep(pause)
        t_closed = time.time()
        during = wire.instance()
        landed = lands(admin, f"{prefix}/long.bin", digest.hexdigest(), 60)
        t_landed = time.time()
    finally:
        wire.cleanup()
    logs = "".join(p.read_text(errors="replace") for p in wire.logs.glob("rclone-*.log*"))
    assert failures == []
    first_expiry = calendar.timegm(time.strptime(first["keys_expire"], "%Y-%m-%dT%H:%M:%SZ"))
    assert t_closed > first_expiry + 1, "the write did not outlive the keys it started with"
    renewals = during["key_renewals"] - first["key_renewals"]
    assert renewals >= 1, (first, during)
    assert landed, "the object in S3 differs from what was written (sha256)"
    assert "ExpiredToken" not in logs and "InvalidAccessKeyId" not in logs, logs[-3000:]
    result = (f"{chunks} MiB written over {t_closed - t0:.0f} s (keys live {KEYS} s; {renewals} renewals "
              f"meanwhile); no write failed; in S3 {t_landed - t_closed:.1f} s after close, sha256 equal")
    print(result)
    reliability.record("fault.keys-expire-mid-write", result)


def test_the_user_is_told_at_once_to_log_in_but_of_an_outage_only_once_the_keys_are_due(tmp_path):
    """The note policy (pure): a refused token needs the user now; an unreachable IdP only once
    the keys can no longer be renewed; the hint then says that nothing needs doing."""
    from sts_wire.credentials import Credentials
    from sts_wire.errors import Exit, StsWireError
    from sts_wire.runtime import Runtime
    from sts_wire.spec import Spec, StsSpec
    from sts_wire.sts import Keys
    from sts_wire.tokens import Token, TokenSource

    class Down(TokenSource):
        code = Exit.IDP_UNREACHABLE

        def fetch(self):
            raise StsWireError("refresh-token grant: the identity provider failed (HTTP 503)", self.code)

    rt = Runtime(tmp_path / "run")
    creds = Credentials(Down(), Spec(sts=StsSpec(endpoint="https://sts.invalid")), rt)
    t = time.time()
    creds.keys = Keys("ASIAEXAMPLE", "s", "t", expires_at=t + 60, obtained_at=t)
    creds.token = Token("eyJ.not.used", expires_at=t + 20, obtained_at=t - 10, source="refresh")
    assert creds.tick(t + 10) is False and creds.last_error is not None
    assert not creds.worth_telling(t + 10)               # young keys: a blip is not worth a note
    assert creds.tick(t + 45) is False                    # keys due (2/3 of 60 s): renewal fails
    assert creds.worth_telling(t + 45)
    assert "by itself" in creds.last_error.hint and "by itself" in creds.state()["last_error_hint"]
    delays = []
    for _ in range(20):                                   # a long outage: backoff at its cap (30 s)...
        creds.failures, creds.next_try = 10, 0
        creds.tick(t + 61)
        delays.append(creds.next_try - (t + 61))
    assert max(delays) <= 10, delays                      # ...but the keys have expired: soon again
    Down.code = Exit.TOKEN                                # refused: the user must act, at once
    creds.next_try = 0
    creds.tick(t + 11)
    assert creds.worth_telling(t + 11) and creds.last_error.hint is None
    rt.remove()


def test_an_idp_outage_while_the_token_is_valid_still_renews_the_keys(seaweedfs, idp, tmp_path):
    """Refresh-token source, the real IdP answering 503: while the current token still has time
    left, the keys are renewed with it (and the IdP asked again soon); once too little is left,
    the renewal fails with 'by itself' as the hint."""
    from sts_wire.credentials import TOKEN_MIN_LEFT, Credentials
    from sts_wire.runtime import Runtime
    from sts_wire.spec import Spec, StsSpec, TokenSpec
    from sts_wire.tokens import make_source

    token, _ = refresh_token_setup(idp, "alice", tmp_path / "secrets")
    rt = Runtime(tmp_path / "run")
    creds = Credentials(make_source(TokenSpec(**token)), Spec(sts=StsSpec(
        endpoint=seaweedfs.endpoint, role_arn=seaweedfs.role_arn_for("alice"))), rt)
    try:
        keys = creds.start()
        tok = creds.token
        due = tok.expires_at - (tok.expires_at - tok.obtained_at) / 3 + 1    # token due for renewal
        t = time.time()
        with idp.fault("/token", status=503):
            renewed = creds.renew_keys(due)                                   # still valid: used
            assert creds.token is tok and renewed.access_key_id != keys.access_key_id
            assert due < creds.token_next_try <= due + 10                     # asked again soon
            assert idp.refreshes(since=t) == 0 and [e for e in idp.events(since=t) if e.get("fault") == 503]
            creds.token_next_try = 0
            assert creds.tick(tok.expires_at - TOKEN_MIN_LEFT + 1) is False   # too little left: fails
        assert "HTTP 503" in creds.last_error.message and "by itself" in creds.last_error.hint
        creds.next_try = 0
        creds.tick(tok.expires_at - TOKEN_MIN_LEFT + 1)                       # the IdP is back
        assert creds.token is not tok and creds.last_error is None and creds.token_renewals == 1
    finally:
        rt.remove()
