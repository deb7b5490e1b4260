"""API bodies for samples and runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class SampleListItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    site_id: uuid.UUID
    sample_number: str
    submission_number: str | None
    n_runs: int
    n_plates: int
    rows_total: int
    gmt: float | None
    flags: list[str]
    first_read_at: datetime | None
    last_read_at: datetime | None


class SamplePage(BaseModel):
    items: list[SampleListItem]
    next_cursor: str | None


class SampleDetail(SampleListItem):
    n_cols: int
    distribution: dict[str, int]
    statistics: dict[str, Any]
    current_run_ids: list[uuid.UUID]


class RunSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    run_id: uuid.UUID
    edit: int
    site_id: uuid.UUID
    device_id: uuid.UUID
    sample_id: uuid.UUID
    plate_id: uuid.UUID
    sample_number: str
    submission_number: str | None
    read_at: datetime
    status: str  # current | superseded | deleted | needs_review
    superseded_by: uuid.UUID | None
    flags: list[str]
    # Why the edge's plate-quality gate held the run (status needs_review), else empty.
    review_reasons: list[str] = []
    n_rows: int
    n_cols: int


class WellPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    well_id: str
    row: int
    col: int
    state: str
    confidence: float | None
    class_name: str | None
    box: list[float] | None
    flags: list[str]
    n_detections: int


class RowPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    row: int
    label: str
    endpoint: int
    titre: int | None
    flags: list[str]
    counted: bool
    counted_titre: float | None
    exclusion_reason: str | None


class RunDetail(RunSummary):
    extra: dict[str, Any]
    images: list[str]
    wells: list[WellPublic]
    rows: list[RowPublic]
