"""The e-Box Message Registry REST v2.1 sender contract onto the hub's message, and the hub's answers back.

Pure functions: no I/O, no clock (``created`` and ``now`` are arguments). Field names are the
contract's (``messageToPublish``, ``PublicationStatusMessage``, ``StatusMessage``, ``MessageStatus``,
``MessageType``); ``docs/ebox-compatibility.md`` lists each one, supported or not.

What the hub's message cannot carry exactly is refused with a ``Rejected`` naming the field and
why, never dropped: a sender learns at once rather than a recipient never seeing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.envelope import model as m
from hub.envelope.media import ALLOWED_MEDIA_TYPES
from hub.envelope.rules import MessageTypePolicy
from hub.errors import ErrorCode, Rejected

MAX_FILES = 6
"""File parts a publication may carry (``upfile1`` .. ``upfile6`` in the contract)."""
MAX_ANNEXES = 5
"""Annexes the hub's envelope carries besides its one main document."""
MAX_STATUS_ITEMS = 100
LANGUAGES = {"nl": m.Language.NL, "fr": m.Language.FR, "de": m.Language.DE, "en": m.Language.EN}
TOKEN64 = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}")
SSIN = re.compile(r"[0-9]{11}")
CBE = re.compile(r"[01][0-9]{9}")
FOR_THE_ATTENTION_OF_TYPES = frozenset({"ssin", "nrn", "niss", "inss", "rrn"})
"""``forTheAttentionOf.type`` values the hub reads as "``id`` is a national number" (its only kind)."""
ENVIRONMENTS = {"PROD": "production", "INT": "integration"}
READ_STATES = frozenset({"opened", "replied"})
"""Message states in which the main content has been opened (``readStatus``)."""
GONE_STATES = frozenset({"expired", "rejected", "undeliverable"})
"""Message states in which the message is not (or no longer) in a mailbox (``visible`` false)."""
ROOT = "/messageToPublish"


@dataclass(frozen=True)
class FilePart:
    """One file part of a ``publishMessage`` request, as received."""

    name: str
    filename: str
    content_type: str
    content: bytes = field(repr=False)


def invalid(message: str, path: str, code: ErrorCode = ErrorCode.SCHEMA_INVALID) -> Rejected:
    return Rejected(code, message, path=path)


# -- reading the JSON part ----------------------------------------------------------------------


def parse_json(data: bytes, what: str = "messageToPublish") -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"the {what} part is not JSON ({exc.__class__.__name__}).", ROOT) from None


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise invalid("must be a JSON object.", path)
    return value


def _optional(doc: Mapping[str, Any], name: str, pattern: re.Pattern[str], message: str) -> str | None:
    """``messageToPublish.<name>``: absent (None), or a non-empty string matching ``pattern`` (else ``message``)."""
    if doc.get(name) is None:
        return None
    value = _string(doc[name], f"{ROOT}/{name}")
    if not pattern.fullmatch(value):
        raise invalid(message, f"{ROOT}/{name}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("must be a non-empty string.", path)
    return value


def _boolean(value: object, path: str, default: bool | None = None) -> bool:
    if value is None and default is not None:
        return default
    if not isinstance(value, bool):
        raise invalid("must be true or false.", path)
    return value


def _datetime(value: object, path: str) -> datetime:
    text = _string(value, path)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{text[:40]!r} is not a date-time (yyyy-MM-dd'T'HH:mm:ssXXX).", path) from None
    if moment.tzinfo is None:
        raise invalid("a date-time needs its time zone (Z or +hh:mm).", path)
    return moment


def _known_keys(doc: Mapping[str, Any], known: Sequence[str], path: str) -> None:
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise invalid(
            f"{', '.join(unknown)[:200]} is not a field of the contract the hub knows; remove it "
            "(the hub refuses what it would otherwise drop).",
            f"{path}/{unknown[0][:64]}",
        )


def translated(value: object, path: str) -> tuple[m.Text, ...]:
    """A ``TranslatedString`` as texts, one per language given (nl, fr, de; en where the hub allows it)."""
    doc = _object(value, path)
    _known_keys(doc, tuple(LANGUAGES), path)
    texts = tuple(m.Text(lang=LANGUAGES[lang], value=_string(doc[lang], f"{path}/{lang}")) for lang in doc)
    if not texts:
        raise invalid("give the text in at least one language (nl, fr, de).", path)
    return texts


def _recipient(value: object) -> m.Recipient:
    path = ROOT + "/recipient"
    doc = _object(value, path)
    _known_keys(doc, ("eboxType", "eboxIdValue"), path)
    kind = _string(doc.get("eboxType"), path + "/eboxType").lower()
    ident = _string(doc.get("eboxIdValue"), path + "/eboxIdValue")
    if kind == "citizen":
        if not SSIN.fullmatch(ident):
            raise invalid("a citizen's eboxIdValue is the national number: 11 digits.", path + "/eboxIdValue")
        return m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ident)
    if kind == "enterprise":
        if not CBE.fullmatch(ident):
            raise invalid("an enterprise's eboxIdValue is its CBE number: 10 digits.", path + "/eboxIdValue")
        return m.Recipient(ebox_type=m.EboxType.ENTERPRISE, id=ident)
    raise invalid("eboxType must be citizen or enterprise.", path + "/eboxType")


def _for_the_attention_of(value: object, recipient: m.Recipient) -> m.Recipient:
    path = ROOT + "/forTheAttentionOf"
    doc = _object(value, path)
    _known_keys(doc, ("id", "type", "name"), path)
    if recipient.ebox_type is not m.EboxType.ENTERPRISE:
        raise invalid("forTheAttentionOf applies to messages for an enterprise.", path)
    ssin = None if doc.get("id") is None else _string(doc["id"], path + "/id")
    kind = doc.get("type")
    if ssin is not None and not SSIN.fullmatch(ssin):
        raise invalid("id is the person's national number: 11 digits.", path + "/id")
    if kind is not None and (ssin is None or _string(kind, path + "/type").lower() not in FOR_THE_ATTENTION_OF_TYPES):
        raise invalid("the hub identifies the person by national number only: type SSIN with an id.", path + "/type")
    name = None if doc.get("name") is None else _string(doc["name"], path + "/name")
    if ssin is None and name is None:
        raise invalid("give the person's id (national number) or name.", path)
    fao = m.ForTheAttentionOf(ssin=ssin, name=name)
    return m.Recipient(ebox_type=recipient.ebox_type, id=recipient.id, for_the_attention_of=fao)


def _digest(value: object, path: str) -> bytes:
    doc = _object(value, path)
    _known_keys(doc, ("digestValue", "digestMethod"), path)
    if doc.get("digestMethod") != "sha_256":
        raise invalid("digestMethod must be sha_256.", path + "/digestMethod")
    encoded = _string(doc.get("digestValue"), path + "/digestValue")
    try:
        digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        raise invalid("digestValue must be base64url (RFC 4648 section 5).", path + "/digestValue") from None
    if len(digest) != 32:
        raise invalid("digestValue must be a SHA-256 digest (32 bytes).", path + "/digestValue")
    return digest


def _attachments(value: object, files: Mapping[str, FilePart]) -> tuple[list[m.Attachment], list[m.Attachment]]:
    """(main attachments, annexes), each file part named once by ``httpPartName``."""
    if value is None:
        value = []
    if not isinstance(value, list):
        raise invalid("must be a list.", ROOT + "/attachments")
    main: list[m.Attachment] = []
    annexes: list[m.Attachment] = []
    used: set[str] = set()
    for number, item in enumerate(value):
        path = f"{ROOT}/attachments/{number}"
        doc = _object(item, path)
        _known_keys(doc, ("attachmentTitle", "httpPartName", "mainContent", "digest", "attachmentSigned"), path)
        part_name = _string(doc.get("httpPartName"), path + "/httpPartName")
        part = files.get(part_name)
        if part is None or part_name in used:
            raise invalid(
                f"httpPartName {part_name[:64]!r} names no file part of the request (or one already used).",
                path + "/httpPartName",
            )
        used.add(part_name)
        actual = hashlib.sha256(part.content).digest()
        if doc.get("digest") is not None and _digest(doc["digest"], path + "/digest") != actual:
            raise invalid(
                f"the digest of {part_name[:64]!r} does not match the file's bytes; compute the SHA-256 of the "
                "file as sent and encode it base64url.",
                path + "/digest/digestValue",
                ErrorCode.DIGEST_MISMATCH,
            )
        media_type = part.content_type.split(";")[0].strip().lower()
        if media_type not in ALLOWED_MEDIA_TYPES:
            raise invalid(
                f"the part {part_name[:64]!r} is {media_type[:80] or 'without a Content-Type'}; the hub carries "
                f"{', '.join(sorted(ALLOWED_MEDIA_TYPES))}.",
                path + "/httpPartName",
                ErrorCode.MEDIA_TYPE_MISMATCH,
            )
        if not part.content:
            raise invalid(f"the file part {part_name[:64]!r} is empty.", path + "/httpPartName")
        attachment = m.Attachment(
            file_name=part.filename,
            media_type=media_type,
            size=len(part.content),
            digest=actual,
            content=part.content,
            titles=()
            if doc.get("attachmentTitle") is None
            else translated(doc["attachmentTitle"], path + "/attachmentTitle"),
            signed=_boolean(doc.get("attachmentSigned"), path + "/attachmentSigned", default=False),
        )
        (main if _boolean(doc.get("mainContent"), path + "/mainContent") else annexes).append(attachment)
    unused = sorted(set(files) - used)
    if unused:
        raise invalid(
            f"the file part {unused[0][:64]!r} is named by no attachment; list each file in attachments.",
            ROOT + "/attachments",
        )
    return main, annexes


def _business_data(value: object) -> tuple[m.BusinessDataEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("must be a list.", ROOT + "/businessDataList")
    entries = []
    for number, item in enumerate(value):
        path = f"{ROOT}/businessDataList/{number}"
        doc = _object(item, path)
        if doc.get("description") is not None:
            raise invalid(
                "the hub's message carries a business data entry's key, name and values, not its description; "
                "leave description out (or put it in the message's body).",
                path + "/description",
            )
        _known_keys(doc, ("key", "name", "values", "description"), path)
        key = _string(doc.get("key"), path + "/key")
        raw_values = doc.get("values")
        if not isinstance(raw_values, list) or not raw_values:
            raise invalid("values must be a non-empty list of TranslatedString.", path + "/values")
        values: list[m.Text | str] = []
        for index, raw in enumerate(raw_values):
            texts = translated(raw, f"{path}/values/{index}")
            if len(texts) == 1:
                values.append(texts[0])
            elif len({t.value for t in texts}) == 1:
                values.append(texts[0].value)  # the same in every language: one untranslated value
            else:
                raise invalid(
                    "the hub carries each business data value in one language, or the same in all: send one "
                    "value per language.",
                    f"{path}/values/{index}",
                )
        names = () if doc.get("name") is None else translated(doc["name"], path + "/name")
        entries.append(m.BusinessDataEntry(key=key, values=tuple(values), names=names))
    return tuple(entries)


def _amount(value: object, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid("must be a number.", path)
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise invalid("must be a number.", path) from None
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise invalid("must be an amount of at least 0 with at most two decimals.", path)
    return amount


def _due_date(value: object, path: str) -> date:
    text = _string(value, path)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise invalid(f"{text!r} is not a date.", path) from None
    return _datetime(text, path).date()  # the date as the sender wrote it, in its own time zone


def _payment(value: object) -> tuple[m.Payment, str]:
    """The payment, and its ``paymentDataId`` (carried as the envelope's CorrelationId)."""
    path = ROOT + "/paymentData"
    doc = _object(value, path)
    _known_keys(doc, ("paymentDataId", "amount", "vatAmount", "currency", "dueDate", "iban", "bic", "reference"), path)
    ident = _string(doc.get("paymentDataId"), path + "/paymentDataId")
    if not TOKEN64.fullmatch(ident):
        raise invalid(
            "paymentDataId: letters, digits and . _ : / - (1 to 64, starting with a letter or digit).",
            path + "/paymentDataId",
        )
    structured = free = None
    if doc.get("reference") is not None:
        reference = _object(doc["reference"], path + "/reference")
        _known_keys(reference, ("structured", "free"), path + "/reference")
        if len(reference) != 1:
            raise invalid('give the reference as {"structured": "+++...+++"} or {"free": "..."}.', path + "/reference")
        structured = None if "structured" not in reference else _string(reference["structured"], path + "/reference")
        free = None if "free" not in reference else _string(reference["free"], path + "/reference")
    currency = _string(doc.get("currency"), path + "/currency")
    payment = m.Payment(
        iban=_string(doc.get("iban"), path + "/iban").replace(" ", "").upper(),
        bic=None if doc.get("bic") is None else _string(doc["bic"], path + "/bic"),
        amount=_amount(doc.get("amount"), path + "/amount"),
        vat_amount=_amount(doc.get("vatAmount"), path + "/vatAmount"),
        currency=currency,
        due_date=_due_date(doc.get("dueDate"), path + "/dueDate"),
        structured_reference=structured,
        free_reference=free,
    )
    return payment, ident


MESSAGE_FIELDS = (
    *("recipient", "forTheAttentionOf", "originalMessageId", "subject", "messageTypeId", "expirationDate"),
    *("senderOrganizationId", "senderApplicationId", "registeredMail", "attachments", "bodyMainContent"),
    *("bodyContent", "businessDataList", "paymentData", "replyAuthorized"),
)


@dataclass(frozen=True)
class Publication:
    """A ``messageToPublish`` read: the sender ids it names (checked by the door) and the content."""

    sender_organization_id: str | None
    sender_application_id: str | None
    message_type: str
    recipient: m.Recipient
    expires_at: datetime | None
    registered: bool
    original_message_id: str | None
    correlation_id: str | None
    content: m.Content


def read_publication(doc: object, files: Mapping[str, FilePart]) -> Publication:
    """The ``messageToPublish`` JSON and its file parts as the hub's content; ``Rejected`` when it cannot be."""
    doc = _object(doc, ROOT)
    _known_keys(doc, MESSAGE_FIELDS, ROOT)
    for required in ("recipient", "subject", "bodyMainContent", "replyAuthorized", "messageTypeId"):
        if doc.get(required) is None:
            raise invalid(f"{required} is required.", f"{ROOT}/{required}")
    recipient = _recipient(doc["recipient"])
    if doc.get("forTheAttentionOf") is not None:
        recipient = _for_the_attention_of(doc["forTheAttentionOf"], recipient)
    message_type = _string(doc["messageTypeId"], ROOT + "/messageTypeId")
    if not TOKEN64.fullmatch(message_type):
        raise invalid("messageTypeId: letters, digits and . _ : / - (1 to 64).", ROOT + "/messageTypeId")
    original = _optional(
        doc, "originalMessageId", TOKEN64, "originalMessageId: the id of a message (1 to 64 characters)."
    )
    organization = _optional(doc, "senderOrganizationId", CBE, "senderOrganizationId is a CBE number: 10 digits.")
    application = _optional(
        doc, "senderApplicationId", TOKEN64, "senderApplicationId: letters, digits and . _ : / - (1 to 64)."
    )
    expires = None if doc.get("expirationDate") is None else _datetime(doc["expirationDate"], ROOT + "/expirationDate")

    main, annexes = _attachments(doc.get("attachments"), files)
    body_main = _boolean(doc["bodyMainContent"], ROOT + "/bodyMainContent")
    bodies = () if doc.get("bodyContent") is None else translated(doc["bodyContent"], ROOT + "/bodyContent")
    if body_main and not bodies:
        raise invalid(
            "bodyMainContent is true but there is no bodyContent.",
            ROOT + "/bodyContent",
            ErrorCode.MAIN_CONTENT_MISSING,
        )
    if len(main) + int(body_main) > 1:
        raise invalid(
            "the hub carries one main content: the body or one attachment with mainContent true; mark the "
            "others as annexes (mainContent false).",
            ROOT + "/attachments",
            ErrorCode.MAIN_CONTENT_MISSING,
        )
    if not main and not body_main:
        raise invalid(
            "the message has no main content: set bodyMainContent true with a bodyContent, or mark one "
            "attachment mainContent true.",
            ROOT + "/bodyMainContent",
            ErrorCode.MAIN_CONTENT_MISSING,
        )
    if len(annexes) > MAX_ANNEXES:
        raise invalid(
            f"the hub carries at most {MAX_ANNEXES} annexes besides the main content; this message has {len(annexes)}.",
            ROOT + "/attachments",
            ErrorCode.TOO_LARGE,
        )
    payment, correlation = (None, None) if doc.get("paymentData") is None else _payment(doc["paymentData"])
    reply = _boolean(doc["replyAuthorized"], ROOT + "/replyAuthorized")
    content = m.Content(
        subjects=translated(doc["subject"], ROOT + "/subject"),
        bodies=bodies,
        document=main[0] if main else None,
        annexes=tuple(annexes),
        payment=payment,
        reply_options=m.ReplyOptions() if reply else None,
        business_data=_business_data(doc.get("businessDataList")),
    )
    return Publication(
        sender_organization_id=organization,
        sender_application_id=application,
        message_type=message_type,
        recipient=recipient,
        expires_at=expires,
        registered=_boolean(doc.get("registeredMail"), ROOT + "/registeredMail", default=False),
        original_message_id=original,
        correlation_id=correlation,
        content=content,
    )


def to_envelope(
    publication: Publication,
    *,
    sender: m.Sender,
    sender_message_id: str,
    created: datetime,
    environment: m.Environment,
) -> m.Envelope:
    """The hub's envelope for a publication the door authenticated and attributed to ``sender``."""
    header = m.Header(
        sender_message_id=sender_message_id,
        sender=sender,
        recipient=publication.recipient,
        message_type=publication.message_type,
        created=created,
        expires_at=publication.expires_at,
        registered=publication.registered,
        correlation_id=publication.correlation_id,
        original_message_id=publication.original_message_id,
        environment=environment,
    )
    return m.Envelope(header=header, content=publication.content)


def request_digest(message_json: bytes, files: Sequence[FilePart], on_behalf_of: str | None) -> bytes:
    """What idempotency compares: SHA-256 over the JSON part as received, the institution sent for,
    and each file part's name, file name, media type and SHA-256, in part-name order."""
    lines = [b"ebox-rest-v2.1", (on_behalf_of or "").encode(), hashlib.sha256(message_json).hexdigest().encode()]
    for part in sorted(files, key=lambda p: p.name):
        lines.append(
            json.dumps([part.name, part.filename, part.content_type, hashlib.sha256(part.content).hexdigest()]).encode()
        )
    return hashlib.sha256(b"\n".join(lines)).digest()


# -- answers ------------------------------------------------------------------------------------------


def timestamp(moment: datetime) -> str:
    """yyyy-MM-dd'T'HH:mm:ssXXX, as the contract writes date-times."""
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def publication_status(message_id: str, expires_at: datetime, *, digital: bool) -> dict[str, Any]:
    """``PublicationStatusMessage``: the message id, its expiry, and NO_DIGITAL_USER for a recipient
    without activated digital post (the message is accepted all the same and goes the way the
    hub's routing rules send such recipients' messages, e.g. to paper)."""
    answer: dict[str, Any] = {"messageId": message_id, "expirationDate": timestamp(expires_at)}
    if not digital:
        answer["code"] = "NO_DIGITAL_USER"
        answer["message"] = (
            "The recipient has not activated digital post; the message is accepted and delivered as the "
            "hub's routing rules provide for such recipients (e.g. on paper)."
        )
    return answer


def status_message(code: str, message: str, *, environment: str) -> dict[str, Any]:
    """``StatusMessage``: the contract's error body (a fresh id for each, to quote to the helpdesk)."""
    return {
        "id": str(uuid.uuid4()),
        "code": code,
        "message": message,
        "environment": ENVIRONMENTS.get(environment, "production"),
    }


def ebox_id(kind: str, ident: str) -> dict[str, str]:
    return {"eboxType": kind, "eboxIdValue": ident}


def read_status_request(doc: object) -> list[tuple[str, str, str]]:
    """``MessagesStatusRequest``: (messageId, eboxType, eboxIdValue) for each couple asked."""
    path = "/messagesStatusRequest"
    if not isinstance(doc, list) or not doc:
        raise invalid("send a non-empty JSON list of {messageId, eboxId} couples.", path)
    if len(doc) > MAX_STATUS_ITEMS:
        raise invalid(
            f"ask for at most {MAX_STATUS_ITEMS} messages at a time, not {len(doc)}.", path, ErrorCode.TOO_LARGE
        )
    couples = []
    for index, item in enumerate(doc):
        where = f"{path}/{index}"
        entry = _object(item, where)
        _known_keys(entry, ("messageId", "eboxId"), where)
        message_id = _string(entry.get("messageId"), where + "/messageId")
        box = _object(entry.get("eboxId"), where + "/eboxId")
        _known_keys(box, ("eboxType", "eboxIdValue"), where + "/eboxId")
        kind = _string(box.get("eboxType"), where + "/eboxId/eboxType").lower()
        if kind not in ("citizen", "enterprise"):
            raise invalid("eboxType must be citizen or enterprise.", where + "/eboxId/eboxType")
        couples.append((message_id, kind, _string(box.get("eboxIdValue"), where + "/eboxId/eboxIdValue")))
    return couples


def message_status(
    message_id: str, kind: str, ident: str, *, state: str, expires_at: datetime | None
) -> dict[str, Any]:
    """``MessageStatus`` of a message in hub state ``state``: read once its main content was opened."""
    status: dict[str, Any] = {
        "messageId": message_id,
        "eboxId": ebox_id(kind, ident),
        "readStatus": state in READ_STATES,
        "visible": state not in GONE_STATES,
    }
    if expires_at is not None:
        status["expirationDate"] = timestamp(expires_at)
    return status


def message_type(
    type_id: str, policy: MessageTypePolicy, *, organizations: Sequence[str], applications: Sequence[str]
) -> dict[str, Any]:
    """``MessageType`` from the sender registration: the hub registers no names, so the id names it."""
    return {
        "messageTypeId": type_id,
        "messageTypeName": {"nl": type_id, "fr": type_id, "de": type_id},
        "validityPeriod": {"validityPeriodNumber": policy.default_retention_months, "validityPeriodUnit": "month"},
        "senderOrganizationIds": sorted(organizations),
        "senderApplicationIds": sorted(applications),
    }
