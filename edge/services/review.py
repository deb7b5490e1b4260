"""An operator's review of a run: corrected wells and "accept as read".

Each review is a new edit of the run (`core.review.review_edit`): every well keeps the model's own
call beside its final state, the rows and titres are recomputed, and in ONE transaction the run,
its wells and rows, the pooled sample (its CSV staged and published after the commit), the
outbox entry that syncs the edit and the audit row (who, which wells, before -> after) are
written. Accepting a run the plate gate held for review makes it count.

Operators review runs up to a day old; older runs need a supervisor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from core.review import review_edit
from core.stats import compute_statistics
from core.wells import WellState
from core.wire import RunMessage, WireError, encode_message, parse_message
from edge.db import admin, queries, reviews
from edge.errors import Conflict, InvalidInput, NotFound, SupervisorRequired
from edge.schemas import ReviewQueueItem, RunDetail

if TYPE_CHECKING:
    from edge.ports import CsvPublisher, Gate, Host, RuntimeSource, SampleRecompute

# The states a person may set; `unread` is the model's "could not tell", never a correction.
REVIEW_STATES: tuple[WellState, ...] = ("flowing", "agglutinated", "invalid")
OPERATOR_WINDOW = timedelta(days=1)
_WELL_ID = re.compile(r"[A-P][1-9][0-9]?")  # fullmatch: "$" would let "A1\n" through


def _shown(value: str) -> str:
    """A caller's text quoted for an error message (control characters escaped, bounded)."""
    return ascii(value[:24])


def check_corrections(wells: Mapping[str, str]) -> dict[str, WellState]:
    """The request's wells as corrections; InvalidInput names the first bad id or state."""
    out: dict[str, WellState] = {}
    for well_id, state in wells.items():
        if not _WELL_ID.fullmatch(well_id):
            raise InvalidInput(
                code="unknown_well",
                message=f"{_shown(well_id)} is not a well id (a row letter and a column: A1, H12).",
            )
        if state not in REVIEW_STATES:
            raise InvalidInput(
                code="bad_state",
                message=f"Well {well_id}: {_shown(state)} is not a state a review may set "
                f"(one of {', '.join(REVIEW_STATES)}).",
            )
        out[well_id] = state
    return out


class ReviewService:
    def __init__(
        self,
        host: Host,
        gate: Gate,
        runtime: RuntimeSource,
        recompute: SampleRecompute,
        csv: CsvPublisher,
    ) -> None:
        self._host = host
        self._gate = gate
        self._runtime = runtime
        self._recompute = recompute
        self._csv = csv

    def queue(self, limit: int = 50) -> list[ReviewQueueItem]:
        """Runs to review: held by the plate gate first, then runs with unread rows."""
        db = self._host.store.read()
        return queries.review_queue(db, reviews.review_queue(db, max(1, min(int(limit), 500))))

    def review(
        self,
        run_id: str,
        wells: Mapping[str, str],
        *,
        accept: bool,
        actor: str,
        supervisor: bool,
        reviewer: str = "",
        now: datetime | None = None,
    ) -> RunDetail:
        """Apply one review as the run's next edit; returns the updated run. ``reviewer``: the
        name the person typed, recorded ahead of the session (``"Ann (supervisor:…@…)"``)."""
        self._gate.require_started()
        name = " ".join(reviewer.split())
        if not name.isprintable() or len(name) > 64:
            raise InvalidInput(
                code="bad_reviewer",
                message="The reviewer's name may hold letters, digits, spaces and punctuation "
                "only (at most 64 characters).",
            )
        actor = f"{name} ({actor})" if name else actor
        corrections = check_corrections(wells)
        if not corrections and not accept:
            raise InvalidInput(
                code="nothing_to_review",
                message="Change at least one well, or accept the run as read.",
            )
        at = now or datetime.now(timezone.utc)
        with self._csv.lock:
            staged: list[Any] = []
            try:
                with self._host.store.write() as db:
                    target = reviews.review_target(db, run_id)
                    if target is None:
                        raise NotFound(message=f"There is no run {run_id}.")
                    if target.deleted:
                        raise InvalidInput(
                            code="run_deleted", message="A deleted run cannot be reviewed."
                        )
                    if target.superseded_by is not None:
                        raise Conflict(
                            code="run_superseded",
                            message="A newer read of this plate replaced this run: review "
                            "that one.",
                        )
                    if not supervisor and at - target.processed_at > OPERATOR_WINDOW:
                        raise SupervisorRequired(
                            message="This run is more than a day old: a supervisor must "
                            "review it (enter the supervisor PIN first)."
                        )
                    previous = self._message(target)
                    before = {
                        w: previous.wells[w].state for w in corrections if w in previous.wells
                    }
                    try:
                        edited = review_edit(
                            previous, corrections, by=actor[:128], at=at, accept=accept
                        )
                    except WireError as exc:
                        raise InvalidInput(code="unknown_well", message=str(exc)) from None
                    payload = encode_message(edited).decode("utf-8")
                    statistics = compute_statistics(
                        edited.rows, protective_titre=self._runtime.get().protective_titre
                    )
                    reviews.write_review(
                        db,
                        edited,
                        payload=payload,
                        statistics=statistics,
                        reviewed_by=actor,
                        reviewed_at=at,
                    )
                    recomputed: set[str] = set()
                    if not edited.needs_review:
                        recomputed = self._recompute.recompute_plates(
                            db, [target.plate_id], target.sample_number, staged
                        )
                    admin.audit(
                        db,
                        actor=actor,
                        action="run.review",
                        detail={
                            "run_id": run_id,
                            "edit": edited.edit,
                            "accepted": edited.review is not None and edited.review.accepted,
                            "wells": {
                                w: {
                                    "before": before[w],
                                    "after": corrections[w],
                                    "model": edited.wells[w].model_state,
                                }
                                for w in sorted(corrections)
                                if before[w] != corrections[w]
                            },
                        },
                    )
            except BaseException:
                self._csv.discard(staged)
                raise
            self._csv.publish_all(staged)
            # Read back under the lock that serialises reviews: read after it, a concurrent
            # review's later edit would be returned as this one's.
            reviewed = queries.get_run(self._host.store.read(), run_id)
        events = self._host.events
        events.publish("run.updated", {"run_id": run_id, "sample_number": target.sample_number})
        for sample in sorted(recomputed):
            events.publish("sample.updated", {"sample_number": sample})
        return reviewed

    @staticmethod
    def _message(target: reviews.ReviewTarget) -> RunMessage:
        if target.message is None:
            raise Conflict(
                code="review_unavailable",
                message="This run's read is no longer kept in full on the appliance; re-read "
                "the plate to review it.",
            )
        try:
            message = parse_message(target.message.encode("utf-8"))
        except WireError as exc:
            raise Conflict(
                code="review_unavailable", message=f"This run's stored read is unusable ({exc})."
            ) from None
        if not isinstance(message, RunMessage):
            raise Conflict(code="review_unavailable", message="This run's stored read is unusable.")
        # The run's own edit counter is the truth (a supersede or delete also counts one).
        return message.model_copy(update={"edit": target.edit})
