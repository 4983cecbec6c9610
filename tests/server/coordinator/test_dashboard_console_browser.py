"""The console in a real headless Chromium: run control, policy editing, fleet, comparison.

Runs stay queued here (the app's launcher only records them); the slow test at the end
starts a real run on a real ``aptfleet serve``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine
from server.coordinator.main import create_app
from server.coordinator.services.run_store import run_policy_provider
from server.coordinator.services.startup import init_db
from server.coordinator.tables import Device
from tests.utils.browser import chromium, chromium_missing, served, sign_in
from tests.utils.launcher import RecordingLauncher
from tests.utils.run import create_random_run, make_round_record

if chromium_missing():
    pytest.skip(str(chromium_missing()), allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

REASON = "layer fc has 40 bits, above the class cap of 8"


@dataclass(frozen=True)
class Console:
    """A served console and what its database holds."""

    url: str
    database_url: str
    admin: str
    operator: str
    runs: dict[str, int]
    rejected_device: int


def _record_rounds(db: Session, run_id: int, rounds: int, reject_round: int | None = None) -> None:
    for r in range(1, rounds + 1):
        record = make_round_record(r)
        if r == reject_round:
            clients = [
                dataclasses.replace(c, rejected=REASON, energy_j=0.0, layers=[])
                if c.node_id == 12
                else c
                for c in record.clients
            ]
            record = dataclasses.replace(record, clients=clients, rejections=1)
        crud.record_round(session=db, run_id=run_id, record=record)


def _populate(database_url: str) -> tuple[str, str, dict[str, int], int]:
    init_db(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            admin = crud.create_token(session=db, role="admin", name="ada")
            operator = crud.create_token(session=db, role="operator", name="otto")
            runs = {}
            for name, method_rounds in (("apt", 4), ("fp32", 4)):
                run = create_random_run(db, status="running", rounds=method_rounds)
                run.method = name
                _record_rounds(db, run.id, method_rounds, reject_round=3 if name == "apt" else None)
                crud.set_run_status(session=db, run_id=run.id, status="completed")
                runs[name] = run.id
            live = create_random_run(db, status="running", rounds=8)
            _record_rounds(db, live.id, 2)
            runs["live"] = live.id
            db.commit()
            device = db.query(Device).filter(Device.node_id == 12).one().id
            return admin, operator, runs, device
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    database_url = f"sqlite:///{tmp / 'console.db'}"
    admin, operator, runs, device = _populate(database_url)
    app = create_app(
        Settings(DATABASE_URL=database_url, DATA_DIR=tmp), launcher=RecordingLauncher()
    )
    with served(app) as url:
        _running_again(database_url, runs["live"])
        yield Console(url, database_url, admin, operator, runs, device)


def _running_again(database_url: str, run_id: int) -> None:
    """Make the live run running again: the app's startup marked it interrupted (no job)."""
    engine = make_engine(database_url)
    with Session(engine) as db:
        crud.reopen_run(session=db, run_id=run_id)
        for status in ("pending", "running"):
            crud.set_run_status(session=db, run_id=run_id, status=status)
        db.commit()
    engine.dispose()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def _wait(browser: Any, condition: Any, timeout: float = 10) -> Any:
    return WebDriverWait(browser, timeout).until(condition)


def _text(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def test_operator_starts_run_from_form_sees_it_queued_and_stops_it(
    console: Console, browser: Any
) -> None:
    # Prepare
    sign_in(browser, console.url, console.operator, "/runs/new")

    # Execute: a wrong value first, then the corrected form
    rounds = browser.find_element(By.ID, "rounds")
    rounds.clear()
    rounds.send_keys("999")
    Select(browser.find_element(By.ID, "method")).select_by_value("fp32")
    browser.find_element(By.ID, "new-run-submit").click()
    error = _wait(browser, ec.visibility_of_element_located((By.ID, "rounds-error"))).text
    rounds = browser.find_element(By.ID, "rounds")
    rounds.clear()
    rounds.send_keys("3", Keys.ENTER)  # submitted from the keyboard
    _wait(browser, ec.url_matches(r"/runs/[0-9]+$"))
    status = _text(browser, '[data-live="status"]')
    queue = _text(browser, '[data-live="queue"]')
    browser.find_element(By.ID, "stop-submit").click()
    _wait(browser, ec.presence_of_element_located((By.ID, "resume-form")))

    # Assert
    assert "less than or equal to 500" in error
    assert (status, queue) == ("queued", "#1 in the queue")
    assert _text(browser, '[data-live="status"]') == "stopped"
    actions = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr.action-row")]
    assert len(actions) == 2 and "otto" in actions[0] and "stop" in actions[0]


def test_admin_edits_policy_and_next_round_carries_new_version(
    console: Console, browser: Any
) -> None:
    # Prepare
    sign_in(browser, console.url, console.admin, "/policy")
    provider = run_policy_provider(
        sessionmaker(make_engine(console.database_url)), console.runs["live"]
    )
    before = provider()
    new_max = before[1].bits_max - 1

    # Execute: change a field, preview, add the note, save
    field = browser.find_element(By.ID, "bits_max")
    field.clear()
    field.send_keys(str(new_max))
    browser.find_element(By.ID, "policy-preview").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "preview")))
    diff = [
        r.get_attribute("data-field")
        for r in browser.find_elements(By.CSS_SELECTOR, "#preview-diff tbody tr")
    ]
    reached = browser.find_element(By.ID, "preview-runs").text
    browser.find_element(By.ID, "note").send_keys("cap the fleet one bit lower")
    browser.find_element(By.ID, "policy-save").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "policy-notice")))
    after = provider()

    # Assert
    assert diff == ["bits_max"]
    assert f"Run #{console.runs['live']}" in reached
    assert after[0] == before[0] + 1 and after[1].bits_max == new_max
    history = browser.find_element(By.ID, "policies").text
    assert "ada" in history and "cap the fleet one bit lower" in history


def test_operator_sees_no_policy_editor_and_forged_post_refused(
    console: Console, browser: Any
) -> None:
    # Prepare
    sign_in(browser, console.url, console.operator, "/policy")
    read_only = browser.find_element(By.ID, "policy-read-only").text

    # Execute: the operator's own browser posts an edit with the session's CSRF token
    browser.execute_script(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/policy';"
        "for (var [k, v] of [['intent', 'save'], ['bits_max', '5'], ['note', 'sneaky'],"
        "  ['csrf_token', document.querySelector('input[name=csrf_token]').value]]) {"
        "  var i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();"
    )
    _wait(browser, ec.visibility_of_element_located((By.ID, "error-title")))

    # Assert
    assert "Read-only" in read_only
    assert not browser.find_elements(By.ID, "policy-form")
    assert _text(browser, "#error-title") == "Request refused"
    assert "admin role" in _text(browser, "#error-message")


def test_device_page_shows_rejected_update_reason(console: Console, browser: Any) -> None:
    # Execute
    sign_in(browser, console.url, console.operator, "/devices")
    browser.find_element(By.CSS_SELECTOR, f'a[href="/devices/{console.rejected_device}"]').click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "rejections")))

    # Assert
    [item] = browser.find_elements(By.CSS_SELECTOR, "li.rejection")
    assert REASON in item.text and "round 3" in item.text
    heatmaps = browser.find_elements(By.CSS_SELECTOR, "svg.heatmap")
    assert heatmaps and all(h.is_displayed() for h in heatmaps)


def test_comparison_page_draws_both_runs(console: Console, browser: Any) -> None:
    # Prepare
    sign_in(browser, console.url, console.operator, "/compare")

    # Execute: tick both runs and compare
    for name in ("apt", "fp32"):
        browser.find_element(By.CSS_SELECTOR, f'input[value="{console.runs[name]}"]').click()
    browser.find_element(By.ID, "compare-submit").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "compare-charts")))

    # Assert: two drawn lines in every chart, the fp32 run as the baseline
    for chart in ("accuracy", "energy", "uplink", "downlink"):
        lines = browser.find_elements(By.CSS_SELECTOR, f"#compare-{chart} polyline.series")
        assert len(lines) == 2 and all(line.rect["width"] > 100 for line in lines)
    assert _text(browser, "#compare-baseline").endswith("fp32")
    assert browser.find_element(By.ID, "final-bits").is_displayed()


def test_run_page_updates_live_without_reloading(console: Console, browser: Any) -> None:
    # Prepare
    run_id = console.runs["live"]
    sign_in(browser, console.url, console.operator, f"/runs/{run_id}")
    browser.execute_script("window.notReloaded = true;")
    before = _text(browser, '[data-live="progress"]')

    # Execute: the next round lands in the database
    engine = make_engine(console.database_url)
    with Session(engine) as db:
        crud.record_round(session=db, run_id=run_id, record=make_round_record(3))
        db.commit()
    engine.dispose()
    _wait(browser, ec.visibility_of_element_located((By.ID, "live-notice")), timeout=15)

    # Assert
    assert before.endswith("2 / 8") or "2 / 8" in before
    assert "3 / 8" in _text(browser, '[data-live="progress"]')
    assert browser.execute_script("return window.notReloaded === true;")
    assert not browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')


def test_overview_updates_run_status_in_place(console: Console, browser: Any) -> None:
    # Prepare: a running run of this test's own (the fixture's runs stay as they are)
    engine = make_engine(console.database_url)
    with Session(engine) as db:
        run_id = create_random_run(db, status="running", rounds=5).id
    sign_in(browser, console.url, console.operator, "/")
    browser.execute_script("window.notReloaded = true;")
    row = f'tr.run-row[data-run="{run_id}"]'
    before = _text(browser, f'{row} [data-field="status"]')

    # Execute: another run is created, then the first round lands and the run completes
    with Session(engine) as db:
        create_random_run(db, status="completed")
        crud.record_round(session=db, run_id=run_id, record=make_round_record(1))
        crud.set_run_status(session=db, run_id=run_id, status="completed")
        db.commit()
    engine.dispose()
    _wait(
        browser,
        lambda b: _text(b, f'{row} [data-field="status"]') == "completed",
        timeout=15,
    )

    # Assert: the cells changed, the page was not reloaded, new runs are announced
    assert before == "running"
    assert browser.execute_script("return window.notReloaded === true;")
    assert "1 / 5" in _text(browser, f'{row} [data-field="progress"]')
    assert _text(browser, f'{row} [data-field="finished"]').endswith("UTC")
    assert browser.find_element(By.ID, "overview-notice").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')


@pytest.mark.parametrize(
    "path", ["/", "/runs/new", "/policy", "/devices", "/compare", "/actions", "/cost-model"]
)
def test_pages_fit_a_narrow_screen_and_start_with_a_skip_link(
    console: Console, tmp_path: Path, path: str
) -> None:
    # Prepare
    with chromium(tmp_path / "narrow", width=390, height=900) as browser:
        sign_in(browser, console.url, console.admin, path)

        # Execute
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        first = browser.switch_to.active_element

        # Assert: no sideways scrolling of the page; the keyboard starts at the skip link
        assert overflow <= 1
        assert first.get_attribute("class") == "skip"
