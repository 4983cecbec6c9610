"""Devices (Flower nodes) and their history."""

from __future__ import annotations

from fastapi import APIRouter

from server.coordinator import crud
from server.coordinator.api.deps import Cursor, DeviceId, Limit, SessionDep, Skip
from server.coordinator.exceptions import NotFoundError
from server.coordinator.schemas import DeviceDetailPublic, DevicePublic, DevicesPublic, Message

router = APIRouter(prefix="/devices", tags=["devices"])


@router.get("", response_model=DevicesPublic)
def read_devices(
    session: SessionDep, cursor: Cursor = None, skip: Skip = 0, limit: Limit = 100
) -> DevicesPublic:
    """One page of devices, most recently seen first; follow ``next_cursor``."""
    page = crud.page_devices(session=session, cursor=cursor, skip=skip, limit=limit)
    return DevicesPublic.model_validate(page.fields(), from_attributes=True)


@router.get("/{device_id}", response_model=DeviceDetailPublic, responses={404: {"model": Message}})
def read_device(session: SessionDep, device_id: DeviceId) -> DeviceDetailPublic:
    """One device with its per-run history."""
    device = crud.get_device(session=session, device_id=device_id)
    if device is None:
        raise NotFoundError(f"Device {device_id} not found")
    history = crud.device_history(session=session, device_id=device_id)
    return DeviceDetailPublic.model_validate(
        {**DevicePublic.model_validate(device).model_dump(), "history": history}
    )
