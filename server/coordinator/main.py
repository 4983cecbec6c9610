"""Creates the coordinator's FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from server.coordinator import dashboard
from server.coordinator.api.main import api_router
from server.coordinator.api.middleware import (
    BodySizeLimitMiddleware,
    ConcurrencyLimitMiddleware,
    RequestMetricsMiddleware,
)
from server.coordinator.api.routes import health
from server.coordinator.core.config import Settings
from server.coordinator.core.config import settings as default_settings
from server.coordinator.core.db import POOL_CONNECTIONS, make_engine, make_session_factory
from server.coordinator.core.metrics import Metrics
from server.coordinator.exceptions import (
    AuthenticationError,
    ConflictError,
    LaunchError,
    NotConfiguredError,
    NotFoundError,
    PermissionDeniedError,
    PolicyUpdateError,
)
from server.coordinator.services.launcher import NullLauncher, RunLauncher
from server.coordinator.services.startup import fleet_totals_reader, init_db, interrupt_stale_runs

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _error(status_code: int, headers: dict[str, str] | None = None
           ) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler answering ``{"detail": str(exc)}`` with ``status_code`` (and ``headers``)."""

    async def handler(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)

    return handler


async def _policy_update_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolicyUpdateError)
    detail = {"type": "value_error", "loc": ["body", *exc.loc], "msg": exc.message,
              "input": exc.value}
    return JSONResponse({"detail": [detail]}, status_code=422)


def _add_error_handlers(app: FastAPI) -> None:
    """Map every domain error family of ``exceptions.py`` to its HTTP status (only here)."""
    app.add_exception_handler(AuthenticationError,
                              _error(401, headers={"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(PermissionDeniedError, _error(403))
    app.add_exception_handler(NotFoundError, _error(404))
    app.add_exception_handler(ConflictError, _error(409))
    app.add_exception_handler(NotConfiguredError, _error(501))
    app.add_exception_handler(LaunchError, _error(503))
    app.add_exception_handler(PolicyUpdateError, _policy_update_error)


def create_app(settings: Settings | None = None,
               launcher: RunLauncher | None = None) -> FastAPI:
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
        ``model_converter`` (None until set; ``(packed: bytes, run) -> bytes``) and
        ``metrics``.
    """
    settings = settings or default_settings
    engine = make_engine(settings.DATABASE_URL)
    session_factory = make_session_factory(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        init_db(settings.DATABASE_URL)
        interrupt_stale_runs(session_factory)
        yield
        shutdown = getattr(_app.state.launcher, "shutdown", None)
        if shutdown is not None:
            shutdown()
        engine.dispose()

    app = FastAPI(title="aptfleet coordinator", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.launcher = launcher or NullLauncher(session_factory)
    app.state.model_converter = None
    app.state.metrics = Metrics(fleet_totals_reader(session_factory))

    _add_error_handlers(app)

    # Added innermost first: metrics see every response, 413s included.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    if settings.CORS_ORIGINS:
        app.add_middleware(CORSMiddleware, allow_origins=settings.CORS_ORIGINS,
                           allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["Authorization", "Content-Type"])
    # fewer requests in flight than pooled connections: no thread/connection deadlock
    app.add_middleware(ConcurrencyLimitMiddleware, limit=POOL_CONNECTIONS - 2)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)

    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(api_router, prefix=API_PREFIX)
    return app


def create_service_app() -> FastAPI:
    """The app ``aptfleet serve`` runs: runs train in their own processes (Flower), and
    checkpoints export to float PyTorch."""
    from server.coordinator.services.model_export import packed_to_torch
    from server.coordinator.services.process_launcher import ProcessLauncher

    app = create_app(default_settings, ProcessLauncher(default_settings))
    app.state.model_converter = packed_to_torch
    return app
