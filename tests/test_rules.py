"""The envelope's business rules (hub.envelope.rules.check_rules), as a table.

Each test starts from an example envelope (tests.kit.example), changes one thing with
``dataclasses.replace`` and checks the exact violation: code, element path and a piece of
the message. A few go through ``validate_envelope`` to show that the line number is
filled in from the document.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.media import SNIFFERS
from hub.envelope.rules import MessageTypePolicy, RuleLimits, add_months, check_rules
from hub.envelope.validation import validate_envelope
from hub.errors import ErrorCode, Rejected, Violation
from hub.safexml import parse
from tests.kit import CREATED, NOW, example

E = ErrorCode
HEADER = "/PublishMessage/Header"
CONTENT = "/PublishMessage/Content"
FR, NL, DE, EN = m.Language.FR, m.Language.NL, m.Language.DE, m.Language.EN
SECOND = timedelta(seconds=1)

BAD_SSIN = "85073003329"  # 85073003328 with a wrong last digit
BAD_CBE = "0406798007"  # 0406798006 with a wrong last digit


# --- helpers -----------------------------------------------------------------------------


def t(lang: m.Language, value: str) -> m.Text:
    return m.Text(lang=lang, value=value)


def with_header(envelope: m.Envelope, **fields: object) -> m.Envelope:
    return replace(envelope, header=replace(envelope.header, **fields))


def with_content(envelope: m.Envelope, **fields: object) -> m.Envelope:
    return replace(envelope, content=replace(envelope.content, **fields))


def with_recipient(envelope: m.Envelope, **fields: object) -> m.Envelope:
    return with_header(envelope, recipient=replace(envelope.header.recipient, **fields))


def with_sender(envelope: m.Envelope, **fields: object) -> m.Envelope:
    return with_header(envelope, sender=replace(envelope.header.sender, **fields))


def with_payment(envelope: m.Envelope, **fields: object) -> m.Envelope:
    return with_content(envelope, payment=replace(envelope.content.payment, **fields))


def created_at(created: datetime, kind: str = "citizen-letter", **fields: object) -> m.Envelope:
    """An example created at ``created``; expiry 12 months later unless given."""
    return with_header(ex.example(kind, created=created), **fields)


def check(envelope: m.Envelope, *, now: datetime = NOW, **kwargs: object) -> list[Violation]:
    return check_rules(envelope, now=now, **kwargs)  # type: ignore[arg-type]


def where(violations: list[Violation]) -> list[tuple[ErrorCode, str | None]]:
    return [(v.code, v.path) for v in violations]


def only(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, violations
    return violations[0]


def assert_one(violations: list[Violation], code: ErrorCode, path: str, fragment: str) -> Violation:
    violation = only(violations)
    assert (violation.code, violation.path) == (code, path)
    assert fragment in violation.message, violation.message
    assert violation.line is None  # check_rules knows no document
    return violation


def with_annexes(*annexes: m.Attachment, kind: str = "citizen-letter") -> m.Envelope:
    return with_content(example(kind), annexes=annexes)


def text_file(content: bytes = b"Hello, world.\n", name: str = "note.txt") -> m.Attachment:
    return ex.attachment(name, "text/plain", content)


def odf(mime: str) -> bytes:
    """An OpenDocument file: a ZIP whose first member, stored, is ``mimetype``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), mime, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", "<office:document-content/>", compress_type=zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    assert data[30:38] == b"mimetype"
    return data


def ooxml() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    return buffer.getvalue()


def line_of(data: bytes, needle: str, *, after: str | None = None, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle`` (after a line with ``after``)."""
    lines = data.decode("utf-8").splitlines()
    start = 0
    if after is not None:
        start = next(i for i, line in enumerate(lines) if after in line) + 1
    hits = [i for i in range(start, len(lines)) if needle in lines[i]]
    return hits[occurrence - 1] + 1


def rejected(envelope: m.Envelope, *, now: datetime = NOW) -> tuple[Rejected, bytes]:
    """Build the document, parse it again (so lines exist) and validate it."""
    data = to_bytes(build_envelope(envelope))
    with pytest.raises(Rejected) as caught:
        validate_envelope(parse(data), now=now)
    return caught.value, data


ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF_BYTES = ex.minimal_pdf("test")
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG_BYTES = b"\xff\xd8\xff\xe0" + bytes(24)

# media type: (file name, bytes of that type, bytes not of that type)
MEDIA_SAMPLES: dict[str, tuple[str, bytes, bytes]] = {
    "application/pdf": ("letter.pdf", PDF_BYTES, b"<html>not a PDF</html>"),
    "text/plain": ("note.txt", b"Dear Sir,\tregards.\r\n", b"text with a NUL \x00 byte"),
    "text/csv": ("data.csv", "année;montant\n2026;12,50\n".encode(), "année".encode("latin-1")),
    "text/xml": ("data.xml", b"\xef\xbb\xbf\n<?xml version='1.0'?><a/>", b"not markup"),
    "image/png": ("scan.png", PNG_BYTES, JPEG_BYTES),
    "image/jpeg": ("photo.jpg", JPEG_BYTES, PNG_BYTES),
    ODT: ("letter.odt", odf(ODT), odf(ODS)),
    ODS: ("sheet.ods", odf(ODS), odf(ODT)),
    DOCX: ("letter.docx", ooxml(), PDF_BYTES),
    XLSX: ("sheet.xlsx", ooxml(), b"a;b\n1;2\n"),
}


def test_the_media_samples_cover_every_allowed_media_type() -> None:
    assert set(MEDIA_SAMPLES) == set(SNIFFERS)


# --- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ex.KINDS))
def test_given_an_example_envelope_when_checked_at_the_test_clock_then_no_rule_is_broken(kind: str) -> None:
    assert check(example(kind)) == []


# --- identifiers -------------------------------------------------------------------------


def test_given_a_citizen_recipient_with_a_wrong_ssin_then_ssin_invalid_at_the_recipient() -> None:
    envelope = with_recipient(example("citizen-letter"), id=BAD_SSIN)
    assert_one(check(envelope), E.SSIN_INVALID, HEADER + "/Recipient/Citizen/SSIN", "national number is not valid")


def test_given_a_recipient_bis_number_then_it_is_accepted() -> None:
    # 85 (month 07 + 40) 30 033: a bis number; check digits over the first nine
    first9 = "854730033"
    bis = first9 + f"{97 - int(first9) % 97:02d}"
    assert check(with_recipient(example("citizen-letter"), id=bis)) == []


def test_given_a_wrong_sender_organisation_number_then_cbe_invalid_at_the_sender() -> None:
    envelope = with_sender(example("citizen-letter"), organization_id=BAD_CBE)
    violation = assert_one(check(envelope), E.CBE_INVALID, HEADER + "/Sender/OrganizationId", "not a valid enterprise")
    assert BAD_CBE in violation.message


def test_given_an_integrator_sending_on_behalf_of_a_wrong_number_then_cbe_invalid_at_on_behalf_of() -> None:
    envelope = with_sender(example("integrator"), on_behalf_of=BAD_CBE)
    violation = assert_one(check(envelope), E.CBE_INVALID, HEADER + "/Sender/OnBehalfOf", "not a valid enterprise")
    assert BAD_CBE in violation.message


def test_given_an_enterprise_recipient_with_a_wrong_number_then_cbe_invalid_at_the_recipient() -> None:
    envelope = with_recipient(example("enterprise"), id=BAD_CBE)
    violation = assert_one(check(envelope), E.CBE_INVALID, HEADER + "/Recipient/Enterprise/CBE", "check the 10 digits")
    assert BAD_CBE in violation.message


def test_given_a_wrong_ssin_for_the_attention_of_then_ssin_invalid_there() -> None:
    envelope = example("enterprise")
    fao = replace(envelope.header.recipient.for_the_attention_of, ssin=BAD_SSIN)
    assert_one(
        check(with_recipient(envelope, for_the_attention_of=fao)),
        E.SSIN_INVALID,
        HEADER + "/Recipient/Enterprise/ForTheAttentionOf/SSIN",
        "for the attention of",
    )


def test_given_a_for_the_attention_of_with_a_name_only_then_no_ssin_is_checked() -> None:
    envelope = example("enterprise")
    fao = m.ForTheAttentionOf(name="Payroll department")
    assert check(with_recipient(envelope, for_the_attention_of=fao)) == []


def test_given_a_citizen_number_on_an_enterprise_recipient_then_cbe_invalid() -> None:
    envelope = with_recipient(example("enterprise"), id=ex.CITIZEN_A)
    assert where(check(envelope)) == [(E.CBE_INVALID, HEADER + "/Recipient/Enterprise/CBE")]


# --- add_months ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(
            datetime(2027, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2027, 2, 28, 9, 30, tzinfo=UTC), id="31-jan-to-28-feb"
        ),
        pytest.param(
            datetime(2028, 1, 31, 9, 30, tzinfo=UTC),
            1,
            datetime(2028, 2, 29, 9, 30, tzinfo=UTC),
            id="31-jan-to-29-feb-leap",
        ),
        pytest.param(datetime(2027, 3, 31, tzinfo=UTC), 1, datetime(2027, 4, 30, tzinfo=UTC), id="31-mar-to-30-apr"),
        pytest.param(
            datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC), id="december-to-january"
        ),
        pytest.param(datetime(2028, 2, 29, tzinfo=UTC), 12, datetime(2029, 2, 28, tzinfo=UTC), id="29-feb-plus-a-year"),
        pytest.param(CREATED, 36, datetime(2029, 11, 2, 9, 0, tzinfo=UTC), id="36-months"),
        pytest.param(datetime(2026, 5, 31, tzinfo=UTC), 0, datetime(2026, 5, 31, tzinfo=UTC), id="zero"),
    ],
)
def test_add_months_adds_calendar_months_clamped_to_the_last_day(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


# --- expiry --------------------------------------------------------------------------------


def expiring(expires_at: datetime, created: datetime = CREATED) -> m.Envelope:
    return created_at(created, expires_at=expires_at)


@pytest.mark.parametrize(
    ("expires_at", "ok"),
    [
        pytest.param(add_months(CREATED, 1), True, id="exactly-1-month"),
        pytest.param(add_months(CREATED, 1) - SECOND, False, id="1-month-minus-1s"),
        pytest.param(add_months(CREATED, 36), True, id="exactly-36-months"),
        pytest.param(add_months(CREATED, 36) + SECOND, False, id="36-months-plus-1s"),
        pytest.param(CREATED, False, id="at-created"),
        pytest.param(CREATED - timedelta(days=1), False, id="before-created"),
    ],
)
def test_given_an_expiry_when_checked_then_it_must_lie_between_1_and_36_calendar_months_after_created(
    expires_at: datetime, ok: bool
) -> None:
    violations = check(expiring(expires_at))
    if ok:
        assert violations == []
    else:
        violation = assert_one(violations, E.EXPIRY_OUT_OF_RANGE, HEADER + "/ExpiresAt", "1 to 36 months after Created")
        assert expires_at.isoformat() in violation.message


def test_given_created_on_31_january_then_28_february_is_one_month_later_and_accepted() -> None:
    created = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
    now = created + timedelta(hours=1)
    assert check(expiring(datetime(2027, 2, 28, 9, 0, tzinfo=UTC), created), now=now) == []
    assert where(check(expiring(datetime(2027, 2, 28, 8, 59, 59, tzinfo=UTC), created), now=now)) == [
        (E.EXPIRY_OUT_OF_RANGE, HEADER + "/ExpiresAt")
    ]


def test_given_retain_indefinitely_and_a_default_policy_then_expiry_out_of_range() -> None:
    envelope = with_header(example(), expires_at=None, retain_indefinitely=True)
    assert_one(check(envelope), E.EXPIRY_OUT_OF_RANGE, HEADER + "/RetainIndefinitely", "may not be kept indefinitely")


def test_given_retain_indefinitely_and_a_policy_allowing_it_then_accepted_even_with_a_late_effective_date() -> None:
    envelope = with_header(
        example(), expires_at=None, retain_indefinitely=True, effective_date=CREATED + timedelta(days=3650)
    )
    assert check(envelope, policy=MessageTypePolicy(unlimited_allowed=True)) == []


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        pytest.param(add_months(CREATED, 1) - SECOND, True, id="one-second-before-expiry"),
        pytest.param(add_months(CREATED, 1), False, id="at-expiry"),
        pytest.param(add_months(CREATED, 2), False, id="after-expiry"),
    ],
)
def test_given_an_expiry_that_has_already_passed_at_now_then_expiry_out_of_range(now: datetime, ok: bool) -> None:
    violations = check(expiring(add_months(CREATED, 1)), now=now)
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.EXPIRY_OUT_OF_RANGE, HEADER + "/ExpiresAt", "has already passed")


@pytest.mark.parametrize(
    ("months", "ok"),
    [
        pytest.param(1, False, id="1-month-below-minimum"),
        pytest.param(2, True, id="minimum"),
        pytest.param(6, True, id="maximum"),
        pytest.param(7, False, id="above-maximum"),
    ],
)
def test_given_a_custom_policy_then_its_bounds_apply(months: int, ok: bool) -> None:
    policy = MessageTypePolicy(min_retention_months=2, max_retention_months=6)
    violations = check(expiring(add_months(CREATED, months)), policy=policy)
    if ok:
        assert violations == []
    else:
        violation = assert_one(violations, E.EXPIRY_OUT_OF_RANGE, HEADER + "/ExpiresAt", "2 to 6 months after Created")
        assert "GENERAL_INFORMATION" in violation.message


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ahead", "ok"),
    [
        pytest.param(timedelta(minutes=4), True, id="4-minutes-ahead"),
        pytest.param(timedelta(minutes=5), True, id="exactly-5-minutes-ahead"),
        pytest.param(timedelta(minutes=5, seconds=1), False, id="5-minutes-1s-ahead"),
        pytest.param(timedelta(hours=2), False, id="2-hours-ahead"),
    ],
)
def test_given_created_in_the_future_then_only_the_clock_skew_is_tolerated(ahead: timedelta, ok: bool) -> None:
    created = NOW + ahead
    violations = check(created_at(created))
    if ok:
        assert violations == []
    else:
        violation = assert_one(violations, E.DATE_INCONSISTENT, HEADER + "/Created", "lies in the future")
        assert created.isoformat() in violation.message


def test_given_a_wider_clock_skew_limit_then_a_later_created_is_tolerated() -> None:
    envelope = created_at(NOW + timedelta(minutes=8))
    assert where(check(envelope)) == [(E.DATE_INCONSISTENT, HEADER + "/Created")]
    assert check(envelope, limits=RuleLimits(clock_skew=timedelta(minutes=10))) == []


@pytest.mark.parametrize(
    ("effective", "ok", "fragment"),
    [
        pytest.param(CREATED - SECOND, False, "before Created", id="before-created"),
        pytest.param(CREATED, True, "", id="at-created"),
        pytest.param(add_months(CREATED, 12) - SECOND, True, "", id="just-before-expiry"),
        pytest.param(add_months(CREATED, 12), False, "not before the message expires", id="at-expiry"),
        pytest.param(add_months(CREATED, 13), False, "not before the message expires", id="after-expiry"),
    ],
)
def test_given_an_effective_date_then_it_must_lie_from_created_to_before_expiry(
    effective: datetime, ok: bool, fragment: str
) -> None:
    violations = check(with_header(example(), effective_date=effective))
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.DATE_INCONSISTENT, HEADER + "/EffectiveDate", fragment)


def test_given_no_expiry_then_the_effective_date_is_checked_against_the_default_retention() -> None:
    default_expiry = add_months(CREATED, 12)
    envelope = with_header(example(), expires_at=None)
    assert check(with_header(envelope, effective_date=default_expiry - SECOND)) == []
    assert where(check(with_header(envelope, effective_date=default_expiry))) == [
        (E.DATE_INCONSISTENT, HEADER + "/EffectiveDate")
    ]
    policy = MessageTypePolicy(default_retention_months=24)
    assert check(with_header(envelope, effective_date=default_expiry), policy=policy) == []


def with_deadline(envelope: m.Envelope, deadline: datetime) -> m.Envelope:
    return with_content(envelope, reply_options=replace(envelope.content.reply_options, deadline=deadline))


@pytest.mark.parametrize(
    ("deadline", "ok"),
    [
        pytest.param(CREATED - timedelta(days=1), False, id="before-created"),
        pytest.param(CREATED, False, id="at-created"),
        pytest.param(CREATED + SECOND, True, id="just-after-created"),
        pytest.param(add_months(CREATED, 2), True, id="at-expiry"),
        pytest.param(add_months(CREATED, 2) + SECOND, False, id="after-expiry"),
    ],
)
def test_given_a_reply_deadline_then_it_must_lie_after_created_and_not_after_expiry(
    deadline: datetime, ok: bool
) -> None:
    # The reply-free-text example expires 2 months after Created.
    violations = check(with_deadline(example("reply-free-text"), deadline))
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.DATE_INCONSISTENT, CONTENT + "/ReplyOptions/Deadline", "reply deadline")


@pytest.mark.parametrize(
    ("deadline", "ok"),
    [
        pytest.param(add_months(CREATED, 12), True, id="at-default-expiry"),
        pytest.param(add_months(CREATED, 12) + SECOND, False, id="after-default-expiry"),
    ],
)
def test_given_no_expiry_then_the_reply_deadline_is_checked_against_the_default_retention(
    deadline: datetime, ok: bool
) -> None:
    envelope = with_deadline(with_header(example("reply-free-text"), expires_at=None), deadline)
    violations = check(envelope)
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.DATE_INCONSISTENT, CONTENT + "/ReplyOptions/Deadline", "not after the message expires")


def test_given_retain_indefinitely_allowed_then_a_far_reply_deadline_is_accepted() -> None:
    envelope = with_header(example("reply-free-text"), expires_at=None, retain_indefinitely=True)
    envelope = with_deadline(envelope, CREATED + timedelta(days=3650))
    assert check(envelope, policy=MessageTypePolicy(unlimited_allowed=True)) == []


# --- languages -----------------------------------------------------------------------------


def _duplicate_subject(e: m.Envelope) -> m.Envelope:
    return with_content(e, subjects=(*e.content.subjects, t(FR, "Encore")))


def _duplicate_body(e: m.Envelope) -> m.Envelope:
    return with_content(e, bodies=(*e.content.bodies, t(NL, "Nog eens")))


def _duplicate_title(e: m.Envelope) -> m.Envelope:
    return with_content(e, titles=(*e.content.titles, t(FR, "Encore")))


def _duplicate_document_title(e: m.Envelope) -> m.Envelope:
    document = replace(e.content.document, titles=(t(NL, "Overzicht"), t(NL, "Nogmaals")))
    return with_content(e, document=document)


def _duplicate_annex_title(e: m.Envelope) -> m.Envelope:
    annex = replace(e.content.annexes[1], titles=(t(FR, "Explication"), t(FR, "Encore")))
    return with_content(e, annexes=(e.content.annexes[0], annex))


def _duplicate_link_label(e: m.Envelope) -> m.Envelope:
    return with_content(e, link=replace(e.content.link, labels=(t(NL, "Mijn pensioen"), t(NL, "Nogmaals"))))


def _duplicate_choice_label(e: m.Envelope) -> m.Envelope:
    first, second = e.content.reply_options.choices
    second = replace(second, labels=(t(FR, "Je conteste"), t(FR, "Je refuse")))
    return with_content(e, reply_options=replace(e.content.reply_options, choices=(first, second)))


@pytest.mark.parametrize(
    ("kind", "change", "path", "fragment"),
    [
        pytest.param(
            "citizen-letter",
            _duplicate_subject,
            CONTENT + "/Subject",
            "the subject is given 2 times in language fr",
            id="subject",
        ),
        pytest.param(
            "citizen-letter", _duplicate_body, CONTENT + "/Body", "the body is given 2 times in language nl", id="body"
        ),
        pytest.param(
            "citizen-letter",
            _duplicate_title,
            CONTENT + "/Title",
            "the title is given 2 times in language fr",
            id="title",
        ),
        pytest.param(
            "citizen-pdf",
            _duplicate_document_title,
            CONTENT + "/Document/Title",
            "the attachment title",
            id="document-title",
        ),
        pytest.param(
            "citizen-pdf", _duplicate_annex_title, CONTENT + "/Annex[2]/Title", "the attachment title", id="annex-title"
        ),
        pytest.param("citizen-pdf", _duplicate_link_label, CONTENT + "/Link/Label", "the link label", id="link-label"),
        pytest.param(
            "registered",
            _duplicate_choice_label,
            CONTENT + "/ReplyOptions/Choices/Choice[2]/Label",
            "a choice label is given 2 times in language fr",
            id="choice-label",
        ),
    ],
)
def test_given_a_text_twice_in_one_language_then_language_duplicate_at_that_text(
    kind: str, change: object, path: str, fragment: str
) -> None:
    envelope = change(example(kind))  # type: ignore[operator]
    assert_one(check(envelope), E.LANGUAGE_DUPLICATE, path, fragment)


def test_given_a_single_annex_with_duplicate_titles_then_the_path_has_no_index() -> None:
    annex = text_file()
    annex = replace(annex, titles=(t(FR, "Note"), t(FR, "Encore")))
    assert where(check(with_annexes(annex))) == [(E.LANGUAGE_DUPLICATE, CONTENT + "/Annex/Title")]


def test_given_three_subjects_in_one_language_then_the_count_is_reported_once() -> None:
    envelope = with_content(example(), subjects=(t(FR, "a"), t(NL, "b"), t(FR, "c"), t(FR, "d")))
    assert_one(check(envelope), E.LANGUAGE_DUPLICATE, CONTENT + "/Subject", "3 times in language fr")


def test_given_a_body_in_a_language_without_subject_then_language_missing_at_the_body() -> None:
    envelope = with_content(example(), bodies=(*example().content.bodies, t(DE, "Sehr geehrte Damen und Herren")))
    assert_one(check(envelope), E.LANGUAGE_MISSING, CONTENT + "/Body", "a body is given in de but the subject is not")


def test_given_a_title_in_a_language_without_subject_then_language_missing_at_the_title() -> None:
    envelope = with_content(example(), titles=(*example().content.titles, t(EN, "New letter")))
    assert_one(check(envelope), E.LANGUAGE_MISSING, CONTENT + "/Title", "a title is given in en but the subject is not")


def test_given_bodies_in_two_languages_without_subject_then_both_are_named_sorted() -> None:
    envelope = with_content(example(), bodies=(t(EN, "x"), t(DE, "y"), t(FR, "z")))
    assert_one(check(envelope), E.LANGUAGE_MISSING, CONTENT + "/Body", "given in de, en but")


def test_given_a_subject_without_a_body_in_that_language_then_nothing_is_missing() -> None:
    envelope = with_content(example(), subjects=(*example().content.subjects, t(EN, "Your tax return")))
    assert check(envelope) == []


# --- main content --------------------------------------------------------------------------


def test_given_neither_body_nor_document_then_main_content_missing_at_content() -> None:
    envelope = with_content(example(), bodies=())
    assert_one(check(envelope), E.MAIN_CONTENT_MISSING, CONTENT, "neither a Body nor a Document")


def test_given_a_document_and_no_body_then_the_document_is_the_main_content() -> None:
    pdf = example("citizen-pdf")
    assert check(with_content(pdf, bodies=())) == []


def test_given_only_annexes_then_main_content_missing() -> None:
    envelope = with_content(example(), bodies=(), annexes=(text_file(),))
    assert where(check(envelope)) == [(E.MAIN_CONTENT_MISSING, CONTENT)]


# --- attachments ---------------------------------------------------------------------------


def test_given_a_declared_size_that_differs_from_the_content_then_size_mismatch() -> None:
    annex = text_file(b"twelve bytes")
    violation = assert_one(
        check(with_annexes(replace(annex, size=13))), E.SIZE_MISMATCH, CONTENT + "/Annex/Size", "Size says 13 bytes"
    )
    assert "content is 12 bytes" in violation.message
    assert "note.txt" in violation.message


def test_given_a_document_with_a_wrong_size_then_the_path_names_the_document() -> None:
    envelope = example("citizen-pdf")
    document = replace(envelope.content.document, size=envelope.content.document.size - 1)
    assert where(check(with_content(envelope, document=document))) == [(E.SIZE_MISMATCH, CONTENT + "/Document/Size")]


def test_given_a_digest_of_other_bytes_then_digest_mismatch() -> None:
    annex = replace(text_file(), digest=hashlib.sha256(b"something else").digest())
    assert_one(
        check(with_annexes(annex)), E.DIGEST_MISMATCH, CONTENT + "/Annex/Digest", "SHA-256 digest does not match"
    )


def test_given_two_annexes_and_a_wrong_digest_on_the_second_then_the_path_is_indexed() -> None:
    envelope = example("citizen-pdf")
    first, second = envelope.content.annexes
    second = replace(second, digest=bytes(32))
    assert_one(
        check(with_content(envelope, annexes=(first, second))),
        E.DIGEST_MISMATCH,
        CONTENT + "/Annex[2]/Digest",
        "toelichting.txt",
    )


def test_given_a_digest_of_the_base64_text_instead_of_the_bytes_then_digest_mismatch() -> None:
    content = b"Hello\n"
    annex = replace(text_file(content), digest=hashlib.sha256(base64.b64encode(content)).digest())
    assert where(check(with_annexes(annex))) == [(E.DIGEST_MISMATCH, CONTENT + "/Annex/Digest")]


@pytest.mark.parametrize("media_type", sorted(MEDIA_SAMPLES))
def test_given_bytes_of_the_declared_media_type_then_accepted(media_type: str) -> None:
    name, good, _ = MEDIA_SAMPLES[media_type]
    assert SNIFFERS[media_type](good)
    assert check(with_annexes(ex.attachment(name, media_type, good))) == []


@pytest.mark.parametrize("media_type", sorted(MEDIA_SAMPLES))
def test_given_bytes_not_of_the_declared_media_type_then_media_type_mismatch_at_media_type(media_type: str) -> None:
    name, _, bad = MEDIA_SAMPLES[media_type]
    violation = assert_one(
        check(with_annexes(ex.attachment(name, media_type, bad))),
        E.MEDIA_TYPE_MISMATCH,
        CONTENT + "/Annex/MediaType",
        f"is declared {media_type} but its bytes are not of that type",
    )
    assert name in violation.message


@pytest.mark.parametrize("media_type", sorted(MEDIA_SAMPLES))
def test_given_a_file_extension_that_does_not_fit_the_media_type_then_media_type_mismatch_at_file_name(
    media_type: str,
) -> None:
    _, good, _ = MEDIA_SAMPLES[media_type]
    assert_one(
        check(with_annexes(ex.attachment("payload.exe", media_type, good))),
        E.MEDIA_TYPE_MISMATCH,
        CONTENT + "/Annex/FileName",
        f"the extension .exe does not fit {media_type}",
    )


@pytest.mark.parametrize(
    ("name", "media_type", "content"),
    [
        pytest.param("REPORT.PDF", "application/pdf", PDF_BYTES, id="upper-case-extension"),
        pytest.param("photo.jpeg", "image/jpeg", JPEG_BYTES, id="jpeg"),
        pytest.param("readme.text", "text/plain", b"hi\n", id="text"),
        pytest.param("archive.2026.csv", "text/csv", b"a;b\n", id="several-dots"),
    ],
)
def test_given_an_alternative_extension_of_the_media_type_then_accepted(
    name: str, media_type: str, content: bytes
) -> None:
    assert check(with_annexes(ex.attachment(name, media_type, content))) == []


def test_given_a_file_name_without_extension_then_media_type_mismatch_at_file_name() -> None:
    violation = only(check(with_annexes(ex.attachment("README", "text/plain", b"hi\n"))))
    assert (violation.code, violation.path) == (E.MEDIA_TYPE_MISMATCH, CONTENT + "/Annex/FileName")
    assert "expected .txt or .text" in violation.message


def test_given_pdf_bytes_declared_png_and_named_pdf_then_both_mismatches_are_reported() -> None:
    violations = check(with_annexes(ex.attachment("scan.pdf", "image/png", PDF_BYTES)))
    assert sorted(where(violations)) == [
        (E.MEDIA_TYPE_MISMATCH, CONTENT + "/Annex/FileName"),
        (E.MEDIA_TYPE_MISMATCH, CONTENT + "/Annex/MediaType"),
    ]


@pytest.mark.parametrize(
    ("size", "ok"),
    [pytest.param(16, True, id="at-the-limit"), pytest.param(17, False, id="one-byte-over")],
)
def test_given_an_attachment_above_the_per_attachment_limit_then_too_large_at_its_content(size: int, ok: bool) -> None:
    limits = RuleLimits(max_attachment_bytes=16)
    violations = check(with_annexes(text_file(b"x" * size)), limits=limits)
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.TOO_LARGE, CONTENT + "/Annex/Content", "is 17 bytes; an attachment may be at most 16")


def test_given_an_attachment_just_above_the_default_5_mib_then_too_large() -> None:
    big = text_file(b"x" * (5 * 1024 * 1024 + 1))
    assert where(check(with_annexes(big))) == [(E.TOO_LARGE, CONTENT + "/Annex/Content")]
    assert check(with_annexes(text_file(b"x" * (5 * 1024 * 1024)))) == []


@pytest.mark.parametrize(
    ("sizes", "ok"),
    [pytest.param((15, 15), True, id="total-at-the-limit"), pytest.param((15, 16), False, id="total-one-byte-over")],
)
def test_given_attachments_adding_up_above_the_total_limit_then_too_large_at_content(
    sizes: tuple[int, int], ok: bool
) -> None:
    limits = RuleLimits(max_attachment_bytes=100, max_total_attachment_bytes=30)
    annexes = [text_file(b"y" * n, f"part{i}.txt") for i, n in enumerate(sizes, start=1)]
    violations = check(with_annexes(*annexes), limits=limits)
    if ok:
        assert violations == []
    else:
        assert_one(violations, E.TOO_LARGE, CONTENT, "add up to 31 bytes; a message may carry at most 30")


def test_given_a_document_and_annexes_then_the_total_counts_the_document_too() -> None:
    envelope = example("citizen-pdf")
    total = sum(len(a.content) for a in envelope.content.attachments)
    assert check(envelope, limits=RuleLimits(max_total_attachment_bytes=total)) == []
    assert where(check(envelope, limits=RuleLimits(max_total_attachment_bytes=total - 1))) == [(E.TOO_LARGE, CONTENT)]


# --- payment -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code", "path", "fragment"),
    [
        pytest.param("iban", "BE71096123456768", E.IBAN_INVALID, "/IBAN", "is not a valid IBAN", id="iban-check"),
        pytest.param("iban", "BE7109612345676", E.IBAN_INVALID, "/IBAN", "length or mod-97", id="iban-length"),
        pytest.param("iban", "BE71 0961 2345 6769", E.IBAN_INVALID, "/IBAN", "without spaces", id="iban-spaces"),
        pytest.param("bic", "GKCCXXBB", E.BIC_INVALID, "/BIC", "GKCCXXBB is not a valid BIC", id="bic-country"),
        pytest.param("bic", "GKCCBEB", E.BIC_INVALID, "/BIC", "is not a valid BIC", id="bic-length"),
        pytest.param(
            "structured_reference",
            "+++010/8068/17184+++",
            E.REFERENCE_INVALID,
            "/StructuredReference",
            "+++010/8068/17184+++ is not a valid structured reference",
            id="reference-check",
        ),
        pytest.param(
            "structured_reference",
            "+++010/8068/1718+++",
            E.REFERENCE_INVALID,
            "/StructuredReference",
            "modulo 97",
            id="reference-length",
        ),
    ],
)
def test_given_a_wrong_payment_identifier_then_its_code_at_its_element(
    field: str, value: str, code: ErrorCode, path: str, fragment: str
) -> None:
    envelope = with_payment(example("payment"), **{field: value})
    assert_one(check(envelope), code, CONTENT + "/Payment" + path, fragment)


def test_given_a_payment_without_bic_nor_reference_then_only_the_iban_is_checked() -> None:
    envelope = with_payment(example("payment"), bic=None, structured_reference=None, free_reference="Invoice 12")
    assert check(envelope) == []


def test_given_a_foreign_iban_then_it_is_accepted() -> None:
    envelope = with_payment(example("payment"), iban="NL91ABNA0417164300", bic=None)
    assert check(envelope) == []


# --- reply options -------------------------------------------------------------------------


def test_given_two_choices_with_the_same_id_then_reply_options_invalid_at_choices() -> None:
    envelope = example("registered")
    first, second = envelope.content.reply_options.choices
    options = replace(envelope.content.reply_options, choices=(first, replace(second, id=first.id)))
    violation = assert_one(
        check(with_content(envelope, reply_options=options)),
        E.REPLY_OPTIONS_INVALID,
        CONTENT + "/ReplyOptions/Choices",
        "reply choice ids must be unique",
    )
    assert "repeated: accept." in violation.message


def test_given_several_repeated_choice_ids_then_all_are_named_sorted_in_one_violation() -> None:
    envelope = example("registered")
    label = (t(FR, "x"),)
    choices = tuple(m.ReplyChoice(id=i, labels=label) for i in ("b", "a", "b", "a", "c"))
    options = replace(envelope.content.reply_options, choices=choices)
    assert_one(
        check(with_content(envelope, reply_options=options)),
        E.REPLY_OPTIONS_INVALID,
        CONTENT + "/ReplyOptions/Choices",
        "repeated: a, b.",
    )


# --- several violations --------------------------------------------------------------------


def _many_violations() -> m.Envelope:
    """A payment envelope broken in six places, from the header to the reply options."""
    envelope = example("payment")
    first = ex.attachment("a.txt", "text/plain", b"first\n")
    second = replace(ex.attachment("b.txt", "text/plain", b"second\n"), digest=bytes(32))
    label = (t(FR, "Oui"),)
    envelope = with_recipient(envelope, id=BAD_SSIN)
    envelope = with_header(envelope, created=NOW + timedelta(minutes=10))
    envelope = with_content(
        envelope,
        subjects=(*envelope.content.subjects, t(FR, "Encore")),
        annexes=(first, second),
        reply_options=m.ReplyOptions(
            choices=(m.ReplyChoice(id="yes", labels=label), m.ReplyChoice(id="yes", labels=label))
        ),
    )
    return with_payment(envelope, iban="BE71096123456768")


MANY_EXPECTED = [
    (E.SSIN_INVALID, HEADER + "/Recipient/Citizen/SSIN"),
    (E.DATE_INCONSISTENT, HEADER + "/Created"),
    (E.LANGUAGE_DUPLICATE, CONTENT + "/Subject"),
    (E.DIGEST_MISMATCH, CONTENT + "/Annex[2]/Digest"),
    (E.IBAN_INVALID, CONTENT + "/Payment/IBAN"),
    (E.REPLY_OPTIONS_INVALID, CONTENT + "/ReplyOptions/Choices"),
]


def test_given_violations_across_the_envelope_then_all_are_reported_in_document_order() -> None:
    assert where(check(_many_violations())) == MANY_EXPECTED


def _title_and_subject_duplicated(e: m.Envelope) -> m.Envelope:
    return _duplicate_subject(_duplicate_title(e))


def _everything_wrong_with_one_annex(e: m.Envelope) -> m.Envelope:
    annex = ex.attachment("scan.exe", "image/png", b"not a png")
    return with_content(e, annexes=(replace(annex, size=99, digest=bytes(32)),))


def _deadline_and_subject(e: m.Envelope) -> m.Envelope:
    return _duplicate_subject(with_deadline(e, CREATED - SECOND))


def _document_digest_and_annex_title(e: m.Envelope) -> m.Envelope:
    e = _duplicate_annex_title(e)
    return with_content(e, document=replace(e.content.document, digest=bytes(32)))


def _iban_and_link_label(e: m.Envelope) -> m.Envelope:
    e = with_content(e, link=m.Link(url="https://pay.example.be", labels=(t(FR, "Payer"), t(FR, "Encore"))))
    return with_payment(e, iban="BE71096123456768")


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        pytest.param(
            "citizen-letter",
            _title_and_subject_duplicated,
            [(E.LANGUAGE_DUPLICATE, CONTENT + "/Title"), (E.LANGUAGE_DUPLICATE, CONTENT + "/Subject")],
            id="title-before-subject",
        ),
        pytest.param(
            "citizen-letter",
            _everything_wrong_with_one_annex,
            [
                (E.MEDIA_TYPE_MISMATCH, CONTENT + "/Annex/FileName"),
                (E.MEDIA_TYPE_MISMATCH, CONTENT + "/Annex/MediaType"),
                (E.SIZE_MISMATCH, CONTENT + "/Annex/Size"),
                (E.DIGEST_MISMATCH, CONTENT + "/Annex/Digest"),
            ],
            id="within-one-attachment",
        ),
        pytest.param(
            "reply-free-text",
            _deadline_and_subject,
            [(E.LANGUAGE_DUPLICATE, CONTENT + "/Subject"), (E.DATE_INCONSISTENT, CONTENT + "/ReplyOptions/Deadline")],
            id="subject-before-reply-deadline",
        ),
        pytest.param(
            "citizen-pdf",
            _document_digest_and_annex_title,
            [(E.DIGEST_MISMATCH, CONTENT + "/Document/Digest"), (E.LANGUAGE_DUPLICATE, CONTENT + "/Annex[2]/Title")],
            id="document-before-annex-title",
        ),
        pytest.param(
            "payment",
            _iban_and_link_label,
            [(E.IBAN_INVALID, CONTENT + "/Payment/IBAN"), (E.LANGUAGE_DUPLICATE, CONTENT + "/Link/Label")],
            id="payment-before-link",
        ),
    ],
)
def test_given_violations_from_different_rules_then_they_still_come_in_document_order(
    kind: str, change: object, expected: list[tuple[ErrorCode, str]]
) -> None:
    violations = check(change(example(kind)))  # type: ignore[operator]
    assert sorted(where(violations)) == sorted(expected)  # all reported ...
    assert where(violations) == expected  # ... in the order of the document


# --- through validate_envelope: lines from the document ------------------------------------


def test_given_a_valid_example_when_validated_then_its_model_comes_back() -> None:
    envelope = example("registered")
    assert validate_envelope(parse(to_bytes(build_envelope(envelope))), now=NOW) == envelope


def test_given_a_wrong_ssin_when_validated_then_the_violation_names_the_line_of_the_ssin() -> None:
    error, data = rejected(with_recipient(example(), id=BAD_SSIN))
    line = line_of(data, f"<SSIN>{BAD_SSIN}</SSIN>")
    assert error.violations == (
        Violation(E.SSIN_INVALID, error.violations[0].message, HEADER + "/Recipient/Citizen/SSIN", line),
    )
    assert error.code is E.SSIN_INVALID
    assert error.message.startswith(f"line {line}, {HEADER}/Recipient/Citizen/SSIN: ")


def test_given_a_wrong_digest_on_the_second_annex_when_validated_then_the_line_is_that_annexs_digest() -> None:
    envelope = example("citizen-pdf")
    first, second = envelope.content.annexes
    error, data = rejected(with_content(envelope, annexes=(first, replace(second, digest=bytes(32)))))
    violation = only(list(error.violations))
    assert (violation.code, violation.path) == (E.DIGEST_MISMATCH, CONTENT + "/Annex[2]/Digest")
    assert violation.line == line_of(data, "<Digest", after="<Annex>", occurrence=2)
    assert violation.line != line_of(data, "<Digest", after="<Annex>", occurrence=1)


def test_given_a_duplicate_label_on_the_second_choice_when_validated_then_the_line_is_that_choices_label() -> None:
    error, data = rejected(_duplicate_choice_label(example("registered")))
    violation = only(list(error.violations))
    assert violation.code is E.LANGUAGE_DUPLICATE
    assert violation.line == line_of(data, "<Label", after='<Choice id="contest"')


def test_given_many_violations_when_validated_then_each_has_a_line_and_lines_follow_the_document() -> None:
    error, data = rejected(_many_violations())
    assert where(list(error.violations)) == MANY_EXPECTED
    lines = [v.line for v in error.violations]
    assert None not in lines
    assert lines == sorted(lines)
    assert lines[0] == line_of(data, f"<SSIN>{BAD_SSIN}</SSIN>")
    assert lines[-1] == line_of(data, "<Choices>")


def test_given_a_violation_on_the_content_element_when_validated_then_the_line_is_the_content_start_tag() -> None:
    error, data = rejected(with_content(example(), bodies=()))
    violation = only(list(error.violations))
    assert (violation.code, violation.path, violation.line) == (
        E.MAIN_CONTENT_MISSING,
        CONTENT,
        line_of(data, "<Content>"),
    )


def test_given_an_expired_message_when_validated_at_a_later_clock_then_refused_with_the_expiry_line() -> None:
    envelope = expiring(add_months(CREATED, 1))
    error, data = rejected(envelope, now=add_months(CREATED, 1) + timedelta(days=1))
    violation = only(list(error.violations))
    assert (violation.code, violation.line) == (E.EXPIRY_OUT_OF_RANGE, line_of(data, "<ExpiresAt>"))
