"""The /api/v1 router: every resource router, all behind a bearer token."""

from fastapi import APIRouter, Depends

from server.coordinator.api.deps import get_current_token
from server.coordinator.api.routes import devices, policy, precision, runs, tokens
from server.coordinator.schemas import Message

api_router = APIRouter(
    dependencies=[Depends(get_current_token)],
    responses={
        401: {
            "model": Message,
            "description": "Missing, unknown, revoked or expired bearer token.",
        },
        429: {
            "model": Message,
            "description": "Too many failed authentications from this address; see Retry-After.",
        },
    },
)
api_router.include_router(runs.router)
api_router.include_router(precision.router)
api_router.include_router(devices.router)
api_router.include_router(policy.router)
api_router.include_router(tokens.router)
