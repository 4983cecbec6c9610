"""Suite-wide test settings: the per-test timeout of the end-to-end tests."""

from __future__ import annotations

import pytest

#: Seconds an end-to-end test (marked ``slow``) may take unless it carries its own
#: ``@pytest.mark.timeout``. The slowest ones start a SuperLink, SuperNodes and a
#: coordinator and took up to 380 s on a 2-core machine busy with other work, past the
#: 300 s default of ``[tool.pytest.ini_options]``.
SLOW_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every slow test without a timeout marker of its own the end-to-end timeout."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))
