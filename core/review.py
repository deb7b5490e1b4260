"""An operator's review of a run as the run's next edit (docs/ota.md)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from pydantic import ValidationError

from core.plate import plate_format
from core.stats import distribution as row_distribution
from core.titre import hold_for_review, row_results
from core.wells import WellCall, WellState
from core.wire import RunMessage, RunReview, WireError, WireWell

logger = logging.getLogger(__name__)

__all__ = ["review_edit"]


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def review_edit(
    message: RunMessage,
    corrections: Mapping[str, WellState],
    *,
    by: str,
    at: datetime,
    accept: bool = False,
) -> RunMessage:
    """The next edit of ``message`` after an operator's review.

    ``corrections`` maps well ids to their corrected state (wells left out keep theirs). Every
    well keeps the model's original call as ``model_state`` (from the first review on, the
    earlier message's), the rows, titres and distribution are recomputed, and ``accept``
    releases a run held for review so it counts. WireError names a bad well id.
    """
    fmt = plate_format(message.plate_format)
    unknown = sorted(set(corrections) - set(message.wells))
    if unknown:
        raise WireError(f"wells: {', '.join(unknown[:5])} not on this {fmt.n_wells}-well plate")
    calls: dict[str, WellCall] = {}
    wells: dict[str, WireWell] = {}
    for well_id, call in message.well_calls().items():
        old = message.wells[well_id]
        state = corrections.get(well_id, old.state)
        calls[well_id] = call.model_copy(update={"state": state})
        wells[well_id] = old.model_copy(
            update={"state": state, "model_state": old.model_state or old.state}
        )
    needs_review = message.needs_review and not accept
    rows = row_results(calls, fmt, dilution=message.dilution, policy=message.policy)
    if needs_review:
        rows = hold_for_review(rows)
    payload = {
        **message.model_dump(exclude={"wells", "rows", "distribution", "review"}),
        "edit": message.edit + 1,
        "wells": wells,
        "rows": tuple(rows),
        "distribution": row_distribution(rows, fmt.cols),
        "needs_review": needs_review,
        "review_reasons": message.review_reasons if needs_review else (),
        "review": RunReview(by=by, at=at, accepted=accept and message.needs_review),
    }
    try:
        return RunMessage(**payload)
    except ValidationError as exc:
        raise WireError(_describe(exc)) from None
