"""Every page of the web console: in three languages, labelled for screen readers and keyboard users.

- every word has an English, French and Dutch text with the same placeholders;
- every word a template or a page asks for by name exists;
- every page a signed-in user can open (each GET route without a parameter, for its role) declares its
  language, has one h1, labels every input, and names every image — in each of the three languages.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from lxml import html
from starlette.routing import Mount, Route

from hub.web import i18n
from hub.web import routes as web_routes
from tests.web_kit import make_accounts, sign_in, web_client, web_hub

WEB = Path(__file__).resolve().parent.parent / "hub" / "web"
LITERAL = re.compile(r"""\bt\(\s*["']([A-Za-z0-9_.]+)["']\s*[,)]""")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_word_is_in_english_french_and_dutch_with_the_same_placeholders():
    for key, texts in i18n.catalog().items():
        assert set(texts) == set(i18n.LANGUAGES), key
        assert all(texts[lang].strip() for lang in i18n.LANGUAGES), key
        assert placeholders(texts["fr"]) == placeholders(texts["en"]) == placeholders(texts["nl"]), key


def test_every_word_asked_for_by_name_exists():
    asked = set()
    for path in [*WEB.rglob("*.html"), *WEB.rglob("*.py")]:
        asked |= {(path.name, key) for key in LITERAL.findall(path.read_text("utf-8"))}
    missing = sorted((name, key) for name, key in asked if key not in i18n.catalog())
    assert not missing


def page_paths(role: str) -> list[str]:
    """The GET pages a user of ``role`` opens without a parameter (from the routes themselves)."""
    prefix = "/console" if role == "operator" else None
    out = []
    for mount in web_routes():
        assert isinstance(mount, Mount)
        for route in mount.routes:
            if isinstance(route, Route) and "GET" in (route.methods or ()) and "{" not in route.path:
                if route.path.endswith((".csv", ".json")) or route.path in ("/", "/signin"):
                    continue
                if (prefix is None) == (not route.path.startswith("/console")):
                    out.append("/web" + route.path)
    return sorted(set(out))


@pytest.fixture()
def site(tmp_path):
    runtime = web_hub(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    with client:
        yield client, clock, secrets
    runtime.close()


def check_accessible(document: str, path: str, lang: str) -> None:
    tree = html.fromstring(document)
    assert tree.get("lang") == lang, path
    assert len(tree.findall(".//h1")) == 1, path
    labelled = {label.get("for") for label in tree.iter("label")}
    for field in tree.xpath("//input[not(@type='hidden') and not(@type='submit')] | //select | //textarea"):
        ok = field.get("id") in labelled or field.get("aria-label") or field.get("aria-labelledby")
        assert ok, f"{path}: {html.tostring(field)[:120]!r} has no label"
    for image in tree.iter("img"):
        assert image.get("alt") is not None, path
    for button in tree.iter("button"):
        assert (button.text_content() or "").strip() or button.get("aria-label"), path


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(("user", "role"), [("tax.user", "institution"), ("ops", "operator")])
def test_every_page_is_labelled_and_speaks_the_chosen_language(site, user, role, lang):
    client, clock, secrets = site
    assert client.get("/web/signin").status_code == 200
    client.get(f"/web/lang/{lang}?next=/web/signin")
    check_accessible(client.get("/web/signin").text, "/web/signin", lang)
    assert sign_in(client, clock, secrets, user).status_code == 303
    paths = page_paths(role)
    assert paths, role
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        check_accessible(answer.text, path, lang)
