"""The device HTTP API: device tokens only, never user tokens."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from cloud.api.deps import DeviceDep, ReleasingRoute, SessionDep, StateDep, not_found
from cloud.models import Run
from cloud.schemas import DeviceIdentity, PresignedUrl, PresignRequest
from cloud.storage import image_key

router = APIRouter(prefix="/api/v1/device", tags=["device"], route_class=ReleasingRoute)


@router.get("/me")
def whoami(device: DeviceDep) -> DeviceIdentity:
    return DeviceIdentity(device_id=device.id, site=device.site.slug, device=device.slug)


@router.post("/images/presign", responses={404: {}, 503: {}})
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
