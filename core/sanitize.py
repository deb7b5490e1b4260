"""Sample numbers made safe for storage, file names, object keys and CSV cells.

Two steps, both refusing with :class:`SampleNumberError` (a message a user can act on) rather
than guessing:

* :func:`clean_sample_number` normalises what the operator typed (Unicode NFC, surrounding
  whitespace removed) and refuses empty values, more than 64 characters, control or invisible
  format characters, and values with no letter or digit. The result is the sample number
  stored and shown.
* :func:`safe_sample_number` turns a sample number into a token for file names and object
  keys: ASCII letters, digits, ``-``, ``_`` and single ``.``; accents are dropped (``é`` → ``e``),
  anything else becomes ``_``; it never holds a path separator, ``..``, a control character or
  a leading ``.``/``-``. Different sample numbers may share a token (``S 1`` and ``S/1``): file
  names add a timestamp, and the real sample number travels inside the file.
"""

from __future__ import annotations

import logging
import re
import unicodedata

logger = logging.getLogger(__name__)

MAX_SAMPLE_NUMBER_LEN = 64
_TOKEN_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RUNS = re.compile(r"([._-])[._-]+")


class SampleNumberError(ValueError):
    """A sample number that cannot be stored or made safe; the message says why."""


def clean_sample_number(text: object) -> str:
    """The sample number as stored: NFC, trimmed, checked (see module docstring)."""
    if not isinstance(text, str):
        raise SampleNumberError(f"a sample number must be text, not {type(text).__name__}")
    # Odd spaces (no-break, thin, ..) become plain spaces; other invisibles are refused below.
    spaced = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    value = unicodedata.normalize("NFC", spaced).strip()
    if not value:
        raise SampleNumberError("the sample number is empty: enter the number on the sample tube")
    if len(value) > MAX_SAMPLE_NUMBER_LEN:
        raise SampleNumberError(
            f"the sample number is {len(value)} characters long; "
            f"at most {MAX_SAMPLE_NUMBER_LEN} are allowed"
        )
    for ch in value:
        if unicodedata.category(ch)[0] in ("C", "Z") and ch != " ":
            raise SampleNumberError(
                f"the sample number contains the invisible or control character "
                f"U+{ord(ch):04X}; retype it"
            )
    if not any(ch.isalnum() for ch in value):
        raise SampleNumberError(
            f"the sample number {value!r} has no letter or digit; enter the real sample number"
        )
    return value


def _ascii_char(ch: str) -> str:
    if ch.isascii() and (ch.isalnum() or ch in "-_."):
        return ch
    base = "".join(
        c for c in unicodedata.normalize("NFKD", ch) if c.isascii() and (c.isalnum() or c in "-_.")
    )
    return base or "_"


def safe_sample_number(text: object) -> str:
    """A file-name and object-key safe token for a sample number, or SampleNumberError."""
    value = clean_sample_number(text)
    token = "".join(_ascii_char(ch) for ch in value)
    # Collapse runs such as "..", "_-_" to their first character, then trim the ends.
    token = _RUNS.sub(r"\1", token)[:MAX_SAMPLE_NUMBER_LEN].strip("._-")
    if not token or not _TOKEN_OK.match(token) or not any(c.isalnum() for c in token):
        raise SampleNumberError(
            f"the sample number {value!r} cannot be made into a safe file name; "
            "use letters, digits and - _ ."
        )
    return token
