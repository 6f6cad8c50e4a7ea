"""The sts-wire mount spec a server gets: from the profile's mounts and the site's storage.

Every spec built here is handed to sts-wire's own parser (parse + resolve), the code that reads
it inside the server, so a spec the builder makes is one sts-wire accepts.
"""

from __future__ import annotations

import json
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


@pytest.mark.parametrize(
    "user, mount, message",
    [
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
    ],
)
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
