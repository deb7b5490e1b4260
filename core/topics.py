"""MQTT topic names: ``microplate/v1/{site}/{device}/{runs|acks|status|config|model}``.

Site and device ids are short slugs (1-64 of ``A-Z a-z 0-9 _ -``, starting with a letter or
digit), so an id can never add a level (``/``), a wildcard (``+``, ``#``) or a NUL to a topic.
Direction: the device publishes ``runs`` (run messages and run events) and ``status``, the
cloud publishes ``acks``, ``config`` (retained) and ``model`` (retained: the model version the
cloud wants the device to shadow, see :mod:`core.ota`). The broker ACL lets a device touch only
its own subtree.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

logger = logging.getLogger(__name__)

TOPIC_ROOT = "microplate/v1"
Leaf = Literal["runs", "acks", "status", "config", "model"]
LEAVES: tuple[Leaf, ...] = ("runs", "acks", "status", "config", "model")
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_SLUG = re.compile(SLUG_PATTERN)


class TopicError(ValueError):
    """A site/device id or topic that is not valid."""


def check_slug(value: object, what: str) -> str:
    """``value`` if it is a valid site/device id, else TopicError naming it."""
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise TopicError(
            f"{what} {value!r} is not a valid id: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


class Topics:
    """The five topics of one device."""

    __slots__ = ("device", "site")

    def __init__(self, site: str, device: str) -> None:
        self.site = check_slug(site, "site id")
        self.device = check_slug(device, "device id")

    def __repr__(self) -> str:
        return f"Topics(site={self.site!r}, device={self.device!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topics) and (self.site, self.device) == (other.site, other.device)

    def __hash__(self) -> int:
        return hash((self.site, self.device))

    @property
    def base(self) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.device}"

    def topic(self, leaf: Leaf) -> str:
        if leaf not in LEAVES:
            raise TopicError(f"unknown topic leaf {leaf!r}: expected one of {', '.join(LEAVES)}")
        return f"{self.base}/{leaf}"

    @property
    def runs(self) -> str:
        return self.topic("runs")

    @property
    def acks(self) -> str:
        return self.topic("acks")

    @property
    def status(self) -> str:
        return self.topic("status")

    @property
    def config(self) -> str:
        return self.topic("config")

    @property
    def model(self) -> str:
        return self.topic("model")

    @staticmethod
    def subscription(leaf: Leaf, site: str | None = None) -> str:
        """A wildcard filter for ``leaf`` of every device (of one site, when given)."""
        if leaf not in LEAVES:
            raise TopicError(f"unknown topic leaf {leaf!r}: expected one of {', '.join(LEAVES)}")
        site_part = "+" if site is None else check_slug(site, "site id")
        return f"{TOPIC_ROOT}/{site_part}/+/{leaf}"

    @staticmethod
    def parse(topic: str) -> tuple[str, str, Leaf]:
        """``(site, device, leaf)`` of a concrete topic; TopicError for anything else."""
        parts = topic.split("/") if isinstance(topic, str) else []
        prefix = TOPIC_ROOT.split("/")
        if len(parts) != len(prefix) + 3 or parts[: len(prefix)] != prefix:
            raise TopicError(f"{topic!r} is not a {TOPIC_ROOT}/<site>/<device>/<leaf> topic")
        site, device, leaf = parts[len(prefix) :]
        check_slug(site, "site id")
        check_slug(device, "device id")
        for known in LEAVES:
            if leaf == known:
                return site, device, known
        raise TopicError(f"unknown topic leaf {leaf!r}: expected one of {', '.join(LEAVES)}")
