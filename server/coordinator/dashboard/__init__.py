"""The operators' and admins' console: server-rendered HTML pages with inline SVG charts."""

from fastapi import APIRouter

from server.coordinator.dashboard import console_routes, policy_routes, routes, run_routes

router = APIRouter()
# run_routes first: its /runs/new must match before the run page's /runs/{run_id}
router.include_router(run_routes.router)
router.include_router(policy_routes.router)
router.include_router(console_routes.router)
router.include_router(routes.router)

__all__ = ["router"]
