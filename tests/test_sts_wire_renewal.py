"""Keys that live 30 s renew at least 3 times during continuous writes and reads through the
mount, with zero failed operations and no lost byte (SHA-256 of every file, checked in S3 with
boto3 after the run). Against SeaweedFS (``sts.tokenDuration`` 30 s) and Ceph RGW
(DurationSeconds 30)."""

import hashlib
import os
import random
import threading
import time

import pytest

from tests.sts_wire_helpers import Wire, fuse_mounts_under, refresh_token_setup, write_spec
from tests.testbed.s3 import assume_role, s3_client

LIFETIME = 30


@pytest.fixture(params=["seaweedfs", "ceph"])
def short_s3(request):
    """(server, extra sts settings) for keys that live LIFETIME seconds."""
    if request.param == "seaweedfs":
        return request.getfixturevalue("seaweedfs_factory")(f"{LIFETIME}s"), {}
    return request.getfixturevalue("ceph_rgw"), {"duration": LIFETIME}


@pytest.mark.slow
def test_short_keys_renew_under_continuous_io_without_a_failure(short_s3, idp, tmp_path):
    s3, sts_extra = short_s3
    wire = Wire(tmp_path)
    token, login = refresh_token_setup(idp, "alice", tmp_path / "secrets")
    prefix = f"renewal-{int(time.time())}"
    spec = write_spec(tmp_path / "spec.yaml", s3,
                      [{"remote": f"alice/{prefix}", "path": f"{wire.root}/alice"}], token,
                      role_arn=s3.role_arn_for("alice"), **sts_extra)
    folder = wire.root / "alice"
    written: dict[str, str] = {}
    failures: list[str] = []
    counts = {"writes": 0, "reads": 0, "lists": 0, "bytes": 0}
    stop = threading.Event()
    lock = threading.Lock()

    def writer():
        rnd = random.Random(1)
        i = 0
        while not stop.is_set():
            i += 1
            name = f"w{i:05d}.bin"
            data = os.urandom(rnd.choice([4096, 65536, 1 << 20, 3 << 20]))
            try:
                with open(folder / name, "wb") as f:
                    f.write(data)
                with lock:
                    written[name] = hashlib.sha256(data).hexdigest()
                    counts["writes"] += 1
                    counts["bytes"] += len(data)
            except OSError as e:
                failures.append(f"{time.strftime('%T')} write {name}: {e}")
            time.sleep(0.2)

    def reader():
        rnd = random.Random(2)
        while not stop.is_set():
            with lock:
                names = list(written)
            try:
                os.listdir(folder)
                counts["lists"] += 1
                if names:
                    name = rnd.choice(names)
                    got = hashlib.sha256((folder / name).read_bytes()).hexdigest()
                    if got != written[name]:
                        failures.append(f"read {name}: checksum differs")
                    counts["reads"] += 1
            except OSError as e:
                failures.append(f"{time.strftime('%T')} read: {e}")
            time.sleep(0.1)

    long_lived = hashlib.sha256()

    def appender():
        """One file held open for writing across every renewal, closed at the end."""
        try:
            with open(folder / "long-lived.log", "wb") as f:
                n = 0
                while not stop.is_set():
                    n += 1
                    line = f"line {n} {time.time():.3f} {os.urandom(8).hex()}\n".encode()
                    f.write(line)
                    f.flush()
                    long_lived.update(line)
                    time.sleep(0.5)
        except OSError as e:
            failures.append(f"append: {e}")

    try:
        wire.start("run", ["--spec", str(spec), "--log-level", "DEBUG", "--", "sleep", "600"])
        wire.wait_mounted([folder])
        first = wire.instance()
        t0 = time.time()
        threads = [threading.Thread(target=f) for f in (writer, reader, appender)]
        for t in threads:
            t.start()
        # Run until 3 renewals are done and the first keys have long expired.
        deadline = t0 + 6 * LIFETIME
        while time.time() < deadline:
            st = wire.instance()
            if st["key_renewals"] >= 3 and time.time() - t0 > 2 * LIFETIME:
                break
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join(60)
        st = wire.instance()
        elapsed = time.time() - t0
        assert wire.terminate(120) == 143   # sleep ended by the forwarded SIGTERM
    finally:
        stop.set()
        wire.cleanup()
    assert fuse_mounts_under(wire.root) == []
    print(f"{type(s3).__name__}: {elapsed:.0f} s, {st['key_renewals']} key renewals, {counts}, "
          f"{len(failures)} failures")
    assert failures == []
    assert st["key_renewals"] >= 3, st
    assert st["keys_expire"] != first["keys_expire"]
    assert counts["writes"] > 50 and counts["reads"] > 50
    # No lost byte: every file in S3, byte for byte (alice's own keys).
    creds = assume_role(s3.endpoint, s3.role_arn_for("alice"), idp.refresh(login["refresh_token"],
                                                                          "sts-wire")["access_token"], "check")
    c = s3_client(s3.endpoint, creds, s3.region)
    for name, digest in written.items():
        body = c.get_object(Bucket="alice", Key=f"{prefix}/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, name
    body = c.get_object(Bucket="alice", Key=f"{prefix}/long-lived.log")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == long_lived.hexdigest()
    # rclone never saw a refused request
    logs = "".join(p.read_text(errors="replace") for p in wire.logs.glob("rclone-*.log*"))
    assert not [ln for ln in logs.splitlines() if " ERROR " in ln], logs[-3000:]
    assert "ExpiredToken" not in logs and "InvalidAccessKeyId" not in logs


def test_token_and_keys_are_renewed_ahead_of_expiry(seaweedfs, idp, tmp_path):
    """The scheduler renews a token after 2/3 of its life (before it expires), and the keys
    file rclone reads is rewritten 0600 with an expiry before the keys' real one."""
    import json

    from sts_wire.credentials import Credentials
    from sts_wire.runtime import Runtime
    from sts_wire.spec import Spec, StsSpec
    from sts_wire.tokens import FileSource

    login = idp.login("alice")
    f = tmp_path / "token.json"
    f.write_text(json.dumps({"access_token": login["access_token"], "expires_in": 30}))
    f.chmod(0o600)
    rt = Runtime(tmp_path / "run")
    spec = Spec(sts=StsSpec(endpoint=seaweedfs.endpoint, role_arn=seaweedfs.role_arn_for("alice")))
    creds = Credentials(FileSource(str(f)), spec, rt)
    keys = creds.start()
    assert (rt.keys_file.stat().st_mode & 0o777) == 0o600
    reported = json.loads(rt.keys_file.read_text())["Expiration"]
    assert reported < time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(keys.expires_at))
    t = creds.token.obtained_at
    assert not creds._token_due(t + 15)          # 30 s token: not yet at 15 s
    assert creds._token_due(t + 21)              # due after 2/3 of its life, 9 s before expiry
    f.write_text(json.dumps({"access_token": idp.refresh(login["refresh_token"])["access_token"],
                             "expires_in": 600}))
    creds.tick(t + 21)
    assert creds.token_renewals == 1 and creds.token.remaining() > 500
    creds.tick(keys.expires_at - 1)              # keys due: renewed with the fresh token
    assert creds.renewals == 1 and creds.keys.access_key_id != keys.access_key_id
    rt.remove()


def test_a_source_with_nothing_newer_is_not_asked_at_every_tick(seaweedfs, idp, tmp_path):
    """A hub (or a token file) that has no fresher token yet is asked again after a pause."""
    import json

    from sts_wire.credentials import Credentials
    from sts_wire.runtime import Runtime
    from sts_wire.spec import Spec, StsSpec
    from sts_wire.tokens import FileSource

    class Counting(FileSource):
        calls = 0

        def fetch(self):
            Counting.calls += 1
            return super().fetch()

    login = idp.login("alice")
    f = tmp_path / "token.json"
    f.write_text(json.dumps({"access_token": login["access_token"], "expires_in": 60}))
    f.chmod(0o600)
    rt = Runtime(tmp_path / "run")
    creds = Credentials(Counting(str(f)), Spec(sts=StsSpec(endpoint=seaweedfs.endpoint,
                                                          role_arn=seaweedfs.role_arn_for("alice"))), rt)
    creds.start()
    t = creds.token.obtained_at
    for i in range(50):                           # 10 s of ticks, all past the renewal point
        creds.tick(t + 41 + i * 0.2)
    assert Counting.calls == 1 + 2 and creds.token_renewals == 0   # at 41 s and 46 s, not 50 times
    creds.tick(t + 57)                            # after the next pause: asked again
    assert Counting.calls == 4
    rt.remove()
