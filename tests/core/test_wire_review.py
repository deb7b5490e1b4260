"""An operator's review on the wire: an edit carrying the model's call beside the final one."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from core.review import review_edit
from core.stats import distribution
from core.titre import hold_for_review
from core.wire import RunMessage, WireError, encode_message, parse_message
from tests.sync.world import template_message

AT = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


def _base() -> RunMessage:
    # Row A: flowing up to column 5, so its endpoint is column 5.
    return template_message("lab", "dev-1")


def test_a_correction_keeps_the_model_call_and_recomputes_the_rows() -> None:
    base = _base()
    assert base.rows[0].endpoint == 5
    edit = review_edit(base, {"A6": "flowing", "A7": "flowing"}, by="ana", at=AT)
    assert edit.edit == 1 and edit.review is not None and edit.review.by == "ana"
    assert edit.wells["A6"].state == "flowing" and edit.wells["A6"].model_state == "agglutinated"
    assert edit.wells["B1"].model_state == edit.wells["B1"].state
    assert edit.corrected_wells() == ("A6", "A7")
    assert edit.rows[0].endpoint == 7 and edit.rows[0].titre == 4 * base.rows[0].titre  # type: ignore[operator]
    assert edit.rows[1:] == base.rows[1:]
    # Round trip through the bytes; a second review keeps the model's original call.
    again = parse_message(encode_message(edit))
    assert again == edit
    second = review_edit(edit, {"A6": "agglutinated"}, by="bo", at=AT)
    assert second.edit == 2 and second.wells["A6"].model_state == "agglutinated"
    assert second.corrected_wells() == ("A7",)
    assert second.well_calls()["A6"].state == "agglutinated"


def test_accepting_a_held_run_makes_it_count() -> None:
    base = _base()
    rows = hold_for_review(list(base.rows))
    held = RunMessage.model_validate(
        {
            **base.model_dump(),
            "needs_review": True,
            "review_reasons": ("grid_misfit",),
            "rows": rows,
            "distribution": distribution(rows, 12),
        }
    )
    assert not any(r.counted for r in held.rows)
    still = review_edit(held, {"A6": "flowing"}, by="ana", at=AT)
    assert still.needs_review and not any(r.counted for r in still.rows)
    accepted = review_edit(held, {}, by="ana", at=AT, accept=True)
    assert not accepted.needs_review and accepted.review_reasons == ()
    assert accepted.review is not None and accepted.review.accepted
    assert any(r.counted for r in accepted.rows) and accepted.corrected_wells() == ()


def test_inconsistent_reviews_are_refused() -> None:
    edit = review_edit(_base(), {"A6": "flowing"}, by="ana", at=AT)
    doc = edit.model_dump(mode="json")
    no_review = {**doc, "review": None}
    with pytest.raises(ValueError, match="model_state is given only"):
        RunMessage.model_validate(no_review)
    partial = {**doc, "wells": {**doc["wells"], "B2": {**doc["wells"]["B2"], "model_state": None}}}
    with pytest.raises(ValueError, match="every well's model_state"):
        RunMessage.model_validate(partial)
    with pytest.raises(ValueError, match="edit >= 1"):
        RunMessage.model_validate({**doc, "edit": 0})
    with pytest.raises(WireError, match="Z9"):
        review_edit(_base(), {"Z9": "flowing"}, by="ana", at=AT)
