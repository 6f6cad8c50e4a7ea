"""The sts-wire mount spec a server gets: from the profile's mounts and the site's storage.

Every spec built here is handed to sts-wire's own parser (parse + resolve), the code that reads
it inside the server, so a spec the builder makes is one sts-wire accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from jhub_cloud.config import from_dict, load
from jhub_cloud.config.model import Mount
from jhub_cloud.policy import Allowed, allowed_profiles, decide
from jhub_cloud.spawner.mountspec import MountSpecError, mount_spec, roots_env
from jhub_cloud.spawner.target import SpawnTarget
from sts_wire.spec import parse, resolve

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "config" / "examples" / "full.yaml"
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
USERS = {"alice": ("physics", "cms"), "bob": ("physics",), "carol": ("admins", "physics")}


@pytest.fixture(scope="module")
def cfg():
    return load(FULL)


def resources_for(cfg, user, form):
    decision = decide(cfg, USERS.get(user, ("physics",)), form)
    assert isinstance(decision, Allowed), decision
    return decision.resources


def sts_wire_accepts(spec: dict, user: str, roots=("/s3",)):
    """Parse the spec as `sts-wire run --spec env:...` does (JSON text), then resolve it."""
    parsed = parse(json.loads(json.dumps(spec)))
    return resolve(parsed, user, list(roots))


def test_alice_in_cms_gets_her_bucket_and_the_groups_bucket_read_only(cfg):
    r = resources_for(cfg, "alice", {"profile": "docker-lab"})
    spec = mount_spec(r, SpawnTarget("alice", "", USERS["alice"]), cfg.storage)
    assert spec == {
        "version": 1,
        "user": "alice",
        "token": {"source": "hub"},
        "sts": {"endpoint": "https://s3.example.org", "s3_endpoint": "https://s3.example.org",
                "region": "us-east-1", "provider": "Ceph",
                "role_arn": "arn:aws:iam:::role/notebooks"},
        "rclone": {"flags": ["--vfs-read-ahead", "64M"]},
        "allow_plain_http": [],
        "mounts": [
            {"remote": "alice", "path": "/s3/alice", "read_only": False, "cache_mode": "writes"},
            {"remote": "cms-data", "path": "/s3/cms-data", "read_only": True,
             "cache_mode": "writes"},
        ],
    }
    resolved = sts_wire_accepts(spec, "alice")
    assert [(m.remote, m.path, m.read_only) for m in resolved.mounts] == [
        ("alice", "/s3/alice", False), ("cms-data", "/s3/cms-data", True)]
    assert resolved.token.source == "hub" and resolved.sts.provider == "Ceph"


def test_a_group_bucket_is_left_out_for_a_user_not_in_the_group(cfg):
    # Even given resources that still list it (an older decision), the spec leaves it out.
    alice = resources_for(cfg, "alice", {"profile": "docker-lab"})
    spec = mount_spec(alice, SpawnTarget("bob", "", USERS["bob"]), cfg.storage)
    assert [m["remote"] for m in spec["mounts"]] == ["bob"]
    sts_wire_accepts(spec, "bob")


def test_scratch_and_user_bucket_and_a_per_user_role(cfg):
    storage = {**cfg.storage, "role_arn": "arn:aws:iam:::role/{username}", "audience": "hub",
               "sts_endpoint": "https://sts.example.org", "ca_file": "/etc/ssl/site.pem",
               "session_seconds": 3600}
    r = resources_for(cfg, "bob", {"profile": "cpu"})
    spec = mount_spec(r, SpawnTarget("jo.doe", "gpu", ("physics",)), storage)
    assert spec["sts"] == {
        "endpoint": "https://sts.example.org", "s3_endpoint": "https://s3.example.org",
        "region": "us-east-1", "provider": "Ceph", "role_arn": "arn:aws:iam:::role/jo.doe",
        "ca_file": "/etc/ssl/site.pem", "duration": 3600}
    assert spec["token"] == {"source": "hub", "audience": "hub"}
    assert [(m["remote"], m["path"]) for m in spec["mounts"]] == [
        ("jo.doe", "/s3/jo.doe"), ("scratch", "/s3/scratch")]
    resolved = sts_wire_accepts(spec, "jo.doe")
    assert resolved.sts.role_arn == "arn:aws:iam:::role/jo.doe"


def test_the_spec_holds_no_placeholder_and_no_secret(cfg):
    r = resources_for(cfg, "alice", {"profile": "cpu"})
    text = json.dumps(mount_spec(r, SpawnTarget("alice", "", USERS["alice"]), cfg.storage))
    assert "{username}" not in text and "{user}" not in text
    for word in ("secret", "password", "access_key", "refresh"):
        assert word not in text.lower()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_profile_of_every_example_gives_a_spec_sts_wire_accepts(path):
    example = load(path)
    seen = 0
    for groups in ({g} for g in example.allowed_groups):
        for offer in allowed_profiles(example, sorted(groups)):
            r = decide(example, sorted(groups), {"profile": offer.name}).resources
            spec = mount_spec(r, SpawnTarget("alice", "", tuple(groups)), example.storage)
            if example.storage is None or not offer.mounts:
                assert spec is None
                continue
            roots = example.storage["mount_roots"]
            resolved = sts_wire_accepts(spec, "alice", roots)
            assert len(resolved.mounts) == len(offer.mounts)
            seen += 1
    assert seen or example.storage is None


def test_no_storage_or_no_mounts_means_no_sts_wire(cfg):
    r = resources_for(cfg, "alice", {"profile": "cpu"})
    assert mount_spec(r, SpawnTarget("alice"), None) is None
    assert mount_spec(replace(r, mounts=()), SpawnTarget("alice"), cfg.storage) is None
    batch = resources_for(cfg, "alice", {"profile": "batch"})  # the batch profile has no mounts
    assert mount_spec(batch, SpawnTarget("alice", "", USERS["alice"]), cfg.storage) is None


def test_mounts_outside_the_roots_unless_the_site_adds_a_root(cfg):
    r = replace(resources_for(cfg, "bob", {"profile": "cpu"}),
                mounts=(Mount("{username}", "/data/{username}"),))
    with pytest.raises(MountSpecError, match=r"'/data/bob' is not below a mount root \(/s3\)"):
        mount_spec(r, SpawnTarget("bob"), cfg.storage)
    storage = {**cfg.storage, "mount_roots": ["/s3", "/data"]}
    spec = mount_spec(r, SpawnTarget("bob"), storage)
    assert spec["mounts"][0]["path"] == "/data/bob"
    sts_wire_accepts(spec, "bob", roots_env(storage)["STS_WIRE_ALLOWED_ROOTS"].split(":"))
    assert roots_env(None) == {}


NAME_AND_PATH_CASES = [
    ("..", Mount("{username}", "/s3/{username}"), "user name '..'"),
    ("a/b", Mount("{username}", "/s3/{username}"), "user name 'a/b'"),
    ("a..b", Mount("{username}", "/s3/{username}"), "user name 'a..b'"),
    ("Alice", Mount("{username}", "/s3/{username}"), "'Alice' is not a bucket name"),
    ("bob", Mount("/etc", "/s3/etc"), "'/etc' is not a bucket name"),
    ("bob", Mount("a..b", "/s3/x"), "'a..b' is not a bucket name"),
    ("bob", Mount("cms/../x", "/s3/x"), "is not a bucket name"),
    ("bob", Mount("data", "/s3/../etc"), "'/s3/../etc' is not a plain absolute folder"),
    ("bob", Mount("data", "s3/data"), "is not a plain absolute folder"),
    ("bob", Mount("data", "/s3/a//b"), "is not a plain absolute folder"),
    ("bob", Mount("data", "/s3/{group}"), "is not a plain absolute folder"),
    ("bob", Mount("data", "/s3"), "'/s3' is not below a mount root"),
    ("bob", Mount("data", "/s3x/data"), "is not below a mount root"),
    ("bob", Mount("data", "/etc/cron.d"), "is not below a mount root"),
]


@pytest.mark.parametrize("user, mount, message", NAME_AND_PATH_CASES)
def test_names_and_paths_that_would_escape_are_refused(cfg, user, mount, message):
    r = replace(resources_for(cfg, "bob", {"profile": "cpu"}), mounts=(mount,))
    with pytest.raises(MountSpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        mount_spec(r, SpawnTarget(user), cfg.storage)


def test_two_mounts_that_meet_for_one_user_are_refused(cfg):
    # /s3/{username} and /s3/scratch are separate, except for a user called "scratch".
    r = resources_for(cfg, "bob", {"profile": "cpu"})
    assert mount_spec(r, SpawnTarget("bob"), cfg.storage)
    with pytest.raises(MountSpecError, match="overlap"):
        mount_spec(r, SpawnTarget("scratch"), cfg.storage)
    nested = replace(r, mounts=(Mount("data", "/s3/data"), Mount("more", "/s3/data/more")))
    with pytest.raises(MountSpecError, match="overlap"):
        mount_spec(nested, SpawnTarget("bob"), cfg.storage)


def test_a_spec_from_plain_http_storage_on_loopback_is_accepted_by_sts_wire():
    data = yaml.safe_load((ROOT / "config" / "examples" / "local.yaml").read_text())
    data["storage"]["s3_endpoint"] = "http://127.0.0.1:8333"
    local = from_dict(data)
    r = decide(local, ["physics"], {}).resources
    spec = mount_spec(r, SpawnTarget("alice", "", ("physics",)), local.storage)
    assert spec["sts"]["provider"] == "SeaweedFS" and "role_arn" not in spec["sts"]
    sts_wire_accepts(spec, "alice")


# --- the bad mount spec corpus ------------------------------------------------------------------
# sts-wire's own check of a spec (parse + resolve, as `sts-wire run --spec` does): each case is a
# change to a good spec and the words its refusal must hold (besides the key path it names).
STS_WIRE_BASE = {"sts": {"endpoint": "https://s3.example.org"},
                 "mounts": [{"remote": "{username}", "path": "/s3/{username}"}]}


def _mount(**kw) -> dict:
    return {"mounts": [{"remote": "{username}", "path": "/s3/{username}", **kw}]}


def _flags(*flags, where="mount") -> dict:
    return _mount(flags=list(flags)) if where == "mount" else {"rclone": {"flags": list(flags)}}


BAD_STS_WIRE_SPECS = [
    # paths outside the allowed roots, or not plain
    ("path-dotdot", _mount(path="/s3/../etc"), "mounts[0].path", "'..'"),
    ("path-dotdot-after-user", _mount(path="/s3/{username}/../../etc"), "mounts[0].path", "'..'"),
    ("path-elsewhere", _mount(path="/etc/cron.d"), "mounts[0].path", "not below an allowed root"),
    ("path-proc", _mount(path="/proc/self/root/etc"), "mounts[0].path", "not below an allowed root"),
    ("path-the-root-itself", _mount(path="/s3"), "mounts[0].path", "not below an allowed root"),
    ("path-root-prefix", _mount(path="/s30/x"), "mounts[0].path", "not below an allowed root"),
    ("path-slash", _mount(path="/"), "mounts[0].path", "not below an allowed root"),
    ("path-relative", _mount(path="s3/x"), "mounts[0].path", "must be an absolute path"),
    ("path-tilde", _mount(path="~/s3"), "mounts[0].path", "must be an absolute path"),
    ("path-dot-part", _mount(path="/s3/./x"), "mounts[0].path", "not normalised"),
    ("path-double-slash", _mount(path="/s3//x"), "mounts[0].path", "not normalised"),
    ("path-newline", _mount(path="/s3/x\n/etc"), "mounts[0].path", "control characters"),
    ("path-nul", _mount(path="/s3/x\x00"), "mounts[0].path", "control characters"),
    ("path-unknown-placeholder", _mount(path="/s3/{user}"), "mounts[0].path", "placeholder"),
    # bucket names as injection carriers
    ("remote-config-flag", _mount(remote="--config=/tmp/x"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-other-rclone-remote", _mount(remote="local:/etc"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-newline", _mount(remote="cms\n"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-shell", _mount(remote="$(id)"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-backticks", _mount(remote="`id`"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-space-semicolon", _mount(remote="cms; rm -rf ~"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-upper-case", _mount(remote="CMS"), "mounts[0].remote", "not a valid bucket name"),
    ("remote-prefix-dotdot", _mount(remote="cms/../alice"), "mounts[0].remote", "'..' part"),
    ("remote-prefix-newline", _mount(remote="cms/a\nb"), "mounts[0].remote", "control characters"),
    ("remote-empty", _mount(remote=""), "mounts[0].remote", "should be non-empty"),
    # rclone flags off the allow-list, or carrying more than their value
    ("flag-config", _flags("--config", "/etc/rclone.conf"), "mounts[0].flags[0]", "--config is not allowed"),
    ("flag-config-equals", _flags("--config=/tmp/x"), "mounts[0].flags[0]", "--config is not allowed"),
    ("flag-allow-other", _flags("--allow-other"), "mounts[0].flags[0]", "readable by other users"),
    ("flag-rc-addr", _flags("--rc-addr=0.0.0.0:5572"), "mounts[0].flags[0]", "not on the allow-list"),
    ("flag-keys", _flags("--s3-access-key-id=AKIA"), "mounts[0].flags[0]", "not on the allow-list"),
    ("flag-log-file", _flags("--log-file=/tmp/x"), "mounts[0].flags[0]", "not allowed"),
    ("flag-cache-dir", _flags("--cache-dir", "/tmp"), "mounts[0].flags[0]", "not allowed"),
    ("flag-daemon", _flags("--daemon"), "mounts[0].flags[0]", "not allowed"),
    ("flag-fuse-option", _flags("-o", "allow_other"), "mounts[0].flags[0]", "is not a --flag"),
    ("flag-unicode-dash", _flags("\u2014config"), "mounts[0].flags[0]", "is not a --flag"),
    ("flag-value-shell", _flags("--vfs-read-ahead", "64M; rm -rf ~"), "mounts[0].flags[1]", "needs a size"),
    ("flag-value-newline", _flags("--vfs-read-ahead", "64M\n"), "mounts[0].flags[1]", "needs a size"),
    ("flag-value-smuggles-flag", _flags("--dir-cache-time=1m --config=/x"), "mounts[0].flags[0]",
     "needs a duration"),
    ("flag-octal-shell", _flags("--umask", "000;id"), "mounts[0].flags[1]", "needs a octal"),
    ("flag-bool-junk", _flags("--no-checksum=maybe"), "mounts[0].flags[0]", "takes true or false"),
    ("flag-no-value", _flags("--vfs-read-ahead"), "mounts[0].flags[0]", "needs a value"),
    ("global-flag-config", _flags("--config", "/x", where="rclone"), "rclone.flags[0]", "--config is not allowed"),
    ("global-flag-read-only", _flags("--read-only", where="rclone"), "rclone.flags[0]", "read_only: true"),
    # the rest of the spec
    ("user-newline", {"user": "alice\nbob"}, "user", "not a valid user name"),
    ("user-dotdot-slash", {"user": "../etc"}, "user", "not a valid user name"),
    ("issuer-plain-http", {"token": {"source": "refresh", "issuer": "http://idp.example.org",
                                     "client_id": "x"}}, "token.issuer", "http"),
    ("hub-url-javascript", {"token": {"hub_api_url": "javascript:alert(1)"}}, "token.hub_api_url", "does not match"),
    ("sts-plain-http", {"sts": {"endpoint": "http://s3.example.org"}}, "sts.endpoint", "http"),
    ("plain-http-wildcard", {"allow_plain_http": ["*"]}, "allow_plain_http", "does not match"),
    ("unknown-key", {"exec": "rm -rf ~"}, "exec", "unknown key"),
    ("duration-huge", {"sts": {"endpoint": "https://s3.example.org", "duration": 10**9}}, "sts.duration",
     "maximum"),
]


def sts_wire_refusal(change: dict) -> str:
    """All problems of the spec changed by `change`, as `sts-wire run --spec` would print them."""
    from sts_wire.errors import Exit, SpecError

    doc = {**STS_WIRE_BASE, **change}
    with pytest.raises(SpecError) as e:
        sts_wire_accepts(doc, "alice")
    assert e.value.code == Exit.SPEC
    return "\n".join(e.value.problems)


@pytest.mark.parametrize("case,change,where,expected", BAD_STS_WIRE_SPECS, ids=[c[0] for c in BAD_STS_WIRE_SPECS])
def test_sts_wire_refuses_a_bad_spec_naming_the_key(case, change, where, expected):
    text = sts_wire_refusal(change)
    assert where in text and expected in text, text


# The hub's side: mounts a profile would give a user (jhub_cloud/spawner/mountspec.py).
BAD_PROFILE_MOUNTS = [
    ("user-newline", "alice\n", Mount("{username}", "/s3/fixed"), "user name 'alice\\n'"),
    ("user-config-flag", "--config", Mount("{username}", "/s3/{username}"), "user name '--config'"),
    ("user-shell", "$(id)", Mount("{username}", "/s3/{username}"), "user name '$(id)'"),
    ("bucket-newline", "bob", Mount("data\n", "/s3/data"), "is not a bucket name"),
    ("bucket-config-flag", "bob", Mount("--config", "/s3/data"), "is not a bucket name"),
    ("bucket-rclone-remote", "bob", Mount("local:", "/s3/data"), "is not a bucket name"),
    ("path-newline", "bob", Mount("data", "/s3/data\n/etc"), "is not a plain absolute folder"),
    ("path-nul", "bob", Mount("data", "/s3/data\x00"), "is not a plain absolute folder"),
    ("path-proc", "bob", Mount("data", "/proc/self/root"), "is not below a mount root"),
]


@pytest.mark.parametrize("case,user,mount,message", BAD_PROFILE_MOUNTS, ids=[c[0] for c in BAD_PROFILE_MOUNTS])
def test_the_hub_refuses_mounts_that_would_inject(cfg, case, user, mount, message):
    r = replace(resources_for(cfg, "bob", {"profile": "cpu"}), mounts=(mount,))
    with pytest.raises(MountSpecError) as e:
        mount_spec(r, SpawnTarget(user), cfg.storage)
    assert message in str(e.value), str(e.value)


def test_a_symlink_out_of_the_roots_is_refused_and_nothing_is_created(tmp_path):
    """The one check that needs the file system: sts-wire resolves symlinks before mounting."""
    from sts_wire.errors import Exit, StsWireError
    from sts_wire.mounts import prepare_path

    root, outside = tmp_path / "s3", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    for path in (root / "link", root / "link" / "alice"):
        with pytest.raises(StsWireError) as e:
            prepare_path(str(path), [str(root)])
        assert e.value.code == Exit.MOUNT_PATH and "not below an allowed root" in e.value.message
    assert list(outside.iterdir()) == [] and sorted(p.name for p in root.iterdir()) == ["link"]


def test_the_bad_mount_spec_corpus_is_refused(cfg, tmp_path, reliability):
    """Every case of both corpora once more, counted for the reliability report; and the same
    specs through the `sts-wire check` command: refused with exit code 3, nothing created."""
    import subprocess
    import sys

    from sts_wire.errors import Exit

    n = 0
    for _, change, where, expected in BAD_STS_WIRE_SPECS:
        text = sts_wire_refusal(change)
        assert where in text and expected in text, text
        n += 1
    for user, mount, message in [c[1:] for c in BAD_PROFILE_MOUNTS] + NAME_AND_PATH_CASES:
        r = replace(resources_for(cfg, "bob", {"profile": "cpu"}), mounts=(mount,))
        with pytest.raises(MountSpecError, match=re.escape(message)):
            mount_spec(r, SpawnTarget(user), cfg.storage)
        n += 1
    # Through the command line, for a few of them: exit code 3, the key named, nothing created.
    root = tmp_path / "s3"
    root.mkdir()
    for case in ("path-dotdot", "remote-config-flag", "flag-config", "flag-value-newline"):
        change = next(c[1] for c in BAD_STS_WIRE_SPECS if c[0] == case)
        spec = tmp_path / f"{case}.json"
        spec.write_text(json.dumps({**STS_WIRE_BASE, **change}))
        before = sorted(p.name for p in tmp_path.iterdir())
        run = subprocess.run([str(Path(sys.executable).parent / "sts-wire"), "check", "--spec", str(spec),
                              "--user", "alice", "--allowed-root", str(root), "--runtime-dir", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == Exit.SPEC, (case, run.returncode, run.stderr[-500:])
        assert "mounts[0]" in run.stderr + run.stdout, run.stderr[-500:]
        assert sorted(p.name for p in tmp_path.iterdir()) == before and list(root.iterdir()) == []
    reliability.record("bad.mount-specs", f"{n} bad mount specs refused ({len(BAD_STS_WIRE_SPECS)} by sts-wire's "
                                          f"parser, {len(BAD_PROFILE_MOUNTS)} + {len(NAME_AND_PATH_CASES)} by the "
                                          "hub's mount builder), each naming the key; `sts-wire check` exits 3 and "
                                          "creates nothing")
