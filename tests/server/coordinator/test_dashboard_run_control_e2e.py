"""End to end on a real ``aptfleet serve``: run control and policy editing from the console."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.utils.browser import chromium, chromium_missing, sign_in
from tests.utils.service import Coordinator, kill_run_jobs, wait_for
from tests.utils.token import service_token

if chromium_missing():
    pytest.skip(str(chromium_missing()), allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

#: Seconds between two polls of a condition: a round takes a few seconds here.
POLL_S = 0.25
_ACTIVE = {"queued", "pending", "running"}


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """One ``aptfleet serve`` for the module: its start-up is the tests' common setup.

    The tests stay independent on it: each starts and stops a run of its own and reads only
    that run's rounds, clients and actions (the run page lists the actions on its run).
    """
    data_dir = tmp_path_factory.mktemp("coordinator")
    service = Coordinator(data_dir)
    service.start()
    try:
        yield service
    finally:
        service.stop()
        kill_run_jobs(data_dir)


@pytest.fixture(scope="module")
def admin_token(coordinator: Coordinator) -> str:
    """An admin token named ``ada`` (the policy test checks the author it records)."""
    return service_token(coordinator, role="admin", name="ada")


@pytest.fixture(autouse=True)
def _no_run_left_active(coordinator: Coordinator, admin_token: str) -> Iterator[None]:
    """Stop what a failed test left active, so that it does not queue the next test's run."""
    yield
    with coordinator.client(admin_token) as api:
        for run in api.get("/runs", params={"limit": 100}).json()["data"]:
            if run["status"] in _ACTIVE:
                api.post(f"/runs/{run['id']}/stop")


@pytest.mark.slow
def test_operator_starts_real_run_sees_it_running_and_stops_it(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    # Prepare
    token = service_token(coordinator, role="operator", name="olga")
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
        WebDriverWait(browser, 300, poll_frequency=POLL_S).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-live="status"]'), "running")
        )
        browser.find_element(By.ID, "stop-submit").click()
        WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "resume-form")))

        # Assert
        assert browser.current_url == run_url
        assert browser.find_element(By.CSS_SELECTOR, '[data-live="status"]').text == "stopped"
        actions = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr.action-row")]
        assert [a.split()[3:5] for a in actions] == [["olga", "operator"]] * 2
    with coordinator.client(token) as api:
        run_id = int(run_url.rsplit("/", 1)[1])
        assert api.get(f"/runs/{run_id}").json()["status"] == "stopped"


def _rounds(api: Any, run_id: int) -> list[dict[str, Any]]:
    return list(api.get(f"/runs/{run_id}/rounds", params={"limit": 1000}).json()["data"])


@pytest.mark.slow
def test_admin_policy_edit_in_console_reaches_the_next_round_of_a_real_run(
    coordinator: Coordinator, admin_token: str, tmp_path: Path
) -> None:
    # Prepare: a real run that follows the fleet policy, training
    admin = admin_token
    api = coordinator.client(admin)
    body = {"task": "digits", "method": "apt", "clients": 2, "fraction": 1.0, "rounds": 200}
    run_id = api.post("/runs", json=body).json()["id"]
    wait_for(lambda: len(_rounds(api, run_id)) >= 1, 300, "the run's first round", every=POLL_S)
    old = api.get("/policy").json()

    with chromium(tmp_path / "profile") as browser:
        # Execute: the admin lowers bits_max in the console's editor and saves with a note
        sign_in(browser, coordinator.base, admin, "/policy")
        field = browser.find_element(By.ID, "bits_max")
        field.clear()
        field.send_keys(str(old["bits_max"] - 2))
        browser.find_element(By.ID, "note").send_keys("console e2e: two bits fewer")
        browser.find_element(By.ID, "policy-save").click()
        WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "policy-notice")))
    saved_at = len(_rounds(api, run_id))
    new_version = old["version"] + 1
    wait_for(
        lambda: any(r["policy_version"] == new_version for r in _rounds(api, run_id)),
        300,
        "a round trained with the new policy version",
        every=POLL_S,
    )
    api.post(f"/runs/{run_id}/stop")

    # Assert: rounds keep the old version until the edit, the new one from the next round on
    rounds = _rounds(api, run_id)
    versions = [r["policy_version"] for r in rounds]
    first_new = versions.index(new_version)
    assert set(versions[:first_new]) == {old["version"]}
    assert set(versions[first_new:]) == {new_version}
    assert first_new <= saved_at + 1  # the round after the one under way at the save
    clients = api.get(f"/runs/{run_id}/clients", params={"limit": 1000}).json()["data"]
    later = [c for c in clients if c["round"] > first_new]
    assert later and {c["policy_version"] for c in later} == {new_version}
    policy = api.get("/policy").json()
    assert (policy["author"], policy["note"]) == ("ada", "console e2e: two bits fewer")
    api.close()
