"""The web console in Debian's headless Chromium, against the whole running hub, on both pairs of back ends.

- sign-in: the form (by its labels), a wrong code, the language switch, the keyboard alone;
- self-service: an institution user composes a registered letter with a PDF, previews and sends it, follows
  its journey until the citizen's provider reports it opened, and downloads the hub-signed proofs;
- operator console: a dead letter is replayed from the browser; the dashboard, routing, providers and
  statistics pages are shown.

Screenshots of each step go to the artefacts folder (see ``conftest.shot``).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import expect

from hub.broker.deadletters import DeadLetters
from hub.outbound.acks import read_acknowledgement
from hub.safexml import parse
from tests.browser.conftest import CITIZEN, READER, RunningHub, shot
from tests.test_broker import drain
from tests.test_deadletters import bury

JOURNEY_TIMEOUT_S = 60.0


def sign_in(page: Any, hub: RunningHub, username: str) -> None:
    """Fill the sign-in form by its labels and submit it (the caller checks where it lands)."""
    page.goto("/web/signin")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(hub.password)
    page.get_by_label("Code from your authenticator app").fill(hub.code(username))
    page.get_by_role("button", name="Sign in", exact=True).click()


def minimal_pdf(text: str = "Avertissement-extrait de role 2026") -> bytes:
    """A small, valid one-page PDF (catalog, pages, page, content stream, font; a correct xref table)."""
    content = f"BT /F1 18 Tf 72 760 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# -- sign-in ------------------------------------------------------------------------------------------


def test_a_user_signs_in_through_the_form_and_lands_on_their_messages(page, running_hub):
    page.goto("/web/signin")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, f"{running_hub.backend}-01-signin")
    sign_in(page, running_hub, "social.user")
    page.wait_for_url(re.compile(r"/web/messages$"))


def test_a_wrong_code_is_refused_with_an_alert(page, running_hub):
    page.goto("/web/signin")
    page.get_by_label("User name").fill("city.user")
    page.get_by_label("Password").fill(running_hub.password)
    page.get_by_label("Code from your authenticator app").fill(running_hub.wrong_code("city.user"))
    page.get_by_role("button", name="Sign in", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("is not right")
    assert re.search(r"/web/signin", page.url)
    shot(page, f"{running_hub.backend}-02-signin-refused")
    sign_in(page, running_hub, "city.user")  # the right code afterwards: in, and the failure count reset
    page.wait_for_url(re.compile(r"/web/messages$"))


def test_the_language_switch_shows_the_sign_in_page_in_french(page, running_hub):
    page.goto("/web/signin")
    page.get_by_role("link", name="Français").click()
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_label("Mot de passe")).to_be_visible()
    shot(page, f"{running_hub.backend}-03-signin-fr")


def test_the_sign_in_form_works_with_the_keyboard_alone(page, running_hub):
    page.goto("/web/signin")
    username = page.locator("#username")
    for _ in range(12):  # from wherever the focus starts (the field has autofocus), Tab until the user name
        if username.evaluate("el => el === document.activeElement"):
            break
        page.keyboard.press("Tab")
    expect(username).to_be_focused()
    page.keyboard.type("social.user")
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(running_hub.password)
    page.keyboard.press("Tab")
    expect(page.locator("#code")).to_be_focused()
    page.keyboard.type(running_hub.code("social.user"))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/web/messages$"))


# -- self-service: compose, preview, send, journey, proofs ---------------------------------------------------


def _wait_for_state(page: Any, wanted: str, limit: float = JOURNEY_TIMEOUT_S) -> None:
    """Until ``#state``'s ``data-state`` is ``wanted``: the page reloads itself; reload it too now and then."""
    state = page.locator("#state")
    deadline = time.monotonic() + limit
    while True:
        try:
            expect(state).to_have_attribute("data-state", wanted, timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.reload()


def _download_proof(page: Any, hub: RunningHub, event: str, folder: Path) -> bytes:
    link = page.locator(f"a[id^='proof-{event}-']").first
    expect(link).to_be_visible()
    with page.expect_download() as info:
        link.click()
    download = info.value
    target = folder / (download.suggested_filename or f"proof-{event}.xml")
    download.save_as(target)
    data = target.read_bytes()
    assert data.lstrip().startswith(b"<"), data[:80]
    assert b"Acknowledgement" in data and b"Proof" in data, data[:300]
    root = parse(data)
    hub.verifier().verify(root, now=datetime.now(UTC), parties=["hub"])  # raises unless the hub signed it
    proof = read_acknowledgement(root)
    assert (proof.event.value, proof.provider) == (event, READER)
    return data


def test_an_institution_user_sends_a_registered_letter_and_downloads_the_proofs(page, running_hub, tmp_path):
    hub = running_hub
    name = hub.backend
    tag = uuid.uuid4().hex[:6]
    subject_fr = f"Avertissement-extrait de rôle 2026 ({tag})"
    subject_nl = f"Aanslagbiljet 2026 ({tag})"

    page.goto("/web/signin")
    shot(page, f"{name}-10-selfservice-signin")
    sign_in(page, hub, "tax.user")
    page.wait_for_url(re.compile(r"/web/messages$"))

    page.goto("/web/compose")
    page.locator("select#recipient_kind").select_option("citizen")
    page.locator("input#recipient_id").fill(CITIZEN)
    expect(page.locator("output#recipient_check")).to_contain_text("digital post")
    page.locator("select#message_type").select_option("TAX_ASSESSMENT")
    page.locator("input#subject_fr").fill(subject_fr)
    page.locator("input#subject_nl").fill(subject_nl)
    page.locator("textarea#body_fr").fill("Veuillez trouver ci-joint votre avertissement-extrait de rôle.")
    page.locator("textarea#body_nl").fill("In bijlage vindt u uw aanslagbiljet.")
    page.locator("input#document").set_input_files(
        files=[{"name": "avertissement-2026.pdf", "mimeType": "application/pdf", "buffer": minimal_pdf()}]
    )
    page.locator("input#registered").check()
    expect(page.locator("input#registered")).to_be_checked()
    shot(page, f"{name}-11-compose")

    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text(subject_fr).first).to_be_visible()
    send = page.locator("button#send")
    expect(send).to_have_text(re.compile("Send"))
    shot(page, f"{name}-12-preview")

    send.click()
    page.wait_for_url(re.compile(r"/web/messages/[^/?#]+(\?[^#]*)?$"))  # the journey (the page may add ?sent=1)
    hub_id = urlsplit(page.url).path.rsplit("/", 1)[-1]
    expect(page.locator("#state")).to_have_attribute("data-state", re.compile(r".+"))
    _wait_for_state(page, "opened")
    shot(page, f"{name}-13-journey-opened")

    for event in ("delivered", "opened"):
        _download_proof(page, hub, event, tmp_path)

    page.goto("/web/messages")
    row = page.locator("tr", has=page.locator(f"a[href$='/web/messages/{hub_id}']"))
    expect(row).to_be_visible()
    expect(row).to_contain_text("TAX_ASSESSMENT")
    expect(row).to_contain_text("opened")
    shot(page, f"{name}-14-my-messages")


# -- operator console: dead letters and the other pages ---------------------------------------------------------


def test_an_operator_replays_a_dead_letter_from_the_console(page, running_hub):
    hub = running_hub
    name = hub.backend
    message_id = f"browser-{uuid.uuid4().hex[:10]}"
    # A delivery to doccle that failed while doccle was down; no one consumes provider.doccle in this hub, so
    # the replayed copy stays there (it cannot come back to the dead letters before the test looks).
    dead_id = bury(hub.broker_url, message_id, queue="provider.doccle", body=b"<Envelope/>", hub_message_id="hm-web")
    assert dead_id in [letter.id for letter in DeadLetters(hub.broker_url).list()]

    sign_in(page, hub, "ops")
    page.wait_for_url(re.compile(r"/web/console$"))
    shot(page, f"{name}-20-console-dashboard")

    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Dead letters").click()
    page.wait_for_url(re.compile(r"/web/console/dead-letters$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Dead letters")
    row = page.get_by_role("row").filter(has_text=dead_id)
    expect(row).to_contain_text("provider.doccle")
    expect(row).to_contain_text(message_id)
    shot(page, f"{name}-21-dead-letters-before")

    row.get_by_role("button", name=f"Replay dead letter {dead_id}").click()
    expect(page.get_by_role("status")).to_contain_text("Replayed: 1.")
    expect(page.get_by_role("row").filter(has_text=dead_id)).to_have_count(0)
    assert dead_id not in [letter.id for letter in DeadLetters(hub.broker_url).list()]
    [back] = drain(hub.broker_url, "provider.doccle", expect=1, limit=10)  # where it came from, attempts reset
    assert back.body == b"<Envelope/>" and back.properties.get("message_id") == message_id
    shot(page, f"{name}-22-dead-letters-after")

    for path, heading, number in (
        ("/web/console/routing", "Routing", 23),
        ("/web/console/providers", "Providers", 24),
        (f"/web/console/stats?month={datetime.now(UTC):%Y-%m}", "Statistics", 25),  # this month: the letters above
    ):
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, (path, answer and answer.status)
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        shot(page, f"{name}-{number}-console-{path.split('?')[0].rsplit('/', 1)[-1]}")
