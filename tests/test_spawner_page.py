"""The spawn page in Chromium: alice and bob each see exactly their profiles and limits, a
valid choice starts a server with its progress shown, and a refused submission shows why."""

from __future__ import annotations

import pytest

from tests.testbed.cloudhub import CloudHub, singleuser_processes
from tests.testbed.paths import ARTIFACTS


@pytest.fixture(scope="module")
def hub(idp, run_dir):
    h = CloudHub(idp, run_dir / "hub-spawner-page").start()
    yield h
    h.stop()


def logged_in(browser, hub, user):
    context = browser.new_context()
    page = context.new_page()
    page.goto(hub.url + "/hub/oauth_login?next=/hub/home")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", f"{user}-pw")
    with page.expect_navigation(url="**/hub/home"):
        page.click("button[type=submit]")
    return context, page


def offered(page) -> dict:
    """profile -> {field: [options]} as the page shows them."""
    out = {}
    for name in page.eval_on_selector_all("input[name=profile]", "els => els.map(e => e.value)"):
        selects = page.eval_on_selector_all(
            f"#jhc-profile-{name} select",
            "els => els.map(e => [e.name, Array.from(e.options).map(o => o.value)])")
        out[name] = {field.split("--", 1)[1]: options for field, options in selects}
    return out


def test_alice_sees_her_two_profiles_with_limits_and_starts_one(hub, browser):
    context, page = logged_in(browser, hub, "alice")
    try:
        page.goto(hub.url + "/hub/spawn")
        assert offered(page) == {
            "physics-cpu": {"cpu": ["1", "2"], "memory": ["1G", "2G"]},
            "cms-cpu": {"cpu": ["1", "2", "4"], "memory": ["1G", "2G", "3G", "8G"]},
        }
        text = page.inner_text("form")
        assert text.count("Image: default") == 2 and "GPU" not in text  # one option: shown, not asked
        assert "CPU notebooks for the physics group." in text and "Bigger CPU notebooks for CMS" in text
        assert "Each server of this profile: at most 2 CPUs, 4G memory" in text  # physics
        assert "Each server of this profile: at most 4 CPUs, 8G memory" in text  # cms
        assert "All your servers together: at most 2 server(s), 4 CPUs, 8G memory" in text
        # Defaults are preselected: the first profile, its default values.
        assert page.is_checked("input[value=physics-cpu]")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "spawn-page-alice.png"), full_page=True)

        # Picking a value of the second profile picks that profile too; then start it.
        page.select_option("select[name='cms-cpu--cpu']", "2")
        assert page.is_checked("input[value=cms-cpu]")
        page.select_option("select[name='cms-cpu--memory']", "3G")
        page.click("button[type=submit]")
        page.wait_for_url("**/spawn-pending/**", timeout=20000)
        page.screenshot(path=str(ARTIFACTS / "spawn-progress-alice.png"), full_page=True)
        hub.wait_ready("alice")
        page.wait_for_url("**/user/alice/**", timeout=60000)  # the page goes on to her server
        state = hub.user("alice")["servers"][""]["state"]["cloud"]
        assert state["profile"] == "cms-cpu"
        assert (state["resources"]["cpu"], state["resources"]["memory_bytes"]) == (2, 3 * 2**30)
    finally:
        context.close()
    hub.stop_server("alice")
    assert singleuser_processes(hub, "alice") == []


def test_bob_sees_only_physics_and_a_tampered_choice_is_refused_on_the_page(hub, browser):
    context, page = logged_in(browser, hub, "bob")
    try:
        page.goto(hub.url + "/hub/spawn")
        assert offered(page) == {"physics-cpu": {"cpu": ["1", "2"], "memory": ["1G", "2G"]}}
        text = page.inner_text("form")
        assert "cms" not in text.lower() and "admin" not in text.lower()
        assert "All your servers together: at most 1 server(s), 2 CPUs, 4G memory" in text
        page.screenshot(path=str(ARTIFACTS / "spawn-page-bob.png"), full_page=True)

        # What a person editing the page could send: an option the page never offered.
        page.eval_on_selector("select[name='physics-cpu--cpu']",
                              "el => { el.options[1].value = '16'; el.selectedIndex = 1; }")
        with page.expect_navigation():
            page.click("button[type=submit]")
        error = page.inner_text(".spawn-error-msg")
        assert error == 'Error: Not started: cpu "16" is not a choice of profile physics-cpu (choices: 1, 2)', error
        page.screenshot(path=str(ARTIFACTS / "spawn-page-bob-refused.png"), full_page=True)
        assert offered(page)["physics-cpu"]["memory"] == ["1G", "2G"]  # the form is back to choose again
    finally:
        context.close()
    assert singleuser_processes(hub, "bob") == []
    assert hub.servers("bob") == {}
