"""Console translations: Arabic (right to left), French, English. Data in i18n/<lang>.json.

Why flat JSON key files: a translator edits one file per language without touching templates; a test
keeps the key sets identical so no page ever shows a raw key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

LANGS = ("en", "fr", "ar")
RTL = frozenset({"ar"})
DEFAULT = "en"
_DIR = Path(__file__).parent / "i18n"


def load_catalogs(directory: Path = _DIR) -> dict[str, dict[str, str]]:
    return {lang: json.loads((directory / f"{lang}.json").read_text("utf-8")) for lang in LANGS}


@dataclass(frozen=True)
class Translator:
    lang: str
    catalogs: dict[str, dict[str, str]]

    @property
    def dir(self) -> str:
        return "rtl" if self.lang in RTL else "ltr"

    def __call__(self, key: str, **params: object) -> str:
        text = self.catalogs[self.lang].get(key) or self.catalogs[DEFAULT].get(key) or key
        if params:
            try:
                return text.format(**params)
            except (KeyError, IndexError, ValueError):
                return text
        return text


def pick(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGS:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGS:
            return tag
    return DEFAULT
