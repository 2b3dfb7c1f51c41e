"""The web console under attack, on SQLite and on PostgreSQL.

- CSRF: every POST route of ``/web`` (read from the app's own routes, so a new one is covered the day it
  is added) refuses a request without its session's token, or with another session's, and changes nothing;
- sessions: a planted cookie is never promoted, each sign-in gets a new cookie, an idle session ends, a
  disabled account's session stops working, an oversized cookie is no session;
- isolation: one institution's user gets a plain 404 for another institution's message, proof or draft,
  the same 404 as for a message that does not exist;
- uploads: a file that is not a PDF whatever its name, a PDF over ``[web] max_pdf_bytes``, a form over its
  limit (declared, or a Content-Length that lies), thousands of fields or files, a file name with a path:
  refused with a clear answer and nothing stored, or (the name) made harmless;
- escaping: HTML and script written in a subject or a body never come back as markup on any page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from hub.envelope.reader import read_envelope
from hub.safexml import ParseLimits, parse
from hub.store.models import Base, Message, WebDraft, WebSession
from hub.web import accounts
from hub.web import routes as web_routes
from hub.web.compose import safe_file_name
from hub.web.sessions import _digest
from tests.web_kit import (
    PASSWORD,
    PDF,
    WebClock,
    compose,
    csrf_of,
    delivered_and_opened,
    make_accounts,
    send,
    sign_in,
    web_client,
    web_hub,
)

PDF_LIMIT = 1024 * 1024
COMPOSE_LIMIT = PDF_LIMIT + 256 * 1024
"""What selfservice accepts as one compose form: the PDF and 256 KiB more."""
CITIZEN = "85073003328"
SCRIPT = "<script>alert('hub')</script>"
IMAGE = '<img src=x onerror="alert(1)">'


@dataclass
class Site:
    runtime: object
    client: TestClient
    clock: WebClock
    secrets: dict[str, str]
    tmp_path: object
    database_url: str

    def browser(self) -> TestClient:
        """Another browser on the same hub (its own cookies), on the console's clock."""
        client, _ = web_client(self.runtime)  # type: ignore[arg-type]
        client.app.state.web.clock = self.clock
        return client

    def signed_in(self, user: str, client: TestClient | None = None) -> TestClient:
        client = client or self.browser()
        assert sign_in(client, self.clock, self.secrets, user).status_code == 303
        return client


@pytest.fixture()
def site(tmp_path, database_url):
    runtime = web_hub(tmp_path, database_url, HUB_WEB_MAX_PDF_BYTES=str(PDF_LIMIT), HUB_WEB_SESSION_MINUTES="5")
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    runtime.intake.clock = clock  # envelopes written on the web are dated by the console's clock
    with client:
        yield Site(runtime, client, clock, secrets, tmp_path, database_url)
    runtime.close()


def counts(runtime) -> dict[str, int]:
    """Rows per table: "nothing changed" is these being equal before and after."""
    with runtime.sessions() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) for table in Base.metadata.sorted_tables
        }


def stored(runtime) -> dict[str, int]:
    """Rows per table but the audit trail's (a refused batch is audited)."""
    return {name: n for name, n in counts(runtime).items() if not name.startswith("audit")}


def form(**changes) -> dict[str, str]:
    fields = {
        "recipient_kind": "citizen",
        "recipient_id": CITIZEN,
        "message_type": "TAX_ASSESSMENT",
        "subject_fr": "Votre avertissement-extrait de rôle",
        "body_fr": "Madame, Monsieur,\nVoici votre avertissement.",
        "registered": "on",
        "reply": "none",
    }
    fields.update(changes)
    return fields


def draft_of(client: TestClient, fields: dict[str, str] | None = None) -> str:
    drafted = compose(client, fields or form())
    assert drafted.status_code == 303, drafted.text
    return drafted.headers["location"]


def drafts(runtime) -> list[WebDraft]:
    with runtime.sessions() as session:
        return list(session.scalars(select(WebDraft)))


def attachment_name(envelope: bytes) -> str:
    document = read_envelope(parse(envelope, limits=ParseLimits(max_bytes=len(envelope) + 1))).content.document
    assert document is not None
    return document.file_name


# --- CSRF -------------------------------------------------------------------------------------------------


def _post_paths(routes: list[BaseRoute], prefix: str = "") -> list[str]:
    out = []
    for route in routes:
        if isinstance(route, Mount):
            out += _post_paths(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and "POST" in (route.methods or ()):
            out.append(prefix + route.path)
    return sorted(set(out))


POST_PATHS = _post_paths(web_routes())
PUBLIC_POSTS = ("/web/signin", "/web/signin/certificate")


def test_the_post_routes_are_found_from_the_app():
    assert {"/web/signin", "/web/signout", "/web/compose", "/web/batch"} <= set(POST_PATHS)
    assert all(path.startswith("/web/") for path in POST_PATHS)


def _fill(path: str, draft_id: str) -> str:
    """A route's path with its parameters: the real draft for a draft, a fresh id for anything else."""
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            part = draft_id if part == "{draft_id}" else str(uuid.uuid4())
        parts.append(part)
    return "/".join(parts)


@pytest.mark.parametrize("path", POST_PATHS)
def test_every_post_route_refuses_a_missing_or_foreign_csrf_token_and_changes_nothing(site, path):
    tax = site.signed_in("tax.user", site.client)
    ops = site.signed_in("ops")
    draft = draft_of(tax)
    draft_id = draft.rsplit("/", 1)[-1]
    foreign = {  # each user's token of another session of their own
        "tax.user": csrf_of(site.signed_in("tax.user").get("/web/compose").text),
        "ops": csrf_of(site.signed_in("ops").get("/web/console").text),
    }
    url = _fill(path, draft_id)
    # what the route would act on, were the token not checked: a sign-in, a message, a recipient, a batch
    fields = {
        **form(),
        "username": "tax.user",
        "password": PASSWORD,
        "code": site.clock.next_code(site.secrets["tax.user"]),
        "kind": "citizen",
        "id": CITIZEN,
    }
    before = counts(site.runtime)
    answers = []
    for user, client in (("tax.user", tax), ("ops", ops)):
        attempts = [
            ({}, {}),
            ({"csrf": foreign[user]}, {}),
            ({}, {"X-CSRF-Token": foreign[user]}),
            ({"csrf": ""}, {"X-CSRF-Token": ""}),
        ]
        for token, headers in attempts:
            answer = client.post(url, data={**fields, **token}, headers=headers, follow_redirects=False)
            assert answer.status_code == 403, (path, user, token, headers, answer.status_code, answer.text[:300])
            assert "CSRF_INVALID" in answer.text or "NOT_AUTHORISED" in answer.text, (path, user)
            answers.append("CSRF_INVALID" in answer.text)
    assert any(answers), f"{path}: no user reached the CSRF check (a route for a role the test does not know?)"
    assert counts(site.runtime) == before
    assert [d.id for d in drafts(site.runtime)] == [draft_id]
    assert tax.get("/web/", follow_redirects=False).headers["location"] == "/web/messages"  # still signed in
    assert ops.get("/web/", follow_redirects=False).headers["location"] == "/web/console"


@pytest.mark.parametrize("path", POST_PATHS)
def test_a_signed_out_browser_cannot_post_anywhere(site, path):
    stranger = site.browser()
    other = site.browser()
    other_token = csrf_of(other.get("/web/signin").text)  # another browser's pre-sign-in token
    stranger.get("/web/signin")  # this browser has a token cookie of its own
    fields = {"username": "tax.user", "password": PASSWORD, "code": site.clock.next_code(site.secrets["tax.user"])}
    before = counts(site.runtime)
    for token in ({}, {"csrf": other_token}):
        answer = stranger.post(_fill(path, str(uuid.uuid4())), data={**fields, **token}, follow_redirects=False)
        if path in PUBLIC_POSTS:
            assert answer.status_code == 403 and "CSRF_INVALID" in answer.text, (path, answer.text[:300])
        else:
            assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin"), path
    assert counts(site.runtime) == before
    assert "hub_session" not in stranger.cookies


# --- sessions ---------------------------------------------------------------------------------------------


def _session_rows(runtime) -> list[WebSession]:
    with runtime.sessions() as session:
        return list(session.scalars(select(WebSession)))


def test_a_planted_session_cookie_is_never_promoted_and_each_sign_in_changes_the_cookie(site):
    planted = "attacker-chosen-value-0123456789abcdef"
    victim = site.browser()
    victim.cookies.set("hub_session", planted, domain="testserver.local", path="/web")
    pre_token = csrf_of(victim.get("/web/signin").text)
    first = sign_in(victim, site.clock, site.secrets, "tax.user")
    assert first.status_code == 303
    cookie = victim.cookies.get("hub_session")
    assert cookie and cookie != planted and planted not in first.headers["set-cookie"]
    assert _digest(planted) not in {row.id_sha256 for row in _session_rows(site.runtime)}
    attacker = site.browser()
    attacker.cookies.set("hub_session", planted, path="/web")
    assert attacker.get("/web/messages", follow_redirects=False).headers["location"].startswith("/web/signin")
    # the session's CSRF token is a new one, not the pre-sign-in token the page (and an attacker) could see
    assert csrf_of(victim.get("/web/messages").text) != pre_token
    # signing in again (the same browser) starts another session and ends the first
    assert sign_in(victim, site.clock, site.secrets, "tax.user").status_code == 303
    second = victim.cookies.get("hub_session")
    assert second != cookie
    old = site.browser()
    old.cookies.set("hub_session", cookie, path="/web")
    assert old.get("/web/messages", follow_redirects=False).headers["location"].startswith("/web/signin")
    assert len(_session_rows(site.runtime)) == 1


def test_an_oversized_or_odd_session_cookie_is_no_session(site):
    for value in ("x" * 5000, "", "%00", "a;b", "' OR 1=1 --", "x" * 129):
        browser = site.browser()
        browser.headers["cookie"] = "hub_session=" + value
        answer = browser.get("/web/messages", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")


def test_an_idle_session_ends_after_session_minutes(site):
    tax = site.signed_in("tax.user")
    ops = site.signed_in("ops")

    def idle(username: str, minutes: float) -> None:
        with site.runtime.sessions.begin() as session:
            session.execute(
                update(WebSession)
                .where(WebSession.username == username)
                .values(seen_at=datetime.now(UTC) - timedelta(minutes=minutes))
            )

    idle("ops", 4)  # within [web] session_minutes (5): still signed in, and seen again now
    assert ops.get("/web/console").status_code == 200
    idle("tax.user", 6)
    token = csrf_of(tax.get("/web/messages", follow_redirects=True).text)  # the sign-in page's token, now
    answer = tax.get("/web/messages", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")
    assert [row.username for row in _session_rows(site.runtime)] == ["ops"]  # the idle one is gone
    before = counts(site.runtime)
    late = tax.post("/web/compose", data={"csrf": token, **form()}, follow_redirects=False)
    assert late.status_code == 303 and late.headers["location"].startswith("/web/signin")
    assert counts(site.runtime) == before


def test_disabling_an_account_with_the_command_ends_its_live_session(site, monkeypatch):
    from hub.cli import cli

    tax = site.signed_in("tax.user")
    other = site.signed_in("social.user")
    assert tax.get("/web/messages").status_code == 200
    monkeypatch.setenv("HUB_CONFIG_DIR", str(site.tmp_path / "config"))
    monkeypatch.setenv("HUB_DATA_DIR", str(site.tmp_path / "var"))
    monkeypatch.setenv("HUB_DATABASE_URL", site.database_url)
    result = CliRunner().invoke(cli, ["web", "account", "disable", "tax.user"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    answer = tax.get("/web/messages", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")
    assert sign_in(site.browser(), site.clock, site.secrets, "tax.user").status_code == 401
    assert other.get("/web/messages").status_code == 200  # another account's session goes on


def test_disabling_an_account_by_the_library_ends_its_live_session(site):
    tax = site.signed_in("tax.user")
    assert tax.get("/web/messages").status_code == 200
    assert accounts.disable_account(site.runtime.sessions, "tax.user")
    answer = tax.get("/web/messages", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")


# --- another institution's messages -----------------------------------------------------------------------


def test_one_institutions_user_cannot_read_anything_of_another_institution(site):
    social = site.signed_in("social.user")
    subject = "Pensioenoverzicht vertrouwelijk"
    theirs = form(message_type="PENSION_STATEMENT", subject_fr="", body_fr="", subject_nl=subject)
    draft = draft_of(social, theirs)
    message_id = send(social, draft)
    events = delivered_and_opened(site.runtime, message_id)
    assert social.get(f"/web/messages/{message_id}/proofs/{events['opened']}").status_code == 200
    with site.runtime.sessions() as session:
        sender_message_id = session.get(Message, message_id).sender_message_id
    other_draft = draft_of(social, theirs)  # a draft of the social security's user, not sent
    tax = site.signed_in("tax.user")
    nobody = str(uuid.uuid4())
    before = counts(site.runtime)

    def same_as_nothing(path: str, real: str) -> None:
        answer = tax.get(path)
        control = tax.get(path.replace(real, nobody))
        assert answer.status_code == 404 and control.status_code == 404, path
        assert answer.text.replace(real, "ID") == control.text.replace(nobody, "ID"), path  # no oracle
        for secret in (subject, sender_message_id, "myebox", "PENSION_STATEMENT"):
            assert secret not in answer.text, (path, secret)

    same_as_nothing(f"/web/messages/{message_id}", message_id)
    for event_id in events.values():
        same_as_nothing(f"/web/messages/{message_id}/proofs/{event_id}", message_id)
    same_as_nothing(other_draft, other_draft.rsplit("/", 1)[-1])
    token = csrf_of(tax.get("/web/messages").text)
    for action in ("send", "discard"):
        answer = tax.post(f"{other_draft}/{action}", data={"csrf": token}, follow_redirects=False)
        assert answer.status_code == 404, action
    listing = tax.get("/web/messages").text
    assert message_id not in listing and subject not in listing and sender_message_id not in listing
    assert tax.get(f"/web/console/messages/{message_id}").status_code == 403  # not an operator
    for odd in ("../../etc/passwd", "..%2F..%2Fconsole", message_id.upper(), message_id + "x", "%00"):
        assert tax.get(f"/web/messages/{odd}").status_code == 404, odd
    assert counts(site.runtime) == before
    assert other_draft.rsplit("/", 1)[-1] in {d.id for d in drafts(site.runtime)}


def test_a_draft_belongs_to_its_session_not_only_to_its_institution(site):
    first = site.signed_in("tax.user")
    draft = draft_of(first)
    second = site.signed_in("tax.user")
    assert second.get(draft).status_code == 404
    token = csrf_of(second.get("/web/messages").text)
    assert second.post(draft + "/send", data={"csrf": token}, follow_redirects=False).status_code == 404
    with site.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


# --- uploads ----------------------------------------------------------------------------------------------

NOT_PDFS = {
    "exe": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"
    + b"\x00" * 200
    + b"This program cannot be run in DOS mode",
    "html": b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>\n%%EOF",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 200 + b"PK\x05\x06" + b"\x00" * 18,
    "wrong-magic": PDF.replace(b"%PDF-", b"%PDX-", 1),
    "junk-before-magic": b"\x00\x00" + PDF,
    "truncated": PDF[: len(PDF) // 2],
    "empty-looking": b"%PDF-",
}


@pytest.mark.parametrize("kind", sorted(NOT_PDFS))
def test_a_file_that_is_not_a_pdf_is_refused_whatever_its_name(site, kind):
    tax = site.signed_in("tax.user")
    before = stored(site.runtime)
    answer = compose(tax, form(), document=("letter.pdf", NOT_PDFS[kind], "application/pdf"))
    assert answer.status_code == 422 and "not a PDF" in answer.text, answer.text[:500]
    batch_page = tax.get("/web/batch")
    sheet = f"recipient_id,message_type,subject_fr,document\r\n{CITIZEN},TAX_ASSESSMENT,Objet,letter.pdf\r\n"
    batch = tax.post(
        "/web/batch",
        data={"csrf": csrf_of(batch_page.text)},
        files=[
            ("csv", ("b.csv", sheet.encode(), "text/csv")),
            ("documents", ("letter.pdf", NOT_PDFS[kind], "application/pdf")),
        ],
    )
    assert batch.status_code == 422 and "not a PDF" in batch.text
    assert stored(site.runtime) == before
    assert drafts(site.runtime) == []


def test_a_pdf_over_the_limit_is_refused_and_a_form_over_its_limit_is_not_even_read(site):
    tax = site.signed_in("tax.user")
    before = stored(site.runtime)
    big = PDF[:-6] + b"%" + b"x" * PDF_LIMIT + b"\n%%EOF\n"
    answer = compose(tax, form(), document=("big.pdf", big, "application/pdf"))
    assert answer.status_code == 422 and "larger than 1 MB" in answer.text, answer.text[:500]
    huge = PDF[:-6] + b"%" + b"x" * (COMPOSE_LIMIT + 1) + b"\n%%EOF\n"
    answer = compose(tax, form(), document=("huge.pdf", huge, "application/pdf"))
    assert answer.status_code == 413 and "TOO_LARGE" in answer.text
    assert answer.headers["content-security-policy"]  # the refusal is a console page like the others
    assert drafts(site.runtime) == []
    assert stored(site.runtime) == before


def _asgi(
    app, path: str, headers: dict[str, str], body: bytes, *, chunk: int = 64 * 1024, complete: bool = True
) -> tuple[int, bytes, int]:
    """One request straight to the ASGI app, the body as the server would hand it on: (status, body, bytes the
    app read). No client in between to correct a lying Content-Length; ``complete=False``: the client goes away
    after ``body`` (a body shorter than it said)."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    read = 0
    out: dict[str, object] = {"status": 0, "body": b""}

    async def receive():
        nonlocal read
        if pieces:
            piece = pieces.pop(0)
            read += len(piece)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces) or not complete}
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] = out["body"] + message.get("body", b"")  # type: ignore[operator]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)
    return int(out["status"]), out["body"], read  # type: ignore[return-value]


def _multipart(fields: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://testserver/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


def _lying(site, declared: int, pdf: bytes) -> tuple[int, bytes, int]:
    tax = site.signed_in("tax.user")
    token = csrf_of(tax.get("/web/compose").text)
    body, kind = _multipart({"csrf": token, **form()}, [("document", ("lie.pdf", pdf, "application/pdf"))])
    headers = {
        "host": "testserver",
        "content-type": kind,
        "content-length": str(declared),
        "cookie": f"hub_session={tax.cookies.get('hub_session')}",
    }
    return _asgi(site.client.app, "/web/compose", headers, body)


def test_a_content_length_that_lies_low_is_refused_and_stores_nothing(site):
    before = counts(site.runtime)
    status, body, _ = _lying(site, 1000, PDF[:-6] + b"%" + b"x" * (2 * COMPOSE_LIMIT) + b"\n%%EOF\n")
    assert status in (413, 415, 422), body[:300]
    assert b"<script" not in body.lower().replace(b'<script src="/web/static/hub.js" defer>', b"")
    assert drafts(site.runtime) == []
    assert counts(site.runtime)["messages"] == before["messages"]


def test_a_content_length_that_lies_low_does_not_make_the_console_read_past_its_limit(site):
    status, _, read = _lying(site, 1000, PDF[:-6] + b"%" + b"x" * (4 * COMPOSE_LIMIT) + b"\n%%EOF\n")
    assert status == 413
    assert read <= COMPOSE_LIMIT + 64 * 1024


def test_a_content_length_that_lies_high_or_is_missing_is_refused(site):
    tax = site.signed_in("tax.user")
    token = csrf_of(tax.get("/web/compose").text)
    body, kind = _multipart({"csrf": token, **form()}, [("document", ("a.pdf", PDF, "application/pdf"))])
    cookie = f"hub_session={tax.cookies.get('hub_session')}"
    before = counts(site.runtime)
    base = {"host": "testserver", "content-type": kind, "cookie": cookie}
    half = body[: len(body) // 2]  # it said more than it sent, then went away
    status, text, _ = _asgi(
        site.client.app, "/web/compose", {**base, "content-length": str(len(body))}, half, complete=False
    )
    assert status == 415 and b"could not be read" in text, text[:300]
    status, text, _ = _asgi(site.client.app, "/web/compose", base, body)  # no length at all (chunked)
    assert status == 415 and b"Content-Length" in text
    status, text, _ = _asgi(site.client.app, "/web/compose", {**base, "content-length": "-1"}, body)
    assert status == 415
    assert counts(site.runtime) == before


def test_a_multipart_form_cut_short_is_refused(site):
    tax = site.signed_in("tax.user")
    token = csrf_of(tax.get("/web/compose").text)
    body, kind = _multipart({"csrf": token, **form()}, [("document", ("a.pdf", PDF, "application/pdf"))])
    cut = body[: body.index(b'name="document"')]  # the fields arrived, the PDF did not
    headers = {
        "host": "testserver",
        "content-type": kind,
        "content-length": str(len(cut)),
        "cookie": f"hub_session={tax.cookies.get('hub_session')}",
    }
    status, _, _ = _asgi(site.client.app, "/web/compose", headers, cut)
    assert drafts(site.runtime) == []
    assert status == 415


def test_an_oversized_form_is_refused_before_it_is_read(site):
    tax = site.signed_in("tax.user")
    token = csrf_of(tax.get("/web/messages").text)
    before = counts(site.runtime)
    big = {"csrf": token, "padding": "x" * (70 * 1024)}
    for path in ("/web/signout", "/web/api/recipient"):
        answer = tax.post(path, data=big, follow_redirects=False)
        assert answer.status_code == 413 and "TOO_LARGE" in answer.text, path
    assert tax.get("/web/messages").status_code == 200  # the sign-out did not happen
    assert counts(site.runtime) == before


def test_thousands_of_fields_or_files_are_refused_not_a_crash(site):
    tax = site.signed_in("tax.user")
    token = csrf_of(tax.get("/web/compose").text)
    before = counts(site.runtime)
    many = {"csrf": token, **{f"f{n}": "1" for n in range(5000)}}
    answer = tax.post("/web/api/recipient", data=many)
    assert answer.status_code in (400, 413, 415) and "could not be read" in answer.text
    answer = tax.post("/web/compose", data={**many, **form()}, files={"document": ("a.pdf", PDF, "application/pdf")})
    assert answer.status_code in (400, 413, 415)
    files = [("document", (f"a{n}.pdf", PDF, "application/pdf")) for n in range(3)]
    answer = tax.post("/web/compose", data={"csrf": token, **form()}, files=files)
    assert answer.status_code in (400, 413, 415)  # compose takes one file
    empty = [("documents", (f"e{n}.pdf", b"", "application/pdf")) for n in range(1500)]
    answer = tax.post("/web/batch", data={"csrf": token}, files=[("csv", ("b.csv", b"a,b\r\n", "text/csv")), *empty])
    assert answer.status_code in (400, 413, 415)  # a batch takes a PDF per row at most
    assert counts(site.runtime) == before


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\Windows\\win.ini.pdf", "win.ini.pdf"),
        ("/etc/shadow", "shadow.pdf"),
        ("evil.exe", "evil.exe.pdf"),
        ("<script>x</script>.pdf", "script-.pdf"),
        ("r\u00e9sum\u00e9 \u202egnp.pdf", "resume-gnp.pdf"),
        ("....pdf", "pdf.pdf"),
        ("..", "document.pdf"),
    ],
)
def test_a_file_name_with_a_path_or_markup_ends_up_plain(site, given, expected):
    assert safe_file_name(given) == expected
    tax = site.signed_in("tax.user")
    draft = draft_of_named(tax, given)
    (stored,) = drafts(site.runtime)
    name = attachment_name(stored.envelope)
    assert name == expected and "/" not in name and "\\" not in name and ".." not in name
    preview = tax.get(draft).text
    assert expected in preview and "<script>" not in preview
    if "/" in given or "\\" in given:
        assert given not in preview


def draft_of_named(client: TestClient, file_name: str) -> str:
    drafted = compose(client, form(), document=(file_name, PDF, "application/pdf"))
    assert drafted.status_code == 303, drafted.text[:500]
    return drafted.headers["location"]


def test_a_batch_document_named_with_a_path_is_stored_plain(site):
    tax = site.signed_in("tax.user")
    sheet = f"recipient_id,message_type,subject_fr,document\r\n{CITIZEN},TAX_ASSESSMENT,Objet,../../etc/passwd.pdf\r\n"
    answer = tax.post(
        "/web/batch",
        data={"csrf": csrf_of(tax.get("/web/batch").text)},
        files=[
            ("csv", ("b.csv", sheet.encode(), "text/csv")),
            ("documents", ("../../etc/passwd.pdf", PDF, "application/pdf")),
        ],
    )
    assert answer.status_code == 200, answer.text[:800]
    with site.runtime.sessions() as session:
        (message,) = session.scalars(select(Message))
    assert attachment_name(message.envelope) == "passwd.pdf"


# --- escaping ---------------------------------------------------------------------------------------------


def _no_markup(path: str, answer) -> None:
    text = answer.text.lower()
    assert "<script>alert" not in text and "<img src=x" not in text and 'onerror="alert' not in text, path


def test_control_characters_in_a_subject_are_a_field_error_not_a_crash(site):
    tax = site.signed_in("tax.user")
    answer = compose(tax, form(subject_fr="Objet\x01\x0b"))
    assert answer.status_code == 422


def test_html_and_script_in_a_message_never_come_back_as_markup(site):
    tax = site.signed_in("tax.user")
    ops = site.signed_in("ops")
    hostile = form(subject_fr=SCRIPT, body_fr=f"{IMAGE}\n{SCRIPT}", subject_nl=f"{IMAGE}</title><h1>x")
    # a form with an error is shown again with what was typed: escaped
    again = compose(tax, {**hostile, "recipient_id": "85073003329"})
    assert again.status_code == 422
    _no_markup("/web/compose (errors)", again)
    assert "&lt;script&gt;" in again.text
    draft = draft_of(tax, hostile)
    preview = tax.get(draft)
    _no_markup(draft, preview)
    assert "&lt;script&gt;alert(&#39;hub&#39;)&lt;/script&gt;" in preview.text
    message_id = send(tax, draft)
    pages = {
        f"/web/messages/{message_id}": tax,
        f"/web/messages/{message_id}?sent=1": tax,
        "/web/messages": tax,
        f"/web/console/messages/{message_id}": ops,
        f"/web/console/messages?id={message_id}": ops,
        "/web/console": ops,
    }
    for path, client in pages.items():
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        _no_markup(path, answer)
    assert "&lt;script&gt;" in tax.get(f"/web/messages/{message_id}").text
    # a batch's result page names rows by their subject
    quoted = IMAGE.replace('"', '""')
    sheet = f'recipient_id,message_type,subject_fr,body_fr\r\n{CITIZEN},TAX_ASSESSMENT,"{SCRIPT}","{quoted}"\r\n'
    batch = tax.post(
        "/web/batch",
        data={"csrf": csrf_of(tax.get("/web/batch").text)},
        files=[("csv", ("b.csv", sheet.encode(), "text/csv"))],
    )
    assert batch.status_code == 200, batch.text[:500]
    _no_markup("/web/batch", batch)
    for path, client in pages.items():
        _no_markup(path, client.get(path))


@pytest.mark.parametrize(
    "path",
    [
        "/web/signin?next=/web/%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
        "/web/messages/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/web/lang/%3Cscript%3E?next=/web/%3Cscript%3Ealert(1)%3C/script%3E",
        "/web/console/messages?id=%3Cscript%3Ealert(1)%3C/script%3E&sender=%3Cimg%20src=x%20onerror=alert(1)%3E",
    ],
)
def test_markup_in_an_address_never_comes_back_as_markup(site, path):
    client = site.signed_in("ops" if "console" in path else "tax.user")
    answer = client.get(path)
    assert answer.status_code < 500
    _no_markup(path, answer)


def test_every_console_answer_carries_the_security_headers(site):
    tax = site.signed_in("tax.user")
    ops = site.signed_in("ops")
    paths = {
        tax: [
            "/web/messages",
            "/web/compose",
            "/web/batch",
            "/web/batch/example.csv",
            "/web/messages/nope",
            "/web/console",
        ],
        ops: [
            "/web/console",
            "/web/console/messages",
            "/web/console/stats.csv",
            "/web/console/live.json",
            "/web/batch",
        ],
        site.browser(): ["/web/signin", "/web/messages"],
    }
    for client, wanted in paths.items():
        for path in wanted:
            answer = client.get(path, follow_redirects=False)
            assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", ""), path
            assert answer.headers.get("x-content-type-options") == "nosniff", path
            assert answer.headers.get("cache-control") == "no-store", path
