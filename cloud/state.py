"""Everything one API process holds: settings, database, storage, broadcaster, limiter."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cloud.broadcast import Broadcaster
from cloud.ratelimit import SlidingWindowLimiter
from cloud.settings import CloudSettings
from cloud.storage import ObjectStore


@dataclass
class AppState:
    settings: CloudSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore | None
    broadcaster: Broadcaster
    login_limiter: SlidingWindowLimiter
    # Pool of the polled read routes (autocommit, no pre-ping): see cloud.db.make_read_engine.
    read_engine: Engine
    reset_limiter: SlidingWindowLimiter | None = None
