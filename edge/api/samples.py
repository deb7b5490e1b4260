"""Samples: the pooled distribution and statistics over a sample's current plates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from edge.api.deps import ApplianceDep, require_operator
from edge.schemas import Page, SampleDetail, SampleSummaryOut

router = APIRouter(
    prefix="/api/samples", tags=["samples"], dependencies=[Depends(require_operator)]
)


@router.get("", summary="List samples, most recently updated first")
def list_samples(
    appliance: ApplianceDep,
    query: Annotated[str | None, Query(max_length=64, description="sample number contains")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page[SampleSummaryOut]:
    return appliance.runs.list_samples(query=query, limit=limit, offset=offset)


@router.get("/{sample_number}", summary="One sample: distribution, statistics, runs, CSV state")
def get_sample(
    sample_number: Annotated[str, Path(min_length=1, max_length=64)], appliance: ApplianceDep
) -> SampleDetail:
    return appliance.runs.get_sample(sample_number)
