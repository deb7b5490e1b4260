"""Provisioning from the command line (the API route does the same for admins)."""

from __future__ import annotations

import re
from typing import Any

from cloud.crud import audit, devices, sites
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.settings import CloudSettings

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$")


class ProvisionError(ValueError):
    """The device cannot be provisioned; the message says why."""


def provision_from_cli(
    settings: CloudSettings, *, site: str, site_name: str | None, device: str, name: str
) -> dict[str, Any]:
    for label, slug in (("site", site), ("device", device)):
        if not _SLUG.match(slug):
            raise ProvisionError(f"{label} slug {slug!r}: use 2-40 of a-z, 0-9 and '-'")
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            site_row = sites.get_site_by_slug(session, slug=site)
            if site_row is None:
                if site_name is None:
                    raise ProvisionError(f"no site {site!r}; pass --site-name to create it")
                site_row = sites.create_site(session, slug=site, name=site_name)
                audit.record(
                    session,
                    action="site.created",
                    target_type="site",
                    target_id=site_row.id,
                    site_id=site_row.id,
                    detail={"by": "cli"},
                )
            try:
                enrollment = devices.provision_device(
                    session, site=site_row, slug=device, name=name
                )
            except devices.DeviceError as exc:
                raise ProvisionError(str(exc)) from None
            audit.record(
                session,
                action="device.provisioned",
                target_type="device",
                target_id=enrollment.device.id,
                site_id=site_row.id,
                detail={"by": "cli"},
            )
            devices.sync_broker_files(session, settings)
            bundle = devices.enrollment_bundle(enrollment, site=site_row, settings=settings)
            return bundle.model_dump(mode="json")
    finally:
        engine.dispose()
