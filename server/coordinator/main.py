"""Creates the coordinator's FastAPI app."""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from server.coordinator import dashboard
from server.coordinator.api.main import api_router
from server.coordinator.api.middleware import (
    BodyReadMiddleware,
    ClientLimitMiddleware,
    ConcurrencyLimitMiddleware,
    RequestMetricsMiddleware,
)
from server.coordinator.api.routes import docs, health
from server.coordinator.api.security_headers import SecurityHeadersMiddleware
from server.coordinator.core.config import Settings
from server.coordinator.core.config import settings as default_settings
from server.coordinator.core.db import POOL_CONNECTIONS, make_engine, make_session_factory
from server.coordinator.core.metrics import Metrics
from server.coordinator.core.throttle import AuthFailureThrottle
from server.coordinator.exceptions import (
    AuthenticationError,
    ConflictError,
    InvalidQueryError,
    LaunchError,
    NotConfiguredError,
    NotFoundError,
    PermissionDeniedError,
    PolicyUpdateError,
    TooManyAttemptsError,
)
from server.coordinator.services.launcher import NullLauncher, RunLauncher
from server.coordinator.services.startup import fleet_totals_reader, init_db, interrupt_stale_runs

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _error(
    status_code: int, headers: dict[str, str] | None = None
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler answering ``{"detail": str(exc)}`` with ``status_code`` (and ``headers``)."""

    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)

    return handler


async def _too_many_attempts(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyAttemptsError)
    return JSONResponse(
        {"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
    )


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities spelled as JSON strings, so a 422 can echo any input.

    JSON has no such numbers: the parser accepts them, the encoder does not.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (``loc`` names the field, ``input`` its value), safe for any input."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


async def _policy_update_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolicyUpdateError)
    detail = {
        "type": "value_error",
        "loc": ["body", *exc.loc],
        "msg": exc.message,
        "input": _json_safe(exc.value),
    }
    return JSONResponse({"detail": [detail]}, status_code=422)


async def _invalid_query_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidQueryError)
    detail = {
        "type": "value_error",
        "loc": ["query", *exc.loc],
        "msg": exc.message,
        "input": _json_safe(exc.value),
    }
    return JSONResponse({"detail": [detail]}, status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors, with a 405's ``Allow`` listing the methods of every route.

    Every route of the path counts; Starlette names only the methods of the first route that matched
    it.
    """
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        methods: set[str] = set()
        for route in iter_route_contexts(request.app.routes):  # nested routers included
            match, _ = route.matches({**request.scope, "method": "\0"})
            if match is not Match.NONE:
                methods |= set(getattr(route, "methods", None) or ())
        if methods:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


def _add_error_handlers(app: FastAPI) -> None:
    """Map every domain error family of ``exceptions.py`` to its HTTP status (only here)."""
    app.add_exception_handler(
        AuthenticationError, _error(401, headers={"WWW-Authenticate": "Bearer"})
    )
    app.add_exception_handler(PermissionDeniedError, _error(403))
    app.add_exception_handler(TooManyAttemptsError, _too_many_attempts)
    app.add_exception_handler(NotFoundError, _error(404))
    app.add_exception_handler(ConflictError, _error(409))
    app.add_exception_handler(NotConfiguredError, _error(501))
    app.add_exception_handler(LaunchError, _error(503))
    app.add_exception_handler(PolicyUpdateError, _policy_update_error)
    app.add_exception_handler(InvalidQueryError, _invalid_query_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def create_app(settings: Settings | None = None, launcher: RunLauncher | None = None) -> FastAPI:
    """Build the coordinator app; no database work happens until startup.

    At startup the database is migrated to head (Alembic), policy version 1 is seeded if
    missing (``init_db``), and runs left pending or running by a previous process are
    marked interrupted.

    Parameters
    ----------
    settings : Settings | None (default: None -> ``server.coordinator.core.config.settings``)
        Configuration, e.g. ``Settings(DATABASE_URL=...)`` in tests.
    launcher : RunLauncher | None (default: None -> ``NullLauncher``)
        Starts and stops runs. It can also be set later as ``app.state.launcher``, e.g.
        built from ``app.state.session_factory``.

    Returns
    -------
    FastAPI
        With ``app.state.settings``, ``engine``, ``session_factory``, ``launcher``,
        ``model_converter`` (None until set; ``(packed: bytes, run) -> bytes``),
        ``metrics`` and ``auth_throttle`` (failed authentications per client address).
    """
    settings = settings or default_settings
    engine = make_engine(settings.DATABASE_URL)
    session_factory = make_session_factory(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        init_db(settings.DATABASE_URL)
        interrupt_stale_runs(session_factory)
        resume_queue = getattr(_app.state.launcher, "resume_queue", None)
        if resume_queue is not None:  # admit the runs queued before a restart
            resume_queue()
        yield
        shutdown = getattr(_app.state.launcher, "shutdown", None)
        if shutdown is not None:
            shutdown()
        engine.dispose()

    # /docs and /redoc come from files installed with the package (api/routes/docs.py)
    app = FastAPI(
        title="aptfleet coordinator",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.launcher = launcher or NullLauncher(session_factory)
    app.state.model_converter = None
    app.state.metrics = Metrics(fleet_totals_reader(session_factory))
    app.state.auth_throttle = AuthFailureThrottle(
        settings.AUTH_FAILURE_LIMIT, settings.AUTH_FAILURE_WINDOW_S
    )

    _add_error_handlers(app)
    _add_middleware(app, settings)
    _include_routers(app)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """Admission limits, security headers, CORS and request metrics, in their order."""
    # Added innermost first. Admission (fewer requests in flight than pooled connections:
    # no thread/connection deadlock) comes after the whole body is read, so slow or
    # stalled bodies never hold a slot; the per-address limit bounds what one client
    # holds meanwhile. Metrics, security headers and CORS see every response, 4xx of the
    # limits included.
    app.add_middleware(ConcurrencyLimitMiddleware, limit=POOL_CONNECTIONS - 2)
    app.add_middleware(
        BodyReadMiddleware, max_bytes=settings.MAX_BODY_BYTES, timeout=settings.BODY_TIMEOUT
    )
    app.add_middleware(ClientLimitMiddleware, limit=settings.MAX_REQUESTS_PER_CLIENT)
    if settings.CORS_ORIGINS:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.CORS_ORIGINS,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeadersMiddleware, tls=settings.TLS)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)


def _include_routers(app: FastAPI) -> None:
    """Health probes, the docs pages, the dashboard and the versioned API."""
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(dashboard.router)
    app.include_router(api_router, prefix=API_PREFIX)


def create_service_app() -> FastAPI:
    """The app ``aptfleet serve`` runs.

    Runs train in their own processes (Flower), and checkpoints export to float PyTorch.
    """
    from server.coordinator.services.model_export import packed_to_torch
    from server.coordinator.services.process_launcher import ProcessLauncher

    app = create_app(default_settings, ProcessLauncher(default_settings))
    app.state.model_converter = packed_to_torch
    # Everything alive now (torch, SQLAlchemy, FastAPI: hundreds of thousands of objects)
    # lives as long as the process; frozen, the collector stops re-scanning it. Unfrozen,
    # each full collection that a burst of 1,000-row responses set off paused a request
    # for ~180 ms (the p99 of docs/results/store-scale.md's larger reads, p50 10-20 ms).
    gc.collect()
    gc.freeze()
    return app
