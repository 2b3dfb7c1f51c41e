"""How the suite reads what a door answered: the status and the stable code, whatever the door."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from lxml import etree

from hub.envelope.model import TYPES_NS
from hub.errors import ErrorCode
from hub.inbound.soap import SOAP_NS
from hub.safexml import parse

T = "{" + TYPES_NS + "}"
S = "{" + SOAP_NS + "}"
KNOWN_CODES = frozenset(code.value for code in ErrorCode)


@dataclass(frozen=True)
class Answer:
    status: int | None
    code: str | None
    body: bytes = b""
    faultcode: str | None = None

    def expect(self, code: ErrorCode | None, status: int | None) -> None:
        assert (self.status, self.code) == (status, code.value if code else None), self.body[:600]


def error_code(body: bytes) -> str:
    """The ``t:Code`` of an error document; it must be one of the stable codes."""
    root = parse(body)
    assert root.tag == T + "Error", body[:300]
    code = root.findtext(T + "Code")
    assert code in KNOWN_CODES, body[:300]
    return code


def rest(response) -> Answer:  # type: ignore[no-untyped-def]
    """A REST answer: 2xx without a code, else the error document's code."""
    if response.status_code < 300 or response.status_code >= 500:  # a 5xx is never what an attack expects
        return Answer(response.status_code, None, response.content)
    return Answer(response.status_code, error_code(response.content), response.content)


def batch_item(response) -> Answer:  # type: ignore[no-untyped-def]
    """The one result of a one-envelope batch (207), or the batch's own refusal."""
    if response.status_code != 207:
        return rest(response)
    [item] = response.json()["results"]
    if item["status"] < 300:
        return Answer(item["status"], None, base64.b64decode(item["receipt"]))
    document = base64.b64decode(item["error"])
    assert error_code(document) == item["code"]
    return Answer(item["status"], item["code"], document)


def soap(response) -> Answer:  # type: ignore[no-untyped-def]
    """A SOAP answer: 200 with the body entry, or a SOAP 1.1 fault whose detail holds the REST door's error."""
    root = parse(response.content)
    assert root.tag == S + "Envelope", response.content[:300]
    fault = root.find(f"{S}Body/{S}Fault")
    if fault is None:
        assert response.status_code == 200, response.content[:300]
        return Answer(200, None, response.content)
    assert fault.findtext("faultstring"), response.content[:300]
    detail = fault.find("detail")
    code = None
    if detail is not None:
        [error] = list(detail)
        code = error_code(etree.tostring(error))
    return Answer(response.status_code, code, response.content, fault.findtext("faultcode"))


def soap_request(entry: bytes) -> bytes:
    """A SOAP 1.1 request around one body entry (an envelope as signed: its bytes, without the declaration)."""
    if entry.startswith(b"<?xml") and b"?>" in entry:
        entry = entry.split(b"?>", 1)[1].lstrip()
    return (
        b'<soap:Envelope xmlns:soap="' + SOAP_NS.encode() + b'"><soap:Body>' + entry + b"</soap:Body></soap:Envelope>"
    )
