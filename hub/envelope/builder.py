"""Build an envelope document from the model: the inverse of ``hub.envelope.reader``.

``build_envelope(model)`` returns an unsigned ``PublishMessage`` tree that validates
against ``envelope-1.xsd`` when the model respects its field bounds. Default values
(Registered false, Priority normal, ...) are written only when they differ from the
default, so a built document stays small and round-trips to the same model.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime

from lxml import etree

from hub.envelope import model as m

_E = "{" + m.ENVELOPE_NS + "}"
_T = "{" + m.TYPES_NS + "}"
NSMAP = {None: m.ENVELOPE_NS, "t": m.TYPES_NS}


def timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("envelope timestamps need a time zone")
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    child = etree.SubElement(parent, tag, attrib)
    if text is not None:
        child.text = text
    return child


def _opt(parent: etree._Element, name: str, value: object | None) -> None:
    if value is not None:
        _sub(parent, _E + name, str(value))


def _texts(parent: etree._Element, name: str, texts: Iterable[m.Text]) -> None:
    for t in texts:
        _sub(parent, _E + name, t.value, lang=str(t.lang))


def build_envelope(envelope: m.Envelope) -> etree._Element:
    root = etree.Element(_E + "PublishMessage", nsmap=NSMAP)
    if envelope.id:
        root.set("Id", envelope.id)
    _header(_sub(root, _E + "Header"), envelope.header)
    _content(_sub(root, _E + "Content"), envelope.content)
    return root


def to_bytes(root: etree._Element) -> bytes:
    """Serialise a document as the hub sends and stores it: UTF-8 with a declaration.

    An unsigned document is indented for people to read; a signed one is written exactly
    as it is, since any added whitespace would break its signature.
    """
    signed = root.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is not None
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=not signed)


def _header(h: etree._Element, v: m.Header) -> None:
    _sub(h, _E + "SenderMessageId", v.sender_message_id)
    sender = _sub(h, _E + "Sender")
    _sub(sender, _T + "OrganizationId", v.sender.organization_id)
    _sub(sender, _T + "ApplicationId", v.sender.application_id)
    if v.sender.on_behalf_of:
        _sub(sender, _T + "OnBehalfOf", v.sender.on_behalf_of)
    recipient = _sub(h, _E + "Recipient")
    r = v.recipient
    if r.ebox_type is m.EboxType.CITIZEN:
        _sub(_sub(recipient, _E + "Citizen"), _E + "SSIN", r.id)
    else:
        enterprise = _sub(recipient, _E + "Enterprise")
        _sub(enterprise, _E + "CBE", r.id)
        _opt(enterprise, "SubEntityId", r.sub_entity_id)
        if r.for_the_attention_of is not None:
            fao = _sub(enterprise, _E + "ForTheAttentionOf")
            _opt(fao, "SSIN", r.for_the_attention_of.ssin)
            _opt(fao, "Name", r.for_the_attention_of.name)
    _sub(h, _E + "MessageType", v.message_type)
    _sub(h, _E + "Created", timestamp(v.created))
    if v.expires_at is not None:
        _sub(h, _E + "ExpiresAt", timestamp(v.expires_at))
    elif v.retain_indefinitely:
        _sub(h, _E + "RetainIndefinitely")
    if v.effective_date is not None:
        _sub(h, _E + "EffectiveDate", timestamp(v.effective_date))
    if v.registered:
        _sub(h, _E + "Registered", "true")
    if v.opening_receipt:
        _sub(h, _E + "OpeningReceipt", "true")
    if v.assurance_level is not m.AssuranceLevel.SUBSTANTIAL:
        _sub(h, _E + "AssuranceLevel", str(v.assurance_level))
    if v.priority is not m.Priority.NORMAL:
        _sub(h, _E + "Priority", str(v.priority))
    _opt(h, "CorrelationId", v.correlation_id)
    _opt(h, "OriginalMessageId", v.original_message_id)
    if v.environment is not m.Environment.PROD:
        _sub(h, _E + "Environment", str(v.environment))


def _attachment(parent: etree._Element, name: str, a: m.Attachment) -> None:
    e = _sub(parent, _E + name)
    _sub(e, _E + "FileName", a.file_name)
    _sub(e, _E + "MediaType", a.media_type)
    _texts(e, "Title", a.titles)
    _sub(e, _E + "Size", str(a.size))
    _sub(e, _E + "Digest", a.digest.hex(), algorithm="sha_256")
    if a.signed:
        _sub(e, _E + "Signed", "true")
    encoded = base64.encodebytes(a.content).decode("ascii")
    _sub(e, _E + "Content", encoded)


def _content(c: etree._Element, v: m.Content) -> None:
    _texts(c, "Title", v.titles)
    _texts(c, "Subject", v.subjects)
    _texts(c, "Body", v.bodies)
    if v.document is not None:
        _attachment(c, "Document", v.document)
    for annex in v.annexes:
        _attachment(c, "Annex", annex)
    if v.payment is not None:
        p = _sub(c, _E + "Payment")
        v_p = v.payment
        _sub(p, _E + "IBAN", v_p.iban)
        _opt(p, "BIC", v_p.bic)
        _opt(p, "Beneficiary", v_p.beneficiary)
        _sub(p, _E + "Amount", f"{v_p.amount:.2f}")
        if v_p.vat_amount is not None:
            _sub(p, _E + "VatAmount", f"{v_p.vat_amount:.2f}")
        _sub(p, _E + "Currency", v_p.currency)
        _opt(p, "StructuredReference", v_p.structured_reference)
        _opt(p, "FreeReference", v_p.free_reference)
        _sub(p, _E + "DueDate", v_p.due_date.isoformat())
    if v.reply_options is not None:
        r = _sub(c, _E + "ReplyOptions")
        if v.reply_options.deadline is not None:
            _sub(r, _E + "Deadline", timestamp(v.reply_options.deadline))
        if v.reply_options.choices:
            choices = _sub(r, _E + "Choices")
            for choice in v.reply_options.choices:
                _texts(_sub(choices, _E + "Choice", id=choice.id), "Label", choice.labels)
        else:
            _sub(r, _E + "FreeText", maxLength=str(v.reply_options.free_text_max_length or 2000))
    if v.business_data:
        b = _sub(c, _E + "BusinessData")
        for entry in v.business_data:
            e = _sub(b, _E + "Entry", key=entry.key)
            _texts(e, "Name", entry.names)
            for value in entry.values:
                if isinstance(value, m.Text):
                    _sub(e, _E + "Value", value.value, lang=str(value.lang))
                else:
                    _sub(e, _E + "Value", value)
    if v.link is not None:
        link = _sub(c, _E + "Link")
        _sub(link, _E + "Url", v.link.url)
        _texts(link, "Label", v.link.labels)
    if v.contact is not None:
        contact = _sub(c, _E + "Contact")
        for name in ("name", "email", "phone", "url", "address"):
            _opt(contact, name.capitalize(), getattr(v.contact, name))
