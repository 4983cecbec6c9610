"""End to end: an operator starts a real run from the console, watches it run, stops it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.browser import chromium, chromium_missing, sign_in
from tests.utils.service import Coordinator, kill_run_jobs

if chromium_missing():
    pytest.skip(str(chromium_missing()), allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture()
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    service = Coordinator(tmp_path)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        kill_run_jobs(tmp_path)


@pytest.mark.slow
def test_operator_starts_real_run_sees_it_running_and_stops_it(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    # Prepare
    token = coordinator.token("operator", "olga")
    with chromium(tmp_path / "profile") as browser:
        sign_in(browser, coordinator.base, token, "/runs/new")

        # Execute: a long run, so that it is still training when stopped
        Select(browser.find_element(By.ID, "task")).select_by_value("digits")
        for name, value in (("clients", "2"), ("rounds", "200"), ("fraction", "1")):
            field = browser.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        browser.find_element(By.ID, "new-run-submit").click()
        WebDriverWait(browser, 20).until(ec.url_matches(r"/runs/[0-9]+$"))
        run_url = browser.current_url
        # the page's script polls the live summary: the status changes in place
        WebDriverWait(browser, 300, poll_frequency=1).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-live="status"]'), "running")
        )
        browser.find_element(By.ID, "stop-submit").click()
        WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "resume-form")))

        # Assert
        assert browser.current_url == run_url
        assert browser.find_element(By.CSS_SELECTOR, '[data-live="status"]').text == "stopped"
        actions = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr.action-row")]
        assert [a.split()[3:5] for a in actions] == [["olga", "operator"]] * 2
    with coordinator.client(coordinator.token("admin")) as api:
        run_id = int(run_url.rsplit("/", 1)[1])
        assert api.get(f"/runs/{run_id}").json()["status"] == "stopped"
