"""Model rollout messages: what the cloud tells a device, what the device reports, and the
rule that ends shadowing (docs/ota.md).

The cloud publishes a retained :class:`ModelNotice` on the device's ``model`` topic; the
device fetches the signed release over HTTP (checked with :func:`core.ota.verify_artefact`),
shadows it, counting with :class:`ShadowTally`, and reports with :class:`ModelReport`.
:func:`shadow_decision` turns the shadow figures into continue / switch / roll back. Standard
library and pydantic only (no cryptography needed to read a notice).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.wire_types import FreeText, ModelName, ModelVersion, Sha256Hex, UtcDatetime

logger = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "ModelNotice",
    "ModelReport",
    "ReportState",
    "ShadowTally",
    "parse_notice",
    "parse_report",
    "shadow_decision",
]

SCHEMA: Literal[1] = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {str(err['msg']).removeprefix('Value error, ')}"


ReportState = Literal[
    "downloaded", "refused", "shadowing", "switched", "rolled_back", "failed",
]  # fmt: skip


class ModelNotice(_Model):
    """Retained on ``…/{device}/model``: the release the cloud wants this device to shadow.

    The device fetches the signed manifest and presigned file URLs from
    ``GET /api/v1/device/model`` (URLs expire, so they are not in a retained message) and
    checks that the manifest's sha256 is ``manifest_sha256``. An empty retained message on
    the topic means the notice was withdrawn (its assignment was superseded): shadow nothing.
    """

    schema_version: Literal[1] = SCHEMA
    kind: Literal["model"] = "model"
    assignment_id: UUID
    revision: int = Field(ge=0, le=2**31 - 1)
    name: ModelName
    version: ModelVersion
    manifest_sha256: Sha256Hex
    canary: bool
    shadow_plates: int = Field(ge=1, le=10_000)
    agreement_threshold: float = Field(ge=0.0, le=1.0)
    # The admin confirmed the switch: switch after shadowing whatever the agreement.
    switch_confirmed: bool = False
    issued_at: UtcDatetime


class ModelReport(_Model):
    """What a device tells the cloud about a release it was assigned."""

    schema_version: Literal[1] = SCHEMA
    kind: Literal["model_report"] = "model_report"
    assignment_id: UUID
    version: ModelVersion
    state: ReportState
    reason: FreeText | None = Field(default=None, max_length=500)
    shadow_plates: int = Field(default=0, ge=0, le=1_000_000)
    agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    current_ms: float | None = Field(default=None, ge=0.0, le=600_000.0)
    candidate_ms: float | None = Field(default=None, ge=0.0, le=600_000.0)
    needs_review_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    at: UtcDatetime

    @model_validator(mode="after")
    def _reason(self) -> ModelReport:
        if self.state in ("refused", "rolled_back", "failed") and not self.reason:
            raise ValueError("reason: a refusal, failure or rollback must say why")
        return self


def parse_notice(data: bytes) -> ModelNotice:
    try:
        return ModelNotice.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None


def parse_report(data: bytes | Mapping[str, object]) -> ModelReport:
    try:
        if isinstance(data, (bytes, bytearray)):
            return ModelReport.model_validate_json(bytes(data))
        return ModelReport.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None


Decision = Literal["continue", "switch", "rollback"]


def shadow_decision(
    *,
    plates: int,
    agreement: float,
    shadow_plates: int,
    agreement_threshold: float,
    current_review_rate: float,
    candidate_review_rate: float,
    max_review_rate_jump: float = 0.10,
) -> Decision:
    """After ``plates`` shadowed plates: keep shadowing, switch, or roll back.

    Rolls back at once when the candidate would hold for review a share of plates more than
    ``max_review_rate_jump`` above the current model's; otherwise decides after
    ``shadow_plates`` plates: switch when the wells agree at least ``agreement_threshold``,
    else roll back (the admin may still confirm a switch by hand).
    """
    if candidate_review_rate - current_review_rate > max_review_rate_jump:
        return "rollback"
    if plates < shadow_plates:
        return "continue"
    return "switch" if agreement >= agreement_threshold else "rollback"


class ShadowTally:
    """What an appliance counts while it shadows a candidate: per plate, both models' calls,
    times and whether each would have held the plate for review. Only the current model's
    results count; this only measures. :meth:`decision` applies :func:`shadow_decision`, and
    :meth:`report` is the :class:`ModelReport` to send."""

    def __init__(self, notice: ModelNotice) -> None:
        self.notice = notice
        self.plates = 0
        self.wells = 0
        self.agreeing = 0
        self.current_ms = 0.0
        self.candidate_ms = 0.0
        self.current_held = 0
        self.candidate_held = 0

    def add(
        self,
        current: Mapping[str, str],
        candidate: Mapping[str, str],
        *,
        current_ms: float,
        candidate_ms: float,
        current_needs_review: bool,
        candidate_needs_review: bool,
    ) -> None:
        """One plate read by both: well id -> state for each model (the same wells)."""
        if current.keys() != candidate.keys():
            raise ValueError("both models must call the same wells")
        self.plates += 1
        self.wells += len(current)
        self.agreeing += sum(1 for w, s in current.items() if candidate[w] == s)
        self.current_ms += current_ms
        self.candidate_ms += candidate_ms
        self.current_held += int(current_needs_review)
        self.candidate_held += int(candidate_needs_review)

    @property
    def agreement(self) -> float:
        return self.agreeing / self.wells if self.wells else 0.0

    def _rate(self, held: int) -> float:
        return held / self.plates if self.plates else 0.0

    def decision(self) -> Decision:
        """The admin's confirmation waives the agreement threshold, never the rollback on a
        jump in the needs-review rate."""
        return shadow_decision(
            plates=self.plates,
            agreement=self.agreement,
            shadow_plates=self.notice.shadow_plates,
            agreement_threshold=0.0
            if self.notice.switch_confirmed
            else self.notice.agreement_threshold,
            current_review_rate=self._rate(self.current_held),
            candidate_review_rate=self._rate(self.candidate_held),
        )

    def report(self, state: ReportState, *, at: datetime, reason: str | None = None) -> ModelReport:
        n = max(self.plates, 1)
        return ModelReport(
            assignment_id=self.notice.assignment_id,
            version=self.notice.version,
            state=state,
            reason=reason,
            shadow_plates=self.plates,
            agreement=round(self.agreement, 6) if self.plates else None,
            current_ms=round(self.current_ms / n, 3) if self.plates else None,
            candidate_ms=round(self.candidate_ms / n, 3) if self.plates else None,
            needs_review_rate=round(self._rate(self.candidate_held), 6) if self.plates else None,
            at=at,
        )
