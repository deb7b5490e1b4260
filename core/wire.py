"""The versioned sync wire format between edge and cloud (JSON over MQTT).

Every message carries ``schema_version`` (:data:`SCHEMA_VERSION`) and a ``kind`` that
:func:`parse_message` dispatches on: ``run`` (:class:`RunMessage`), ``deleted``/``superseded``
(:class:`RunEvent`), ``status`` (:class:`DeviceStatus`), ``ack`` (:class:`Ack`) and ``config``
(:class:`DesiredConfig`). Validation is strict: unknown fields are refused, strings and lists
have limits, numbers ranges, times must carry a timezone (and are normalised to UTC), and a run
must be internally consistent (every well of its plate, one row per plate row, a distribution
that matches its rows). Anything wrong raises :class:`WireError` whose message starts with the
field path, e.g. ``wells.A1.confidence: Input should be less than or equal to 1``; no other
exception type escapes :func:`parse_message`, whatever the bytes.

The ``(run_id, edit)`` pair is the idempotency key: the cloud upserts a run when ``edit`` is
newer and acks with the same pair.

An operator's review is an edit (``edit`` >= 1) with ``review`` set: every well then carries
``model_state``, the model's own call, beside ``state``, the final one
(:func:`core.review.review_edit` builds it from the previous message and the corrections).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from core.plate import PlateFormat, plate_format
from core.sanitize import SampleNumberError, clean_sample_number
from core.stats import distribution as row_distribution
from core.titre import CountingPolicy, DilutionSettings, RowResult, titre_for
from core.topics import SLUG_PATTERN, TopicError, Topics
from core.wells import WellCall, WellFlag, WellState
from core.wire_types import FreeText, ShortText, UtcDatetime, to_utc

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "Ack",
    "DesiredConfig",
    "DeviceStatus",
    "ImageRef",
    "ModelInfo",
    "RunEvent",
    "RunMessage",
    "RunReview",
    "TopicError",
    "Topics",
    "WireError",
    "WireMessage",
    "WireWell",
    "build_run_message",
    "encode_message",
    "parse_message",
    "to_utc",
    "wire_wells",
]

SCHEMA_VERSION: Literal[1] = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_EDIT = 2**31 - 1
# Domain limits on numbers (issue 17: a finite but absurd titre, 1e200, overflowed the cloud's
# statistics and stalled its ingest). A titre is a dilution of the plate's own series; the
# cloud stores titres as 32-bit integers. Pixel coordinates stay within any camera frame.
MAX_TITRE = 2**31 - 1
MAX_BOX_COORD = 100_000.0
MAX_BYTES = 2**53  # sizes in bytes: exact in JSON numbers and in a Postgres bigint
MAX_AGE_S = 10 * 366 * 86_400.0

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
CalibrationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
# Object keys: relative, no "..", no empty segment, a safe character set.
ObjectKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", max_length=512
    ),
]
WellIdKey = Annotated[str, StringConstraints(pattern=r"^[A-P][1-9][0-9]?$")]
Edit = Annotated[int, Field(ge=0, le=MAX_EDIT)]
BoxCoord = Annotated[float, Field(ge=-MAX_BOX_COORD, le=MAX_BOX_COORD)]


def _sample_number(value: str) -> str:
    try:
        cleaned = clean_sample_number(value)
    except SampleNumberError as exc:
        raise ValueError(str(exc)) from None
    if cleaned != value:
        raise ValueError("the sample number must be sent cleaned (trimmed, NFC)")
    return value


SampleNumber = Annotated[str, Field(max_length=64), AfterValidator(_sample_number)]


# Why a run needs review (edge.detect.gate); a newer edge may add reasons, so any short slug.
ReviewReason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class WireError(ValueError):
    """A message that is not a valid wire message; the text starts with the field path."""


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelInfo(_Wire):
    name: ShortText
    version: ShortText
    sha256: Sha256Hex


class WireWell(_Wire):
    """One well on the wire (its id is the key in ``RunMessage.wells``)."""

    state: WellState
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    box: tuple[BoxCoord, BoxCoord, BoxCoord, BoxCoord] | None = None
    class_name: ShortText | None = None
    flags: tuple[WellFlag, ...] = Field(default=(), max_length=2)
    n_detections: int = Field(default=0, ge=0, le=10_000)
    # On a reviewed run only: the model's own call; ``state`` is then the operator's final one.
    model_state: WellState | None = None


class RunReview(_Wire):
    """Who reviewed a run and when; ``accepted``: a run held for review was accepted, so it
    counts. The corrected wells are those whose ``model_state`` differs from ``state``."""

    by: ShortText
    at: UtcDatetime
    accepted: bool = False


class ImageRef(_Wire):
    role: Literal["raw", "annotated", "thumbnail"]
    key: ObjectKey
    sha256: Sha256Hex | None = None
    size_bytes: int | None = Field(default=None, ge=0, le=MAX_BYTES)


@functools.cache
def _well_id_set(n_wells: int) -> frozenset[str]:
    return frozenset(plate_format(n_wells).well_ids())


class RunMessage(_Wire):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["run"] = "run"
    run_id: UUID
    plate_id: UUID
    edit: Edit = 0
    device_id: Slug
    site_id: Slug
    sample_number: SampleNumber
    submission_number: ShortText | None = None
    description: FreeText = ""
    operator: ShortText = ""
    captured_at: UtcDatetime
    processed_at: UtcDatetime
    model: ModelInfo
    calibration_id: CalibrationId
    plate_format: Literal[96, 384]
    dilution: DilutionSettings
    policy: CountingPolicy = Field(default_factory=CountingPolicy)
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    wells: dict[WellIdKey, WireWell] = Field(max_length=384)
    rows: tuple[RowResult, ...] = Field(max_length=16)
    distribution: dict[str, Annotated[int, Field(ge=0, le=16)]] = Field(max_length=25)
    flags: tuple[ShortText, ...] = Field(default=(), max_length=32)
    images: tuple[ImageRef, ...] = Field(default=(), max_length=8)
    supersedes: UUID | None = None
    # The edge's plate-quality gate (added in schema 1 with defaults: older messages still
    # parse). A run that needs review counts no row and supersedes nothing.
    needs_review: bool = False
    review_reasons: tuple[ReviewReason, ...] = Field(default=(), max_length=8)
    reading: Literal["tilted", "untilted"] | None = None
    # An operator's review (added in schema 1 with a default: older messages still parse).
    review: RunReview | None = None

    @model_validator(mode="after")
    def _reviewed(self) -> RunMessage:
        with_model = sum(1 for w in self.wells.values() if w.model_state is not None)
        if self.review is None and with_model:
            raise ValueError("wells: model_state is given only on a reviewed run")
        if self.review is not None:
            if with_model != len(self.wells):
                raise ValueError("wells: a reviewed run gives every well's model_state")
            if self.edit < 1:
                raise ValueError("edit: a review is an edit of the run (edit >= 1)")
        return self

    def corrected_wells(self) -> tuple[str, ...]:
        """Wells whose final state an operator changed from the model's call."""
        return tuple(
            well_id
            for well_id, w in self.wells.items()
            if w.model_state is not None and w.model_state != w.state
        )

    @model_validator(mode="after")
    def _review(self) -> RunMessage:
        if self.needs_review != bool(self.review_reasons):
            raise ValueError("review_reasons: given exactly when the run needs review")
        if self.needs_review and any(r.counted for r in self.rows):
            raise ValueError("rows: a run that needs review counts no row")
        if self.needs_review and self.supersedes is not None:
            raise ValueError("supersedes: a run that needs review supersedes nothing")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> RunMessage:
        fmt = plate_format(self.plate_format)
        if self.wells.keys() != _well_id_set(self.plate_format):
            missing = [w for w in fmt.well_ids() if w not in self.wells]
            extra = sorted(set(self.wells) - set(fmt.well_ids()))
            raise ValueError(
                f"wells: a {fmt.n_wells}-well run needs every well once "
                f"(missing {missing[:5]}, not on the plate {extra[:5]})"
            )
        if [r.row for r in self.rows] != list(range(fmt.rows)):
            raise ValueError(f"rows: expected rows 0..{fmt.rows - 1} in order")
        labels = fmt.row_labels
        for r in self.rows:
            if r.label != labels[r.row]:
                raise ValueError(f"rows.{r.row}.label: expected {labels[r.row]!r}")
            if r.endpoint > fmt.cols:
                raise ValueError(f"rows.{r.row}.endpoint: {r.endpoint} is beyond column {fmt.cols}")
        try:
            self.dilution.test_columns(fmt)
        except ValueError as exc:
            raise ValueError(f"dilution.control_columns: {exc}") from None
        if self.distribution != row_distribution(self.rows, fmt.cols):
            raise ValueError("distribution: does not match the counted rows")
        if self.supersedes == self.run_id:
            raise ValueError("supersedes: a run cannot supersede itself")
        return self

    @model_validator(mode="after")
    def _domain_numbers(self) -> RunMessage:
        _check_row_numbers(self.rows, self.dilution, plate_format(self.plate_format))
        return self

    def well_calls(self) -> dict[str, WellCall]:
        """The wells as core :class:`WellCall` values, in plate order."""
        fmt = plate_format(self.plate_format)
        calls: dict[str, WellCall] = {}
        for well_id in fmt.well_ids():
            w = self.wells[well_id]
            row, col = fmt.parse_well_id(well_id)
            calls[well_id] = WellCall(
                well_id=well_id, row=row, col=col, **w.model_dump(exclude={"model_state"})
            )
        return calls


def _check_row_numbers(
    rows: Sequence[RowResult], dilution: DilutionSettings, fmt: PlateFormat
) -> None:
    """Titres are dilutions of the plate's series, not any positive number: a row's titre is
    the one at its endpoint, and a counted titre is a dilution on the plate or half the
    first (``no_inhibition`` counted at ``start_dilution / 2``)."""
    titres = dilution.titres(fmt)  # test column -> its dilution (cached per series)
    allowed = dilution.counted_titres(fmt)
    for r in rows:
        if r.endpoint and r.endpoint not in titres:
            raise ValueError(f"rows.{r.row}.endpoint: column {r.endpoint} is a control column")
        if r.titre is not None:
            if r.titre > MAX_TITRE:
                raise ValueError(f"rows.{r.row}.titre: {r.titre} is over {MAX_TITRE}")
            if r.titre != titre_for(r.endpoint, dilution, fmt):  # a test column (checked above)
                raise ValueError(
                    f"rows.{r.row}.titre: {r.titre} is not the dilution at column {r.endpoint}"
                )
        if r.counted_titre is not None and r.counted_titre not in allowed:
            raise ValueError(
                f"rows.{r.row}.counted_titre: {r.counted_titre!r} is not a dilution on the plate"
            )


class RunEvent(_Wire):
    """A run was deleted, or superseded by another run (published on the ``runs`` topic)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["deleted", "superseded"]
    run_id: UUID
    edit: Edit
    at: UtcDatetime
    reason: FreeText = ""
    superseded_by: UUID | None = None

    @model_validator(mode="after")
    def _superseded_by(self) -> RunEvent:
        if self.kind == "superseded" and self.superseded_by is None:
            raise ValueError("superseded_by: a 'superseded' event names the run that replaces it")
        if self.kind == "deleted" and self.superseded_by is not None:
            raise ValueError("superseded_by: only a 'superseded' event names a replacement")
        return self


class DeviceStatus(_Wire):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["status"] = "status"
    device_id: Slug
    site_id: Slug
    online: bool
    version: ShortText
    model: ShortText
    backend: ShortText
    backlog: int = Field(ge=0, le=10**9)
    oldest_unsent_age_s: float | None = Field(default=None, ge=0.0, le=MAX_AGE_S)
    disk_free_bytes: int = Field(ge=0, le=MAX_BYTES)
    at: UtcDatetime
    # Why sync is not working, as the appliance sees it (edge.sync.reasons); None from
    # appliances that predate reason codes.
    sync_reason: ShortText | None = None
    sync_message: FreeText | None = None


class Ack(_Wire):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["ack"] = "ack"
    run_id: UUID
    edit: Edit
    status: Literal["accepted", "rejected"]
    reason: FreeText | None = None

    @model_validator(mode="after")
    def _reason(self) -> Ack:
        if self.status == "rejected" and not self.reason:
            raise ValueError("reason: a rejection must say why")
        return self


class DesiredConfig(_Wire):
    """Settings the cloud wants a device to use; a field left None means "no change"."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["config"] = "config"
    revision: int = Field(ge=0, le=MAX_EDIT)
    issued_at: UtcDatetime
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    dilution: DilutionSettings | None = None
    policy: CountingPolicy | None = None
    protective_titre: float | None = Field(default=None, gt=0, le=1e9)
    csv_template: Literal["labware", "labware-legacy"] | None = None
    # Upload the raw photo of each plate (the site's "allow corrected plates for training").
    upload_raw: bool | None = None


WireMessage = Annotated[
    RunMessage | RunEvent | DeviceStatus | Ack | DesiredConfig, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[RunMessage | RunEvent | DeviceStatus | Ack | DesiredConfig] = TypeAdapter(
    WireMessage
)
_KINDS = ("run", "deleted", "superseded", "status", "ack", "config")


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "union_tag_not_found":
        return f"kind: missing; expected one of {', '.join(_KINDS)}"
    if err["type"] == "union_tag_invalid":
        return f"kind: unknown kind; expected one of {', '.join(_KINDS)}"
    if loc and loc[0] in _KINDS:
        loc = loc[1:]  # the discriminator's tag, not a field
    msg = str(err["msg"]).removeprefix("Value error, ")
    if not loc:
        return msg if ":" in msg.split(" ", 1)[0] else f"message: {msg}"
    return f"{'.'.join(loc)}: {msg}"


def parse_message(data: bytes) -> RunMessage | RunEvent | DeviceStatus | Ack | DesiredConfig:
    """Validate one wire message; raise :class:`WireError` (and only that) if it is bad."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"message: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise WireError(f"message: {len(raw)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        # strict: JSON true is not an edit counter, "5" is not a number.
        return _ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise WireError(_describe(exc)) from None
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, OverflowError) as exc:
        # A validator tripping over input it did not expect is still bad input.
        raise WireError(f"message: {type(exc).__name__}: {exc}") from None


def encode_message(message: BaseModel) -> bytes:
    """UTF-8 JSON of a wire model; WireError if it is over :data:`MAX_MESSAGE_BYTES`."""
    data = message.model_dump_json().encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message: {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    return data


# A call's fields on the wire: all but its position (the key says which well it is). A field
# WellCall gains is passed on too, and refused by WireWell until the wire carries it.
_CALL_FIELDS = tuple(f for f in WellCall.model_fields if f not in ("well_id", "row", "col"))


def wire_wells(calls: Mapping[str, WellCall]) -> dict[str, WireWell]:
    """Core well calls -> the ``wells`` field of a :class:`RunMessage` (the fields read
    directly: a `model_dump` per well was a third of building a run's message)."""
    return {
        well_id: WireWell(**{name: getattr(call, name) for name in _CALL_FIELDS})
        for well_id, call in calls.items()
    }


def build_run_message(
    *,
    calls: Mapping[str, WellCall],
    rows: Sequence[RowResult],
    **fields: Any,
) -> RunMessage:
    """A :class:`RunMessage` from core results; ``fields`` are the other RunMessage fields.

    ``wells`` and ``distribution`` are derived from ``calls`` and ``rows``. Raises WireError
    with the field path when the result would not validate.
    """
    n_cols = plate_format(fields.get("plate_format", 96)).cols
    payload = {
        **fields,
        "wells": wire_wells(calls),
        "rows": tuple(rows),
        "distribution": row_distribution(rows, n_cols),
    }
    try:
        return RunMessage(**payload)
    except ValidationError as exc:
        raise WireError(_describe(exc)) from None
