"""Liveness, readiness and Prometheus metrics, without the API token.

/metrics takes APTFLEET_METRICS_TOKEN when one is set.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.coordinator.core.db import check_db
from server.coordinator.schemas import Message

router = APIRouter(prefix="", tags=["health"])


@router.get("/healthz", response_model=Message)
def read_health() -> Message:
    """The process is alive."""
    return Message(detail="ok")


@router.get("/readyz", response_model=Message, responses={503: {"model": Message}})
def read_readiness(request: Request) -> Response:
    """The database answers ``SELECT 1`` (503 otherwise)."""
    if check_db(request.app.state.engine):
        return JSONResponse({"detail": "ok"})
    return JSONResponse(
        {"detail": "Database unreachable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        401: {
            "model": Message,
            "description": "APTFLEET_METRICS_TOKEN is set and the request "
            "does not carry it as a bearer token.",
        },
    },
)
def read_metrics(request: Request) -> Response:
    """Prometheus text exposition of the app's registry.

    When ``APTFLEET_METRICS_TOKEN`` is set, only ``Authorization: Bearer <that token>``
    gets it (compared in constant time); the API's own tokens do not.
    """
    expected = request.app.state.settings.METRICS_TOKEN
    if expected:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (
            scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), expected.encode())
        ):
            return JSONResponse(
                {"detail": "GET /metrics needs the bearer token set in APTFLEET_METRICS_TOKEN."},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
