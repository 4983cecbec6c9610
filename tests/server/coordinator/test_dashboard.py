"""Tests of the operator dashboard: pages, SVG charts, escaping."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from apt_core.config import PrecisionPolicy
from server.coordinator import crud
from server.coordinator.tables import Run
from tests.utils.html import Elements, elements
from tests.utils.run import create_random_run, make_round_record
from tests.utils.token import token_headers

NODES = (11, 12, 13)
LAYERS = ("conv1", "conv2", "fc")
XSS = '<script>alert("x")</script>'


def _svg_points(svg_points: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in svg_points.split())]


def _finished_run(db: Session, rounds: int = 4, layers: tuple[str, ...] = LAYERS) -> Run:
    run = create_random_run(db, status="running", rounds=rounds)
    for r in range(1, rounds + 1):
        crud.record_round(
            session=db, run_id=run.id, record=make_round_record(r, nodes=NODES, layers=layers)
        )
    crud.set_run_savings(
        session=db, run_id=run.id, savings={"energy": 0.41, "memory": 0.38, "uplink": 0.52}
    )
    crud.set_run_status(session=db, run_id=run.id, status="completed")
    db.commit()
    return run


def test_read_overview_lists_runs_with_progress(
    client: TestClient, db: Session, admin_headers: dict[str, str]
) -> None:
    # Prepare
    done = _finished_run(db, rounds=2)
    pending = create_random_run(db, rounds=7)

    # Execute
    response = client.get("/", headers=admin_headers)

    # Assert
    assert response.status_code == 200
    rows = {row["data-run"] for row in elements(response.text, "tr", class_="run-row")}
    assert rows == {str(done.id), str(pending.id)}
    bars = {
        bar["data-run"]: (bar["value"], bar["max"])
        for bar in elements(response.text, "progress", class_="run-progress")
    }
    assert bars == {str(done.id): ("2", "2"), str(pending.id): ("0", "7")}
    assert elements(response.text, "a", href=f"/runs/{done.id}")
    # a queued run is active: the page polls its live summary instead of reloading itself
    assert not elements(response.text, "meta", **{"http-equiv": "refresh"})
    assert elements(response.text, "script", src="/dashboard.js")
    [live] = elements(response.text, "div", id="overview-live")
    assert (live["data-overview-url"], live["data-count"]) == ("/overview/live", "2")


def test_read_overview_no_runs_empty_state(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = client.get("/", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert elements(response.text, "p", id="runs-empty")
    assert not elements(response.text, "meta", **{"http-equiv": "refresh"})
    assert not elements(response.text, "script")  # nothing active: nothing polls
    # the seeded policy version 1 is in the history
    assert [p["data-version"] for p in elements(response.text, "tr", class_="policy-row")] == ["1"]


def test_read_run_page_renders_round_charts(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    rounds = 4
    run = _finished_run(db, rounds=rounds)

    # Execute
    response = client.get(f"/runs/{run.id}", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    html = response.text
    for chart_id, series in (
        ("chart-accuracy", ["accuracy"]),
        ("chart-energy", ["energy"]),
        ("chart-bytes", ["uplink", "downlink"]),
    ):
        (svg,) = elements(html, "svg", id=chart_id)
        assert (svg["data-points"], svg["data-series"]) == (str(rounds), str(len(series)))
    lines = elements(html, "polyline", class_="series")
    assert [line["data-series"] for line in lines] == ["accuracy", "energy", "uplink", "downlink"]
    for line in lines:
        points = _svg_points(line["points"])
        assert len(points) == rounds == int(line["data-points"])
        assert [x for x, _ in points] == sorted(x for x, _ in points)
    # accuracy rises 0.51 -> 0.54 in the factory: y (SVG, downwards) must fall
    accuracy_y = [y for _, y in _svg_points(lines[0]["points"])]
    assert accuracy_y == sorted(accuracy_y, reverse=True)
    assert len(elements(html, "text", class_="tick")) > 10
    assert not elements(html, "meta", **{"http-equiv": "refresh"})  # completed: no reload
    assert not elements(html, "script")  # nor polling


def test_read_run_page_renders_bits_heatmap(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    rounds = 5
    run = _finished_run(db, rounds=rounds)

    # Execute
    html = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert
    (svg,) = elements(html, "svg", id="chart-bits")
    assert (svg["data-layers"], svg["data-rounds"], svg["data-cells"]) == (
        str(len(LAYERS)),
        str(rounds),
        str(len(LAYERS) * rounds),
    )
    cells = elements(html, "rect", class_="cell")
    assert len(cells) == len(LAYERS) * rounds
    assert [c["data-layer"] for c in cells[::rounds]] == list(LAYERS)  # model order
    # default_bits = 6 + node % 3 + layer index + round % 2; nodes 11..13 average 1
    by_key = {(c["data-layer"], int(c["data-round"])): float(c["data-bits"]) for c in cells}
    assert by_key[("conv1", 1)] == 8.0
    assert by_key[("fc", 2)] == 9.0
    assert len(elements(html, "rect", class_="legend-swatch")) >= 2
    assert len({c["fill"] for c in cells}) > 1


def test_read_run_page_savings_and_policy_history(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _finished_run(db, rounds=2)
    crud.create_policy_version(
        session=db,
        policy=PrecisionPolicy(bits_max=12),
        overrides={},
        author="alice",
        note="tighter cap",
    )
    db.commit()

    # Execute
    html = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert
    savings = {row["data-key"] for row in elements(html, "tr", **{"data-key": "energy"})}
    assert savings == {"energy"}
    assert "41.0%" in html
    versions = [
        (r["data-version"], "current" in r["class"].split())
        for r in elements(html, "tr", class_="policy-row")
    ]
    assert versions == [("2", False), ("1", True)]  # newest first; rounds used version 1
    assert "tighter cap" in html and "alice" in html


def test_read_run_page_no_rounds_empty_state(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db, status="running")

    # Execute
    response = client.get(f"/runs/{run.id}", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    html = response.text
    assert elements(html, "p", id="rounds-empty")
    assert elements(html, "p", id="chart-bits-empty")
    assert elements(html, "p", id="savings-empty")
    assert not elements(html, "svg")
    # running: no whole-page reload; the script polls the small live summary instead
    assert not elements(html, "meta", **{"http-equiv": "refresh"})
    assert elements(html, "script", src="/dashboard.js")
    assert elements(html, "div", id="run-live")[0]["data-live-url"] == f"/runs/{run.id}/live"


def test_read_run_page_rounds_without_precision_heatmap_empty(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: an fp32-like run reports no per-layer precision
    run = _finished_run(db, rounds=3, layers=())

    # Execute
    html = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert
    assert elements(html, "svg", id="chart-accuracy")
    assert elements(html, "p", id="chart-bits-empty")


def test_read_run_page_escapes_user_fields(client: TestClient, db: Session) -> None:
    # Prepare
    headers = token_headers(db, role="operator", name='<img src=x onerror="alert(1)">')
    run = create_random_run(db, status="running", rounds=2)
    crud.record_round(
        session=db, run_id=run.id, record=make_round_record(1, nodes=NODES, layers=(XSS, "fc"))
    )
    crud.set_run_savings(session=db, run_id=run.id, savings={XSS: 0.5, "note": XSS})
    crud.set_run_status(session=db, run_id=run.id, status="failed", error=XSS)
    crud.create_policy_version(
        session=db, policy=PrecisionPolicy(), author=XSS, note=XSS, overrides={XSS: {"bits_max": 8}}
    )
    db.commit()

    # Execute
    html = client.get(f"/runs/{run.id}", headers=headers).text
    overview = client.get("/", headers=headers).text

    # Assert
    for page in (html, overview):
        assert "<script" not in page
        assert "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert elements(html, "p", id="run-error")
    (cell, *_) = elements(html, "rect", class_="cell")
    assert cell["data-layer"] == XSS  # the attribute round-trips, unescaped by the parser


def test_read_run_page_unknown_run_not_found(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    responses = [
        client.get(path, headers=operator_headers, follow_redirects=False)
        for path in ("/runs/999999", "/runs/abc", "/runs/99999999999", "/?run=x")
    ]

    # Assert
    for response in responses:
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert elements(response.text, "h1", id="error-title")


def test_read_overview_run_query_redirects_to_run_page(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/?run=12", headers=operator_headers, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/runs/12")


def test_dashboard_pages_strict_csp_same_origin_only(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _finished_run(db, rounds=2)
    active = create_random_run(db, status="running")
    paths = ("/", f"/runs/{run.id}", f"/runs/{active.id}", "/login", "/cost-model", "/runs/new")

    # Execute
    responses = [client.get(path, headers=operator_headers) for path in paths]

    # Assert
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert response.headers["cache-control"] == "no-store"
        # at most the same-origin polling script, never an inline one
        scripts = elements(response.text, "script")
        assert all(s.get("src") == "/dashboard.js" for s in scripts), scripts
        # nothing is fetched from or sent to anywhere but this server
        parser = Elements()
        parser.feed(response.text)
        urls = [
            attrs[name]
            for _, attrs in parser.found
            for name in ("href", "src", "action")
            if name in attrs
        ]
        assert urls and all(u.startswith(("/", "#")) and not u.startswith("//") for u in urls)


def test_read_stylesheet_public(client: TestClient) -> None:
    response = client.get("/dashboard.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def test_dashboard_not_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/login", "/logout", "/runs/{run_id}"} & set(paths)
