"""The device HTTP API: device tokens only, never user tokens."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, HTTPException, status

from cloud.api.deps import DeviceDep, ReleasingRoute, SessionDep, StateDep, not_found
from cloud.crud import audit, ota
from cloud.models import Run
from cloud.ota_notify import publish_quietly
from cloud.schemas import DeviceIdentity, PresignedUrl, PresignRequest
from cloud.schemas_ota import DeviceModelOffer, DownloadFile, ReportAck
from cloud.storage import image_key
from core.ota import SignedManifest
from core.rollout import ModelNotice, ModelReport

router = APIRouter(prefix="/api/v1/device", tags=["device"], route_class=ReleasingRoute)


@router.get("/me")
def whoami(device: DeviceDep) -> DeviceIdentity:
    return DeviceIdentity(device_id=device.id, site=device.site.slug, device=device.slug)


@router.post("/images/presign", responses={403: {}, 404: {}, 503: {}})
def presign_image(
    body: PresignRequest, device: DeviceDep, session: SessionDep, state: StateDep
) -> PresignedUrl:
    """A presigned PUT for `{site}/{device}/{run_id}/{kind}.jpg`, under this device's prefix,
    for a JPEG of exactly `size_bytes` (both signed: the store refuses anything else)."""
    existing = session.get(Run, body.run_id)
    if existing is not None and existing.device_id != device.id:
        raise not_found("Run")
    if state.store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Object storage not configured")
    if body.kind == "raw" and not device.site.allow_training:
        # Raw photos are collected only where the site allowed training on corrected plates.
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "This site does not collect raw photos (training on corrected plates is off)",
        )
    key = image_key(
        site=device.site.slug, device=device.slug, run_id=str(body.run_id), kind=body.kind
    )
    return PresignedUrl(
        url=state.store.presign_put(key, size_bytes=body.size_bytes),
        method="PUT",
        key=key,
        expires_in=state.store.expires,
        headers={"Content-Type": "image/jpeg", "Content-Length": str(body.size_bytes)},
    )


@router.get("/model", responses={404: {}, 503: {}})
def model_offer(device: DeviceDep, session: SessionDep, state: StateDep) -> DeviceModelOffer:
    """The model release this device was told to shadow, with fresh presigned download URLs."""
    found = ota.current_for_device(session, device)
    if found is None:
        raise not_found("Model assignment")
    if state.store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Object storage not configured")
    a, release = found.assignment, found.release
    signed = SignedManifest.model_validate(release.signed_manifest)
    prefix = release.object_prefix
    return DeviceModelOffer(
        notice=ModelNotice(
            assignment_id=a.id,
            revision=a.revision,
            name=release.name,
            version=release.version,
            manifest_sha256=release.manifest_sha256,
            canary=a.canary_device_id == device.id,
            shadow_plates=a.shadow_plates,
            agreement_threshold=a.agreement_threshold,
            switch_confirmed=a.switch_confirmed,
            issued_at=a.updated_at,
        ),
        signed_manifest=release.signed_manifest,
        manifest_url=state.store.presign_get(f"{prefix}/manifest.signed.json"),
        files=[
            DownloadFile(
                path=f.path,
                sha256=f.sha256,
                size_bytes=f.size_bytes,
                url=state.store.presign_get(f"{prefix}/{f.path}"),
            )
            for f in signed.manifest.files
        ],
        expires_in=state.store.expires,
    )


@router.post("/model/report", responses={404: {}, 409: {}})
def model_report(
    body: ModelReport,
    device: DeviceDep,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> ReportAck:
    """Shadow agreement and timing, a refusal, the switch or a rollback, from the device."""
    try:
        rollout = ota.apply_report(session, device=device, report=body)
    except ota.NotAssigned:
        raise not_found("Model assignment") from None
    except ota.OtaError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if body.state in ("refused", "failed", "rolled_back", "switched"):
        audit.record(
            session,
            action=f"model.{body.state}",
            actor_device_id=device.id,
            target_type="model_assignment",
            target_id=body.assignment_id,
            site_id=device.site_id,
            detail={"version": body.version, "reason": body.reason or ""},
        )
    assignment = ota.get_assignment(session, body.assignment_id)
    stage = assignment.stage if assignment is not None else "unknown"
    result = ReportAck(state=rollout.state, stage=stage)
    session.commit()
    if stage == "rolling":  # the canary switched: the other devices may be due a notice
        background.add_task(publish_quietly, state.settings, state.sessions)
    return result
