"""Constrained string and time types shared by the wire models."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints


def to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


def _printable(value: str) -> str:
    # Newlines and tabs are fine in free text; other control characters are not.
    if value.isprintable():  # the usual case, decided in C (no Cc character is printable)
        return value
    for ch in value:
        if unicodedata.category(ch) == "Cc" and ch not in "\n\t":
            raise ValueError(f"contains the control character U+{ord(ch):04X}")
    return value


def _one_line(value: str) -> str:
    if value.isprintable():  # the usual case, decided in C (no Cc character is printable)
        return value
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise ValueError(f"contains the control character U+{ord(ch):04X}")
    return value


ShortText = Annotated[str, StringConstraints(max_length=128), AfterValidator(_one_line)]
FreeText = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_printable)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]


# Model releases (core.ota, core.rollout): a name, a semantic version, a sha256.
ModelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ModelVersion = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+([-+][A-Za-z0-9.]{1,32})?$")
]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
