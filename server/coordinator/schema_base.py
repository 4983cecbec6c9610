"""Base classes of the REST API's response models (shared by schemas.py and policy_schemas.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _Page(BaseModel):
    """The paging fields every list response carries beside ``data``."""

    count: int = Field(description="Rows matching the filters, over every page.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as 'cursor' to get the next page; null on the last page. Opaque: "
        "pass it back unchanged.",
    )
