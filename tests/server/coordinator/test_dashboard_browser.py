"""The dashboard in a real headless Chromium: sign in and out, CSRF, a run's SVG charts."""

from __future__ import annotations

import http.server
import shutil
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from server.coordinator import crud
from server.coordinator.core.config import Settings
from server.coordinator.core.db import make_engine
from server.coordinator.dashboard.auth import COOKIE_NAME
from server.coordinator.main import create_app
from server.coordinator.services.startup import init_db
from tests.utils.browser import served
from tests.utils.run import create_random_run, make_round_record

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NODES = (11, 12, 13)
LAYERS = ("conv1", "conv2", "fc1", "fc2")
ROUNDS = 6

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing; install them with "
        "'apt-get install -y chromium chromium-driver'",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@dataclass(frozen=True)
class LiveServer:
    """A coordinator serving a finished run on 127.0.0.1."""

    url: str
    token: str
    run_id: int


def _populate(database_url: str) -> tuple[str, int]:
    """A finished run with ``ROUNDS`` rounds, and an operator token."""
    init_db(database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            token = crud.create_token(session=db, role="operator", name="browser")
            run = create_random_run(db, status="running", rounds=ROUNDS)
            for r in range(1, ROUNDS + 1):
                crud.record_round(
                    session=db,
                    run_id=run.id,
                    record=make_round_record(r, nodes=NODES, layers=LAYERS),
                )
            crud.set_run_savings(
                session=db, run_id=run.id, savings={"energy": 0.41, "memory": 0.38, "uplink": 0.52}
            )
            crud.set_run_status(session=db, run_id=run.id, status="completed")
            db.commit()
            return token, run.id
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{tmp / 'live.db'}"
    token, run_id = _populate(database_url)
    app = create_app(Settings(DATABASE_URL=database_url, DATA_DIR=tmp))
    with served(app) as url:
        yield LiveServer(url=url, token=token, run_id=run_id)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,2600",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _sign_in(browser: WebDriver, live_server: LiveServer, path: str) -> None:
    browser.get(f"{live_server.url}{path}")
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/login"))
    browser.find_element(By.ID, "token").send_keys(live_server.token)
    browser.find_element(By.ID, "login-submit").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(f"{live_server.url}{path}"))


def test_dashboard_run_page_renders_charts_in_chromium(
    live_server: LiveServer, browser: WebDriver, tmp_path: Path
) -> None:
    # Prepare
    path = f"/runs/{live_server.run_id}"

    # Execute
    _sign_in(browser, live_server, path)
    WebDriverWait(browser, 10).until(
        expected_conditions.visibility_of_element_located((By.ID, "chart-bits"))
    )
    screenshot = tmp_path / "run.png"
    browser.save_screenshot(str(screenshot))

    # Assert: signed in through an HttpOnly, SameSite=Strict cookie
    cookie = browser.get_cookie(COOKIE_NAME)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert browser.find_element(By.ID, "viewer").text == "Signed in as browser (operator)"
    # line charts: displayed, sized, one non-empty polyline per series
    for chart_id, series in (("chart-accuracy", 1), ("chart-energy", 1), ("chart-bytes", 2)):
        svg = browser.find_element(By.ID, chart_id)
        assert svg.is_displayed()
        assert svg.size["width"] > 200 and svg.size["height"] > 80
        assert svg.get_attribute("data-points") == str(ROUNDS)
        lines = svg.find_elements(By.CSS_SELECTOR, "polyline.series")
        assert len(lines) == series
        for line in lines:
            assert len((line.get_attribute("points") or "").split()) == ROUNDS
            # Selenium's is_displayed() is False for a flat line (zero-height box), so check
            # the box's width and the computed style instead.
            assert line.rect["width"] > 100
            assert line.value_of_css_property("visibility") == "visible"
            assert line.value_of_css_property("stroke") not in ("none", "")
    # heatmap: one painted cell per layer and round
    heatmap = browser.find_element(By.ID, "chart-bits")
    assert heatmap.is_displayed() and heatmap.size["width"] > 200
    cells = heatmap.find_elements(By.CSS_SELECTOR, "rect.cell")
    assert len(cells) == len(LAYERS) * ROUNDS
    assert all(cell.rect["width"] > 0 and cell.rect["height"] > 0 for cell in cells[:3])
    # the page keeps to its own Content-Security-Policy (no blocked inline style or script)
    messages = [entry["message"] for entry in browser.get_log("browser")]
    assert not [m for m in messages if "Content Security Policy" in m], messages
    # a real, non-blank screenshot
    width, height = _png_size(screenshot)
    assert (width, height) >= (800, 600)
    assert screenshot.stat().st_size > 20_000


def test_dashboard_overview_in_chromium(live_server: LiveServer, browser: WebDriver) -> None:
    # Execute
    _sign_in(browser, live_server, "/")

    # Assert
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.run-row")
    assert [row.get_attribute("data-run") for row in rows] == [str(live_server.run_id)]
    bar = rows[0].find_element(By.CSS_SELECTOR, "progress")
    assert bar.is_displayed() and bar.size["width"] > 0
    assert bar.get_attribute("value") == str(ROUNDS)


@pytest.fixture()
def attacker_site(live_server: LiveServer) -> Iterator[str]:
    """A page on another origin that submits a sign-out form to the dashboard as soon as it loads.

    The other origin is another port: the same site, so SameSite=Strict cookies are still sent.
    """
    page = (
        f'<!DOCTYPE html><html><body><form id="forged" method="post" '
        f'action="{live_server.url}/logout"><input name="csrf_token" value="guess">'
        '</form><script>document.getElementById("forged").submit()</script>'
        "</body></html>"
    ).encode()

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_dashboard_session_cookie_and_sign_out_in_chromium(
    live_server: LiveServer, browser: WebDriver
) -> None:
    # Prepare
    _sign_in(browser, live_server, "/")
    cookie = browser.get_cookie(COOKIE_NAME)
    assert cookie is not None

    # Execute: the page's own sign-out form (CSRF token, same-origin Origin header)
    browser.find_element(By.ID, "logout-submit").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/login"))
    browser.add_cookie({"name": COOKIE_NAME, "value": cookie["value"], "path": "/"})
    browser.get(f"{live_server.url}/")

    # Assert: the cookie never held the token, and a copy of it died with the sign-out
    assert cookie["value"] != live_server.token
    assert browser.find_element(By.ID, "login-form").is_displayed()


def test_dashboard_forged_cross_site_post_refused_in_chromium(
    live_server: LiveServer, browser: WebDriver, attacker_site: str
) -> None:
    # Prepare
    _sign_in(browser, live_server, "/")

    # Execute: the signed-in browser visits the attacker's page
    browser.get(attacker_site)
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/logout"))
    refused = browser.find_element(By.ID, "error-title").text
    browser.get(f"{live_server.url}/")

    # Assert: refused, and still signed in
    assert refused == "Request refused"
    assert browser.find_element(By.ID, "viewer").text == "Signed in as browser (operator)"
