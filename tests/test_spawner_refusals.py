"""Malicious and malformed spawn requests (the page's form, `?opt-` queries and the REST API's
JSON user_options) are refused with a message naming the problem, and nothing is started:
no process, no cgroup, not even the spawner's start (the hub log has no "Spawning")."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.testbed.cloudhub import CGROUP_ROOT, CloudHub, singleuser_processes

P = "physics-cpu--"  # field prefix of the physics profile on the page

# (case id, user, form fields as (name, value) pairs, expected words in the message)
FORM_CASES = [
    ("profile-of-another-group", "bob", [("profile", "cms-cpu")], "not offered to you"),
    ("unknown-profile", "alice", [("profile", "gpu-xl")], "not offered to you"),
    ("empty-profile", "alice", [("profile", "")], "not offered to you"),
    ("no-profile", "alice", [(P + "cpu", "1")], "choose a profile"),
    ("cpu-not-offered", "alice", [("profile", "physics-cpu"), (P + "cpu", "8")], "not a choice"),
    ("cpu-negative", "alice", [("profile", "physics-cpu"), (P + "cpu", "-1")], "not a choice"),
    ("cpu-huge", "alice", [("profile", "physics-cpu"), (P + "cpu", "1e308")], "not a choice"),
    ("cpu-overflow", "alice", [("profile", "physics-cpu"), (P + "cpu", "9" * 400)], "too long"),
    ("cpu-inf", "alice", [("profile", "physics-cpu"), (P + "cpu", "inf")], "must be a number"),
    ("cpu-nan", "alice", [("profile", "physics-cpu"), (P + "cpu", "nan")], "must be a number"),
    ("cpu-words", "alice", [("profile", "physics-cpu"), (P + "cpu", "two")], "must be a number"),
    ("cpu-empty", "alice", [("profile", "physics-cpu"), (P + "cpu", "")], "must be a number"),
    ("cpu-hex", "alice", [("profile", "physics-cpu"), (P + "cpu", "0x10")], "must be a number"),
    ("memory-not-offered", "bob", [("profile", "physics-cpu"), (P + "memory", "8G")], "not a choice"),
    ("memory-newline-sbatch", "alice", [("profile", "physics-cpu"), (P + "memory", "2G\n#SBATCH --mem=1T")],
     "line break"),
    ("memory-sbatch-comment", "alice", [("profile", "physics-cpu"), (P + "memory", "#SBATCH --gres=gpu:8")],
     "not allowed"),
    ("memory-semicolon", "alice", [("profile", "physics-cpu"), (P + "memory", "2G;rm -rf ~")], "not allowed"),
    ("memory-pipe", "alice", [("profile", "physics-cpu"), (P + "memory", "2G|cat")], "not allowed"),
    ("memory-nul", "alice", [("profile", "physics-cpu"), (P + "memory", "2G\x00")], "control character"),
    ("memory-line-separator", "alice", [("profile", "physics-cpu"), (P + "memory", "2G\u2028x")],
     "control character"),
    ("image-dotdot", "alice", [("profile", "physics-cpu"), (P + "image", "../../etc/passwd")], "'..'"),
    ("image-command-substitution", "alice", [("profile", "physics-cpu"), (P + "image", "$(id)")], "not allowed"),
    ("image-backticks", "alice", [("profile", "physics-cpu"), (P + "image", "`id`")], "not allowed"),
    ("image-not-offered", "alice", [("profile", "physics-cpu"), (P + "image", "evil/miner:latest")],
     "not a choice"),
    ("profile-newline", "alice", [("profile", "physics-cpu\n")], "line break"),
    ("repeated-cpu", "alice", [("profile", "physics-cpu"), (P + "cpu", "1"), (P + "cpu", "2")], "2 times"),
    ("repeated-profile", "alice", [("profile", "physics-cpu"), ("profile", "cms-cpu")], "2 times"),
    ("unknown-field", "alice", [("profile", "physics-cpu"), ("foo", "bar")], "unknown form field"),
    ("unknown-trait-field", "alice", [("profile", "physics-cpu"), (P + "exec_prefix", "sudo")],
     "unknown form field"),
    ("other-profiles-field-not-offered", "bob", [("profile", "physics-cpu"), ("cms-cpu--cpu", "4")],
     "unknown form field"),
    ("time-limit-on-local", "alice", [("profile", "physics-cpu"), (P + "time_limit", "99:00:00")],
     "no time_limit choice"),
    # Encodings: a raw body (bytes) is sent exactly as written.
    ("non-utf8-value", "alice", b"profile=physics-cpu&" + P.encode() + b"memory=2G%FF%FE", "not UTF-8"),
    ("non-utf8-raw-bytes", "alice", b"profile=physics-cpu\xff\xfe", "not UTF-8"),
    ("overlong-utf8-slash", "alice", b"profile=physics-cpu&" + P.encode() + b"image=%C0%AF%C0%AFetc%C0%AFpasswd",
     "not UTF-8"),
    ("utf8-surrogate", "alice", b"profile=physics-cpu%ED%A0%80", "not UTF-8"),
    ("non-utf8-field-name", "alice", b"profile=physics-cpu&%FF%FE=1", "unknown form field"),
    ("percent-encoded-nul", "alice", b"profile=physics-cpu%00", "control character"),
    ("percent-encoded-newline-sbatch", "alice", b"profile=physics-cpu&" + P.encode() + b"memory=2G%0A%23SBATCH",
     "line break"),
    ("percent-encoded-dotdot", "alice", b"profile=physics-cpu&" + P.encode() + b"image=%2e%2e%2f%2e%2e%2fetc",
     "'..'"),
    ("double-percent-encoded", "alice", b"profile=physics-cpu&" + P.encode() + b"image=%252e%252e%252f", "not allowed"),
    ("plus-is-a-space", "alice", b"profile=physics-cpu&" + P.encode() + b"memory=2G+rm+-rf", "not allowed"),
    ("rtl-override-profile", "alice", [("profile", "\u202eupc-scisyhp")], "not allowed"),
    ("homoglyph-profile", "alice", [("profile", "phys\u0456cs-cpu")], "not allowed"),
    ("fullwidth-profile", "alice", [("profile", "\uff50hysics-cpu")], "not allowed"),
    ("zero-width-in-profile", "alice", [("profile", "physics\u200b-cpu")], "not allowed"),
    ("combining-mark-in-image", "alice", [("profile", "physics-cpu"), (P + "image", "default\u0301")],
     "not allowed"),
    # Duplicate fields.
    ("repeated-profile-same-value", "alice", [("profile", "physics-cpu"), ("profile", "physics-cpu")], "2 times"),
    ("repeated-empty-then-value", "alice", [("profile", "physics-cpu"), (P + "cpu", ""), (P + "cpu", "1")],
     "2 times"),
    ("repeated-many-times", "alice", [("profile", "physics-cpu")] * 50, "50 times"),
    ("field-name-with-newline", "alice", [("profile", "physics-cpu"), ("profile\n", "x")], "unknown form field"),
    # Oversized.
    ("oversized-value", "alice", [("profile", "physics-cpu"), (P + "memory", "2" * 200_000)], "too long"),
    ("oversized-profile", "alice", [("profile", "p" * 1_000_000)], "too long"),
    ("oversized-field-name", "alice", [("profile", "physics-cpu"), (P + "x" * 100_000, "1")], "unknown form field"),
    ("hundreds-of-fields", "alice", [("profile", "physics-cpu")] + [(f"f{i}", "1") for i in range(900)],
     "unknown form field"),
]
# Refused by the hub's web server before the form is read (its own 400 page, not the form).
TRANSPORT_CASES = [
    ("thousands-of-fields", "alice", [("profile", "physics-cpu")] + [(f"f{i}", "1") for i in range(5000)],
     "Max number of fields exceeded"),
]

# (case id, user, server name, JSON body (a str is sent as it is), expected words in the message)
API_CASES = [
    ("api-profile-of-another-group", "alice", "", {"user_options": {"profile": "admin-cpu"}}, "not for your groups"),
    ("api-unknown-profile", "bob", "", {"user_options": {"profile": "nope"}}, "unknown profile"),
    ("api-negative", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": -1}}, "negative"),
    ("api-infinity", "alice", "", '{"user_options": {"profile": "physics-cpu", "cpu": Infinity}}', "finite"),
    ("api-nan", "alice", "", '{"user_options": {"profile": "physics-cpu", "cpu": NaN}}', "finite"),
    ("api-huge-int", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": 10**30}}, "far too large"),
    ("api-float-not-offered", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": 1.5}}, "not a choice"),
    ("api-shell", "alice", "", {"user_options": {"profile": "physics-cpu", "memory": "2G; reboot"}}, "not allowed"),
    ("api-newline", "alice", "", {"user_options": {"profile": "physics-cpu", "memory": "1G\n#SBATCH -p x"}},
     "line break"),
    ("api-list", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": [1, 2]}}, "one value"),
    ("api-object", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": {"$gt": 0}}}, "not dict"),
    ("api-bool", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": True}}, "one of the values"),
    ("api-null", "alice", "", {"user_options": {"profile": "physics-cpu", "cpu": None}}, "one of the values"),
    ("api-unknown-field", "alice", "", {"user_options": {"profile": "physics-cpu", "exec_prefix": "sudo"}},
     "unknown field"),
    ("api-batch-field", "alice", "", {"user_options": {"req_partition": "debug"}}, "unknown field"),
    ("api-memory-not-offered", "alice", "", {"user_options": {"profile": "physics-cpu", "memory": "1T"}},
     "not a choice"),
    ("api-image-not-offered", "alice", "", {"user_options": {"profile": "physics-cpu", "image": "x/y:z"}},
     "not a choice"),
    ("api-old-style-body", "alice", "", {"profile": "physics-cpu", "cpu": 3}, "not a choice"),
    ("api-named-server", "alice", "named", {"user_options": {"profile": "physics-cpu", "cpu": 64}}, "not a choice"),
    ("api-dotdot-profile", "alice", "", {"user_options": {"profile": "../cms-cpu"}}, "'..'"),
    ("api-long-field-name", "alice", "", {"user_options": {"x" * 5000: 1}}, "unknown field"),
]


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    h = CloudHub(idp, run_dir / "hub-spawner-refusals").start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def sessions(hub):
    return {user: hub.login(user)[0] for user in ("alice", "bob")}


def spawn_page(hub, session, user, query: str = ""):
    r = session.get(f"{hub.url}/hub/spawn/{user}{query}")
    m = re.search(r'action="[^"]*_xsrf=([^"&]+)', r.text)
    return r, (html.unescape(m.group(1)) if m else None)


def assert_nothing_started(hub, spawning_before: int):
    for user in ("alice", "bob"):
        assert singleuser_processes(hub, user) == []
        servers = hub.servers(user)
        assert not any(s.get("ready") or s.get("pending") for s in servers.values()), servers
    for c in ("cpu", "memory"):
        d = CGROUP_ROOT / c / hub.cgroup_parent
        assert not d.exists() or not [x for x in d.iterdir() if x.is_dir()]
    assert hub.log.read_text(errors="replace").count("Spawning ") == spawning_before


def message_of(r) -> str:
    try:
        return r.json()["message"]
    except ValueError:
        m = re.search(r'spawn-error-msg[^>]*>(.*?)</p>', r.text, re.S)
        return html.unescape(m.group(1)) if m else r.text[:500]


def refuse_form(hub, sessions, user, fields, expected) -> None:
    """Post the form; it must come back refused (400, the form again, the reason), nothing started."""
    before = hub.log.read_text(errors="replace").count("Spawning ")
    s = sessions[user]
    _, xsrf = spawn_page(hub, s, user)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if isinstance(fields, bytes) else {}
    r = s.post(f"{hub.url}/hub/spawn/{user}", params={"_xsrf": xsrf}, data=fields, headers=headers,
               allow_redirects=False)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    msg = message_of(r)
    assert "Not started" in msg and expected in msg, msg
    assert "Start" in r.text  # the page comes back with the form to choose again
    assert_nothing_started(hub, before)


def refuse_query(hub, sessions, user, query, expected) -> None:
    before = hub.log.read_text(errors="replace").count("Spawning ")
    r, _ = spawn_page(hub, sessions[user], user, query)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    msg = message_of(r)
    assert "Not started" in msg and expected in msg, msg
    assert_nothing_started(hub, before)


def refuse_api(hub, user, server, body, expected) -> None:
    before = hub.log.read_text(errors="replace").count("Spawning ")
    r = hub.spawn(user, server, body=json.dumps(body) if not isinstance(body, str) else body)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    msg = r.json()["message"]
    assert expected in msg, msg
    assert_nothing_started(hub, before)


def refuse_transport(hub, sessions, user, fields, expected) -> None:
    before = hub.log.read_text(errors="replace").count("Spawning ")
    s = sessions[user]
    _, xsrf = spawn_page(hub, s, user)
    r = s.post(f"{hub.url}/hub/spawn/{user}", params={"_xsrf": xsrf}, data=fields, allow_redirects=False)
    assert r.status_code == 400 and expected in r.text, (r.status_code, r.text[:300])
    assert_nothing_started(hub, before)


# (case id, user, query string of the spawn page, expected words in the message)
QUERY_CASES = [
    ("query-not-offered", "bob", "?opt-profile=physics-cpu&opt-cpu=99", "not a choice"),
    ("query-backticks", "bob", "?opt-profile=physics-cpu&opt-memory=%60id%60", "not allowed"),
    ("query-non-utf8", "alice", "?opt-profile=physics-cpu%FF", "not UTF-8"),
    ("query-overlong-utf8", "alice", "?opt-profile=physics-cpu&opt-image=%C0%AE%C0%AE%C0%AF", "not UTF-8"),
    ("query-repeated", "alice", "?opt-profile=physics-cpu&opt-profile=cms-cpu", "more than once"),
    ("query-newline", "alice", "?opt-profile=physics-cpu&opt-memory=2G%0A%23SBATCH", "line break"),
    ("query-unknown-field", "alice", "?opt-profile=physics-cpu&opt-exec_prefix=sudo", "unknown field"),
    ("query-oversized", "alice", "?opt-profile=" + "p" * 4000, "too long"),
]


@pytest.mark.parametrize("case,user,fields,expected", FORM_CASES, ids=[c[0] for c in FORM_CASES])
def test_form_submission_is_refused(hub, sessions, case, user, fields, expected):
    refuse_form(hub, sessions, user, fields, expected)


@pytest.mark.parametrize("case,user,fields,expected", TRANSPORT_CASES, ids=[c[0] for c in TRANSPORT_CASES])
def test_a_form_the_web_server_refuses_starts_nothing(hub, sessions, case, user, fields, expected):
    refuse_transport(hub, sessions, user, fields, expected)


@pytest.mark.parametrize("case,user,query,expected", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_query_options_are_checked_the_same_way(hub, sessions, case, user, query, expected):
    refuse_query(hub, sessions, user, query, expected)


@pytest.mark.parametrize("case,user,server,body,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_request_is_refused(hub, case, user, server, body, expected):
    refuse_api(hub, user, server, body, expected)


def test_the_whole_spawn_corpus_is_refused(hub, sessions, reliability):
    """Every case once more, counted for the reliability report (after it, nothing runs)."""
    n = 0
    for _, user, fields, expected in FORM_CASES:
        refuse_form(hub, sessions, user, fields, expected)
        n += 1
    for _, user, fields, expected in TRANSPORT_CASES:
        refuse_transport(hub, sessions, user, fields, expected)
        n += 1
    for _, user, query, expected in QUERY_CASES:
        refuse_query(hub, sessions, user, query, expected)
        n += 1
    for _, user, server, body, expected in API_CASES:
        refuse_api(hub, user, server, body, expected)
        n += 1
    reliability.record("bad.spawn-forms", f"{n} spawn requests refused ({len(FORM_CASES)} page forms, "
                                          f"{len(TRANSPORT_CASES)} at the web server, {len(QUERY_CASES)} ?opt- "
                                          f"queries, {len(API_CASES)} REST API bodies), each naming the field; "
                                          "no process, cgroup or spawn started")


def test_a_json_body_in_place_of_the_form_is_refused(hub, sessions):
    before = hub.log.read_text(errors="replace").count("Spawning ")
    s = sessions["alice"]
    _, xsrf = spawn_page(hub, s, "alice")
    r = s.post(f"{hub.url}/hub/spawn/alice", params={"_xsrf": xsrf},
               data=json.dumps({"profile": "physics-cpu", "cpu": 1}),
               headers={"Content-Type": "application/json"}, allow_redirects=False)
    assert r.status_code == 400 and "choose a profile" in message_of(r)
    assert_nothing_started(hub, before)


def test_a_valid_submission_after_all_the_refusals_starts(hub, sessions):
    """The same path works for a good answer: the refusals above were not a broken spawner."""
    before = hub.log.read_text(errors="replace").count("Spawning ")
    s = sessions["bob"]
    _, xsrf = spawn_page(hub, s, "bob")
    r = s.post(f"{hub.url}/hub/spawn/bob", params={"_xsrf": xsrf},
               data=[("profile", "physics-cpu"), (P + "cpu", "2"), (P + "memory", "2G"), (P + "image", "default")],
               allow_redirects=False)
    assert r.status_code == 302, r.text[:300]
    hub.wait_ready("bob")
    assert len(singleuser_processes(hub, "bob")) == 1
    # The log line the refusal tests count does appear when a server really starts.
    assert hub.log.read_text(errors="replace").count("Spawning ") == before + 1
    hub.stop_server("bob")
    assert singleuser_processes(hub, "bob") == []
