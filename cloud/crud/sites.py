"""The site registry."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.crud.scope import Scope
from cloud.models import Site
from cloud.security import utcnow


class SiteError(ValueError):
    """A site change that cannot be made (message is safe to show)."""


def list_sites(session: Session, *, scope: Scope) -> list[Site]:
    return list(session.scalars(select(Site).where(scope.clause(Site.id)).order_by(Site.slug)))


def get_site(session: Session, *, site_id: uuid.UUID, scope: Scope) -> Site | None:
    site = session.get(Site, site_id)
    if site is None or not scope.allows(site.id):
        return None
    return site


def get_site_by_slug(session: Session, *, slug: str) -> Site | None:
    return session.scalar(select(Site).where(Site.slug == slug))


def create_site(
    session: Session,
    *,
    slug: str,
    name: str,
    csv_template: str = "labware",
    protective_titre: int | None = None,
) -> Site:
    if get_site_by_slug(session, slug=slug) is not None:
        raise SiteError(f"a site with slug {slug!r} already exists")
    site = Site(slug=slug, name=name, csv_template=csv_template, protective_titre=protective_titre)
    session.add(site)
    session.flush()
    return site


def update_site(
    session: Session,
    *,
    site: Site,
    name: str | None = None,
    csv_template: str | None = None,
    protective_titre: int | None = None,
    enabled: bool | None = None,
    allow_training: bool | None = None,
) -> None:
    if enabled is not None:
        site.disabled_at = None if enabled else (site.disabled_at or utcnow())
    if name is not None:
        site.name = name
    if csv_template is not None:
        site.csv_template = csv_template
    if protective_titre is not None:
        site.protective_titre = protective_titre
    if allow_training is not None and allow_training != site.allow_training:
        site.allow_training = allow_training
        site.config_revision += 1  # its devices are sent the new desired config
    session.flush()
