"""Sending a batch from a CSV file (``/web/batch``), on SQLite and on PostgreSQL.

All or nothing: a file with any wrong row stores nothing and names every problem by row and column;
a right file becomes one message per row, signed with the institution's self-service key.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import func, select

from hub.envelope import examples as ex
from hub.envelope.examples import minimal_pdf
from hub.safexml import parse
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.models import AuditEntry, Message
from hub.web.batch import COLUMNS, shown
from tests.kit import NOW, keyring
from tests.web_kit import csrf_of, make_accounts, sign_in, web_client, web_hub

PDF = minimal_pdf("Avertissement")
GOOD = [
    {
        "recipient_id": ex.CITIZEN_A,
        "message_type": "TAX_ASSESSMENT",
        "subject_fr": "Votre avertissement",
        "subject_nl": "Uw aanslagbiljet",
        "document": "letter-1.pdf",
        "your_reference": "R-1",
    },
    {
        "recipient_kind": "enterprise",
        "recipient_id": ex.ENTERPRISE,
        "message_type": "GENERAL_INFORMATION",
        "subject_nl": "Informatie",
        "body_nl": 'Een tekst; met, leestekens "en" aanhalingstekens.',
        "document": "letter-2.pdf",
        "your_reference": "R-2",
    },
    {
        "recipient_id": "85.07.30-033.28",
        "message_type": "TAX_ASSESSMENT",
        "subject_en": "Pay",
        "body_en": "Please pay.",
        "payment_iban": ex.IBAN,
        "payment_amount": "12,50",
        "payment_due_date": "30/11/2026",
        "payment_reference": ex.REFERENCE,
        "registered": "yes",
        "your_reference": "R-3",
    },
]


@pytest.fixture()
def site(tmp_path, database_url):
    runtime = web_hub(tmp_path, database_url, HUB_WEB_MAX_BATCH_ROWS="5", HUB_WEB_MAX_PDF_BYTES="4096")
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    with client:
        yield runtime, client, clock, secrets
    runtime.close()


def signed_in(site, user="tax.user"):
    _, client, clock, secrets = site
    assert sign_in(client, clock, secrets, user).status_code == 303
    return client


def sheet(rows, *, separator=",", columns=None) -> bytes:
    columns = columns or sorted({name for row in rows for name in row}, key=COLUMNS.index)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(name, "") for name in columns])
    return out.getvalue().encode()


def upload(client, data: bytes | None, documents=(), *, csrf: str | None = "page", name="batch.csv"):
    page = client.get("/web/batch")
    fields = {} if csrf is None else {"csrf": csrf_of(page.text) if csrf == "page" else csrf}
    files = []
    if data is not None:
        files.append(("csv", (name, data, "text/csv")))
    files += [("documents", (file_name, content, "application/pdf")) for file_name, content in documents]
    return client.post("/web/batch", data=fields, files=files or None, follow_redirects=False)


def stored(runtime) -> list[Message]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Message).order_by(Message.sender_message_id)))


def problems(html: str) -> list[tuple[str, str, str]]:
    """The rows of the problem table: (row, column, text)."""
    table = re.search(r'<table id="batch-problems">(.*?)</table>', html, re.S)
    assert table, html
    cells = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", table.group(1), re.S)
    return [(row.strip(), re.sub(r"</?code>", "", column).strip(), text.strip()) for row, column, text in cells]


TWO_PDFS = [("letter-1.pdf", PDF), ("letter-2.pdf", minimal_pdf("Informatie"))]


# --- the page ---------------------------------------------------------------------------------------


def test_the_page_explains_the_format_and_offers_the_form(site):
    client = signed_in(site)
    page = client.get("/web/batch")
    assert page.status_code == 200
    for name in COLUMNS:
        assert f"<code>{name}</code>" in page.text
    assert 'enctype="multipart/form-data"' in page.text and 'name="documents"' in page.text and "multiple" in page.text
    assert 'href="/web/batch/example.csv"' in page.text and "TAX_ASSESSMENT" in page.text
    french = client.get("/web/batch", headers={"Accept-Language": "fr"})
    assert "Envoyer un lot de messages" in french.text


def test_the_example_csv_is_a_batch_that_uploads_as_it_is(site):
    runtime = site[0]
    client = signed_in(site)
    example = client.get("/web/batch/example.csv")
    assert example.status_code == 200 and example.headers["content-type"].startswith("text/csv")
    assert "attachment" in example.headers["content-disposition"]
    names = {row["document"] for row in csv.DictReader(io.StringIO(example.text.lstrip("\ufeff")))} - {""}
    answer = upload(client, example.content, [(name, PDF) for name in sorted(names)])
    assert answer.status_code == 200, answer.text
    assert len(stored(runtime)) == 3


def test_a_right_batch_becomes_one_signed_message_per_row(site):
    runtime = site[0]
    client = signed_in(site)
    answer = upload(client, sheet(GOOD, separator=";"), TWO_PDFS)
    assert answer.status_code == 200, answer.text
    messages = stored(runtime)
    assert len(messages) == 3
    assert {m.institution_id for m in messages} == {ex.FINANCE}
    assert {m.recipient_id for m in messages} == {ex.CITIZEN_A, ex.ENTERPRISE}
    assert sorted(m.registered for m in messages) == [False, False, True]
    verifier = Verifier(TrustStore([trusted(ex.FINANCE, keyring().pairs[ex.FINANCE].certificate)]))
    for message in messages:
        verified = verifier.verify(parse(message.envelope), now=NOW)
        assert verified.signer.party == ex.FINANCE
        assert message.sender_message_id.startswith("web-batch-")
        assert f'href="/web/messages/{message.id}"' in answer.text
    assert "Votre avertissement (R-1)" in answer.text
    assert ex.CITIZEN_A not in answer.text  # the page names rows by subject and reference, not national numbers
    with runtime.sessions() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "web-batch")).one()
    assert '"accepted": 3' in audit.detail and ex.CITIZEN_A not in audit.detail and audit.actor == "web:tax.user"


def test_the_same_file_uploaded_twice_is_sent_once(site):
    runtime = site[0]
    client = signed_in(site)
    assert upload(client, sheet(GOOD), TWO_PDFS).status_code == 200
    again = upload(client, sheet(GOOD), TWO_PDFS)
    assert again.status_code == 422 and "already sent" in again.text
    assert len(stored(runtime)) == 3
    changed = [dict(GOOD[0], your_reference="R-1b"), *GOOD[1:]]
    assert upload(client, sheet(changed), TWO_PDFS).status_code == 200
    assert len(stored(runtime)) == 6


def test_one_pdf_may_serve_several_rows_and_a_spare_upload_is_reported(site):
    runtime = site[0]
    client = signed_in(site)
    rows = [dict(GOOD[0]), dict(GOOD[1], document="letter-1.pdf")]
    answer = upload(client, sheet(rows), TWO_PDFS)
    assert answer.status_code == 200 and len(stored(runtime)) == 2
    assert 'id="batch-unreferenced"' in answer.text and "letter-2.pdf" in answer.text


# --- wrong files: nothing stored, each problem by row and column ------------------------------------


def bad_row(**changes):
    row = dict(GOOD[2])
    row.update(changes)
    return [dict(GOOD[0]), row, dict(GOOD[1])]


@pytest.mark.parametrize(
    ("rows", "documents", "row", "column", "words"),
    [
        (bad_row(recipient_id="85073003329"), TWO_PDFS, "3", "recipient_id", "not a valid national number"),
        (bad_row(message_type="PARKING_PERMIT"), TWO_PDFS, "3", "message_type", "Choose one"),
        (bad_row(document="missing.pdf"), TWO_PDFS, "3", "document", "No uploaded file is named missing.pdf"),
        (bad_row(payment_iban="BE00 0000 0000 0000"), TWO_PDFS, "3", "payment_iban", "not a valid IBAN"),
        (bad_row(registered="maybe"), TWO_PDFS, "3", "registered", "yes or no"),
        (bad_row(subject_en="a\x01b"), TWO_PDFS, "3", "subject_en", "control characters"),
        (bad_row(expires_on="2020-01-01"), TWO_PDFS, "3", "expires_on", "in the future"),
        (GOOD, [("letter-1.pdf", b"MZ\x90\x00 not a pdf"), TWO_PDFS[1]], "2", "document", "not a PDF"),
        (GOOD, [("letter-1.pdf", PDF + b"x" * 5000), TWO_PDFS[1]], "2", "document", "larger than"),
        (GOOD, [*TWO_PDFS, ("LETTER-1.PDF", PDF)], "the file", "document", "Two uploaded files are named"),
    ],
    ids=[
        "ssin-check-digit",
        "message-type-not-theirs",
        "missing-pdf",
        "iban",
        "yes-no",
        "control-characters",
        "expired",
        "not-a-pdf",
        "pdf-too-big",
        "same-name-twice",
    ],
)
def test_a_wrong_row_stores_nothing_and_is_named(site, rows, documents, row, column, words):
    runtime = site[0]
    client = signed_in(site)
    answer = upload(client, sheet(rows), documents)
    assert answer.status_code == 422, answer.text
    assert "Nothing was sent" in answer.text and 'name="csv"' in answer.text  # the form, to upload the fixed file
    found = problems(answer.text)
    assert any(r == row and c == column and words in text for r, c, text in found), found
    assert stored(runtime) == []
    with runtime.sessions() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "web-batch")).one()
    assert '"outcome": "invalid"' in audit.detail


def test_every_problem_of_every_row_is_listed_at_once(site):
    runtime = site[0]
    client = signed_in(site)
    rows = [
        dict(GOOD[0], recipient_id="12345678901", document="nope.pdf"),
        dict(GOOD[1]),
        dict(GOOD[2], message_type="NOPE", payment_amount="-3"),
    ]
    found = problems(upload(client, sheet(rows), TWO_PDFS).text)
    assert {(r, c) for r, c, _ in found} >= {
        ("2", "recipient_id"),
        ("2", "document"),
        ("4", "message_type"),
        ("4", "payment_amount"),
    }
    assert stored(runtime) == []


def test_a_row_the_intake_would_refuse_is_refused_before_anything_is_sent(site):
    """The business rules run on the signed envelope (Intake.open): here, an expiry beyond the type's maximum."""
    runtime = site[0]
    client = signed_in(site)
    answer = upload(client, sheet(bad_row(expires_on="2035-01-01")), TWO_PDFS)
    found = problems(answer.text)
    assert any(r == "3" and "EXPIRY_OUT_OF_RANGE" in text for r, _, text in found), found
    assert stored(runtime) == []


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (sheet(GOOD * 2), "more than 5 rows"),
        (sheet(GOOD)[:-2] + b"," + b"x" * (5 * 128 * 1024), "larger than the limit"),
        (sheet(GOOD).replace(b"Votre", "Votre \N{LATIN SMALL LETTER E WITH ACUTE}".encode("latin-1")), "not UTF-8"),
        ("\ufeff".encode("utf-16-le") + sheet(GOOD).decode().encode("utf-16-le"), "UTF-16"),
        (b"PK\x03\x04" + b"\x00" * 100, "workbook"),
        (b"recipient_id,message_type,colour,=cmd|' /C calc'!A0\r\n1,2,3,4\r\n", "Unknown column(s): colour, &#39;=cmd"),
        (b"recipient_id,subject_fr\r\n85073003328,x\r\n", "needs these columns: message_type"),
        (b"recipient_id\tmessage_type\r\n", "neither commas nor semicolons"),
        (b"recipient_id,message_type,subject_fr\r\n", "no message rows"),
        (b"", "The CSV file is empty"),
        (None, "Choose the CSV file"),
        (b'recipient_id,message_type,subject_fr\r\n1,"TAX_ASSESSMENT"x,"a\r\n', "cannot be read at line"),
    ],
    ids=[
        "too-many-rows",
        "oversized",
        "latin-1",
        "utf-16",
        "workbook",
        "unknown-column",
        "missing-column",
        "tab-separated",
        "header-only",
        "empty",
        "no-csv",
        "broken-quotes",
    ],
)
def test_a_file_that_cannot_be_read_stores_nothing_and_says_why(site, data, words):
    runtime = site[0]
    client = signed_in(site)
    answer = upload(client, data, TWO_PDFS)
    assert answer.status_code == 422, answer.text
    found = problems(answer.text)
    assert any(r == "the file" and words in text for r, _, text in found), found
    assert "=cmd" not in answer.text.replace("&#39;=cmd", "")  # a formula is never echoed as one
    assert stored(runtime) == []


def test_echoed_values_are_never_formulas_nor_control_characters():
    assert shown('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert shown("@SUM(A1)").startswith("'@") and shown("+1").startswith("'+") and shown("-1").startswith("'-")
    assert shown("a\u202eb\x07c") == "a\ufffdb\ufffdc"
    assert len(shown("x" * 500)) == 81


def test_the_upload_is_refused_beyond_its_size_before_it_is_read(site):
    runtime = site[0]
    client = signed_in(site)
    limit = 5 * 4096 + 5 * 128 * 1024 + 64 * 1024
    answer = upload(client, sheet(GOOD), [*TWO_PDFS, ("big.pdf", PDF + b"x" * limit)])
    assert answer.status_code == 413 and "TOO_LARGE" in answer.text
    assert stored(runtime) == []


def test_more_uploads_than_rows_allowed_are_refused(site):
    runtime = site[0]
    client = signed_in(site)
    extra = [(f"extra-{n}.pdf", PDF) for n in range(6)]
    found = problems(upload(client, sheet(GOOD), [*TWO_PDFS, *extra]).text)
    assert any("8 files uploaded; at most 5" in text for _, _, text in found), found
    assert stored(runtime) == []


def test_rows_are_spreadsheet_rows_blank_lines_counted(site):
    client = signed_in(site)
    data = sheet(bad_row(recipient_id="1")).replace(b"\r\n", b"\r\n\r\n", 1)  # a blank row 2
    found = problems(upload(client, data, TWO_PDFS).text)
    assert [(r, c) for r, c, _ in found] == [("4", "recipient_id")]


# --- who may upload ---------------------------------------------------------------------------------


def test_without_the_csrf_token_nothing_is_sent(site):
    runtime = site[0]
    client = signed_in(site)
    assert upload(client, sheet(GOOD), TWO_PDFS, csrf=None).status_code == 403
    answer = upload(client, sheet(GOOD), TWO_PDFS, csrf="x" * 43)
    assert answer.status_code == 403 and "CSRF_INVALID" in answer.text
    assert stored(runtime) == []


def test_an_operator_may_not_send_a_batch(site):
    runtime = site[0]
    client = signed_in(site, "ops")
    assert client.get("/web/batch").status_code == 403
    assert client.get("/web/batch/example.csv").status_code == 403
    page = client.get("/web/batch")  # the refusal page: an operator's session and its CSRF token
    answer = client.post(
        "/web/batch", data={"csrf": csrf_of(page.text)}, files=[("csv", ("b.csv", sheet(GOOD), "text/csv"))]
    )
    assert answer.status_code == 403 and "NOT_AUTHORISED" in answer.text
    assert stored(runtime) == []


def test_a_signed_out_browser_is_sent_to_sign_in(site):
    runtime, client = site[0], site[1]
    assert client.get("/web/batch", follow_redirects=False).headers["location"] == "/web/signin?next=/web/batch"
    answer = client.post("/web/batch", files=[("csv", ("b.csv", sheet(GOOD), "text/csv"))], follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")
    assert stored(runtime) == []


def test_a_user_of_an_institution_without_self_service_is_told_so(site):
    runtime = site[0]
    client = signed_in(site, "city.user")
    page = client.get("/web/batch")
    assert page.status_code == 403 and "NOT_AUTHORISED" in page.text and "self-service key" in page.text
    assert client.get("/web/batch/example.csv").status_code == 403
    messages = client.get("/web/batch", headers={"Accept-Language": "nl"})
    assert "selfservicesleutel" in messages.text
    answer = upload(client, sheet(GOOD), TWO_PDFS, csrf=csrf_of(page.text))
    assert answer.status_code == 403 and "NOT_AUTHORISED" in answer.text
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
