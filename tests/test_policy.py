"""The policy: what each test user may start, and which spawn requests are allowed or refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jhub_cloud.config import from_dict, load
from jhub_cloud.policy import (
    Allowed,
    Refused,
    Resources,
    allowed_profiles,
    decide,
    explain,
    is_admin,
    review_profiles,
    user_groups,
    user_limits,
)

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "config" / "examples" / "full.yaml"
G = 1024**3
USERS = {
    "alice": ["physics", "cms"],
    "bob": ["physics"],
    "carol": ["admins", "physics"],
    "dave": ["visitors"],  # a group the hub does not allow
}


@pytest.fixture(scope="module")
def cfg():
    return load(FULL)


def changed(edit) -> object:
    """The full example after `edit(data)`, validated again."""
    data = yaml.safe_load(FULL.read_text())
    edit(data)
    return from_dict(data)


def profile_data(data: dict, name: str) -> dict:
    return next(p for p in data["profiles"] if p["name"] == name)


# Who gets what --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, names",
    [
        ("alice", ["cpu", "docker-lab", "gpu", "batch"]),
        ("bob", ["cpu", "docker-lab"]),
        ("carol", ["cpu", "docker-lab", "gpu", "batch", "admin-shell"]),
        ("dave", []),
    ],
)
def test_profiles_offered_to_each_test_user(cfg, user, names):
    assert [o.name for o in allowed_profiles(cfg, USERS[user])] == names


@pytest.mark.parametrize(
    "user, values, source",
    [
        ("alice", (2, 8, 32 * G, 1), "cms"),
        ("bob", (1, 4, 8 * G, 0), "physics"),
        ("carol", (3, 16, 64 * G, 2), "admins"),
    ],
)
def test_limits_are_the_largest_over_the_users_groups(cfg, user, values, source):
    limits = user_limits(cfg, USERS[user])
    assert (limits.max_servers, limits.max_cpu, limits.max_memory_bytes, limits.max_gpus) == values
    assert set(limits.source.values()) == {source}


def test_a_user_with_no_allowed_group_gets_nothing(cfg):
    assert user_groups(cfg, USERS["dave"]) == ()
    assert user_limits(cfg, USERS["dave"]) is None
    assert allowed_profiles(cfg, []) == []
    assert not is_admin(cfg, USERS["dave"])


def test_groups_not_allowed_are_ignored_next_to_allowed_ones(cfg):
    assert user_groups(cfg, ["visitors", "physics", "physics"]) == ("physics",)
    assert allowed_profiles(cfg, ["visitors", "physics"]) == allowed_profiles(cfg, ["physics"])


def test_resolution_does_not_depend_on_the_order_of_groups(cfg):
    forward, backward = ["physics", "cms", "admins"], ["admins", "cms", "physics"]
    assert allowed_profiles(cfg, forward) == allowed_profiles(cfg, backward)
    assert user_limits(cfg, forward) == user_limits(cfg, backward)
    assert explain(cfg, forward) == explain(cfg, backward)


def test_each_limit_may_come_from_a_different_group():
    def edit(data):
        data["groups"]["physics"]["max_memory"] = "128G"  # physics now gives the most memory

    cfg = changed(edit)
    limits = user_limits(cfg, USERS["alice"])
    assert limits.max_memory_bytes == 128 * G and limits.source["max_memory"] == "physics"
    assert limits.source["max_cpu"] == "cms" and limits.max_cpu == 8


def test_equal_limits_are_credited_to_the_first_group_in_sorted_order():
    def edit(data):
        data["groups"]["physics"]["max_cpu"] = 8  # ties with cms

    cfg = changed(edit)
    for groups in (["physics", "cms"], ["cms", "physics"]):
        assert user_limits(cfg, groups).source["max_cpu"] == "cms"


def test_admins_come_from_admin_groups(cfg):
    assert is_admin(cfg, USERS["carol"])
    assert not is_admin(cfg, USERS["alice"])


def test_groups_given_as_one_string_are_refused(cfg):
    with pytest.raises(TypeError, match="list of group names"):
        allowed_profiles(cfg, "physics,cms")


def test_offer_credits_each_granting_group(cfg):
    offers = {o.name: o for o in allowed_profiles(cfg, USERS["alice"])}
    assert offers["cpu"].granted_by == ("cms", "physics")
    assert offers["gpu"].granted_by == ("cms",)


# A profile is cut by the groups that grant it, not by the user's other groups ------------------


def two_groups(**extra_profiles) -> object:
    """Group a: 64 CPUs, no GPU; group b: 1 CPU, 4 GPUs (the case of issue 7); group c (staff)
    also grants the GPU profile, so its 64-CPU option is valid configuration."""
    def profile(name, groups, gpus):
        return {
            "name": name, "display_name": name, "backend": "local", "groups": groups,
            "choices": {"image": {"options": ["lab"]}, "cpu": {"options": [1, 8, 64]},
                        "memory": {"options": ["1G", "64G"], "default": "64G"},
                        "gpus": {"options": gpus}},
        }
    return from_dict({
        "auth": {"issuer": "https://idp.example.org/", "client_id": "hub",
                 "allowed_groups": ["a", "b", "c"]},
        "backends": {"local": {}},
        "groups": {"a": {"max_servers": 4, "max_cpu": 64, "max_memory": "256G"},
                   "b": {"max_servers": 1, "max_cpu": 1, "max_memory": "8G", "max_gpus": 4},
                   "c": {"max_servers": 1, "max_cpu": 64, "max_memory": "64G", "max_gpus": 4}},
        "profiles": [profile("big", ["a"], [0]), profile("gpu", ["b", "c"], [1, 4]),
                     profile("both", ["a", "b"], [0, 4]),
                     *[profile(n, g, [0]) for n, g in extra_profiles.items()]],
    })


def test_the_gpu_profile_of_one_group_gets_that_groups_cpu_limit_not_anothers():
    cfg = two_groups()
    offers = {o.name: o for o in allowed_profiles(cfg, ["a", "b"])}
    assert offers["gpu"].choices["cpu"].options == (1,)
    assert offers["gpu"].choices["memory"] == type(offers["gpu"].choices["memory"])(("1G",), "1G")
    assert offers["gpu"].choices["gpus"].options == (1, 4)
    assert offers["big"].choices["cpu"].options == (1, 8, 64)
    assert offers["big"].choices["gpus"].options == (0,)
    refused = decide(cfg, ["a", "b"], {"profile": "gpu", "cpu": 64, "gpus": 4})
    assert isinstance(refused, Refused) and refused.field == "cpu"
    assert refused.reason == ("cpu 64 is above your max_cpu of 1 for profile gpu (from group b, "
                              "which grants it); choose at most that")
    allowed = decide(cfg, ["a", "b"], {"profile": "gpu", "cpu": 1, "gpus": 4})
    assert isinstance(allowed, Allowed)
    assert (allowed.resources.cpu, allowed.resources.gpus) == (1, 4)
    assert allowed.resources.memory_bytes == G  # the default 64G is cut to b's 8G: 1G is left


def test_a_profile_granted_by_several_groups_takes_each_limit_from_the_largest_of_them():
    cfg = two_groups()
    both = {o.name: o for o in allowed_profiles(cfg, ["a", "b"])}["both"]
    assert both.granted_by == ("a", "b")
    assert both.limits_dict() == {
        "max_cpu": {"value": 64, "from": "a"},
        "max_memory": {"value": "256G", "from": "a"},
        "max_gpus": {"value": 4, "from": "b"},
    }
    only_a = {o.name: o for o in allowed_profiles(cfg, ["a"])}["both"]
    assert only_a.choices["gpus"].options == (0,) and only_a.limits.source["max_gpus"] == "a"


def test_one_server_must_fit_one_granting_group_not_the_best_of_each():
    # "both" is granted by a (64 CPUs, no GPU) and b (1 CPU, 8G, 4 GPUs): each choice alone may
    # reach the larger limit, but one server is a whole that one group must allow.
    cfg = two_groups()
    mixed = decide(cfg, ["a", "b"], {"profile": "both", "cpu": 64, "gpus": 4})
    assert isinstance(mixed, Refused) and mixed.field == "cpu"
    assert "no single group granting profile both allows 64 CPUs, 64G memory and 4 GPUs" in mixed.reason
    assert "a: 64 CPUs, 256G memory, 0 GPUs; b: 1 CPUs, 8G memory, 4 GPUs" in mixed.reason
    assert isinstance(decide(cfg, ["a", "b"], {"profile": "both", "cpu": 64, "gpus": 0}), Allowed)
    gpu_sized = {"profile": "both", "cpu": 1, "memory": "1G", "gpus": 4}
    assert isinstance(decide(cfg, ["a", "b"], gpu_sized), Allowed)
    too_much_memory = decide(cfg, ["a", "b"], {**gpu_sized, "memory": "64G"})
    assert isinstance(too_much_memory, Refused) and "no single group" in too_much_memory.reason


def test_totals_over_running_servers_still_come_from_all_the_users_groups():
    cfg = two_groups()
    totals = user_limits(cfg, ["a", "b"])
    assert (totals.max_servers, totals.max_cpu, totals.max_gpus) == (4, 64, 4)
    assert totals.source == {"max_servers": "a", "max_cpu": "a", "max_memory": "a",
                             "max_gpus": "b"}
    # b alone allows 1 server, but a's max_servers (4) counts for the total: a GPU server may
    # run next to a big one, and the GPUs add up against b's 4.
    big = decide(cfg, ["a", "b"], {"profile": "big", "cpu": 8}).resources
    gpu = decide(cfg, ["a", "b"], {"profile": "gpu", "gpus": 4}, [big])
    assert isinstance(gpu, Allowed)
    more = decide(cfg, ["a", "b"], {"profile": "gpu", "gpus": 1}, [big, gpu.resources])
    assert isinstance(more, Refused) and more.field == "gpus"
    assert "above your max_gpus of 4 (from group b)" in more.reason
    cpus = decide(cfg, ["a", "b"], {"profile": "big", "cpu": 64}, [big])
    assert isinstance(cpus, Refused) and "would be 72, above your max_cpu of 64" in cpus.reason


def test_explain_names_the_group_of_each_limit_of_each_profile():
    cfg = two_groups()
    result = explain(cfg, ["a", "b"])
    per_profile = {p["name"]: {k: v["from"] for k, v in p["limits"].items()}
                   for p in result["profiles"]}
    assert per_profile == {
        "big": {"max_cpu": "a", "max_memory": "a", "max_gpus": "a"},
        "gpu": {"max_cpu": "b", "max_memory": "b", "max_gpus": "b"},
        "both": {"max_cpu": "a", "max_memory": "a", "max_gpus": "b"},
    }
    gpu = next(p for p in result["profiles"] if p["name"] == "gpu")
    assert gpu["limits"]["max_cpu"] == {"value": 1, "from": "b"}
    staff = next(p for p in explain(cfg, ["a", "b", "c"])["profiles"] if p["name"] == "gpu")
    assert staff["limits"]["max_cpu"] == {"value": 64, "from": "c"}
    assert staff["choices"]["cpu"]["options"] == [1, 8, 64]
    assert "groups that grant that profile" in result["rule"]


def test_a_profile_the_granting_groups_cannot_fit_is_unavailable_even_if_another_group_could():
    cfg = two_groups()
    # Of the user's groups only b grants "gpu"; make its smallest memory (1G) too big for b.
    data = cfg.raw()
    data["groups"]["b"]["max_memory"] = "512M"
    cfg = from_dict(data)
    offers, unavailable = review_profiles(cfg, ["a", "b"])
    assert "gpu" not in [o.name for o in offers]
    assert unavailable["gpu"] == ("its smallest memory (1G) is above your max_memory of 512M "
                                  "(from group b, which grants it)")


# Choices cut to the user's limits -------------------------------------------------------------


def test_options_above_the_users_limits_are_not_offered(cfg):
    bob = {o.name: o for o in allowed_profiles(cfg, USERS["bob"])}["docker-lab"]
    assert bob.choices["cpu"].options == (0.5, 1, 2, 4)
    assert bob.choices["memory"].options == ("1G", "2G", "4G", "8G")
    carol = {o.name: o for o in allowed_profiles(cfg, USERS["carol"])}["docker-lab"]
    assert carol.choices["cpu"].options == (0.5, 1, 2, 4, 8)
    alice = {o.name: o for o in allowed_profiles(cfg, USERS["alice"])}["batch"]
    assert alice.choices["memory"].options == ("4G", "16G")
    assert alice.choices["gpus"].options == (0, 1)


def test_a_default_above_the_limits_becomes_the_largest_option_allowed():
    def edit(data):
        profile_data(data, "docker-lab")["choices"]["cpu"]["default"] = 8

    offers = {o.name: o for o in allowed_profiles(changed(edit), USERS["bob"])}
    assert offers["docker-lab"].choices["cpu"].default == 4


def test_a_profile_whose_smallest_choice_is_above_the_limits_is_not_offered_and_says_why():
    def edit(data):
        profile_data(data, "gpu")["groups"] = ["physics", "cms", "admins"]

    cfg = changed(edit)
    offers, unavailable = review_profiles(cfg, USERS["bob"])
    assert "gpu" not in [o.name for o in offers]
    assert unavailable == {
        "gpu": "its smallest gpus (1) is above your max_gpus of 0 (from group physics, which "
               "grants it)"
    }
    refused = decide(cfg, USERS["bob"], {"profile": "gpu"})
    assert isinstance(refused, Refused)
    assert refused.reason == f"profile gpu is not available to you: {unavailable['gpu']}"


def test_no_gpu_model_is_offered_when_no_gpu_is():
    def edit(data):
        profile_data(data, "batch")["groups"] = ["physics", "cms", "admins"]

    cfg = changed(edit)
    bob = {o.name: o for o in allowed_profiles(cfg, USERS["bob"])}["batch"]
    assert bob.choices["gpus"].options == (0,) and "gpu_model" not in bob.choices
    refused = decide(cfg, USERS["bob"], {"profile": "batch", "gpu_model": "a100"})
    assert isinstance(refused, Refused) and refused.field == "gpu_model"


# decide: allowed, with exactly which resources ------------------------------------------------


def test_empty_form_gives_the_first_profile_with_its_defaults(cfg):
    decision = decide(cfg, USERS["bob"], {})
    assert decision == Allowed(
        profile="cpu",
        resources=Resources(
            backend="local",
            image="jhub-cloud/lab:latest",
            cpu=1,
            memory_bytes=2 * G,
            gpus=0,
            gpu_model=None,
            time_limit=None,
            mounts=cfg.profile("cpu").mounts,
            environment={},
        ),
    )
    assert decision.allowed


def test_form_values_as_jupyterhub_posts_them(cfg):
    form = {"profile": ["gpu"], "cpu": ["8"], "memory": ["32G"], "gpus": ["1"],
            "gpu_model": ["a100"], "_xsrf": ["token"]}
    decision = decide(cfg, USERS["alice"], form)
    assert isinstance(decision, Allowed)
    r = decision.resources
    assert (r.backend, r.image, r.cpu, r.memory_bytes, r.gpus, r.gpu_model) == (
        "kubernetes", "jhub-cloud/lab-gpu:latest", 8, 32 * G, 1, "a100")
    assert r.mounts[0].expand("alice").path == "/s3/alice"


def test_batch_profile_gets_its_time_limit_and_no_gpu_model_without_gpus(cfg):
    decision = decide(cfg, USERS["alice"], {"profile": "batch", "time_limit": "08:00:00"})
    r = decision.resources
    assert (r.backend, r.cpu, r.memory_bytes, r.gpus, r.gpu_model, r.time_limit) == (
        "slurm", 4, 16 * G, 0, None, "08:00:00")
    with_gpu = decide(cfg, USERS["alice"], {"profile": "batch", "gpus": 1}).resources
    assert (with_gpu.gpus, with_gpu.gpu_model) == (1, "a100")


def test_environment_and_read_only_mounts_come_from_the_profile(cfg):
    r = decide(cfg, USERS["alice"], {"profile": "docker-lab", "cpu": 0.5}).resources
    assert r.cpu == 0.5 and dict(r.environment) == {"JHUB_CLOUD_SITE": "example"}
    assert [(m.bucket, m.read_only) for m in r.mounts] == [("{username}", False), ("cms-data", True)]


def test_a_group_bucket_is_mounted_only_for_members_of_its_group(cfg):
    # cms-data is for group cms: bob (physics only) does not get it, on the page or at spawn.
    bob = decide(cfg, USERS["bob"], {"profile": "docker-lab"}).resources
    assert [m.bucket for m in bob.mounts] == ["{username}"]
    offer = {o.name: o for o in allowed_profiles(cfg, USERS["bob"])}["docker-lab"]
    assert [m.bucket for m in offer.mounts] == ["{username}"]
    alice = {o.name: o for o in allowed_profiles(cfg, USERS["alice"])}["docker-lab"]
    assert [(m.bucket, m.group) for m in alice.mounts] == [("{username}", None), ("cms-data", "cms")]


# decide: refused, and why ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "user, form, field, reason",
    [
        ("dave", {}, None, "none of your groups (visitors) may use this hub"),
        ("bob", {"profile": "nope"}, "profile", "unknown profile \"nope\""),
        ("bob", {"profile": "gpu"}, "profile",
         "profile gpu is not for your groups (physics); it is for: cms, admins"),
        ("alice", {"profile": "admin-shell"}, "profile", "not for your groups (cms, physics)"),
        ("bob", {"profile": "cpu", "cpu": 3}, "cpu",
         "cpu 3 is not a choice of profile cpu (choices: 1, 2, 4)"),
        ("bob", {"profile": "cpu", "image": "evil/miner:latest"}, "image",
         "image \"evil/miner:latest\" is not a choice of profile cpu"),
        ("bob", {"profile": "cpu", "memory": "2048M"}, "memory", "is not a choice"),
        ("bob", {"profile": "docker-lab", "cpu": 8}, "cpu",
         "cpu 8 is above your max_cpu of 4 for profile docker-lab (from group physics, which "
         "grants it)"),
        ("bob", {"profile": "docker-lab", "memory": "16G"}, "memory",
         "memory 16G is above your max_memory of 8G for profile docker-lab (from group physics"),
        ("alice", {"profile": "gpu", "gpus": 2}, "gpus",
         "gpus 2 is above your max_gpus of 1 for profile gpu (from group cms, which grants it)"),
        # carol's totals are admins' (16 CPUs), but only physics grants her the cpu profile.
        ("carol", {"profile": "cpu", "memory": "8G", "cpu": 4}, None, None),
        ("alice", {"profile": "gpu", "gpu_model": "h100"}, "gpu_model", "is not a choice"),
        ("bob", {"profile": "cpu", "time_limit": "01:00:00"}, "time_limit",
         "profile cpu has no time_limit choice"),
        ("alice", {"profile": "batch", "time_limit": "99:00:00"}, "time_limit", "not a choice"),
    ],
)
def test_requests_outside_the_policy_are_refused(cfg, user, form, field, reason):
    decision = decide(cfg, USERS[user], form)
    if reason is None:  # the edge case just inside
        assert isinstance(decision, Allowed), decision
        return
    assert isinstance(decision, Refused), decision
    assert reason in decision.reason
    assert decision.field == field
    assert not decision.allowed


@pytest.mark.parametrize(
    "field, value",
    [
        ("cpu", "two"), ("cpu", [1, 2]), ("cpu", True), ("cpu", None), ("cpu", {"n": 1}),
        ("cpu", "nan"), ("cpu", "inf"), ("cpu", float("nan")), ("gpus", 0.5), ("gpus", "0.5"),
        ("image", 5), ("memory", 2), ("profile", 3), ("profile", []), ("time_limit", ["a", "b"]),
    ],
)
def test_values_of_the_wrong_type_are_refused(cfg, field, value):
    form = {"profile": "batch", field: value}
    decision = decide(cfg, USERS["alice"], form)
    assert isinstance(decision, Refused), decision
    assert decision.field == field


def test_unknown_form_fields_are_refused(cfg):
    decision = decide(cfg, USERS["alice"], {"profile": "cpu", "privileged": "true"})
    assert isinstance(decision, Refused)
    assert 'unknown form field "privileged"' in decision.reason


def test_a_form_that_is_not_a_mapping_is_refused(cfg):
    assert isinstance(decide(cfg, USERS["alice"], ["profile", "cpu"]), Refused)


# decide: limits count the servers already running ---------------------------------------------


def running(cfg, user, *forms) -> list[Resources]:
    out = []
    for form in forms:
        decision = decide(cfg, USERS[user], form)
        assert isinstance(decision, Allowed), decision
        out.append(decision.resources)
    return out


def test_servers_at_once(cfg):
    one = running(cfg, "bob", {"profile": "cpu"})
    refused = decide(cfg, USERS["bob"], {"profile": "cpu"}, one)
    assert isinstance(refused, Refused)
    assert refused.reason.startswith("you have 1 server(s) running and may run 1 at once")
    assert "(max_servers, from group physics)" in refused.reason
    assert isinstance(decide(cfg, USERS["alice"], {"profile": "cpu"}, one), Allowed)
    two = one * 2
    assert isinstance(decide(cfg, USERS["alice"], {"profile": "cpu"}, two), Refused)


def test_total_cpu_memory_and_gpus_of_running_servers(cfg):
    busy = running(cfg, "alice", {"profile": "docker-lab", "cpu": 4, "memory": "16G"})
    cpu = decide(cfg, USERS["alice"], {"profile": "gpu", "cpu": 8}, busy)
    assert isinstance(cpu, Refused) and cpu.field == "cpu"
    assert cpu.reason.startswith("this server's CPUs (8) with your running servers' (4) would be "
                                 "12, above your max_cpu of 8 (from group cms)")
    assert isinstance(decide(cfg, USERS["alice"], {"profile": "gpu", "cpu": 4}, busy), Allowed)
    memory = decide(cfg, USERS["alice"], {"profile": "gpu", "cpu": 2, "memory": "32G"}, busy)
    assert isinstance(memory, Refused) and memory.field == "memory"
    assert "would be 48G, above your max_memory of 32G" in memory.reason
    on_gpu = running(cfg, "alice", {"profile": "gpu", "cpu": 2, "memory": "8G"})
    gpus = decide(cfg, USERS["alice"], {"profile": "batch", "cpu": 1, "memory": "4G", "gpus": 1},
                  on_gpu)
    assert isinstance(gpus, Refused) and gpus.field == "gpus"
    assert "above your max_gpus of 1 (from group cms)" in gpus.reason


def test_fractional_cpus_add_up_exactly():
    def edit(data):
        data["groups"]["physics"].update(max_servers=3, max_cpu=0.3)
        profile_data(data, "docker-lab")["choices"]["cpu"] = {"options": [0.1, 0.2]}

    cfg = changed(edit)
    busy = running(cfg, "bob", {"profile": "docker-lab", "cpu": 0.1})
    assert isinstance(decide(cfg, USERS["bob"], {"profile": "docker-lab", "cpu": 0.2}, busy),
                      Allowed)


# What is offered and what is enforced agree ---------------------------------------------------


@pytest.mark.parametrize("user", sorted(USERS))
def test_every_option_is_allowed_exactly_when_it_is_offered(cfg, user):
    offers = {o.name: o for o in allowed_profiles(cfg, USERS[user])}
    seen = set()
    for profile in cfg.profiles:
        offer = offers.get(profile.name)
        for field, choice in profile.choices.items():
            for option in choice.options:
                form = {"profile": profile.name, field: option}
                if field == "gpu_model" and offer:  # a model needs a GPU: ask for the most offered
                    form["gpus"] = max(offer.choices["gpus"].options)
                offered = (
                    offer is not None
                    and field in offer.choices
                    and option in offer.choices[field].options
                )
                decision = decide(cfg, USERS[user], form)
                assert decision.allowed == offered, (user, form, decision)
                seen.add(offered)
    # Carol (admins) is offered every option; the others both ways.
    assert seen == {"carol": {True}, "dave": {False}}.get(user, {True, False})


# explain agrees with the policy ---------------------------------------------------------------


@pytest.mark.parametrize("user", sorted(USERS))
def test_explain_matches_the_policy(cfg, user):
    groups = USERS[user]
    result = explain(cfg, groups)
    assert result["profiles"] == [o.to_dict() for o in allowed_profiles(cfg, groups)]
    limits = user_limits(cfg, groups)
    if limits is None:
        assert result["limits"] == {}
    else:
        for name, entry in result["limits"].items():
            assert entry == {"value": limits.shown(name), "from": limits.source[name]}
    assert result["admin"]["value"] == is_admin(cfg, groups)
    assert result["can_log_in"] == bool(user_groups(cfg, groups))


def test_explain_for_the_test_users(cfg):
    alice = explain(cfg, USERS["alice"])
    assert alice["limits"] == {
        "max_servers": {"value": 2, "from": "cms"},
        "max_cpu": {"value": 8, "from": "cms"},
        "max_memory": {"value": "32G", "from": "cms"},
        "max_gpus": {"value": 1, "from": "cms"},
    }
    assert [(p["name"], p["from"]) for p in alice["profiles"]] == [
        ("cpu", "cms"), ("docker-lab", "cms"), ("gpu", "cms"), ("batch", "cms")]
    carol = explain(cfg, USERS["carol"])
    assert carol["admin"] == {"value": True, "from": "admins"}
    assert ("cpu", "physics") in [(p["name"], p["from"]) for p in carol["profiles"]]
    dave = explain(cfg, USERS["dave"])
    assert dave["can_log_in"] is False and dave["ignored_groups"] == ["visitors"]
    assert dave["profiles"] == [] and dave["limits"] == {}
