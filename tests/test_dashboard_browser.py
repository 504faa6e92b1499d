"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against the gunicorn coordinator after a demo run: it loads without console
errors, shows the numbers the coordinator has, follows more work without a reload, and
its requeue action works with an admin key and is refused without one.

A screenshot is written to ``test-artifacts/dashboard.png`` (``TEST_ARTIFACTS`` elsewhere).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from common.version import CLIENT_VERSION_HEADER, __version__
from support.processes import REPO_ROOT
from tests.fleet import Fleet
from tests.test_end_to_end import INVENTORY

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium. Skipped, saying why, when it is not installed, unless
    REQUIRE_BROWSER=1 (as in CI), which makes that a failure."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = f"{' and '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_until(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def renders(browser) -> int:
    return int(browser.execute_script("return document.body.dataset.renders || '0'"))


def row_numbers(browser, site: str) -> dict[str, str]:
    cells = browser.execute_script(
        "const row = document.querySelector(`#sites tr[data-site='${arguments[0]}']`);"
        "if (!row) return null;"
        "const out = {};"
        "for (const c of row.querySelectorAll('td[class]')) out[c.className.split(' ').pop()] = c.textContent;"
        "return out;",
        site,
    )
    return cells or {}


def expected_row(stats: dict, site: str) -> dict[str, str]:
    counts = stats["sites"][site]["tasks"]["download"]
    return {
        "done": str(counts.get("done", 0) + counts.get("duplicate", 0)),
        "dead": str(counts.get("dead", 0)),
        "leased": str(counts.get("leased", 0)),
    }


def console_errors(browser, allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allowed)
    ]


def fail_for_good(fleet: Fleet, site: str) -> int:
    """One download of ``site`` leased by node1 and reported failed for good: a dead task."""
    headers = {"Authorization": f"Bearer {fleet.keys['node1']}", CLIENT_VERSION_HEADER: __version__}
    url = fleet.coordinator.url + "/leases"
    lease = requests.post(url, json={"kind": "download", "site": site, "n": 1}, headers=headers, timeout=30).json()
    [task] = lease["tasks"]
    failure = {"task_id": task["id"], "status": "failed", "error_class": "permanent", "error": "HTTP 404"}
    answer = requests.post(
        f"{url}/{lease['lease_id']}/results", json={"results": [failure]}, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return task["id"]


def test_the_dashboard_in_a_real_browser(browser, demo_site, tmp_path):
    requests.post(demo_site.url + "/_counter/reset", timeout=10)
    fleet = Fleet.start(
        demo_site, tmp_path, f"sqlite:///{tmp_path / 'coordinator.sqlite3'}", DASHBOARD_REFRESH_SECONDS=1
    )
    try:
        fleet.import_csv(INVENTORY)
        assert fleet.client("metadata", "100", "--jobs", "2").returncode == 0
        fleet.drain("download", "demo", "100", "--jobs", "2")
        dead_id = fail_for_good(fleet, "demotube")

        browser.get(fleet.coordinator.url + "/dashboard")
        wait_until(lambda: renders(browser) >= 1, what="the first render")
        browser.execute_script("window.loadedOnce = 'yes'")  # gone if the page reloads
        stats = fleet.stats()
        for site in ("demo", "demotube"):
            wanted = expected_row(stats, site)
            wait_until(
                lambda site=site, wanted=wanted: row_numbers(browser, site) | wanted == row_numbers(browser, site),
                what=f"{site}'s numbers {wanted}",
            )
        assert row_numbers(browser, "demotube")["done"] == "0"  # its downloads have not run yet
        assert browser.find_element("id", "needs-key").is_displayed()  # no key: no nodes, errors, dead tasks
        assert console_errors(browser) == []

        fleet.drain("download", "demotube", "20", "--jobs", "2")  # more work completes
        wanted = expected_row(fleet.stats(), "demotube")
        assert wanted["done"] != "0"
        seen = renders(browser)
        wait_until(lambda: row_numbers(browser, "demotube")["done"] == wanted["done"], what="the update")
        assert browser.execute_script("return window.loadedOnce") == "yes" and renders(browser) > seen

        # a node key shows nodes and dead tasks, but may not requeue
        key_field = browser.find_element("id", "key")
        key_field.send_keys(fleet.keys["node1"])
        browser.find_element("id", "use-key").click()
        wait_until(lambda: browser.find_elements("css selector", "#nodes tr[data-node='node1']"), what="the nodes")
        dead = fleet.admin("GET", "/tasks", params={"state": "dead"})["tasks"]
        assert dead_id in [task["id"] for task in dead]
        box = wait_until(
            lambda: browser.find_elements("css selector", f"#dead tr[data-task='{dead[0]['id']}'] input"),
            what="the dead-task list",
        )[0]
        box.click()
        browser.find_element("id", "requeue-selected").click()
        message = wait_until(
            lambda: (
                browser.find_element("id", "message").text.startswith("requeue refused")
                and browser.find_element("id", "message").text
            ),
            what="the refusal",
        )
        assert "admin" in message
        assert fleet.admin("GET", "/tasks", params={"state": "dead"})["tasks"] == dead  # nothing changed

        browser.find_element("id", "forget-key").click()
        browser.find_element("id", "key").send_keys(fleet.admin_key)
        browser.find_element("id", "use-key").click()
        box = wait_until(
            lambda: browser.find_elements("css selector", f"#dead tr[data-task='{dead[0]['id']}'] input"),
            what="the dead-task list again",
        )[0]
        if not box.is_selected():
            box.click()
        browser.find_element("id", "requeue-selected").click()
        wait_until(lambda: browser.find_element("id", "message").text == "requeued 1 task(s)", what="the requeue")
        still_dead = {task["id"] for task in fleet.admin("GET", "/tasks", params={"state": "dead"})["tasks"]}
        assert dead[0]["id"] not in still_dead
        wait_until(
            lambda: not browser.find_elements("css selector", f"#dead tr[data-task='{dead[0]['id']}']"),
            what="the requeued task to leave the list",
        )
        assert console_errors(browser, allowed=("status of 403",)) == []  # only the refused requeue

        browser.find_element("css selector", ".window button[data-window='60']").click()  # the last hour, closer
        assert int(browser.find_element("id", "chart-done").get_attribute("data-peak")) > 0
        artifacts = Path(os.environ.get("TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artifacts / "dashboard.png"))
    finally:
        fleet.stop()
