"""Business rules of the envelope: pure functions from a model to a list of violations.

Each check yields :class:`Violation` values naming the element path, so the caller can
add the line number from the document (``hub.envelope.validation``). Nothing here does
I/O or reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.envelope import identifiers as ids
from hub.envelope import model as m
from hub.envelope.media import looks_like
from hub.errors import ErrorCode, Violation

ROOT = "/PublishMessage"
HEADER = ROOT + "/Header"
CONTENT = ROOT + "/Content"


@dataclass(frozen=True, kw_only=True)
class MessageTypePolicy:
    """What a message type allows; defaults are the hub's (1 month to 3 years)."""

    min_retention_months: int = 1
    max_retention_months: int = 36
    default_retention_months: int = 12
    """Retention applied when the envelope gives no ExpiresAt."""
    unlimited_allowed: bool = False
    """Whether RetainIndefinitely is accepted for this type (and sender)."""
    expiry_warning_days: int | None = None
    """Days before expiry that providers are warned of a message still unread (0: never);
    ``None``: the hub's ``[lifecycle] warn_days``."""
    reminder_days: int | None = None
    """Providers are reminded every this many days that a message is still unread (0: never);
    ``None``: the hub's ``[lifecycle] reminder_days``."""


@dataclass(frozen=True, kw_only=True)
class RuleLimits:
    max_attachment_bytes: int = 5 * 1024 * 1024
    max_total_attachment_bytes: int = 10 * 1024 * 1024
    clock_skew: timedelta = timedelta(minutes=5)
    """How far in the future ``Created`` may lie (clocks differ)."""


DEFAULT_POLICY = MessageTypePolicy()
DEFAULT_RULE_LIMITS = RuleLimits()

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "application/pdf": ("pdf",),
    "text/plain": ("txt", "text"),
    "text/csv": ("csv",),
    "text/xml": ("xml",),
    "image/png": ("png",),
    "image/jpeg": ("jpg", "jpeg"),
    "application/vnd.oasis.opendocument.text": ("odt",),
    "application/vnd.oasis.opendocument.spreadsheet": ("ods",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("docx",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ("xlsx",),
}


def add_months(when: datetime, months: int) -> datetime:
    """Calendar months later, clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise ValueError(f"cannot add {months} months to {when}")  # pragma: no cover


def expiry_for(header: m.Header, policy: MessageTypePolicy) -> datetime | None:
    """When a message expires: its ``ExpiresAt``; ``None`` with ``RetainIndefinitely`` (already
    authorised by the policy); else the type's default retention after ``Created``."""
    if header.expires_at is not None:
        return header.expires_at
    if header.retain_indefinitely:
        return None
    return add_months(header.created, policy.default_retention_months)


def check_rules(
    envelope: m.Envelope,
    *,
    now: datetime,
    policy: MessageTypePolicy = DEFAULT_POLICY,
    limits: RuleLimits = DEFAULT_RULE_LIMITS,
) -> list[Violation]:
    """Every broken business rule of ``envelope``, in document order (rules sharing an element keep rule order)."""
    checks: Iterable[Iterator[Violation]] = (
        _parties(envelope.header),
        _dates(envelope, now, policy, limits),
        _languages(envelope.content),
        _main_content(envelope.content),
        _attachments(envelope.content, limits),
        _payment(envelope.content.payment),
        _reply_options(envelope.content.reply_options),
    )
    found = [violation for check in checks for violation in check]
    return sorted(found, key=lambda violation: document_position(violation.path))


# Child elements in schema order, per parent (envelope-1.xsd): ranks violations in document order.
_SCHEMA_ORDER: dict[str, tuple[str, ...]] = {
    "PublishMessage": ("Header", "Content"),
    "Header": (
        "SenderMessageId",
        "Sender",
        "Recipient",
        "MessageType",
        "Created",
        "ExpiresAt",
        "RetainIndefinitely",
        "EffectiveDate",
        "Registered",
        "OpeningReceipt",
        "AssuranceLevel",
        "Priority",
        "CorrelationId",
        "OriginalMessageId",
        "Environment",
    ),
    "Sender": ("OrganizationId", "ApplicationId", "OnBehalfOf"),
    "Recipient": ("Citizen", "Enterprise"),
    "Citizen": ("SSIN",),
    "Enterprise": ("CBE", "SubEntityId", "ForTheAttentionOf"),
    "ForTheAttentionOf": ("SSIN", "Name"),
    "Content": (
        "Title",
        "Subject",
        "Body",
        "Document",
        "Annex",
        "Payment",
        "ReplyOptions",
        "BusinessData",
        "Link",
        "Contact",
    ),
    "Document": ("FileName", "MediaType", "Title", "Size", "Digest", "Signed", "Content"),
    "Annex": ("FileName", "MediaType", "Title", "Size", "Digest", "Signed", "Content"),
    "Payment": (
        "IBAN",
        "BIC",
        "Beneficiary",
        "Amount",
        "VatAmount",
        "Currency",
        "StructuredReference",
        "FreeReference",
        "DueDate",
    ),
    "ReplyOptions": ("Deadline", "Choices", "FreeText"),
    "Choices": ("Choice",),
    "Choice": ("Label",),
    "Link": ("Url", "Label"),
}


def document_position(path: str | None) -> tuple[tuple[int, int], ...]:
    """A sort key placing ``/PublishMessage/Content/Annex[2]/Digest`` where it stands in a document."""
    if not path:
        return ()
    key = []
    parent = None
    for step in path.strip("/").split("/"):
        name, _, index = step.partition("[")
        siblings = _SCHEMA_ORDER.get(parent or "", ())
        rank = siblings.index(name) if name in siblings else len(siblings)
        key.append((rank, int(index.rstrip("]")) if index else 1))
        parent = name
    return tuple(key)


def _parties(h: m.Header) -> Iterator[Violation]:
    for value, path in (
        (h.sender.organization_id, HEADER + "/Sender/OrganizationId"),
        (h.sender.on_behalf_of, HEADER + "/Sender/OnBehalfOf"),
    ):
        if value is not None and not ids.is_valid_cbe(value):
            yield Violation(
                ErrorCode.CBE_INVALID,
                f"{value} is not a valid enterprise number (check digits do not match); "
                "use the 10-digit CBE number without dots.",
                path,
            )
    r = h.recipient
    if r.ebox_type is m.EboxType.CITIZEN and not ids.is_valid_ssin(r.id):
        yield Violation(
            ErrorCode.SSIN_INVALID,
            "the recipient's national number is not valid (check digits or birth date do not match); "
            "check the 11 digits.",
            HEADER + "/Recipient/Citizen/SSIN",
        )
    if r.ebox_type is m.EboxType.ENTERPRISE and not ids.is_valid_cbe(r.id):
        yield Violation(
            ErrorCode.CBE_INVALID,
            f"{r.id} is not a valid enterprise number (check digits do not match); check the 10 digits.",
            HEADER + "/Recipient/Enterprise/CBE",
        )
    fao = r.for_the_attention_of
    if fao is not None and fao.ssin is not None and not ids.is_valid_ssin(fao.ssin):
        yield Violation(
            ErrorCode.SSIN_INVALID,
            "the national number of the person for the attention of whom the message is sent is not valid.",
            HEADER + "/Recipient/Enterprise/ForTheAttentionOf/SSIN",
        )


def _dates(env: m.Envelope, now: datetime, policy: MessageTypePolicy, limits: RuleLimits) -> Iterator[Violation]:
    h = env.header
    if h.created > now + limits.clock_skew:
        yield Violation(
            ErrorCode.DATE_INCONSISTENT,
            f"Created ({h.created.isoformat()}) lies in the future; check the sending system's clock.",
            HEADER + "/Created",
        )
    expiry = h.expires_at
    if h.retain_indefinitely and not policy.unlimited_allowed:
        yield Violation(
            ErrorCode.EXPIRY_OUT_OF_RANGE,
            f"message type {h.message_type} may not be kept indefinitely; give an ExpiresAt between "
            f"{policy.min_retention_months} and {policy.max_retention_months} months after Created.",
            HEADER + "/RetainIndefinitely",
        )
    if expiry is not None:
        earliest = add_months(h.created, policy.min_retention_months)
        latest = add_months(h.created, policy.max_retention_months)
        if not earliest <= expiry <= latest:
            yield Violation(
                ErrorCode.EXPIRY_OUT_OF_RANGE,
                f"ExpiresAt must lie between {earliest.isoformat()} and {latest.isoformat()} "
                f"({policy.min_retention_months} to {policy.max_retention_months} months after Created) "
                f"for message type {h.message_type}; it is {expiry.isoformat()}.",
                HEADER + "/ExpiresAt",
            )
        elif expiry <= now:
            yield Violation(
                ErrorCode.EXPIRY_OUT_OF_RANGE,
                f"ExpiresAt ({expiry.isoformat()}) has already passed; the message would never be readable.",
                HEADER + "/ExpiresAt",
            )
    else:
        expiry = None if h.retain_indefinitely else add_months(h.created, policy.default_retention_months)
    if h.effective_date is not None:
        if h.effective_date < h.created:
            yield Violation(
                ErrorCode.DATE_INCONSISTENT, "EffectiveDate lies before Created.", HEADER + "/EffectiveDate"
            )
        if expiry is not None and h.effective_date >= expiry:
            yield Violation(
                ErrorCode.DATE_INCONSISTENT,
                "EffectiveDate is not before the message expires; the recipient would never see it.",
                HEADER + "/EffectiveDate",
            )
    options = env.content.reply_options
    deadline = None if options is None else options.deadline
    if deadline is not None and (deadline <= h.created or (expiry is not None and deadline > expiry)):
        yield Violation(
            ErrorCode.DATE_INCONSISTENT,
            "the reply deadline must lie after Created and not after the message expires.",
            CONTENT + "/ReplyOptions/Deadline",
        )


def _duplicates(texts: tuple[m.Text, ...], path: str, what: str) -> Iterator[Violation]:
    counts = Counter(t.lang for t in texts)
    for lang, count in counts.items():
        if count > 1:
            yield Violation(
                ErrorCode.LANGUAGE_DUPLICATE,
                f"{what} is given {count} times in language {lang}; give each language at most once.",
                path,
            )


def _languages(c: m.Content) -> Iterator[Violation]:
    yield from _duplicates(c.subjects, CONTENT + "/Subject", "the subject")
    yield from _duplicates(c.titles, CONTENT + "/Title", "the title")
    yield from _duplicates(c.bodies, CONTENT + "/Body", "the body")
    for index, attachment in _indexed_attachments(c):
        yield from _duplicates(attachment.titles, index + "/Title", "the attachment title")
    if c.link is not None:
        yield from _duplicates(c.link.labels, CONTENT + "/Link/Label", "the link label")
    if c.reply_options is not None:
        for number, choice in enumerate(c.reply_options.choices, start=1):
            yield from _duplicates(
                choice.labels, f"{CONTENT}/ReplyOptions/Choices/Choice[{number}]/Label", "a choice label"
            )
    subject_langs = {t.lang for t in c.subjects}
    for texts, path, what in ((c.bodies, "/Body", "body"), (c.titles, "/Title", "title")):
        missing = sorted({t.lang for t in texts} - subject_langs)
        if missing:
            yield Violation(
                ErrorCode.LANGUAGE_MISSING,
                f"a {what} is given in {', '.join(missing)} but the subject is not; "
                "give a subject in every language of the message.",
                CONTENT + path,
            )


def _main_content(c: m.Content) -> Iterator[Violation]:
    if c.document is None and not c.bodies:
        yield Violation(
            ErrorCode.MAIN_CONTENT_MISSING,
            "the message has neither a Body nor a Document; give one of them as the main content.",
            CONTENT,
        )


def _indexed_attachments(c: m.Content) -> Iterator[tuple[str, m.Attachment]]:
    if c.document is not None:
        yield CONTENT + "/Document", c.document
    many = len(c.annexes) > 1
    for number, annex in enumerate(c.annexes, start=1):
        yield CONTENT + (f"/Annex[{number}]" if many else "/Annex"), annex


def _attachments(c: m.Content, limits: RuleLimits) -> Iterator[Violation]:
    total = 0
    for path, a in _indexed_attachments(c):
        actual = len(a.content)
        total += actual
        if actual > limits.max_attachment_bytes:
            yield Violation(
                ErrorCode.TOO_LARGE,
                f"{a.file_name} is {actual} bytes; an attachment may be at most {limits.max_attachment_bytes}.",
                path + "/Content",
            )
        if a.size != actual:
            yield Violation(
                ErrorCode.SIZE_MISMATCH,
                f"{a.file_name}: Size says {a.size} bytes but the content is {actual} bytes.",
                path + "/Size",
            )
        if hashlib.sha256(a.content).digest() != a.digest:
            yield Violation(
                ErrorCode.DIGEST_MISMATCH,
                f"{a.file_name}: the SHA-256 digest does not match the content; "
                "compute it over the file's bytes (before base64).",
                path + "/Digest",
            )
        if not looks_like(a.media_type, a.content):
            yield Violation(
                ErrorCode.MEDIA_TYPE_MISMATCH,
                f"{a.file_name} is declared {a.media_type} but its bytes are not of that type.",
                path + "/MediaType",
            )
        extension = a.file_name.rsplit(".", 1)[-1].lower()
        if extension not in EXTENSIONS.get(a.media_type, ()):
            yield Violation(
                ErrorCode.MEDIA_TYPE_MISMATCH,
                f"{a.file_name}: the extension .{extension} does not fit {a.media_type} "
                f"(expected .{' or .'.join(EXTENSIONS.get(a.media_type, ('?',)))}).",
                path + "/FileName",
            )
    if total > limits.max_total_attachment_bytes:
        yield Violation(
            ErrorCode.TOO_LARGE,
            f"the attachments add up to {total} bytes; a message may carry at most "
            f"{limits.max_total_attachment_bytes}.",
            CONTENT,
        )


def _payment(p: m.Payment | None) -> Iterator[Violation]:
    if p is None:
        return
    path = CONTENT + "/Payment"
    if not ids.is_valid_iban(p.iban):
        yield Violation(
            ErrorCode.IBAN_INVALID,
            f"{p.iban} is not a valid IBAN (length or mod-97 check); write it without spaces.",
            path + "/IBAN",
        )
    if p.bic is not None and not ids.is_valid_bic(p.bic):
        yield Violation(ErrorCode.BIC_INVALID, f"{p.bic} is not a valid BIC.", path + "/BIC")
    if p.structured_reference is not None and not ids.is_valid_structured_reference(p.structured_reference):
        yield Violation(
            ErrorCode.REFERENCE_INVALID,
            f"{p.structured_reference} is not a valid structured reference: the last two digits must be "
            "the first ten modulo 97 (97 for 0), written +++123/4567/89012+++.",
            path + "/StructuredReference",
        )


def _reply_options(r: m.ReplyOptions | None) -> Iterator[Violation]:
    if r is None:
        return
    repeated = sorted(i for i, n in Counter(c.id for c in r.choices).items() if n > 1)
    if repeated:
        yield Violation(
            ErrorCode.REPLY_OPTIONS_INVALID,
            f"reply choice ids must be unique; repeated: {', '.join(repeated)}.",
            CONTENT + "/ReplyOptions/Choices",
        )
