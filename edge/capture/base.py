"""What every capture source is: a `CaptureSource` that hands out `Frame`s."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np


@dataclass
class Frame:
    """One captured plate: the encoded bytes we store as `raw`, and the pixels if known."""

    data: bytes
    filename: str
    source: str
    captured_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    image: np.ndarray | None = None


class CaptureSource(ABC):
    name = "none"

    def __init__(self) -> None:
        self.state = "idle"
        self.detail = ""

    def start(self) -> None:  # noqa: B027 - sources without hardware need no start
        """Open the device (failures are reported, not raised: it is retried on grab)."""

    def stop(self) -> None:  # noqa: B027
        """Release the device."""

    @abstractmethod
    def grab(self) -> Frame:
        """A fresh frame, or `CaptureUnavailable` with an operator message."""

    def preview_frame(self) -> np.ndarray | None:
        """A recent frame for the live preview; None when the source has no live view."""
        return None

    @property
    def can_capture(self) -> bool:
        return True
