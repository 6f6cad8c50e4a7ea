"""The configuration file: examples load, broken files give the expected problems, secrets, docs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from jhub_cloud.config import (
    ConfigError,
    Problem,
    SecretError,
    format_memory,
    from_dict,
    load,
    loads,
    parse_memory,
    reference_markdown,
    resolve_secret,
    schema,
    secret_problems,
)
from jhub_cloud.config.schema import resolve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.yaml"))
BROKEN = sorted((ROOT / "tests" / "data" / "config" / "broken").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (.+?) \| (.+)$", re.MULTILINE)

MINIMAL = """
auth:
  issuer: https://iam.example.org/
  client_id: jupyterhub
  client_secret: {env: JHUB_CLOUD_CLIENT_SECRET}
  allowed_groups: [physics]
backends:
  local: {}
groups:
  physics: {max_servers: 1, max_cpu: 2, max_memory: 4G}
profiles:
  - name: cpu
    display_name: CPU
    backend: local
    groups: [physics]
    choices:
      image: {options: [a, b]}
      cpu: {options: [1, 2]}
      memory: {options: [1G, 2G], default: 2G}
"""


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        loads(text)
    return caught.value.problems


# Examples and the broken corpus ---------------------------------------------------------------


def test_there_is_a_full_example_and_one_per_backend():
    names = {p.stem for p in EXAMPLES}
    assert {"full", "local", "docker", "slurm", "kubernetes"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path):
    cfg = load(path)
    assert cfg.profiles
    assert cfg.source == str(path)


def test_full_example_enables_every_backend():
    cfg = load(ROOT / "config" / "examples" / "full.yaml")
    assert set(cfg.backends) == {"local", "docker", "slurm", "kubernetes"}
    assert {p.backend for p in cfg.profiles} == {"local", "docker", "slurm", "kubernetes"}


def test_at_least_twenty_broken_files():
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_file_gives_exactly_the_expected_problems(path):
    text = path.read_text()
    expected = EXPECT.findall(text)
    assert expected, f"{path.name} states no '# expect: PATH | TEXT' line"
    with pytest.raises(ConfigError) as caught:
        load(path)
    got = caught.value.problems
    # Same key paths in the same (sorted) order, and each message says the expected thing.
    assert [p.path for p in got] == [want_path for want_path, _ in expected], got
    for problem, (_, want_text) in zip(got, expected, strict=True):
        assert want_text in problem.message, (problem, want_text)


# Files that cannot carry an "# expect:" line: (name, bytes, words of the one problem).
GENERATED = [
    ("huge-file", b"# padding\n" * 200_000 + MINIMAL.encode(), "larger than 1048576 bytes"),
    ("binary-garbage", bytes(range(256)) * 64, "not UTF-8"),
    ("utf16-with-bom", MINIMAL.encode("utf-16"), "not UTF-8"),
    ("nul-in-text", MINIMAL.encode().replace(b"local: {}", b"local: {}\x00"), "unacceptable character #x0000"),
    ("escape-sequences", MINIMAL.encode().replace(b"cpu: {options", b"\x1b[2Jcpu: {options"), "unacceptable"),
]


@pytest.mark.parametrize("name,data,expected", GENERATED, ids=[g[0] for g in GENERATED])
def test_generated_broken_file_is_one_clear_problem(tmp_path, name, data, expected):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load(path)
    (problem,) = caught.value.problems
    assert problem.path == "(top level)" and expected in problem.message, problem


def test_every_broken_file_is_refused_and_changes_nothing(tmp_path, reliability):
    """The whole corpus, counted for the reliability report: each file gives problems that name
    a key path and say what to do; no file is changed or created (the tag asking for a command
    did not run)."""
    import hashlib
    import time

    files = list(BROKEN)
    for name, data, _ in GENERATED:
        (tmp_path / f"{name}.yaml").write_bytes(data)
        files.append(tmp_path / f"{name}.yaml")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    listing = sorted(BROKEN[0].parent.iterdir()), sorted(tmp_path.iterdir())
    slowest = 0.0
    for path in files:
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            load(path)
        slowest = max(slowest, time.monotonic() - t0)
        assert caught.value.problems, path
        for problem in caught.value.problems:
            assert problem.path and len(problem.message) > 10, (path, problem)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == before
    assert (sorted(BROKEN[0].parent.iterdir()), sorted(tmp_path.iterdir())) == listing
    assert not Path("/tmp/jhub-cloud-config-pwned").exists()
    reliability.record("bad.config-files", f"{len(files)} broken configuration files refused with their "
                                           f"problems ({len(BROKEN)} in tests/data/config/broken, "
                                           f"{len(GENERATED)} generated: huge, binary, UTF-16, NUL, escapes); "
                                           f"slowest {slowest:.2f} s; nothing written")


def test_all_problems_come_at_once_sorted_with_lines():
    error = pytest.raises(ConfigError, load, ROOT / "tests/data/config/broken/many-problems.yaml")
    problems = error.value.problems
    assert len(problems) == 4
    lines = [p.line for p in problems]
    assert all(lines) and lines == sorted(lines)
    text = str(error.value)
    assert text.splitlines()[0].endswith("many-problems.yaml: 4 problems")
    assert "  profiles[0].backend: backend 'docker' is not enabled" in text


def test_index_ten_sorts_after_index_two():
    problems = [Problem(("profiles", 10, "name"), "x"), Problem(("profiles", 2, "name"), "x")]
    assert [p.path for p in ConfigError(problems).problems] == [
        "profiles[2].name",
        "profiles[10].name",
    ]


def test_key_that_is_not_a_word_is_quoted_in_the_path():
    assert Problem(("auth", "group_rename", "/cms/users"), "x").path == (
        'auth.group_rename["/cms/users"]'
    )


def test_duplicate_key_names_both_lines():
    text = MINIMAL.replace("  local: {}\n", "  local: {}\n  local: {}\n")
    (problem,) = problems_of(text)
    assert problem.path == "backends.local"
    assert "lines 8 and 9" in problem.message and problem.line == 9


def test_yaml_boolean_key_is_refused():
    text = MINIMAL.replace("  physics: {max_servers", "  on: {max_servers: 1, max_cpu: 1, "
                           "max_memory: 1G}\n  physics: {max_servers")
    (problem,) = problems_of(text)
    assert problem.path == "groups.on"
    assert 'quote it: "on"' in problem.message


def test_a_missing_file_is_one_clear_problem(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "(top level)" and "file not found" in problem.message


def test_mistake_in_one_choice_does_not_hide_another_choice():
    text = MINIMAL.replace("cpu: {options: [1, 2]}", "cpu: {options: [one, 2]}").replace(
        "default: 2G", "default: 3G"
    )
    assert [p.path for p in problems_of(text)] == [
        "profiles[0].choices.cpu.options[0]",
        "profiles[0].choices.memory.default",
    ]


# What a valid configuration gives -------------------------------------------------------------


def test_defaults_are_filled_in():
    cfg = loads(MINIMAL)
    assert cfg.hub["bind_url"] == "http://127.0.0.1:8000"
    assert cfg.hub["crypt_key"] == {"env": "JUPYTERHUB_CRYPT_KEY"}
    assert cfg.auth["pkce"] is True
    assert cfg.auth["scopes"] == ["openid", "profile", "email", "offline_access"]
    assert cfg.auth["groups_source"] == "access_token"
    assert cfg.auth["admin_groups"] == [] and cfg.admin_groups == ()
    assert cfg.groups["physics"].max_gpus == 0
    assert cfg.groups["physics"].max_memory_bytes == 4 * 1024**3
    profile = cfg.profile("cpu")
    assert profile.choices["image"].default == "a"  # the first option when none is given
    assert profile.choices["memory"].default == "2G"
    assert profile.choices["gpus"].options == (0,) and profile.choices["gpus"].default == 0
    assert "time_limit" not in profile.choices and profile.mounts == ()
    assert cfg.profile("nope") is None
    assert cfg.storage is None  # no storage section: servers start without sts-wire


def test_storage_defaults_are_filled_in_and_mounts_carry_their_group():
    cfg = load(ROOT / "config" / "examples" / "docker.yaml")
    assert cfg.storage == {
        "s3_endpoint": "https://s3.example.org", "sts_endpoint": None, "provider": "Minio",
        "role_arn": None, "region": "us-east-1", "audience": "jupyterhub", "ca_file": None,
        "session_seconds": None, "mount_roots": ["/s3"], "cache_mode": "writes",
        "rclone_flags": [], "allow_plain_http": [],
    }
    cfg.storage["mount_roots"].append("/etc")  # a copy
    assert cfg.storage["mount_roots"] == ["/s3"]
    full = load(ROOT / "config" / "examples" / "full.yaml")
    mounts = full.profile("docker-lab").mounts
    assert [(m.bucket, m.group) for m in mounts] == [("{username}", None), ("cms-data", "cms")]
    assert mounts[1].for_groups(("cms",)) and not mounts[1].for_groups(("physics",))


def test_storage_on_loopback_may_use_plain_http_and_a_listed_private_host_too():
    data = yaml.safe_load((ROOT / "config" / "examples" / "local.yaml").read_text())
    data["storage"]["s3_endpoint"] = "http://127.0.0.1:8333"
    assert from_dict(data).storage["s3_endpoint"] == "http://127.0.0.1:8333"
    data["storage"]["s3_endpoint"] = "http://s3.internal:8333"
    with pytest.raises(ConfigError, match="storage.s3_endpoint"):
        from_dict(data)
    data["storage"]["allow_plain_http"] = ["s3.internal"]
    assert from_dict(data).storage["allow_plain_http"] == ["s3.internal"]


def test_raw_sections_are_copies_the_caller_may_change():
    cfg = loads(MINIMAL)
    auth = cfg.auth
    auth["allowed_groups"].append("intruders")
    assert cfg.allowed_groups == ("physics",)
    raw = cfg.raw()
    raw["profiles"].clear()
    assert len(cfg.raw()["profiles"]) == 1
    with pytest.raises(TypeError):
        cfg.data["auth"] = {}


def test_from_dict_validates_and_leaves_the_input_alone():
    data = yaml.safe_load(MINIMAL)
    before = copy.deepcopy(data)
    cfg = from_dict(data)
    assert data == before and cfg.hub["data_dir"] == "/var/lib/jhub-cloud"
    data["groups"]["physics"]["max_cpu"] = -1
    with pytest.raises(ConfigError, match=r"groups.physics.max_cpu: must be at least 0"):
        from_dict(data)


def test_secret_refs_lists_every_secret_and_skips_a_public_client():
    cfg = loads(MINIMAL)
    assert cfg.secret_refs() == {
        "hub.crypt_key": {"env": "JUPYTERHUB_CRYPT_KEY"},
        "auth.client_secret": {"env": "JHUB_CLOUD_CLIENT_SECRET"},
    }
    public = loads(MINIMAL.replace("{env: JHUB_CLOUD_CLIENT_SECRET}", "null"))
    assert list(public.secret_refs()) == ["hub.crypt_key"]


# Memory sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n",
    [("512M", 512 * 1024**2), ("2G", 2 * 1024**3), ("2Gi", 2 * 1024**3), ("1.5G", 1536 * 1024**2),
     ("1T", 1024**4), ("64K", 65536)],
)
def test_memory_sizes_parse_to_bytes(text, n):
    assert parse_memory(text) == n


@pytest.mark.parametrize("junk", ["2GB", "2 G", "G", "-1G", "", "2g", 2, None, "1e3M"])
def test_memory_junk_is_refused_with_what_to_write(junk):
    with pytest.raises(ValueError, match="write a size such as 512M or 2G"):
        parse_memory(junk)


def test_memory_is_shown_in_the_largest_exact_unit():
    assert format_memory(32 * 1024**3) == "32G"
    assert format_memory(1536 * 1024**2) == "1536M"
    assert format_memory(1000) == "1000"


# Secrets --------------------------------------------------------------------------------------


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("JHC_TEST_SECRET", "s3cr3t")
    assert resolve_secret({"env": "JHC_TEST_SECRET"}, "auth.client_secret") == "s3cr3t"


def test_unset_environment_variable_names_the_key(monkeypatch):
    monkeypatch.delenv("JHC_TEST_SECRET", raising=False)
    with pytest.raises(SecretError) as caught:
        resolve_secret({"env": "JHC_TEST_SECRET"}, "auth.client_secret")
    (problem,) = caught.value.problems
    assert problem.path == "auth.client_secret"
    assert "environment variable JHC_TEST_SECRET is not set" in problem.message


def test_empty_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("JHC_TEST_SECRET", " ")
    with pytest.raises(SecretError, match="JHC_TEST_SECRET is empty"):
        resolve_secret({"env": "JHC_TEST_SECRET"}, "hub.crypt_key")


def test_private_secret_file_is_read_without_its_newline(tmp_path):
    path = tmp_path / "secret"
    path.write_text("s3cr3t\n")
    path.chmod(0o600)
    assert resolve_secret({"file": str(path)}, "auth.client_secret") == "s3cr3t"


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620])
def test_secret_file_open_to_others_is_refused_with_chmod_600(tmp_path, mode):
    path = tmp_path / "secret"
    path.write_text("s3cr3t")
    path.chmod(mode)
    with pytest.raises(SecretError) as caught:
        resolve_secret({"file": str(path)}, "auth.client_secret")
    (problem,) = caught.value.problems
    assert problem.path == "auth.client_secret"
    assert f"run: chmod 600 {path}" in problem.message and f"{mode:04o}" in problem.message


def test_missing_secret_file_names_the_key_and_path(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(SecretError, match=rf"hub.crypt_key: file {path} does not exist"):
        resolve_secret({"file": str(path)}, "hub.crypt_key")


def test_empty_secret_file_and_folder_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret({"file": str(empty)})
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(SecretError, match="not a regular file"):
        resolve_secret({"file": str(folder)})


@pytest.mark.parametrize("ref", [None, "s3cr3t", {}, {"env": "A", "file": "/b"}, {"vault": "x"}])
def test_anything_but_a_secret_reference_is_refused(ref):
    with pytest.raises(SecretError, match=r"write \{env: NAME\} or \{file: /path/to/secret\}"):
        resolve_secret(ref, "auth.client_secret")


def test_secret_problems_lists_each_unreadable_secret(monkeypatch, tmp_path):
    monkeypatch.delenv("JHUB_CLOUD_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "00" * 32)
    cfg = loads(MINIMAL)
    assert [p.path for p in secret_problems(cfg)] == ["auth.client_secret"]
    monkeypatch.setenv("JHUB_CLOUD_CLIENT_SECRET", "x")
    assert secret_problems(cfg) == []


# The schema and the generated reference -------------------------------------------------------


def _walk(node: dict, path: str):
    """Every (path, key schema) pair: properties, named entries and list items."""
    node = resolve(node)
    for key, sub in node.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from _walk(sub, f"{path}.{key}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield f"{path}.<name>", extra
        yield from _walk(extra, f"{path}.<name>")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_every_key_in_the_schema_has_a_description():
    full = schema()
    keys = list(_walk(full, ""))
    assert len(keys) > 60
    # A named entry holding plain text (group_rename, environment) is described by its parent.
    missing = [
        path
        for path, sub in keys
        if not resolve(sub).get("description")
        and not (path.endswith("<name>") and resolve(sub).get("type") != "object")
    ]
    assert missing == []
    for name, definition in full["$defs"].items():
        assert definition.get("title") and definition.get("description"), name


def test_every_pattern_has_a_hint_saying_what_to_write():
    def patterns(node, path="$"):
        if isinstance(node, dict):
            if "pattern" in node and path.split(".")[-1] != "propertyNames":
                yield path, node
            if "propertyNames" in node:
                yield path + ".propertyNames", node["propertyNames"]
            for key, value in node.items():
                yield from patterns(value, f"{path}.{key}")

    found = list(patterns(schema()))
    assert len(found) > 10
    assert [p for p, node in found if "pattern" in node and not node.get("x-hint")] == []


def test_unknown_keys_are_errors_everywhere():
    def objects(node, path="$"):
        if isinstance(node, dict):
            # if/then only add conditions to their object, which is closed itself.
            conditional = path.endswith((".if", ".then", ".else"))
            if "properties" in node and "$ref" not in node and path != "$.$defs.choice" \
                    and not conditional:
                yield path, node
            for key, value in node.items():
                yield from objects(value, f"{path}.{key}")

    open_objects = [p for p, node in objects(schema()) if node.get("additionalProperties") is not
                    False and not p.endswith((".image", ".cpu", ".memory", ".gpus", ".gpu_model",
                                              ".time_limit"))]
    assert open_objects == []


def test_committed_reference_is_up_to_date():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        "docs/configuration.md is stale: run `jhub-cloud docs-config -o docs/configuration.md`"
    )


def test_reference_documents_every_key_and_the_group_rule():
    text = reference_markdown()
    for path, _ in _walk(schema(), ""):
        key = path.rsplit(".", 1)[-1].removesuffix("[]")
        if key not in ("<name>", "options", "default"):
            assert f"| `{key}` |" in text, path
    assert "the largest value over the user's groups that grant that" in text
    assert "the largest value over all their" in text
    assert "## `profiles[].choices`" in text and "### Secret reference" in text
