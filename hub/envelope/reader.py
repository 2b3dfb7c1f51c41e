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


def read_envelope(root: etree._Element) -> m.Envelope:
    kids = _Kids(root)
    try:
        return m.Envelope(header=_header(kids.one("Header")), content=_content(kids.one("Content")), id=root.get("Id"))
    except (ValueError, ArithmeticError, OverflowError) as exc:
        # Schema-valid yet unreadable: e.g. xs:dateTime "24:00:00" or a year past 9999.
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"a value could not be read ({exc}); use ISO 8601 dates with years 0001-9999.",
        ) from exc


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))


class _Kids:
    """An element's children grouped by local name: one pass instead of a find() per field."""

    __slots__ = ("element", "groups")

    def __init__(self, element: etree._Element) -> None:
        self.element = element
        groups: dict[str, list[etree._Element]] = {}
        for child in element:
            tag = child.tag
            if isinstance(tag, str):
                groups.setdefault(tag[tag.index("}") + 1 :], []).append(child)
        self.groups = groups

    def required(self, name: str) -> str:
        """The text of a child the schema makes mandatory (the tree is schema-valid)."""
        found = self.groups.get(name)
        if not found:
            raise ValueError(f"{name} is missing")
        return found[0].text or ""

    def one(self, name: str) -> etree._Element | None:
        found = self.groups.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[etree._Element]:
        return self.groups.get(name, [])

    def text(self, name: str) -> str | None:
        found = self.groups.get(name)
        return (found[0].text or "") if found else None

    def flag(self, name: str) -> bool:
        value = self.text(name)
        return value is not None and value.strip() in ("true", "1")

    def when(self, name: str) -> datetime | None:
        value = self.text(name)
        return None if value is None else _moment(value)

    def texts(self, name: str) -> tuple[m.Text, ...]:
        return tuple(m.Text(lang=m.Language(e.get("lang", "")), value=e.text or "") for e in self.all(name))


def _sender(element: etree._Element) -> m.Sender:
    kids = _Kids(element)
    return m.Sender(
        organization_id=kids.required("OrganizationId"),
        application_id=kids.required("ApplicationId"),
        on_behalf_of=kids.text("OnBehalfOf"),
    )


def _recipient(element: etree._Element) -> m.Recipient:
    kids = _Kids(element)
    citizen = kids.one("Citizen")
    if citizen is not None:
        return m.Recipient(ebox_type=m.EboxType.CITIZEN, id=_Kids(citizen).required("SSIN"))
    enterprise = _Kids(kids.one("Enterprise"))
    fao = enterprise.one("ForTheAttentionOf")
    fao_kids = None if fao is None else _Kids(fao)
    return m.Recipient(
        ebox_type=m.EboxType.ENTERPRISE,
        id=enterprise.required("CBE"),
        sub_entity_id=enterprise.text("SubEntityId"),
        for_the_attention_of=None
        if fao_kids is None
        else m.ForTheAttentionOf(ssin=fao_kids.text("SSIN"), name=fao_kids.text("Name")),
    )


def _header(element: etree._Element) -> m.Header:
    h = _Kids(element)
    return m.Header(
        sender_message_id=h.required("SenderMessageId"),
        sender=_sender(h.one("Sender")),
        recipient=_recipient(h.one("Recipient")),
        message_type=h.required("MessageType"),
        created=_moment(h.required("Created")),
        expires_at=h.when("ExpiresAt"),
        retain_indefinitely=h.one("RetainIndefinitely") is not None,
        effective_date=h.when("EffectiveDate"),
        registered=h.flag("Registered"),
        opening_receipt=h.flag("OpeningReceipt"),
        assurance_level=m.AssuranceLevel(h.text("AssuranceLevel") or "substantial"),
        priority=m.Priority(h.text("Priority") or "normal"),
        correlation_id=h.text("CorrelationId"),
        original_message_id=h.text("OriginalMessageId"),
        environment=m.Environment(h.text("Environment") or "PROD"),
    )


def _attachment(element: etree._Element) -> m.Attachment:
    a = _Kids(element)
    content = a.groups["Content"][0]
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
        file_name=a.required("FileName"),
        media_type=a.required("MediaType"),
        size=int(a.required("Size")),
        digest=bytes.fromhex(a.required("Digest").strip()),
        content=data,
        titles=a.texts("Title"),
        signed=a.flag("Signed"),
    )


def _payment(element: etree._Element | None) -> m.Payment | None:
    if element is None:
        return None
    p = _Kids(element)
    vat = p.text("VatAmount")
    return m.Payment(
        iban=p.required("IBAN"),
        bic=p.text("BIC"),
        beneficiary=p.text("Beneficiary"),
        amount=Decimal(p.required("Amount")),
        vat_amount=None if vat is None else Decimal(vat),
        currency=p.required("Currency"),
        structured_reference=p.text("StructuredReference"),
        free_reference=p.text("FreeReference"),
        due_date=date.fromisoformat(p.required("DueDate").strip()),
    )


def _reply_options(element: etree._Element | None) -> m.ReplyOptions | None:
    if element is None:
        return None
    r = _Kids(element)
    free = r.one("FreeText")
    choices_element = r.one("Choices")
    choices = (
        ()
        if choices_element is None
        else tuple(m.ReplyChoice(id=c.get("id", ""), labels=_Kids(c).texts("Label")) for c in choices_element)
    )
    return m.ReplyOptions(
        choices=choices,
        free_text_max_length=None if free is None else int(free.get("maxLength", "2000")),
        deadline=r.when("Deadline"),
    )


def _business_data(element: etree._Element | None) -> tuple[m.BusinessDataEntry, ...]:
    if element is None:
        return ()
    entries = []
    for entry in element:
        e = _Kids(entry)
        values = tuple(
            m.Text(lang=m.Language(v.get("lang", "")), value=v.text or "") if v.get("lang") else (v.text or "")
            for v in e.all("Value")
        )
        entries.append(m.BusinessDataEntry(key=entry.get("key", ""), names=e.texts("Name"), values=values))
    return tuple(entries)


def _content(element: etree._Element) -> m.Content:
    c = _Kids(element)
    document = c.one("Document")
    link = c.one("Link")
    contact = c.one("Contact")
    link_kids = None if link is None else _Kids(link)
    contact_kids = None if contact is None else _Kids(contact)
    return m.Content(
        titles=c.texts("Title"),
        subjects=c.texts("Subject"),
        bodies=c.texts("Body"),
        document=None if document is None else _attachment(document),
        annexes=tuple(_attachment(a) for a in c.all("Annex")),
        payment=_payment(c.one("Payment")),
        reply_options=_reply_options(c.one("ReplyOptions")),
        business_data=_business_data(c.one("BusinessData")),
        link=None if link_kids is None else m.Link(url=link_kids.required("Url"), labels=link_kids.texts("Label")),
        contact=None
        if contact_kids is None
        else m.Contact(
            name=contact_kids.text("Name"),
            email=contact_kids.text("Email"),
            phone=contact_kids.text("Phone"),
            url=contact_kids.text("Url"),
            address=contact_kids.text("Address"),
        ),
    )
