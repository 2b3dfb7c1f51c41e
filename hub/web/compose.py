"""From a self-service form (or a CSV row) to an envelope: pure, no I/O.

``compose`` reads the fields a web user filled in and returns the ``Envelope`` the hub will sign
for the institution, or raises ``FormErrors`` naming each field that is wrong (with a
translation key and values for the message). What the intake checks anyway (the signature,
the schema, the business rules, the sender's rights) is checked there too, on the signed
envelope, before the user sees the preview: the web adds no rule of its own that the other
doors would not apply, only earlier, friendlier answers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from hub.envelope import model as m
from hub.envelope.identifiers import (
    is_valid_cbe,
    is_valid_iban,
    is_valid_ssin,
    is_valid_structured_reference,
    structured_reference_digits,
)
from hub.envelope.media import looks_like
from hub.inbound.senders import Institution

LANGS = ("fr", "nl", "de", "en")
"""The languages a message may be written in (the envelope's), in the form's order."""
MAX_SUBJECT = 200
MAX_BODY = 20_000
MAX_CHOICES = 10
_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
"""Characters XML 1.0 cannot carry: a field holding one is refused, not carried into the envelope."""


@dataclass(frozen=True)
class Upload:
    """A file the user uploaded: the name the browser gave it, and its bytes."""

    file_name: str
    content: bytes


@dataclass
class FormErrors(Exception):
    """What is wrong with the form: per field, a translation key and the values it needs."""

    errors: dict[str, tuple[str, dict[str, object]]] = field(default_factory=dict)

    def add(self, name: str, key: str, **values: object) -> None:
        self.errors.setdefault(name, (key, values))

    def __bool__(self) -> bool:
        return bool(self.errors)


def _digits(value: str) -> str:
    return re.sub(r"[\s./-]", "", value)


def safe_file_name(name: str, default: str = "document.pdf") -> str:
    """A file name safe to put in an envelope and a download: no path, plain characters, ``.pdf``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    base = _FILE_NAME.sub("-", base).strip(".-")[:120]
    if not base:
        base = default
    return base if base.lower().endswith(".pdf") else base + ".pdf"


def is_pdf(content: bytes) -> bool:
    """A PDF by its own signature: ``%PDF-`` at the start and ``%%EOF`` near the end (not by its name)."""
    return looks_like("application/pdf", content) and b"%%EOF" in content[-2048:]


def _day(value: str, name: str, errors: FormErrors) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.add(name, "compose.error.date")
        return None


def _end_of(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


def compose(
    fields: Mapping[str, str],
    document: Upload | None,
    *,
    institution: Institution,
    application: str,
    sender_message_id: str,
    now: datetime,
    max_pdf_bytes: int,
) -> m.Envelope:
    """The envelope the form describes, or ``FormErrors``."""
    errors = FormErrors()
    for name, value in fields.items():
        if isinstance(value, str) and NOT_XML.search(value):
            errors.add(name, "compose.error.characters")

    kind = fields.get("recipient_kind", "citizen")
    recipient_id = _digits(fields.get("recipient_id", ""))
    if kind not in ("citizen", "enterprise"):
        errors.add("recipient_kind", "compose.error.choose")
    elif kind == "citizen" and not is_valid_ssin(recipient_id):
        errors.add("recipient_id", "compose.error.ssin")
    elif kind == "enterprise" and not is_valid_cbe(recipient_id):
        errors.add("recipient_id", "compose.error.cbe")

    message_type = fields.get("message_type", "")
    policy = institution.message_types.get(message_type)
    if policy is None:
        errors.add("message_type", "compose.error.choose")

    subjects, bodies = [], []
    for lang in LANGS:
        subject = fields.get(f"subject_{lang}", "").strip()
        body = fields.get(f"body_{lang}", "").replace("\r\n", "\n").strip()
        if len(subject) > MAX_SUBJECT:
            errors.add(f"subject_{lang}", "compose.error.too_long", limit=MAX_SUBJECT)
        if len(body) > MAX_BODY:
            errors.add(f"body_{lang}", "compose.error.too_long", limit=MAX_BODY)
        if body and not subject:
            errors.add(f"subject_{lang}", "compose.error.subject_for_body")
        if subject:
            subjects.append(m.Text(lang=m.Language(lang), value=subject))
        if body:
            bodies.append(m.Text(lang=m.Language(lang), value=body))
    if not subjects:
        errors.add("subject_fr", "compose.error.subject")

    attachment = None
    if document is not None and document.content:
        if len(document.content) > max_pdf_bytes:
            errors.add("document", "compose.error.too_big", limit=f"{max_pdf_bytes / (1024 * 1024):.3g}")
        elif not is_pdf(document.content):
            errors.add("document", "compose.error.not_pdf")
        else:
            attachment = m.Attachment(
                file_name=safe_file_name(document.file_name),
                media_type="application/pdf",
                size=len(document.content),
                digest=hashlib.sha256(document.content).digest(),
                content=document.content,
            )
    if attachment is None and not bodies and "document" not in errors.errors:
        errors.add("document", "compose.error.main_content")

    registered = fields.get("registered") in ("on", "true", "1", "yes")

    expires_on = _day(fields.get("expires_on", ""), "expires_on", errors)
    expires_at = _end_of(expires_on) if expires_on else None
    if expires_on and expires_on <= now.date():
        errors.add("expires_on", "compose.error.future")

    reply_options = None
    reply = fields.get("reply", "none")
    deadline_day = _day(fields.get("reply_deadline", ""), "reply_deadline", errors)
    deadline = _end_of(deadline_day) if deadline_day else None
    if deadline_day and deadline_day <= now.date():
        errors.add("reply_deadline", "compose.error.future")
    if reply == "choices":
        labels = [line.strip() for line in fields.get("reply_choices", "").splitlines() if line.strip()]
        if not 2 <= len(labels) <= MAX_CHOICES:
            errors.add("reply_choices", "compose.error.choices", limit=MAX_CHOICES)
        lang = subjects[0].lang if subjects else m.Language.FR
        reply_options = m.ReplyOptions(
            choices=tuple(
                m.ReplyChoice(id=f"choice-{n}", labels=(m.Text(lang=lang, value=label[:200]),))
                for n, label in enumerate(labels, 1)
            ),
            deadline=deadline,
        )
    elif reply == "free_text":
        reply_options = m.ReplyOptions(free_text_max_length=2000, deadline=deadline)
    elif reply != "none":
        errors.add("reply", "compose.error.choose")

    payment = None
    iban = _digits(fields.get("payment_iban", "")).upper()
    amount_text = fields.get("payment_amount", "").strip().replace(",", ".")
    if iban or amount_text:
        if not is_valid_iban(iban):
            errors.add("payment_iban", "compose.error.iban")
        amount = None
        try:
            amount = Decimal(amount_text)
            if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e9") or amount.as_tuple().exponent < -2:  # type: ignore[operator]
                raise InvalidOperation
        except InvalidOperation:
            errors.add("payment_amount", "compose.error.amount")
            amount = None
        due = _day(fields.get("payment_due_date", ""), "payment_due_date", errors)
        if due is None and "payment_due_date" not in errors.errors:
            errors.add("payment_due_date", "compose.error.required")
        reference = fields.get("payment_reference", "").strip()
        structured = None
        if reference:
            if not is_valid_structured_reference(reference):
                errors.add("payment_reference", "compose.error.reference")
            else:
                digits = structured_reference_digits(reference)
                structured = f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
        if amount is not None and due is not None and not errors:
            payment = m.Payment(
                iban=iban,
                amount=amount,
                currency="EUR",
                due_date=due,
                beneficiary=institution.name[:70],
                structured_reference=structured,
            )

    correlation = fields.get("your_reference", "").strip()[:64] or None
    if errors:
        raise errors
    assert policy is not None
    return m.Envelope(
        header=m.Header(
            sender_message_id=sender_message_id,
            sender=m.Sender(organization_id=institution.id, application_id=application),
            recipient=m.Recipient(
                ebox_type=m.EboxType.CITIZEN if kind == "citizen" else m.EboxType.ENTERPRISE, id=recipient_id
            ),
            message_type=message_type,
            created=now.replace(microsecond=0),
            expires_at=expires_at,
            registered=registered,
            opening_receipt=registered,
            correlation_id=correlation,
            environment=m.Environment(institution.environment),
        ),
        content=m.Content(
            subjects=tuple(subjects),
            bodies=tuple(bodies),
            document=attachment,
            payment=payment,
            reply_options=reply_options,
        ),
    )


def default_expiry(now: datetime, months: int) -> date:
    """The date a message type's default retention gives (shown in the form)."""
    from hub.envelope.rules import add_months

    return (add_months(now, months) - timedelta(days=0)).date()
