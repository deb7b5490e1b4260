"""The model registry: releases, assignments (canary first) and each device's rollout.

Rules of a rollout, all applied here so the API, the CLI and the notifier agree:

- An assignment targets a site, or a group of its devices, and names a canary among them.
  Creating it supersedes the site's older open assignments.
- Stage ``canary``: only the canary is told. When the canary reports ``switched`` (or an admin
  promotes the assignment) the stage becomes ``rolling`` and every target is told. When the
  canary reports ``refused``, ``failed`` or ``rolled_back`` the stage becomes ``halted`` and
  nobody else is told. Once every target has switched the stage is ``done``.
- A device is told (a retained notice on its ``model`` topic) whenever the assignment's
  ``revision`` is newer than the one it was last sent; an admin's confirmation bumps it.
- A device told about an assignment that was then superseded, and not (yet) told about a newer
  one, has its retained notice withdrawn (an empty retained message), so it never starts on a
  release nobody wants any more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from cloud.models import Device, ModelAssignment, ModelRelease, ModelRollout, Site
from cloud.models.base import utcnow
from core.ota import SignedManifest
from core.rollout import ModelNotice, ModelReport
from core.topics import Topics

OPEN_STAGES = ("canary", "rolling")
# A report may move a device only forwards through these states (a late "shadowing" after
# "switched" is a duplicate, not news); refused / failed / rolled_back end the rollout.
_ORDER = {"waiting": 0, "notified": 1, "downloaded": 2, "shadowing": 3, "switched": 4}
_FINAL_BAD = ("refused", "failed", "rolled_back")


class OtaError(ValueError):
    """A registry change that cannot be made (the message is safe to show)."""


class NotAssigned(OtaError):
    """A device reported on an assignment that is not its own (or does not exist)."""


def object_prefix(name: str, version: str) -> str:
    # Site slugs start with a letter or digit, so "_models/" never meets an image key.
    return f"_models/{name}/{version}"


def record_release(session: Session, *, signed: SignedManifest) -> ModelRelease:
    m = signed.manifest
    existing = session.scalar(
        select(ModelRelease).where(ModelRelease.name == m.name, ModelRelease.version == m.version)
    )
    if existing is not None:
        if existing.manifest_sha256 == signed.sha256:
            return existing
        raise OtaError(f"{m.name} {m.version} is already published with other contents")
    release = ModelRelease(
        name=m.name,
        version=m.version,
        manifest_sha256=signed.sha256,
        key_id=signed.key_id,
        signed_manifest=signed.model_dump(mode="json"),
        object_prefix=object_prefix(m.name, m.version),
    )
    session.add(release)
    session.flush()
    return release


def list_releases(session: Session) -> list[ModelRelease]:
    return list(session.scalars(select(ModelRelease).order_by(ModelRelease.published_at.desc())))


def get_release(session: Session, *, name: str, version: str) -> ModelRelease | None:
    return session.scalar(
        select(ModelRelease).where(ModelRelease.name == name, ModelRelease.version == version)
    )


def create_assignment(
    session: Session,
    *,
    release: ModelRelease,
    site: Site,
    device_slugs: Sequence[str] | None,
    canary_slug: str,
    shadow_plates: int,
    agreement_threshold: float,
    created_by: uuid.UUID | None,
) -> ModelAssignment:
    if site.disabled_at is not None:
        raise OtaError(f"site {site.slug} is disabled")
    active = {
        d.slug: d
        for d in session.scalars(
            select(Device).where(Device.site_id == site.id, Device.status == "active")
        )
    }
    if device_slugs is None:
        targets = list(active.values())
    else:
        unknown = sorted(set(device_slugs) - set(active))
        if unknown:
            raise OtaError(f"no active device {', '.join(unknown)} at site {site.slug}")
        targets = [active[s] for s in dict.fromkeys(device_slugs)]
    if canary_slug not in {d.slug for d in targets}:
        raise OtaError(f"the canary {canary_slug!r} must be one of the assigned devices")
    now = utcnow()
    older = list(
        session.scalars(
            select(ModelAssignment.id).where(
                ModelAssignment.site_id == site.id, ModelAssignment.stage.in_(OPEN_STAGES)
            )
        )
    )
    if older:
        session.execute(
            update(ModelAssignment)
            .where(ModelAssignment.id.in_(older))
            .values(stage="superseded", updated_at=now)
        )
        # Told devices that had not switched yet: their notice is to be withdrawn (a device
        # that switched keeps the model it runs, and its record says so).
        session.execute(
            update(ModelRollout)
            .where(
                ModelRollout.assignment_id.in_(older),
                ModelRollout.notified_revision > 0,
                ModelRollout.state.in_(("notified", "downloaded", "shadowing")),
            )
            .values(state="withdrawn")
        )
    assignment = ModelAssignment(
        release_id=release.id,
        site_id=site.id,
        device_ids=None if device_slugs is None else [d.id for d in targets],
        canary_device_id=active[canary_slug].id,
        shadow_plates=shadow_plates,
        agreement_threshold=agreement_threshold,
        stage="canary",
        revision=1,
        switch_confirmed=False,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(assignment)
    session.flush()
    session.add_all(
        ModelRollout(assignment_id=assignment.id, device_id=d.id, state="waiting") for d in targets
    )
    session.flush()
    return assignment


def get_assignment(session: Session, assignment_id: uuid.UUID) -> ModelAssignment | None:
    return session.get(ModelAssignment, assignment_id)


def promote(session: Session, assignment: ModelAssignment) -> None:
    """Canary -> rolling by hand (the admin is satisfied with the canary)."""
    if assignment.stage != "canary":
        raise OtaError(
            f"only an assignment at the canary stage can be promoted ({assignment.stage})"
        )
    assignment.stage = "rolling"
    assignment.revision += 1
    assignment.updated_at = utcnow()
    session.flush()


def confirm_switch(session: Session, assignment: ModelAssignment) -> None:
    """The admin confirms the switch: devices switch after shadowing whatever the agreement."""
    if assignment.stage not in OPEN_STAGES:
        raise OtaError(f"the assignment is {assignment.stage}")
    assignment.switch_confirmed = True
    assignment.revision += 1
    assignment.updated_at = utcnow()
    session.flush()


@dataclass(frozen=True)
class PendingNotice:
    assignment_id: uuid.UUID
    device_id: uuid.UUID
    topic: str
    notice: ModelNotice


def pending_notices(session: Session) -> list[PendingNotice]:
    """Notices devices have not been sent yet: the canary at the canary stage, every target
    while rolling, whenever the assignment's revision is newer than the device's."""
    rows = session.execute(
        select(ModelRollout, ModelAssignment, ModelRelease, Device, Site)
        .join(ModelAssignment, ModelAssignment.id == ModelRollout.assignment_id)
        .join(ModelRelease, ModelRelease.id == ModelAssignment.release_id)
        .join(Device, Device.id == ModelRollout.device_id)
        .join(Site, Site.id == Device.site_id)
        .where(
            ModelAssignment.stage.in_(OPEN_STAGES),
            ModelRollout.notified_revision < ModelAssignment.revision,
            ModelRollout.state.not_in(_FINAL_BAD),
            Device.status == "active",
        )
    ).all()
    out: list[PendingNotice] = []
    for _rollout, assignment, release, device, site in rows:
        canary = device.id == assignment.canary_device_id
        if assignment.stage == "canary" and not canary:
            continue
        out.append(
            PendingNotice(
                assignment_id=assignment.id,
                device_id=device.id,
                topic=Topics(site.slug, device.slug).model,
                notice=ModelNotice(
                    assignment_id=assignment.id,
                    revision=assignment.revision,
                    name=release.name,
                    version=release.version,
                    manifest_sha256=release.manifest_sha256,
                    canary=canary,
                    shadow_plates=assignment.shadow_plates,
                    agreement_threshold=assignment.agreement_threshold,
                    switch_confirmed=assignment.switch_confirmed,
                    issued_at=assignment.updated_at,
                ),
            )
        )
    return out


@dataclass(frozen=True)
class PendingWithdrawal:
    assignment_id: uuid.UUID
    device_id: uuid.UUID
    topic: str


def pending_withdrawals(session: Session) -> list[PendingWithdrawal]:
    """Retained notices of superseded assignments still on the broker, for devices that hold
    no notice of an open assignment (a newer notice replaces the old one by itself)."""
    current = (
        select(ModelRollout.device_id)
        .join(ModelAssignment, ModelAssignment.id == ModelRollout.assignment_id)
        .where(ModelAssignment.stage.in_(OPEN_STAGES), ModelRollout.notified_revision > 0)
    )
    rows = session.execute(
        select(ModelRollout.assignment_id, Device.id, Device.slug, Site.slug)
        .join(Device, Device.id == ModelRollout.device_id)
        .join(Site, Site.id == Device.site_id)
        .where(
            ModelRollout.state == "withdrawn",
            ModelRollout.notified_revision > 0,
            ModelRollout.device_id.not_in(current),
        )
    ).all()
    return [
        PendingWithdrawal(assignment_id=a, device_id=d, topic=Topics(site, slug).model)
        for a, d, slug, site in rows
    ]


def mark_withdrawn(session: Session, pending: PendingWithdrawal) -> None:
    rollout = session.get(ModelRollout, (pending.assignment_id, pending.device_id))
    if rollout is not None:
        rollout.notified_revision = 0
        session.flush()


def mark_notified(session: Session, pending: PendingNotice, *, at: datetime) -> None:
    rollout = session.get(ModelRollout, (pending.assignment_id, pending.device_id))
    if rollout is None:
        return
    rollout.notified_revision = max(rollout.notified_revision, pending.notice.revision)
    rollout.notified_at = at
    if rollout.state == "waiting":
        rollout.state = "notified"
    session.flush()


@dataclass(frozen=True)
class DeviceModel:
    assignment: ModelAssignment
    release: ModelRelease
    rollout: ModelRollout


def current_for_device(session: Session, device: Device) -> DeviceModel | None:
    """The newest assignment this device has been told about (what it should download)."""
    row = session.execute(
        select(ModelAssignment, ModelRelease, ModelRollout)
        .join(ModelRelease, ModelRelease.id == ModelAssignment.release_id)
        .join(ModelRollout, ModelRollout.assignment_id == ModelAssignment.id)
        .where(
            ModelRollout.device_id == device.id,
            ModelRollout.notified_revision > 0,
            ModelAssignment.stage != "superseded",
        )
        .order_by(ModelAssignment.created_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return DeviceModel(assignment=row[0], release=row[1], rollout=row[2])


def apply_report(session: Session, *, device: Device, report: ModelReport) -> ModelRollout:
    rollout = session.get(ModelRollout, (report.assignment_id, device.id))
    assignment = session.get(ModelAssignment, report.assignment_id)
    if rollout is None or assignment is None or rollout.notified_revision == 0:
        raise NotAssigned("this device was not assigned that model")
    release = session.get(ModelRelease, assignment.release_id)
    if release is None or release.version != report.version:
        raise OtaError(f"the assignment is for another version than {report.version}")
    now = utcnow()
    if rollout.state in (*_FINAL_BAD, "withdrawn"):
        return rollout  # an ended rollout stays ended; a new assignment starts a new one
    if report.state in _FINAL_BAD or _ORDER[report.state] >= _ORDER.get(rollout.state, 0):
        rollout.state = report.state
    rollout.reason = report.reason
    rollout.shadow_plates = max(rollout.shadow_plates, report.shadow_plates)
    for field in ("agreement", "current_ms", "candidate_ms", "needs_review_rate"):
        value = getattr(report, field)
        if value is not None:
            setattr(rollout, field, value)
    rollout.reported_at = now
    if device.id == assignment.canary_device_id and assignment.stage == "canary":
        if rollout.state == "switched":
            assignment.stage = "rolling"
            assignment.revision += 1
            assignment.updated_at = now
        elif rollout.state in _FINAL_BAD:
            assignment.stage = "halted"
            assignment.updated_at = now
    session.flush()
    if assignment.stage == "rolling":
        states = session.scalars(
            select(ModelRollout.state).where(ModelRollout.assignment_id == assignment.id)
        ).all()
        if states and all(s == "switched" for s in states):
            assignment.stage = "done"
            assignment.updated_at = now
            session.flush()
    return rollout


@dataclass(frozen=True)
class RolloutRow:
    assignment_id: uuid.UUID
    stage: str
    name: str
    version: str
    site_id: uuid.UUID
    device_id: uuid.UUID
    device_slug: str
    canary: bool
    state: str
    shadow_plates: int
    agreement: float | None
    current_ms: float | None
    candidate_ms: float | None
    reason: str | None
    reported_at: datetime | None


def rollout_rows(session: Session, *, open_only: bool = False) -> list[RolloutRow]:
    query = (
        select(ModelRollout, ModelAssignment, ModelRelease, Device)
        .join(ModelAssignment, ModelAssignment.id == ModelRollout.assignment_id)
        .join(ModelRelease, ModelRelease.id == ModelAssignment.release_id)
        .join(Device, Device.id == ModelRollout.device_id)
        .order_by(ModelAssignment.created_at.desc(), Device.slug)
    )
    if open_only:
        query = query.where(ModelAssignment.stage.in_(OPEN_STAGES))
    return [
        RolloutRow(
            assignment_id=a.id,
            stage=a.stage,
            name=rel.name,
            version=rel.version,
            site_id=a.site_id,
            device_id=d.id,
            device_slug=d.slug,
            canary=d.id == a.canary_device_id,
            state=r.state,
            shadow_plates=r.shadow_plates,
            agreement=r.agreement,
            current_ms=r.current_ms,
            candidate_ms=r.candidate_ms,
            reason=r.reason,
            reported_at=r.reported_at,
        )
        for r, a, rel, d in session.execute(query).all()
    ]


def rollout_counts(conn: Connection) -> list[tuple[str, str, str, str, int]]:
    """(site, "name version", stage, device state, devices) of every assignment that was not
    superseded, for /metrics."""
    model = func.concat_ws(" ", ModelRelease.name, ModelRelease.version)
    query = (
        select(Site.slug, model, ModelAssignment.stage, ModelRollout.state, func.count())
        .join(ModelAssignment, ModelAssignment.id == ModelRollout.assignment_id)
        .join(ModelRelease, ModelRelease.id == ModelAssignment.release_id)
        .join(Site, Site.id == ModelAssignment.site_id)
        .where(ModelAssignment.stage != "superseded")
        .group_by(Site.slug, model, ModelAssignment.stage, ModelRollout.state)
    )
    return [(s, m, st, state, int(n)) for s, m, st, state, n in conn.execute(query)]
