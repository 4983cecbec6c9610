"""Tests of the operator dashboard: sign-in sessions, CSRF, pages, SVG charts, escaping."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from apt_core.config import PrecisionPolicy
from server.coordinator import crud
from server.coordinator.core.security import hash_token
from server.coordinator.dashboard.auth import COOKIE_NAME
from server.coordinator.tables import DashboardSession, Run, utcnow
from tests.utils.dashboard import csrf_token, sign_in
from tests.utils.run import create_random_run, make_round_record
from tests.utils.token import token_headers

NODES = (11, 12, 13)
LAYERS = ("conv1", "conv2", "fc")
XSS = '<script>alert("x")</script>'


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def _elements(html: str, tag: str, **attrs: str) -> list[dict[str, str]]:
    """Attributes of the ``tag`` elements whose attributes include ``attrs``.

    ``class_`` matches one class of a space-separated list.
    """
    parser = _Elements()
    parser.feed(html)
    wanted_class = attrs.pop("class_", None)
    return [
        found
        for name, found in parser.found
        if name == tag
        and all(found.get(k) == v for k, v in attrs.items())
        and (wanted_class is None or wanted_class in found.get("class", "").split())
    ]


def _svg_points(svg_points: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in svg_points.split())]


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


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


def test_read_overview_without_token_redirects_to_login(client: TestClient) -> None:
    # Execute
    response = client.get("/", follow_redirects=False)
    login = client.get(response.headers["location"])

    # Assert
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2F"
    assert login.status_code == 200
    assert _elements(login.text, "form", id="login-form")
    assert _elements(login.text, "input", name="next", value="/")


def test_read_run_page_without_token_redirects_to_login(client: TestClient, db: Session) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    known = client.get(f"/runs/{run.id}", follow_redirects=False)
    unknown = client.get("/runs/999999", follow_redirects=False)

    # Assert: same answer whether or not the run exists
    assert (known.status_code, unknown.status_code) == (303, 303)
    assert known.headers["location"] == f"/login?next=%2Fruns%2F{run.id}"


def test_read_overview_bad_bearer_token_redirects_to_login(client: TestClient) -> None:
    response = client.get(
        "/", headers={"Authorization": "Bearer aptf_nope"}, follow_redirects=False
    )
    assert response.status_code == 303


def test_create_login_session_invalid_token_unauthorized(client: TestClient) -> None:
    # Execute
    response = sign_in(client, "aptf_wrong")

    # Assert
    assert response.status_code == 401
    assert _elements(response.text, "p", id="login-error")
    assert COOKIE_NAME not in response.cookies


def test_create_login_session_sets_strict_httponly_session_cookie(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = create_random_run(db)

    # Execute
    response = sign_in(client, _token(operator_headers), f"/runs/{run.id}")
    page = client.get(f"/runs/{run.id}")

    # Assert
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{run.id}"
    (cookie,) = [
        c.lower()
        for c in response.headers.get_list("set-cookie")
        if c.startswith(f"{COOKIE_NAME}=")
    ]
    assert {"httponly", "samesite=strict", "path=/"} <= {part.strip() for part in cookie.split(";")}
    assert "secure" not in {part.strip() for part in cookie.split(";")}  # plain HTTP here
    assert page.status_code == 200
    assert _elements(page.text, "h1", id="run-title")


def test_create_login_session_https_cookie_secure(
    app: FastAPI, db: Session, operator_headers: dict[str, str]
) -> None:
    # Execute
    with TestClient(app, base_url="https://testserver") as client:
        response = sign_in(client, _token(operator_headers))

    # Assert
    (cookie,) = [
        c.lower()
        for c in response.headers.get_list("set-cookie")
        if c.startswith(f"{COOKIE_NAME}=")
    ]
    assert "secure" in {part.strip() for part in cookie.split(";")}


def test_session_cookie_not_the_token_nor_a_bearer_token(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    token = _token(operator_headers)
    sign_in(client, token)
    session_id = client.cookies[COOKIE_NAME]

    # Execute: a stolen cookie replayed against the API
    api = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {session_id}"})

    # Assert
    assert session_id != token and token not in session_id
    assert api.status_code == 401
    stored = db.scalars(select(DashboardSession.session_hash)).all()
    assert stored == [hash_token(session_id)]  # only its digest is kept


def test_create_login_session_next_elsewhere_goes_home(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    responses = [
        sign_in(client, _token(operator_headers), nxt)
        for nxt in ("https://evil.example/", "//evil.example", "/api/v1/runs")
    ]

    # Assert
    assert [r.headers["location"] for r in responses] == ["/", "/", "/"]


def test_create_login_session_cross_site_forbidden(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: a valid form and CSRF cookie, as a cross-site page could not have them
    form = client.get("/login")
    data = {"token": _token(operator_headers), "next": "/", "csrf_token": csrf_token(form.text)}

    # Execute
    forged = [
        client.post(
            "/login", data=data, follow_redirects=False, headers={"Origin": "https://evil.example"}
        ),
        client.post("/login", data=data, follow_redirects=False, headers={"Origin": "null"}),
        client.post(
            "/login",
            data=data,
            follow_redirects=False,
            headers={"Referer": "https://evil.example/page"},
        ),
        client.post("/login", data={**data, "csrf_token": "guess"}, follow_redirects=False),
        client.post(
            "/login",
            data={k: v for k, v in data.items() if k != "csrf_token"},
            follow_redirects=False,
        ),
    ]
    same_site = client.post(
        "/login", data=data, follow_redirects=False, headers={"Origin": "http://testserver"}
    )

    # Assert
    assert [r.status_code for r in forged] == [403] * 5
    assert all(COOKIE_NAME not in r.cookies for r in forged)
    assert same_site.status_code == 303


def test_create_login_session_without_form_cookie_forbidden(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare: the token of a form someone else loaded (the cross-site attacker's own)
    attacker = csrf_token(client.get("/login").text)
    client.cookies.clear()

    # Execute
    response = client.post(
        "/login",
        data={"token": _token(operator_headers), "csrf_token": attacker},
        follow_redirects=False,
    )

    # Assert
    assert response.status_code == 403


def test_delete_login_session_cross_site_forbidden_session_kept(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    csrf = csrf_token(client.get("/").text)

    # Execute
    forged = [
        client.post(
            "/logout",
            data={"csrf_token": csrf},
            follow_redirects=False,
            headers={"Origin": "https://evil.example"},
        ),
        client.post("/logout", data={}, follow_redirects=False),
        client.post("/logout", data={"csrf_token": "x" * 64}, follow_redirects=False),
    ]
    still = client.get("/", follow_redirects=False)

    # Assert
    assert [r.status_code for r in forged] == [403, 403, 403]
    assert still.status_code == 200


def test_read_overview_revoked_token_ends_session(client: TestClient, db: Session) -> None:
    # Prepare
    token = crud.create_token(session=db, role="operator", name="carol")
    db.commit()
    sign_in(client, token)
    row = crud.authenticate_token(session=db, token=token)
    assert row is not None
    crud.revoke_token(session=db, token_id=row.id)
    db.commit()

    # Execute
    response = client.get("/", follow_redirects=False)

    # Assert
    assert response.status_code == 303
    assert "expired=1" in response.headers["location"]
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert db.scalars(select(DashboardSession)).all() == []


def test_read_overview_expired_session_redirects(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    db.execute(update(DashboardSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.commit()

    # Execute
    response = client.get("/", follow_redirects=False)

    # Assert
    assert response.status_code == 303
    assert "expired=1" in response.headers["location"]


def test_delete_login_session_ends_session_server_side(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    sign_in(client, _token(operator_headers))
    session_id = client.cookies[COOKIE_NAME]
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200

    # Execute
    response = client.post(
        "/logout", data={"csrf_token": csrf_token(page.text)}, follow_redirects=False
    )
    client.cookies.clear()  # the jar keeps expired cookies until cleared; the header matters
    replayed = client.get("/", cookies={COOKIE_NAME: session_id}, follow_redirects=False)

    # Assert
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert f'{COOKIE_NAME}=""' in response.headers["set-cookie"]
    assert replayed.status_code == 303  # a copied cookie died with the sign-out
    db.commit()
    assert db.scalars(select(DashboardSession)).all() == []


def test_create_login_session_repeated_failures_too_many_requests(
    app: FastAPI, client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Prepare
    limit = app.state.settings.AUTH_FAILURE_LIMIT

    # Execute
    failures = [sign_in(client, f"aptf_guess{i}").status_code for i in range(limit)]
    throttled = sign_in(client, _token(operator_headers))  # even a valid token waits
    with TestClient(app, client=("10.0.0.7", 50000)) as other:
        elsewhere = sign_in(other, _token(operator_headers))

    # Assert
    assert failures == [401] * limit
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert _elements(throttled.text, "p", id="login-error")
    assert elsewhere.status_code == 303  # another address is not locked out


def test_read_login_page_names_existing_command(client: TestClient) -> None:
    # Execute
    html = client.get("/login").text

    # Assert: tests/server/cli/test_coordinator.py runs this very command
    assert "server token" not in html
    assert '<code id="login-command">aptfleet token create --role admin</code>' in html


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
    rows = {row["data-run"] for row in _elements(response.text, "tr", class_="run-row")}
    assert rows == {str(done.id), str(pending.id)}
    bars = {
        bar["data-run"]: (bar["value"], bar["max"])
        for bar in _elements(response.text, "progress", class_="run-progress")
    }
    assert bars == {str(done.id): ("2", "2"), str(pending.id): ("0", "7")}
    assert _elements(response.text, "a", href=f"/runs/{done.id}")
    # a pending run is active: the page reloads itself
    assert _elements(response.text, "meta", **{"http-equiv": "refresh"})


def test_read_overview_no_runs_empty_state(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    # Execute
    response = client.get("/", headers=operator_headers)

    # Assert
    assert response.status_code == 200
    assert _elements(response.text, "p", id="runs-empty")
    assert not _elements(response.text, "meta", **{"http-equiv": "refresh"})
    # the seeded policy version 1 is in the history
    assert [p["data-version"] for p in _elements(response.text, "tr", class_="policy-row")] == ["1"]


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
        (svg,) = _elements(html, "svg", id=chart_id)
        assert (svg["data-points"], svg["data-series"]) == (str(rounds), str(len(series)))
    lines = _elements(html, "polyline", class_="series")
    assert [line["data-series"] for line in lines] == ["accuracy", "energy", "uplink", "downlink"]
    for line in lines:
        points = _svg_points(line["points"])
        assert len(points) == rounds == int(line["data-points"])
        assert [x for x, _ in points] == sorted(x for x, _ in points)
    # accuracy rises 0.51 -> 0.54 in the factory: y (SVG, downwards) must fall
    accuracy_y = [y for _, y in _svg_points(lines[0]["points"])]
    assert accuracy_y == sorted(accuracy_y, reverse=True)
    assert len(_elements(html, "text", class_="tick")) > 10
    assert not _elements(html, "meta", **{"http-equiv": "refresh"})  # completed: no reload


def test_read_run_page_renders_bits_heatmap(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    rounds = 5
    run = _finished_run(db, rounds=rounds)

    # Execute
    html = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert
    (svg,) = _elements(html, "svg", id="chart-bits")
    assert (svg["data-layers"], svg["data-rounds"], svg["data-cells"]) == (
        str(len(LAYERS)),
        str(rounds),
        str(len(LAYERS) * rounds),
    )
    cells = _elements(html, "rect", class_="cell")
    assert len(cells) == len(LAYERS) * rounds
    assert [c["data-layer"] for c in cells[::rounds]] == list(LAYERS)  # model order
    # default_bits = 6 + node % 3 + layer index + round % 2; nodes 11..13 average 1
    by_key = {(c["data-layer"], int(c["data-round"])): float(c["data-bits"]) for c in cells}
    assert by_key[("conv1", 1)] == 8.0
    assert by_key[("fc", 2)] == 9.0
    assert len(_elements(html, "rect", class_="legend-swatch")) >= 2
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
    savings = {row["data-key"] for row in _elements(html, "tr", **{"data-key": "energy"})}
    assert savings == {"energy"}
    assert "41.0%" in html
    versions = [
        (r["data-version"], "current" in r["class"].split())
        for r in _elements(html, "tr", class_="policy-row")
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
    assert _elements(html, "p", id="rounds-empty")
    assert _elements(html, "p", id="chart-bits-empty")
    assert _elements(html, "p", id="savings-empty")
    assert not _elements(html, "svg")
    assert _elements(html, "meta", **{"http-equiv": "refresh"})  # running: reload


def test_read_run_page_rounds_without_precision_heatmap_empty(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare: an fp32-like run reports no per-layer precision
    run = _finished_run(db, rounds=3, layers=())

    # Execute
    html = client.get(f"/runs/{run.id}", headers=operator_headers).text

    # Assert
    assert _elements(html, "svg", id="chart-accuracy")
    assert _elements(html, "p", id="chart-bits-empty")


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
    assert _elements(html, "p", id="run-error")
    (cell, *_) = _elements(html, "rect", class_="cell")
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
        assert _elements(response.text, "h1", id="error-title")


def test_read_overview_run_query_redirects_to_run_page(
    client: TestClient, operator_headers: dict[str, str]
) -> None:
    response = client.get("/?run=12", headers=operator_headers, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/runs/12")


def test_dashboard_pages_strict_csp_no_script(
    client: TestClient, db: Session, operator_headers: dict[str, str]
) -> None:
    # Prepare
    run = _finished_run(db, rounds=2)

    # Execute
    responses = [
        client.get(path, headers=operator_headers) for path in ("/", f"/runs/{run.id}", "/login")
    ]

    # Assert
    for response in responses:
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert "<script" not in response.text
        # nothing is fetched from or sent to anywhere but this server
        parser = _Elements()
        parser.feed(response.text)
        urls = [
            attrs[name]
            for _, attrs in parser.found
            for name in ("href", "src", "action")
            if name in attrs
        ]
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls)


def test_read_stylesheet_public(client: TestClient) -> None:
    response = client.get("/dashboard.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def test_dashboard_not_in_openapi(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/login", "/logout", "/runs/{run_id}"} & set(paths)
