"""Translations for the touchscreen: one JSON dict per language in ``translations/``.

The kiosk's choice lives in the ``mp_lang`` cookie (set by the page script, so it survives a
restart of the browser and of the appliance); without it the appliance's runtime default is
used when we have that language, else English.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
LANG_COOKIE = "mp_lang"
DEFAULT_LANGUAGE = "en"
# Order shown in the language switch; each needs translations/<code>.json with every key.
LANGUAGES: dict[str, str] = {"en": "English", "th": "ไทย"}


@lru_cache(maxsize=len(LANGUAGES))
def strings(lang: str) -> dict[str, str]:
    """Every UI string for ``lang`` (English fills any key a translation lacks)."""
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    base = _load(DEFAULT_LANGUAGE)
    if lang == DEFAULT_LANGUAGE:
        return base
    return {**base, **_load(lang)}


def _load(lang: str) -> dict[str, str]:
    path = TRANSLATIONS_DIR / f"{lang}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path} must be a JSON object of strings")
    return data


def choose(cookie: str | None, runtime_default: str | None) -> str:
    """The language to render: the kiosk's cookie, else the appliance default, else English."""
    for candidate in (cookie, runtime_default):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE
