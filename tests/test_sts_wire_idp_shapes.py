"""sts-wire against identity providers shaped like the real ones (tests/testbed/idp.py), each with
a SeaweedFS STS that trusts it the way a site would configure it:

- Keycloak: access tokens with `aud` `account` (SeaweedFS told to accept that audience) and
  refresh tokens rotated at every use: the `refresh` source keeps the rotated token (0600, in its
  file) and uses it for the next grant; reusing an old one would end the whole session.
- INDIGO IAM: no `aud` unless the client asks for one: without `token.audience` the STS refuses
  with a plain message; with it, IAM stamps that audience and the STS accepts the token.
"""

import stat
import time

import pytest

from tests.sts_wire_helpers import Wire, refresh_token_setup, wait_until, write_spec
from tests.testbed.s3 import assume_role, s3_client
from tests.testbed.seaweedfs import SeaweedFS

STS_AUDIENCE = "s3-notebooks"     # the client id an IAM site registers for its S3 service


@pytest.fixture(scope="module")
def keycloak(idp_factory, run_dir):
    """A Keycloak-shaped IdP (30 s access tokens, rotating refresh tokens) and a SeaweedFS that
    accepts its `account` audience and gives 30 s keys."""
    kc = idp_factory(shape="keycloak", at_ttl=30)
    s3 = SeaweedFS(kc, run_dir / "seaweedfs-keycloak", token_duration="30s", client_id="account").start()
    yield kc, s3
    s3.stop()


@pytest.fixture(scope="module")
def iam(idp_factory, run_dir):
    iam = idp_factory(shape="iam")
    s3 = SeaweedFS(iam, run_dir / "seaweedfs-iam", client_id=STS_AUDIENCE).start()
    yield iam, s3
    s3.stop()


def test_keycloak_rotated_refresh_tokens_are_kept_and_used(keycloak, tmp_path):
    kc, s3 = keycloak
    wire = Wire(tmp_path)
    token, login = refresh_token_setup(kc, "alice", tmp_path / "secrets")
    rt_file = tmp_path / "secrets" / "alice.refresh"
    spec = write_spec(tmp_path / "spec.yaml", s3, [{"remote": "{username}", "path": f"{wire.root}/{{username}}"}],
                      token, role_arn=s3.role_arn_for("alice"))
    t0 = time.time()
    seen = {login["refresh_token"]}
    try:
        wire.start("run", ["--spec", str(spec), "--", "/bin/sleep", "600"])
        wire.wait_mounted([wire.root / "alice"])
        # three token renewals (each rotates the refresh token) and the keys renewed with them
        for i in range(3):
            wait_until(lambda: rt_file.read_text().strip() not in seen, 40, f"rotation {i + 1}",  # noqa: B023
                       interval=0.5)
            seen.add(rt_file.read_text().strip())
            assert stat.S_IMODE(rt_file.stat().st_mode) == 0o600
        (wire.root / "alice" / "after-rotations.txt").write_text("still here\n")
        grants = [e for e in kc.events(since=t0) if e.get("grant") == "refresh_token"]
        assert len(grants) >= 3 and all(e["status"] == 200 for e in grants), grants
        assert all(e.get("rotated") for e in grants)
        # the first rotation came with the first token, the next two are renewals (the state
        # file is written every 2 s)
        st = wait_until(lambda: (s := wire.instance())["token_renewals"] >= 2 and s, 10, "state file")
        assert st["key_renewals"] >= 1 and st["last_error"] is None
        assert wire.terminate() == 128 + 15      # CMD (sleep) ended by the SIGTERM passed on to it
    finally:
        wire.cleanup()
    # the file holds the newest refresh token: the IdP still takes it (an old one it would refuse)
    assert kc.refresh(rt_file.read_text().strip(), client_id="sts-wire")["access_token"]
    keys = assume_role(s3.endpoint, s3.role_arn_for("alice"), kc.login("alice")["access_token"], "check")
    body = s3_client(s3.endpoint, keys, s3.region).get_object(Bucket="alice", Key="after-rotations.txt")["Body"]
    assert body.read() == b"still here\n"


def test_iam_tokens_without_aud_are_refused_until_the_audience_is_asked_for(iam, tmp_path):
    idp, s3 = iam
    wire = Wire(tmp_path)
    token, _ = refresh_token_setup(idp, "bob", tmp_path / "secrets")
    mounts = [{"remote": "{username}", "path": f"{wire.root}/{{username}}"}]
    spec = write_spec(tmp_path / "spec.yaml", s3, mounts, token, role_arn=s3.role_arn_for("bob"))
    try:
        r = wire.run("run", ["--strict", "--spec", str(spec), "--", "true"])
        assert r.returncode == 7, r.stderr                    # STS_REFUSED
        assert "STS refused AssumeRoleWithWebIdentity" in r.stderr and "audience" in r.stderr.lower()
        spec = write_spec(tmp_path / "spec.yaml", s3, mounts, {**token, "audience": STS_AUDIENCE},
                          role_arn=s3.role_arn_for("bob"))
        r = wire.run("run", ["--strict", "--spec", str(spec), "--", "sh", "-c",
                             f"echo iam > {wire.root}/bob/iam.txt && cat {wire.root}/bob/iam.txt"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "iam" and "1 of 1 mounts ready" in r.stderr
    finally:
        wire.cleanup()
