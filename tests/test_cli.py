"""`jhub-cloud check`, `explain` and `docs-config`: output for people, JSON for scripts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jhub_cloud.cli import main
from jhub_cloud.config import ConfigError, load, reference_markdown
from jhub_cloud.policy import allowed_profiles, explain, user_limits

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "config" / "examples" / "full.yaml"
MANY = ROOT / "tests" / "data" / "config" / "broken" / "many-problems.yaml"
SCRIPT = Path(sys.executable).with_name("jhub-cloud")
USERS = {
    "alice": "physics,cms",
    "bob": "physics",
    "carol": "admins,physics",
    "dave": "visitors",
}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# check ----------------------------------------------------------------------------------------


def test_check_valid_file(capsys):
    code, out, _ = run(capsys, "check", str(FULL))
    assert code == 0
    assert out.strip() == (
        f"{FULL}: OK (5 profiles, 3 groups; backends: local, docker, slurm, kubernetes)"
    )


def test_check_lists_every_problem_and_fails(capsys):
    code, out, _ = run(capsys, "check", str(MANY))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{MANY}: 4 problems"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "auth.client_id",
        "groups.physics.max_cpu",
        "profiles[0].backend",
        "profiles[1].choices.cpu.default",
    ]


def test_check_json_is_the_loaders_problems(capsys):
    code, out, _ = run(capsys, "check", str(MANY), "--json")
    assert code == 1
    result = json.loads(out)
    with pytest.raises(ConfigError) as caught:
        load(MANY)
    assert result == {
        "ok": False,
        "source": str(MANY),
        "problems": [p.to_dict() for p in caught.value.problems],
    }
    code, out, _ = run(capsys, "check", str(FULL), "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "source": str(FULL), "problems": []}


def test_check_missing_file(capsys, tmp_path):
    code, out, _ = run(capsys, "check", str(tmp_path / "absent.yaml"))
    assert code == 1 and "file not found" in out


def test_check_secrets_reads_each_secret(capsys, tmp_path, monkeypatch):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(FULL.read_text().replace("/etc/jhub-cloud/client-secret", str(secret)))
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "00" * 32)
    assert run(capsys, "check", "--secrets", str(config))[0] == 0
    # Without --secrets the file is only validated: secrets need not be present.
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY")
    assert run(capsys, "check", str(config))[0] == 0
    secret.chmod(0o644)
    code, out, _ = run(capsys, "check", "--secrets", str(config))
    assert code == 1
    assert f"auth.client_secret: file {secret} is open to group or others" in out
    assert f"run: chmod 600 {secret}" in out
    assert "hub.crypt_key: environment variable JUPYTERHUB_CRYPT_KEY is not set" in out


# explain --------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", sorted(USERS))
def test_explain_json_matches_the_policy(capsys, user):
    groups = USERS[user].split(",")
    code, out, _ = run(capsys, "explain", str(FULL), "--groups", USERS[user], "--json")
    assert code == 0
    result = json.loads(out)
    cfg = load(FULL)
    assert result == json.loads(json.dumps(explain(cfg, groups)))
    assert [p["name"] for p in result["profiles"]] == [
        o.name for o in allowed_profiles(cfg, groups)
    ]
    limits = user_limits(cfg, groups)
    assert {k: v["from"] for k, v in result["limits"].items()} == (
        dict(limits.source) if limits else {}
    )


def test_explain_for_people_names_the_group_of_each_line(capsys):
    code, out, _ = run(capsys, "explain", str(FULL), "--groups", USERS["alice"])
    assert code == 0
    assert "  max_cpu      8      from cms" in out
    assert "  max_memory   32G    from cms" in out
    assert "  cpu: CPU notebook (backend local, from cms; also physics)" in out
    assert "  gpu: GPU notebook (backend kubernetes, from cms)" in out
    assert "      memory      4G, 16G*" in out  # batch: 64G is above alice's 32G
    assert "Admin: no" in out
    assert "admin-shell" not in out
    assert "Totals, all running servers together" in out


def test_explain_for_people_shows_each_profiles_limits_from_the_groups_granting_it(capsys):
    _, carol, _ = run(capsys, "explain", str(FULL), "--groups", USERS["carol"])
    assert "  max_cpu      16     from admins" in carol  # her totals
    # Only physics grants her the cpu profile, so its per-server limits are physics's.
    cpu = carol.split("  cpu: CPU notebook")[1].split("\n  docker-lab:")[0]
    assert "      limits      max_cpu 4 (physics), max_memory 8G (physics), max_gpus 0 (physics)" \
        in cpu
    gpu = carol.split("  gpu: GPU notebook")[1]
    assert "      limits      max_cpu 16 (admins), max_memory 64G (admins), max_gpus 2 (admins)" \
        in gpu
    assert "groups that grant that profile" in carol


def test_explain_admin_and_a_user_who_gets_nothing(capsys):
    _, carol, _ = run(capsys, "explain", str(FULL), "--groups", USERS["carol"])
    assert "Admin: yes, from admins" in carol and "admin-shell: Admin notebook" in carol
    _, dave, _ = run(capsys, "explain", str(FULL), "--groups", USERS["dave"])
    assert "ignored (not in auth.allowed_groups): visitors" in dave
    assert "Can log in: no" in dave and "Profiles" not in dave
    _, nobody, _ = run(capsys, "explain", str(FULL), "--groups", "")
    assert nobody.startswith("Groups: none\nCan log in: no")


def test_explain_a_broken_file_shows_its_problems(capsys):
    code, out, err = run(capsys, "explain", str(MANY), "--groups", "physics")
    assert code == 1 and out == ""
    assert "profiles[0].backend" in err and "jhub-cloud check" in err


# docs-config ----------------------------------------------------------------------------------


def test_docs_config_prints_the_reference(capsys, tmp_path):
    code, out, _ = run(capsys, "docs-config")
    assert code == 0 and out == reference_markdown()
    target = tmp_path / "configuration.md"
    assert run(capsys, "docs-config", "-o", str(target))[0] == 0
    assert target.read_text() == reference_markdown()


# the installed command ------------------------------------------------------------------------


def test_console_script_exit_codes():
    good = subprocess.run([str(SCRIPT), "check", str(FULL)], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([str(SCRIPT), "check", str(MANY)], capture_output=True, text=True)
    assert bad.returncode == 1 and "4 problems" in bad.stdout
    usage = subprocess.run([str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "check" in usage.stderr
