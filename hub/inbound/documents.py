"""XML documents the doors answer with: error documents and message status."""

from __future__ import annotations

import re

from lxml import etree

from hub.envelope.builder import timestamp
from hub.envelope.model import ACK_NS, TYPES_NS
from hub.errors import ErrorCode, Rejected, Violation
from hub.store.models import Event, Message

_A = "{" + ACK_NS + "}"
_T = "{" + TYPES_NS + "}"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold (NUL, other controls, lone surrogates, U+FFFE/FFFF)."""


def _text(value: str) -> str:
    """``value`` as XML text: a message may quote what was sent (an id from a URL), whatever it holds."""
    return _NOT_XML.sub("\ufffd", value)


def _fill(element: etree._Element, violation: Violation) -> None:
    etree.SubElement(element, _T + "Code").text = violation.code.value
    etree.SubElement(element, _T + "Message").text = _text(violation.message)
    if violation.line is not None:
        etree.SubElement(element, _T + "Line").text = str(violation.line)
    if violation.path:
        etree.SubElement(element, _T + "Path").text = _text(violation.path)


def error_element(refused: Rejected) -> etree._Element:
    """``<t:Error>`` with the first violation, and the others as ``<t:Also>``."""
    root = etree.Element(_T + "Error", nsmap={"t": TYPES_NS})
    first, *rest = refused.violations
    _fill(root, first)
    for violation in rest[:50]:
        _fill(etree.SubElement(root, _T + "Also"), violation)
    return root


def error_document(refused: Rejected) -> bytes:
    return etree.tostring(error_element(refused), xml_declaration=True, encoding="UTF-8")


def unavailable_document(message: str) -> bytes:
    return error_document(_unavailable(message))


def _unavailable(message: str) -> Rejected:
    # 503 bodies use the same error document; the code says "try again later".
    return Rejected(ErrorCode.SERVICE_UNAVAILABLE, message)


def status_element(message: Message, events: list[Event]) -> etree._Element:
    root = etree.Element(_A + "MessageStatus", nsmap={None: ACK_NS, "t": TYPES_NS})
    etree.SubElement(root, _A + "HubMessageId").text = message.id
    etree.SubElement(root, _A + "SenderMessageId").text = message.sender_message_id
    etree.SubElement(root, _A + "State").text = message.state
    etree.SubElement(root, _A + "AcceptedAt").text = timestamp(message.accepted_at)
    etree.SubElement(root, _A + "EnvelopeDigest", algorithm="sha_256").text = message.envelope_sha256
    holder = etree.SubElement(root, _A + "Events")
    for event in events:
        item = etree.SubElement(holder, _A + "Event")
        etree.SubElement(item, _A + "Kind").text = event.kind
        etree.SubElement(item, _A + "OccurredAt").text = timestamp(event.occurred_at)
        if event.provider:
            etree.SubElement(item, _A + "Provider").text = event.provider
    return root


def status_document(message: Message, events: list[Event]) -> bytes:
    return etree.tostring(status_element(message, events), xml_declaration=True, encoding="UTF-8")
