"""Realistic example envelopes, one per kind of message the hub carries.

The same builders serve ``hub envelope example KIND``, the files in ``examples/`` and the
tests. Every identifier is a valid fictitious one (check digits right); every date is
relative to ``created`` so that an example generated today is valid today.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hub.envelope import model as m
from hub.envelope.rules import add_months

# Fictitious but checksum-valid identifiers.
FINANCE = "0308357159"  # a federal tax administration
SOCIAL = "0206731645"  # a social security institution
CITY = "0207373429"  # a city
INTEGRATOR = "0202239951"  # a software house sending for the city
ENTERPRISE = "0406798006"  # a recipient enterprise
CITIZEN_A = "85073003328"
CITIZEN_B = "93051822361"
CITIZEN_C = "01010112301"  # born in 2001
EMPLOYEE = "68041217944"
IBAN = "BE71096123456769"
BIC = "GKCCBEBB"
REFERENCE = "+++010/8068/17183+++"

FR, NL, DE, EN = m.Language.FR, m.Language.NL, m.Language.DE, m.Language.EN


def minimal_pdf(text: str) -> bytes:
    """A small, well-formed one-page PDF showing ``text`` (ASCII)."""
    safe = text.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 14 Tf 72 760 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def attachment(file_name: str, media_type: str, content: bytes, *titles: m.Text) -> m.Attachment:
    return m.Attachment(
        file_name=file_name,
        media_type=media_type,
        size=len(content),
        digest=hashlib.sha256(content).digest(),
        content=content,
        titles=titles,
    )


def _t(lang: m.Language, value: str) -> m.Text:
    return m.Text(lang=lang, value=value)


def _header(created: datetime, **fields: object) -> m.Header:
    base: dict[str, object] = dict(
        created=created,
        expires_at=add_months(created, 12),
        sender=m.Sender(organization_id=FINANCE, application_id="tax-on-web"),
        recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=CITIZEN_A),
    )
    base.update(fields)
    return m.Header(**base)  # type: ignore[arg-type]


def citizen_letter(created: datetime) -> m.Envelope:
    """A plain letter to a citizen: the body is the main content, in French and Dutch."""
    return m.Envelope(
        header=_header(created, sender_message_id="LETTER-2026-000001", message_type="GENERAL_INFORMATION"),
        content=m.Content(
            titles=(_t(FR, "Nouveau courrier du SPF Finances"), _t(NL, "Nieuwe brief van de FOD Financiën")),
            subjects=(_t(FR, "Votre déclaration d'impôt 2026"), _t(NL, "Uw belastingaangifte 2026")),
            bodies=(
                _t(FR, "Madame, Monsieur,\n\nVotre déclaration est disponible en ligne.\n"),
                _t(NL, "Geachte mevrouw, geachte heer,\n\nUw aangifte staat online.\n"),
            ),
            contact=m.Contact(name="Centre de contact", phone="+32 2 572 57 57", url="https://finances.example.be"),
        ),
    )


def citizen_pdf(created: datetime) -> m.Envelope:
    """A PDF main document with two annexes, business data, a link and a contact."""
    return m.Envelope(
        header=_header(
            created,
            sender=m.Sender(organization_id=SOCIAL, application_id="pension-statements"),
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=CITIZEN_B),
            sender_message_id="PENSION-2026-4411",
            message_type="PENSION_STATEMENT",
            correlation_id="FILE-88123",
        ),
        content=m.Content(
            subjects=(_t(NL, "Uw pensioenoverzicht"), _t(FR, "Votre aperçu de pension")),
            bodies=(_t(NL, "In bijlage vindt u uw jaarlijks pensioenoverzicht."),),
            document=attachment("pensioenoverzicht-2026.pdf", "application/pdf", minimal_pdf("Pensioenoverzicht 2026")),
            annexes=(
                attachment("loopbaan.csv", "text/csv", b"jaar;dagen\n2024;312\n2025;310\n", _t(NL, "Loopbaan")),
                attachment("toelichting.txt", "text/plain", b"Toelichting bij uw overzicht.\n"),
            ),
            business_data=(
                m.BusinessDataEntry(key="year", values=("2026",), names=(_t(NL, "Jaar"), _t(FR, "Année"))),
                m.BusinessDataEntry(key="fileNumber", values=("FILE-88123",)),
            ),
            link=m.Link(url="https://pension.example.be/mypension", labels=(_t(NL, "Mijn pensioen"),)),
            contact=m.Contact(email="info@pension.example.be"),
        ),
    )


def registered(created: datetime) -> m.Envelope:
    """Registered mail with an opening receipt, eIDAS high, high priority and a reply by choice."""
    return m.Envelope(
        id="msg-registered-1",
        header=_header(
            created,
            sender=m.Sender(organization_id=SOCIAL, application_id="inspection"),
            sender_message_id="INSP-2026-0042",
            message_type="FORMAL_NOTICE",
            expires_at=add_months(created, 36),
            registered=True,
            opening_receipt=True,
            assurance_level=m.AssuranceLevel.HIGH,
            priority=m.Priority.HIGH,
        ),
        content=m.Content(
            subjects=(_t(FR, "Mise en demeure"),),
            bodies=(_t(FR, "Veuillez consulter le document ci-joint et y répondre avant l'échéance."),),
            document=attachment("mise-en-demeure.pdf", "application/pdf", minimal_pdf("Mise en demeure")),
            reply_options=m.ReplyOptions(
                deadline=created + timedelta(days=30),
                choices=(
                    m.ReplyChoice(id="accept", labels=(_t(FR, "J'accepte"),)),
                    m.ReplyChoice(id="contest", labels=(_t(FR, "Je conteste"),)),
                ),
            ),
        ),
    )


def payment(created: datetime) -> m.Envelope:
    """A tax assessment to pay: IBAN, BIC, amount, structured reference and due date."""
    due = (created + timedelta(days=60)).date()
    return m.Envelope(
        header=_header(created, sender_message_id="AER-2026-778899", message_type="TAX_ASSESSMENT"),
        content=m.Content(
            titles=(_t(FR, "Avertissement-extrait de rôle"),),
            subjects=(_t(FR, "Avertissement-extrait de rôle 2026"),),
            document=attachment("aer-2026.pdf", "application/pdf", minimal_pdf("Avertissement-extrait de role")),
            payment=m.Payment(
                iban=IBAN,
                bic=BIC,
                beneficiary="SPF Finances - Recettes",
                amount=Decimal("1234.56"),
                currency="EUR",
                structured_reference=REFERENCE,
                due_date=due,
            ),
        ),
    )


def reply_free_text(created: datetime) -> m.Envelope:
    """A city asks a citizen a question that is answered in free text."""
    return m.Envelope(
        header=_header(
            created,
            sender=m.Sender(organization_id=CITY, application_id="population"),
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=CITIZEN_C),
            sender_message_id="POP-2026-17",
            message_type="INFORMATION_REQUEST",
            expires_at=add_months(created, 2),
        ),
        content=m.Content(
            subjects=(_t(FR, "Votre changement d'adresse"), _t(NL, "Uw adreswijziging")),
            bodies=(
                _t(FR, "Merci de nous indiquer la date de votre déménagement."),
                _t(NL, "Gelieve ons de datum van uw verhuizing te melden."),
            ),
            reply_options=m.ReplyOptions(deadline=created + timedelta(days=20), free_text_max_length=500),
        ),
    )


def enterprise(created: datetime) -> m.Envelope:
    """To an enterprise's sub-entity, for the attention of an employee, in English and German."""
    return m.Envelope(
        header=_header(
            created,
            sender=m.Sender(organization_id=SOCIAL, application_id="employer-declarations"),
            recipient=m.Recipient(
                ebox_type=m.EboxType.ENTERPRISE,
                id=ENTERPRISE,
                sub_entity_id="HR-BRUSSELS",
                for_the_attention_of=m.ForTheAttentionOf(ssin=EMPLOYEE, name="Payroll department"),
            ),
            sender_message_id="DMFA-2026-Q3-001",
            message_type="EMPLOYER_NOTICE",
        ),
        content=m.Content(
            subjects=(_t(EN, "Quarterly declaration received"), _t(DE, "Vierteljährliche Erklärung erhalten")),
            bodies=(
                _t(EN, "Your quarterly declaration has been received and processed."),
                _t(DE, "Ihre vierteljährliche Erklärung wurde empfangen und verarbeitet."),
            ),
            annexes=(attachment("summary.xml", "text/xml", b"<?xml version='1.0'?><summary quarter='3'/>"),),
        ),
    )


def integrator(created: datetime) -> m.Envelope:
    """An integrator submits for a city (OnBehalfOf); visible to the recipient from tomorrow."""
    return m.Envelope(
        header=_header(
            created,
            sender=m.Sender(organization_id=INTEGRATOR, application_id="citizen-portal", on_behalf_of=CITY),
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=CITIZEN_B),
            sender_message_id="CITY-2026-5501",
            message_type="PARKING_PERMIT",
            effective_date=created + timedelta(days=1),
        ),
        content=m.Content(
            subjects=(_t(NL, "Uw bewonerskaart"),),
            bodies=(_t(NL, "Uw bewonerskaart is klaar en geldig vanaf morgen."),),
        ),
    )


KINDS: dict[str, Callable[[datetime], m.Envelope]] = {
    "citizen-letter": citizen_letter,
    "citizen-pdf": citizen_pdf,
    "registered": registered,
    "payment": payment,
    "reply-free-text": reply_free_text,
    "enterprise": enterprise,
    "integrator": integrator,
}

EXAMPLES_CREATED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
"""The creation time of the files in ``examples/`` (so that they are reproducible)."""


def example(kind: str, *, created: datetime | None = None) -> m.Envelope:
    """The example envelope of ``kind``, created at ``created`` (default: now, to the second)."""
    when = created or datetime.now(UTC).replace(microsecond=0)
    return KINDS[kind](when)
