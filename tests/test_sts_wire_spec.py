"""sts-wire's pure core: mount spec, rclone arguments, exit-code messages, renewal schedule.

No server, no file system: these run in well under a second.
"""

import json

import pytest

from sts_wire import rclone as rc
from sts_wire import schedule
from sts_wire.errors import Exit, SpecError, StsWireError
from sts_wire.spec import check_flags, mount_id, parse_text, resolve, under_root
from sts_wire.sts import Keys

GOOD = """
token: {source: hub}
sts:
  endpoint: https://s3.example.org
  role_arn: "arn:aws:iam:::role/{username}"
mounts:
  - {remote: "{username}", path: "/s3/{username}"}
  - {remote: scratch, path: /s3/scratch}
  - remote: cms/shared/data
    path: /s3/cms
    read_only: true
    cache_mode: full
    flags: ["--vfs-read-ahead", "64M", "--no-modtime", "--dir-cache-time=1m"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_text(text)
    assert e.value.code == Exit.SPEC
    return e.value.problems


def test_good_spec_parses_and_resolves():
    spec = resolve(parse_text(GOOD), "alice", ["/s3"])
    assert [m.path for m in spec.mounts] == ["/s3/alice", "/s3/scratch", "/s3/cms"]
    assert spec.mounts[0].remote == "alice" and spec.mounts[0].cache_mode == "writes"
    assert spec.mounts[2].bucket == "cms" and spec.mounts[2].prefix == "shared/data"
    assert spec.sts.role_arn == "arn:aws:iam:::role/alice"
    assert spec.sts.session_name == "sts-wire-alice"


def test_json_spec_is_accepted():
    doc = {"sts": {"endpoint": "http://127.0.0.1:8333"}, "mounts": [{"remote": "alice", "path": "/s3/a"}]}
    assert parse_text(json.dumps(doc)).mounts[0].path == "/s3/a"


def test_every_problem_is_reported_with_its_key():
    p = problems("""
token: {source: refresh, client_auth: sideways}
sts: {endpoint: ftp://x, colour: blue}
mounts:
  - {remote: Bad_Bucket, path: relative/path}
  - {remote: ok-bucket, path: /s3/../etc, cache_mode: off}
  - {path: /s3/x}
""")
    text = "\n".join(p)
    assert "token.client_auth: 'sideways' is not one of basic, post, none (line 2)" in text
    assert "sts.colour: unknown key (known: ca_file, duration, endpoint," in text
    assert "sts.endpoint" in text and "(line 3)" in text
    assert "mounts[2]: 'remote' is a required property (line 7)" in text


def test_duplicate_keys_and_the_old_placeholder_are_refused_with_their_line():
    p = problems("""
sts: {endpoint: https://s3.example.org}
mounts:
  - remote: abc
    path: /s3/a
    path: /s3/b
""")
    assert p == ["mounts[0].path: key appears twice in this mapping (lines 5 and 6); YAML would keep only "
                 "the last one: remove or merge one of them (line 6)"]
    p = problems("""
sts: {endpoint: https://s3.example.org}
mounts:
  - {remote: abc, path: "/s3/{user}"}
""")
    assert p == ["mounts[0].path: unknown placeholder {user}; only {username} is replaced (write {username}) "
                 "(line 4)"]


def test_rule_problems_after_schema():
    p = problems("""
token: {source: refresh}
sts: {endpoint: https://s3.example.org}
mounts:
  - {remote: Bad_Bucket, path: relative/path}
  - {remote: ok-bucket, path: /s3/../etc, cache_mode: "off"}
  - {remote: ok-bucket/a/../b, path: /s3/y}
  - {remote: ok-bucket, path: "/s3/{group}"}
""")
    text = "\n".join(p)
    assert "token.issuer: the refresh token source needs the issuer URL" in text
    assert "token.client_id" in text
    assert "mounts[0].remote: 'Bad_Bucket' is not a valid bucket name" in text
    assert "mounts[0].path: 'relative/path' must be an absolute path" in text
    assert "mounts[1].path: '/s3/../etc' must not contain '..'" in text
    assert "mounts[1].cache_mode: 'off' cannot open files for read+write" in text
    assert "mounts[2].remote: the prefix 'a/../b' has an empty, '.' or '..' part" in text
    assert "mounts[3].path: unknown placeholder {group}; only {username} is replaced (line 8)" in text


def test_bad_yaml_names_the_line():
    p = problems("sts: {endpoint: x\nmounts: [\n")
    assert "line" in p[0]
    assert problems("")[0] == "(top level): the file is empty"
    assert problems("# only a comment\n")[0] == "(top level): the file is empty"
    assert "must be a mapping" in problems("- a\n- b\n")[0]


def test_plain_http_to_a_remote_issuer_is_refused():
    p = problems("""
token: {source: device, issuer: "http://iam.example.org", client_id: x}
sts: {endpoint: https://s3.example.org}
mounts: [{remote: abc, path: /s3/a}]
""")
    assert any("token.issuer: http://iam.example.org is plain http to iam.example.org" in x for x in p)
    # every URL that carries a token or keys: hub API, STS, S3
    p = problems("""
token: {source: hub, hub_api_url: "http://hub.example.org:8081/hub/api"}
sts: {endpoint: "http://s3.example.org", s3_endpoint: "http://10.1.2.3:9000"}
mounts: [{remote: abc, path: /s3/a}]
""")
    assert [x.split(":")[0] for x in p] == ["token.hub_api_url", "sts.endpoint", "sts.s3_endpoint"], p
    # loopback http is fine (a hub on the same machine), and so is a host the site lists itself
    parse_text("""
token: {source: hub, hub_api_url: "http://127.0.0.1:8081/hub/api"}
sts: {endpoint: "http://[::1]:8333", s3_endpoint: "http://localhost:8333"}
mounts: [{remote: abc, path: /s3/a}]
""")
    spec = parse_text("""
allow_plain_http: [172.17.0.1]
token: {source: hub, hub_api_url: "http://172.17.0.1:8081/hub/api"}
sts: {endpoint: "https://s3.example.org"}
mounts: [{remote: abc, path: /s3/a}]
""")
    assert spec.allow_plain_http == ("172.17.0.1",)


def test_hub_url_from_the_environment_must_be_https_unless_loopback():
    from sts_wire.spec import TokenSpec
    from sts_wire.tokens import HubSource, make_source

    env = {"JUPYTERHUB_API_URL": "http://hub.example.org/hub/api", "JUPYTERHUB_API_TOKEN": "t" * 20}
    with pytest.raises(StsWireError) as e:
        make_source(TokenSpec(source="hub"), env=env)
    assert e.value.code == Exit.SPEC and "JUPYTERHUB_API_URL: http://hub.example.org/hub/api is plain http" \
        in e.value.message and "https" in e.value.hint
    assert isinstance(make_source(TokenSpec(source="hub"), env=env, allow_plain_http=("hub.example.org",)),
                      HubSource)
    env["JUPYTERHUB_API_URL"] = "https://hub.example.org/hub/api"
    assert isinstance(make_source(TokenSpec(source="hub"), env=env), HubSource)


def test_spec_from_an_environment_variable():
    from sts_wire.app import read_spec_text

    assert read_spec_text("env:SPEC", {"SPEC": GOOD}) == GOOD
    for env, why in (({}, "environment variable SPEC is not set"), ({"SPEC": " "}, "SPEC is empty")):
        with pytest.raises(SpecError) as e:
            read_spec_text("env:SPEC", env)
        assert why in e.value.problems[0] and e.value.code == Exit.SPEC


def test_roots_overlaps_and_user_names_are_checked_at_resolution():
    spec = parse_text("""
sts: {endpoint: https://s3.example.org}
mounts:
  - {remote: "{username}", path: "/s3/{username}"}
  - {remote: scratch, path: /etc/scratch}
  - {remote: other, path: /s3/alice}
  - {remote: inner, path: /s3/alice/inner}
  - {remote: root, path: /s3}
""")
    with pytest.raises(SpecError) as e:
        resolve(spec, "alice", ["/s3", "/home/alice"])
    text = "\n".join(e.value.problems)
    assert "mounts[1].path: /etc/scratch is not below an allowed root (/s3, /home/alice" in text
    assert "mounts[2].path: /s3/alice is already used by mounts[0]" in text
    assert "mounts[3].path: /s3/alice/inner and mounts[0].path /s3/alice are nested" in text
    assert "mounts[4].path: /s3 is not below an allowed root" in text
    for bad in ("../etc", "a/b", "", "."):
        with pytest.raises(SpecError):
            resolve(spec, bad, ["/s3"])


def test_under_root():
    assert under_root("/s3/a", ["/s3"])
    assert not under_root("/s3", ["/s3"])
    assert not under_root("/s30/a", ["/s3"])
    assert under_root("/home/u/s3/x", ["/s3", "/home/u/"])


def test_flag_allow_list():
    assert check_flags(["--vfs-read-ahead", "8M", "--buffer-size=2M", "--vfs-write-back", "10s",
                        "--no-checksum", "--async-read=false", "--umask", "077"], "f") == []
    p = check_flags(["--config", "/x", "--allow-other", "--vfs-read-ahead", "lots", "-v",
                     "--s3-access-key-id=AKIA", "--transfers"], "f")
    text = "\n".join(p)
    assert "f[0]: --config is not allowed (sts-wire writes rclone's configuration itself)" in text
    assert "--allow-other is not allowed (the mount would be readable by other users)" in text
    assert "--vfs-read-ahead needs a size, not 'lots'" in text
    assert "'-v' is not a --flag" in text
    assert "--s3-access-key-id is not allowed (not on the allow-list" in text
    assert "--transfers needs a value" in text


def test_every_allowed_flag_is_a_flag_of_this_rclone():
    """The allow-list names flags that rclone mount2 knows, with values of the kind it takes."""
    import subprocess

    from sts_wire.flags import ALLOWED_FLAGS
    from tests.testbed.paths import rclone_bin

    text = "".join(subprocess.run([rclone_bin(), *cmd], capture_output=True, text=True).stdout
                   for cmd in (["help", "flags"], ["mount2", "--help"]))
    for flag, kind in ALLOWED_FLAGS.items():
        assert f"{flag} " in text, flag
        if kind == "tristate":
            assert f"{flag} Tristate" in text
    assert check_flags(["--s3-use-unsigned-payload"], "f")  # a Tristate needs its value
    assert check_flags(["--s3-use-unsigned-payload", "true"], "f") == []


def test_infn_flags_are_allowed():
    assert check_flags(["--vfs-cache-mode", "full"], "f")  # cache mode goes through cache_mode:
    assert check_flags(["--vfs-read-ahead", "8M", "--buffer-size", "2M", "--vfs-write-back", "10s",
                        "--vfs-read-wait", "55ms"], "f") == []


# --- rclone arguments and configuration --------------------------------------------------------
def test_mount_argv_carries_no_secret_and_the_required_flags(tmp_path):
    spec = resolve(parse_text(GOOD), "alice", ["/s3"])
    m = spec.mounts[2]
    argv = rc.mount_argv("/usr/bin/rclone", m, log_file=tmp_path / "l", cache_dir=tmp_path / "c",
                         rc_socket=tmp_path / "s", ca_file="/ca.pem")
    assert argv[:4] == ["/usr/bin/rclone", "mount2", "stswire:cms/shared/data", "/s3/cms"]
    assert "--use-server-modtime" in argv and "--read-only" in argv
    assert argv[argv.index("--vfs-cache-mode") + 1] == "full"
    assert argv[argv.index("--cache-dir") + 1] == str(tmp_path / "c")
    assert argv[argv.index("--rc-addr") + 1] == f"unix://{tmp_path / 's'}"
    assert argv[argv.index("--ca-cert") + 1] == "/ca.pem"
    assert argv[-4:] == ["--vfs-read-ahead", "64M", "--no-modtime", "--dir-cache-time=1m"]
    assert not any("key" in a.lower() and "=" in a for a in argv)


def test_config_and_environment_hold_pointers_not_keys(tmp_path):
    spec = parse_text(GOOD)
    conf = rc.config_text(spec.sts)
    assert "env_auth = true" in conf and "profile = sts-wire" in conf
    assert "endpoint = https://s3.example.org" in conf
    assert "access_key" not in conf and "secret" not in conf
    aws = rc.aws_config_text(tmp_path / "my keys.json")
    assert f"credential_process = /bin/cat '{tmp_path / 'my keys.json'}'" in aws
    env = rc.environment({"PATH": "/bin", "AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": "s",
                          "JUPYTERHUB_API_TOKEN": "t", "HOME": "/home/a", "STS_WIRE_CLIENT_SECRET": "c"},
                         tmp_path / "r.conf", tmp_path / "a.conf", tmp_path / "empty")
    assert env["RCLONE_CONFIG"] == str(tmp_path / "r.conf") and env["AWS_PROFILE"] == "sts-wire"
    assert "AWS_ACCESS_KEY_ID" not in env and "JUPYTERHUB_API_TOKEN" not in env
    assert "STS_WIRE_CLIENT_SECRET" not in env and env["HOME"] == "/home/a"


def test_credential_process_json_reports_the_renewal_deadline():
    k = Keys("AKID", "SECRET", "SESSION", expires_at=1_000_060.0, obtained_at=1_000_000.0)
    doc = json.loads(k.process_json(1_000_050.0))
    assert doc["Version"] == 1 and doc["AccessKeyId"] == "AKID" and doc["SessionToken"] == "SESSION"
    assert doc["Expiration"].endswith("Z")
    assert "SECRET" not in repr(k) and "SESSION" not in repr(k)


@pytest.mark.parametrize(("code", "tail", "expected"), [
    (1, "", "refused its command line"),
    (3, "", "not found"),
    (5, "", "temporary error"),
    (-9, "", "killed by signal 9"),
    (None, "", "stopped answering"),
    (1, "Fatal error: failed to mount FUSE fs: fusermount: exec: \"fusermount3\": executable file not found",
     "fusermount3 is missing"),
    (1, "mount helper error: fusermount3: failed to open /dev/fuse: No such file or directory", "/dev/fuse"),
    (1, "Fatal error: directory already mounted, use --allow-non-empty to mount anyway", "already mounted"),
    (1, "Fatal error: Directory is not empty: /s3/x If you want to mount it anyway use: --allow-non-empty",
     "not empty"),
    (2, "ERROR : : list: AccessDenied: Access Denied status code: 403", "denied access"),
    (2, "dial tcp 127.0.0.1:9: connect: connection refused", "cannot be reached"),
    (42, "", "exited with code 42"),
])
def test_rclone_exit_codes_in_plain_words(code, tail, expected):
    assert expected in rc.explain(code, tail)


def test_mount_ids_are_readable_and_unique():
    a, b = mount_id("/s3/alice"), mount_id("/s3-alice")
    assert a.startswith("s3-alice-") and a != b
    assert len(mount_id("/s3/" + "x" * 300)) < 60


# --- renewal schedule --------------------------------------------------------------------------
def test_renewal_times():
    short = schedule.Lifetime(0, 60)
    assert short.renew_at() == pytest.approx(40)
    assert 40 < short.reported_expiry() < 60
    hour = schedule.Lifetime(0, 3600)
    assert hour.renew_at() == pytest.approx(3000)    # at most 10 min ahead
    assert schedule.Lifetime(0, 6).renew_at() == pytest.approx(3)  # tiny lifetimes: half way
    assert schedule.Lifetime(0, 12 * 3600).renew_at() == pytest.approx(12 * 3600 - 600)


def test_backoff_is_bounded_and_jittered():
    bounds = [1, 2, 4, 8, 16, 32, 60, 60]
    assert [schedule.backoff(i, jitter=False) for i in range(8)] == bounds
    for i, bound in enumerate(bounds):
        waits = [schedule.backoff(i) for _ in range(200)]
        assert all(0.5 <= w <= bound for w in waits)
        if bound > 1:       # spread out: servers that failed together do not retry together
            assert max(waits) - min(waits) > bound / 4
    assert schedule.retry_delay(10, now=100, deadline=106, jitter=False) == pytest.approx(2)
    assert schedule.retry_delay(0, now=100, deadline=None, jitter=False) == 1
    assert all(schedule.retry_delay(10, now=100, deadline=106) <= 2 for _ in range(50))
