"""The web console's words in English, French and Dutch.

Each area of the console keeps its words in ``translations/<area>.json``:
``{"key": {"en": "...", "fr": "...", "nl": "..."}}``; a test checks that every key has all three and
that every key a template asks for exists. A page's language: the ``hub_lang`` cookie (the switch
at the top of every page), else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

LANGUAGES = ("en", "fr", "nl")
NAMES = {"en": "English", "fr": "Français", "nl": "Nederlands"}


@cache
def catalog() -> Mapping[str, Mapping[str, str]]:
    merged: dict[str, Mapping[str, str]] = {}
    for item in sorted(resources.files("hub.web").joinpath("translations").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            for key, texts in json.loads(item.read_text("utf-8")).items():
                if key in merged:
                    raise ValueError(f"translation key {key!r} is in two files ({item.name})")
                merged[key] = texts
    return merged


def translate(lang: str, key: str, **values: Any) -> str:
    texts = catalog().get(key)
    text = key if texts is None else texts.get(lang) or texts.get("en") or key
    return text.format(**values) if values else text


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower()[:2]
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        if lang in LANGUAGES and q > best_q:
            best, best_q = lang, q
    return best
