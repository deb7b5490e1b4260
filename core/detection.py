"""One detector box in image pixels, the output contract every detection backend meets."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)


class Detection(BaseModel):
    """A box ``(x1, y1)``-``(x2, y2)`` in pixels of the frame it was found in."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float = Field(ge=0.0, le=1.0)
    class_id: int = Field(ge=0)
    class_name: str = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> Detection:
        if self.x2 < self.x1:
            raise ValueError(f"x2 = {self.x2!r} is left of x1 = {self.x1!r}")
        if self.y2 < self.y1:
            raise ValueError(f"y2 = {self.y2!r} is above y1 = {self.y1!r}")
        return self

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)
