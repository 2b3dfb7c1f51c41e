"""Read a schema-valid ``PublishMessage`` tree into the typed model.

The tree must already be schema-valid (``hub.envelope.schema``): the reader trusts the
structure and only converts values. Base64 content that does not decode is refused here.
"""

from __future__ import annotations

import binascii
from datetime import date, datetime
from decimal import Decimal

from lxml import etree

from hub.envelope import model as m
from hub.errors import ErrorCode, Rejected
from hub.safexml import element_path

_E = "{" + m.ENVELOPE_NS + "}"
_T = "{" + m.TYPES_NS + "}"


def read_envelope(root: etree._Element) -> m.Envelope:
    header = root.find(_E + "Header")
    content = root.find(_E + "Content")
    try:
        return m.Envelope(header=_header(header), content=_content(content), id=root.get("Id"))
    except (ValueError, ArithmeticError, OverflowError) as exc:
        # Schema-valid yet unreadable: e.g. xs:dateTime "24:00:00" or a year past 9999.
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"a value could not be read ({exc}); use ISO 8601 dates with years 0001-9999.",
        ) from exc


def _text(parent: etree._Element, name: str) -> str | None:
    child = parent.find(_E + name)
    return None if child is None else (child.text or "")


def _bool(parent: etree._Element, name: str) -> bool:
    value = _text(parent, name)
    return value is not None and value.strip() in ("true", "1")


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.strip().replace("Z", "+00:00"))


def _texts(parent: etree._Element, name: str) -> tuple[m.Text, ...]:
    return tuple(m.Text(lang=m.Language(e.get("lang")), value=e.text or "") for e in parent.iterfind(_E + name))


def _sender(element: etree._Element) -> m.Sender:
    behalf = element.find(_T + "OnBehalfOf")
    return m.Sender(
        organization_id=element.findtext(_T + "OrganizationId"),
        application_id=element.findtext(_T + "ApplicationId"),
        on_behalf_of=None if behalf is None else behalf.text,
    )


def _recipient(element: etree._Element) -> m.Recipient:
    citizen = element.find(_E + "Citizen")
    if citizen is not None:
        return m.Recipient(ebox_type=m.EboxType.CITIZEN, id=citizen.findtext(_E + "SSIN"))
    enterprise = element.find(_E + "Enterprise")
    fao = enterprise.find(_E + "ForTheAttentionOf")
    return m.Recipient(
        ebox_type=m.EboxType.ENTERPRISE,
        id=enterprise.findtext(_E + "CBE"),
        sub_entity_id=_text(enterprise, "SubEntityId"),
        for_the_attention_of=None
        if fao is None
        else m.ForTheAttentionOf(ssin=_text(fao, "SSIN"), name=_text(fao, "Name")),
    )


def _header(h: etree._Element) -> m.Header:
    return m.Header(
        sender_message_id=_text(h, "SenderMessageId"),
        sender=_sender(h.find(_E + "Sender")),
        recipient=_recipient(h.find(_E + "Recipient")),
        message_type=_text(h, "MessageType"),
        created=_when(_text(h, "Created")),
        expires_at=_when(_text(h, "ExpiresAt")),
        retain_indefinitely=h.find(_E + "RetainIndefinitely") is not None,
        effective_date=_when(_text(h, "EffectiveDate")),
        registered=_bool(h, "Registered"),
        opening_receipt=_bool(h, "OpeningReceipt"),
        assurance_level=m.AssuranceLevel(_text(h, "AssuranceLevel") or "substantial"),
        priority=m.Priority(_text(h, "Priority") or "normal"),
        correlation_id=_text(h, "CorrelationId"),
        original_message_id=_text(h, "OriginalMessageId"),
        environment=m.Environment(_text(h, "Environment") or "PROD"),
    )


def _attachment(a: etree._Element) -> m.Attachment:
    content = a.find(_E + "Content")
    try:
        data = binascii.a2b_base64("".join((content.text or "").split()), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"the attachment content is not valid base64 ({exc}); encode the file with standard base64.",
            path=element_path(content),
            line=content.sourceline,
        ) from exc
    return m.Attachment(
        file_name=_text(a, "FileName"),
        media_type=_text(a, "MediaType"),
        size=int(_text(a, "Size")),
        digest=bytes.fromhex(a.findtext(_E + "Digest").strip()),
        content=data,
        titles=_texts(a, "Title"),
        signed=_bool(a, "Signed"),
    )


def _payment(p: etree._Element | None) -> m.Payment | None:
    if p is None:
        return None
    vat = _text(p, "VatAmount")
    return m.Payment(
        iban=_text(p, "IBAN"),
        bic=_text(p, "BIC"),
        beneficiary=_text(p, "Beneficiary"),
        amount=Decimal(_text(p, "Amount")),
        vat_amount=None if vat is None else Decimal(vat),
        currency=_text(p, "Currency"),
        structured_reference=_text(p, "StructuredReference"),
        free_reference=_text(p, "FreeReference"),
        due_date=date.fromisoformat(_text(p, "DueDate").strip()),
    )


def _reply_options(r: etree._Element | None) -> m.ReplyOptions | None:
    if r is None:
        return None
    free = r.find(_E + "FreeText")
    choices = tuple(
        m.ReplyChoice(id=c.get("id"), labels=_texts(c, "Label")) for c in r.iterfind(f"{_E}Choices/{_E}Choice")
    )
    return m.ReplyOptions(
        choices=choices,
        free_text_max_length=None if free is None else int(free.get("maxLength", "2000")),
        deadline=_when(_text(r, "Deadline")),
    )


def _business_data(b: etree._Element | None) -> tuple[m.BusinessDataEntry, ...]:
    if b is None:
        return ()
    entries = []
    for entry in b.iterfind(_E + "Entry"):
        values = tuple(
            m.Text(lang=m.Language(v.get("lang")), value=v.text or "") if v.get("lang") else (v.text or "")
            for v in entry.iterfind(_E + "Value")
        )
        entries.append(m.BusinessDataEntry(key=entry.get("key"), names=_texts(entry, "Name"), values=values))
    return tuple(entries)


def _content(c: etree._Element) -> m.Content:
    document = c.find(_E + "Document")
    link = c.find(_E + "Link")
    contact = c.find(_E + "Contact")
    return m.Content(
        titles=_texts(c, "Title"),
        subjects=_texts(c, "Subject"),
        bodies=_texts(c, "Body"),
        document=None if document is None else _attachment(document),
        annexes=tuple(_attachment(a) for a in c.iterfind(_E + "Annex")),
        payment=_payment(c.find(_E + "Payment")),
        reply_options=_reply_options(c.find(_E + "ReplyOptions")),
        business_data=_business_data(c.find(_E + "BusinessData")),
        link=None if link is None else m.Link(url=_text(link, "Url"), labels=_texts(link, "Label")),
        contact=None
        if contact is None
        else m.Contact(
            name=_text(contact, "Name"),
            email=_text(contact, "Email"),
            phone=_text(contact, "Phone"),
            url=_text(contact, "Url"),
            address=_text(contact, "Address"),
        ),
    )
