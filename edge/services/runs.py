"""Stored runs and samples as the API, the UI and the sync worker see them: pages, details,
images and CSVs, and a supervisor's delete or re-read of a run."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.db import admin, queries, runs
from edge.errors import InvalidInput, NotFound
from edge.files import images
from edge.schemas import (
    Page,
    RunDetail,
    RunRequest,
    RunSummary,
    SampleDetail,
    SampleSummaryOut,
    Ticket,
)
from edge.services.pipeline import Job, sha256_of

if TYPE_CHECKING:
    from edge.ports import Gate, Host, ImageKind, Tickets
    from edge.services.commit import RunCommitter
    from edge.services.exporter import Exporter


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), 500))


class RunService:
    def __init__(
        self,
        host: Host,
        gate: Gate,
        tickets: Tickets,
        committer: RunCommitter,
        exporter: Exporter,
    ) -> None:
        self._host = host
        self._gate = gate
        self._tickets = tickets
        self._committer = committer
        self.exporter = exporter
        self._images_dir = host.settings.resolved_images_dir

    def list_runs(
        self, *, sample_number: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[RunSummary]:
        return queries.list_runs(
            self._host.store.read(),
            sample_number=sample_number,
            limit=_bounded(limit),
            offset=max(0, offset),
        )

    def get_run(self, run_id: str) -> RunDetail:
        return queries.get_run(self._host.store.read(), run_id)

    def list_samples(
        self, *, query: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[SampleSummaryOut]:
        return queries.list_samples(
            self._host.store.read(), query=query, limit=_bounded(limit), offset=max(0, offset)
        )

    def get_sample(self, sample_number: str) -> SampleDetail:
        return queries.get_sample(self._host.store.read(), sample_number)

    def run_image(self, run_id: str, kind: ImageKind) -> Path:
        if kind not in images.KINDS:
            raise InvalidInput(message=f"Unknown image kind {kind!r}: raw, annotated or thumbnail.")
        folder = self._images_dir / queries.image_dir(self._host.store.read(), run_id)
        path = images.find_image(folder, kind)
        if path is None and kind != "raw":
            # Committed but not yet written by the background writer: write it now.
            self._committer.flush_pending_images(run_id)
            path = images.find_image(folder, kind)
        if path is None:
            raise NotFound(message=f"The {kind} image of run {run_id} is no longer stored.")
        return path

    def export_csv(self, sample_number: str) -> Path:
        return self.exporter.export(sample_number)

    def reread(self, run_id: str, actor: str) -> Ticket:
        self._gate.require_started()
        detail = self.get_run(run_id)
        if detail.status == "deleted":
            raise InvalidInput(code="run_deleted", message="A deleted run cannot be re-read.")
        raw = self.run_image(run_id, "raw")
        req = RunRequest(
            sample_number=detail.sample_number,
            submission_number=detail.submission_number,
            description=detail.description,
            operator=actor or detail.operator,
        )
        data = raw.read_bytes()
        with self._host.store.write() as db:
            admin.audit(db, actor=actor, action="run.reread", detail={"run_id": run_id})
        return self._tickets.submit(
            Job(
                ticket_id=str(uuid.uuid4()),
                req=req,
                data=data,
                filename=detail.filename,
                source="reread",
                sha256=sha256_of(data),
                captured_at=detail.captured_at,
                plate_id=detail.plate_id,
                supersedes=run_id,
                force=True,
            )
        )

    def delete_run(self, run_id: str, actor: str, reason: str) -> None:
        self._gate.require_started()
        from edge.services.messages import run_event

        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput(code="reason_required", message="Say why the run is deleted.")
        with self.exporter.lock:
            staged: list[Any] = []
            try:
                with self._host.store.write() as db:
                    row = runs.deletion_target(db, run_id)
                    if row is None:
                        raise NotFound(message=f"There is no run {run_id}.")
                    sample_number, deleted_at, edit, plate_id = row
                    if deleted_at is not None:
                        return  # deleting twice is harmless
                    payload = run_event(run_id, "deleted", edit=edit + 1, reason=reason)
                    runs.mark_deleted(db, run_id, actor=actor, reason=reason[:500], payload=payload)
                    recomputed = self._committer.recompute_plates(
                        db, [plate_id], sample_number, staged
                    )
                    admin.audit(
                        db,
                        actor=actor,
                        action="run.delete",
                        detail={"run_id": run_id, "reason": reason[:500]},
                    )
            except BaseException:
                self.exporter.discard(staged)
                raise
            self.exporter.publish_all(staged)
        events = self._host.events
        events.publish("run.deleted", {"run_id": run_id, "sample_number": sample_number})
        for sample in recomputed:
            events.publish("sample.updated", {"sample_number": sample})
