"""Refresh docs/screenshots/: every console page of a real demo run, in headless Chromium.

Usage (from the repository root, in the project's virtualenv)::

    python scripts/dashboard_screenshots.py [--out docs/screenshots] [--data-dir DIR] [--reuse]

Steps: ``aptfleet demo --no-keep-serving`` trains an apt run on a simulated fleet (the
admin changes the policy mid-run); then ``aptfleet serve`` on the same database trains
an fp32 run of the same settings for the comparison; then Chromium (Debian ``chromium``
and ``chromium-driver``) signs in as an admin and saves one PNG per page. Everything
stays on 127.0.0.1; nothing is fetched from anywhere. ``--reuse`` takes the runs already in
``--data-dir`` (from an earlier call) and only retakes the pictures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server.cli.service import Coordinator, wait_for

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"clients": 6, "rounds": 8, "fraction": 0.5}
WIDE, NARROW = (1280, 900), (390, 900)


def _demo(data_dir: Path) -> None:
    """The demo's apt run, its mid-run policy change, and its report."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli.main",
            "demo",
            "--no-keep-serving",
            "--data-dir",
            str(data_dir),
            "--clients",
            str(SETTINGS["clients"]),
            "--rounds",
            str(SETTINGS["rounds"]),
            "--fraction",
            str(SETTINGS["fraction"]),
        ],
        cwd=REPO,
        check=True,
    )


def _fp32_run(service: Coordinator, token: str) -> int:
    """An fp32 run with the demo's settings, trained to the end."""
    with service.client(token) as api:
        body = {"task": "digits", "method": "fp32", "alpha": 0.5, "seed": 0, **SETTINGS}
        run = api.post("/runs", json=body).json()

        def done() -> bool:
            status = api.get(f"/runs/{run['id']}").json()["status"]
            if status in ("failed", "stopped", "interrupted"):
                raise RuntimeError(f"the fp32 run ended {status}")
            return bool(status == "completed")

        wait_for(done, 900, "the fp32 run to complete", every=2)
        return int(run["id"])


def _browser(profile: Path, size: tuple[int, int]) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _sign_in(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-submit").click()
    wait_for(lambda: not driver.current_url.endswith("/login"), 10, "the sign-in")


def _shoot(driver: Any, base: str, path: str, out: Path, size: tuple[int, int]) -> None:
    """Load ``path`` and save the whole page (its full height) as ``out``."""
    driver.set_window_size(*size)
    driver.get(f"{base}{path}")
    time.sleep(0.5)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size[0], min(int(height) + 20, 6000))
    time.sleep(0.3)
    driver.save_screenshot(str(out))
    print(f"{out}  <- {path}")


def _policy_preview(driver: Any, base: str, out: Path) -> None:
    """The admin's editor with a previewed change (nothing saved)."""
    from selenium.webdriver.common.by import By

    driver.set_window_size(*WIDE)
    driver.get(f"{base}/policy")
    field = driver.find_element(By.ID, "bits_max")
    value = int(field.get_attribute("value") or 10)
    field.clear()
    field.send_keys(str(value - 2))
    driver.find_element(By.ID, "policy-preview").click()
    time.sleep(0.5)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDE[0], min(int(height) + 20, 6000))
    driver.save_screenshot(str(out))
    print(f"{out}  <- /policy (preview)")


def _pages(apt: int, fp32: int, device: int) -> list[tuple[str, str, tuple[int, int]]]:
    return [
        ("overview.png", "/", WIDE),
        ("run.png", f"/runs/{apt}", WIDE),
        ("new-run.png", "/runs/new", WIDE),
        ("compare.png", f"/compare?run={apt}&run={fp32}", WIDE),
        ("fleet.png", "/devices", WIDE),
        ("device.png", f"/devices/{device}", WIDE),
        ("cost-model.png", "/cost-model", WIDE),
        ("actions.png", "/actions", WIDE),
        ("run-narrow.png", f"/runs/{apt}", NARROW),
    ]


def main() -> None:
    """Run the demo, the fp32 comparison run, and save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep the runs of --data-dir")
    args = parser.parse_args()
    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="aptfleet-shots-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.reuse and (data_dir / "aptfleet.db").exists()):
        _demo(data_dir)
    service = Coordinator(data_dir)
    admin = service.token("admin", "screenshots")
    service.start()
    profile = data_dir / "chromium-profile"
    try:
        with service.client(admin) as api:
            runs = {r["method"]: r["id"] for r in reversed(api.get("/runs").json()["data"])}
            device = api.get("/devices").json()["data"][-1]["id"]
        apt = runs["apt"]
        fp32 = runs["fp32"] if "fp32" in runs else _fp32_run(service, admin)
        driver = _browser(profile, WIDE)
        try:
            _sign_in(driver, service.base, admin)
            for name, path, size in _pages(apt, fp32, device):
                _shoot(driver, service.base, path, args.out / name, size)
            _policy_preview(driver, service.base, args.out / "policy.png")
        finally:
            driver.quit()
    finally:
        service.stop()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
