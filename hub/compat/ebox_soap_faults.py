"""The EBoxMessage v1 fault format, and the hub's refusal codes in it.

A refusal is a SOAP 1.1 Fault whose ``detail`` holds the contract's ``err:BusinessError`` (the request is
wrong: ``Origin`` "consumer", ``soap:Client``) or ``err:SystemError`` (the hub cannot serve now: ``Origin``
"provider", ``soap:Server``, ``Retry`` true, HTTP 503). ``Code`` is the door's stable e-Box code (below);
the first ``Message`` says what to do, prefixed with the hub's own stable code in brackets. WS-Security
refusals carry the WSS 1.0 fault code (``wsse:InvalidSecurity``, ``wsse:FailedCheck``, ...) as ``faultcode``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from hub.errors import ErrorCode, Rejected

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ERRORS_NS = "http://socialsecurity.be/errors/v1"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_S = "{" + SOAP_NS + "}"
_ERR = "{" + ERRORS_NS + "}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

EBOX_CODES: dict[ErrorCode, str] = {
    ErrorCode.XML_MALFORMED: "INVALID_REQUEST",
    ErrorCode.XML_FORBIDDEN: "INVALID_REQUEST",
    ErrorCode.SCHEMA_INVALID: "INVALID_REQUEST",
    ErrorCode.CONTENT_TYPE_INVALID: "INVALID_REQUEST",
    ErrorCode.REQUEST_TIMEOUT: "INVALID_REQUEST",
    ErrorCode.TOO_LARGE: "MESSAGE_TOO_LARGE",
    ErrorCode.SIGNATURE_MISSING: "SECURITY_MISSING",
    ErrorCode.SIGNATURE_SCOPE: "SECURITY_INVALID",
    ErrorCode.SIGNATURE_INVALID: "SECURITY_INVALID",
    ErrorCode.SIGNATURE_ALGORITHM: "SECURITY_UNSUPPORTED_ALGORITHM",
    ErrorCode.UNKNOWN_SIGNER: "SECURITY_UNKNOWN_CERTIFICATE",
    ErrorCode.CERT_EXPIRED: "SECURITY_CERTIFICATE_NOT_VALID",
    ErrorCode.CERT_NOT_YET_VALID: "SECURITY_CERTIFICATE_NOT_VALID",
    ErrorCode.UNAUTHENTICATED: "NOT_AUTHORIZED",
    ErrorCode.NOT_AUTHORISED: "NOT_AUTHORIZED",
    ErrorCode.INVALID_SENDER: "INVALID_SENDER",
    ErrorCode.ENVIRONMENT_MISMATCH: "INVALID_SENDER",
    ErrorCode.UNKNOWN_MESSAGE_TYPE: "UNKNOWN_MESSAGE_TYPE",
    ErrorCode.SSIN_INVALID: "INVALID_RECIPIENT",
    ErrorCode.CBE_INVALID: "INVALID_RECIPIENT",
    ErrorCode.DIGEST_MISMATCH: "DIGEST_MISMATCH",
    ErrorCode.SIZE_MISMATCH: "DIGEST_MISMATCH",
    ErrorCode.MEDIA_TYPE_MISMATCH: "INVALID_ATTACHMENT",
    ErrorCode.DUPLICATE_MESSAGE_ID: "DUPLICATE_MESSAGE",
    ErrorCode.MESSAGE_NOT_FOUND: "NOT_FOUND",
    ErrorCode.SERVICE_UNAVAILABLE: "SERVICE_UNAVAILABLE",
}
"""The hub's code -> the door's e-Box code. Other business rules (dates, languages, ...): INVALID_CONTENT."""

WSS_FAULTS: dict[ErrorCode, str] = {
    ErrorCode.SIGNATURE_MISSING: "wsse:InvalidSecurity",
    ErrorCode.SIGNATURE_SCOPE: "wsse:InvalidSecurity",
    ErrorCode.SIGNATURE_INVALID: "wsse:FailedCheck",
    ErrorCode.SIGNATURE_ALGORITHM: "wsse:UnsupportedAlgorithm",
    ErrorCode.UNKNOWN_SIGNER: "wsse:FailedAuthentication",
    ErrorCode.CERT_EXPIRED: "wsse:InvalidSecurityToken",
    ErrorCode.CERT_NOT_YET_VALID: "wsse:InvalidSecurityToken",
}
WSS_BY_EBOX_CODE = {
    "SECURITY_TIMESTAMP_EXPIRED": "wsse:MessageExpired",
    "SECURITY_TIMESTAMP_INVALID": "wsse:InvalidSecurity",
    "SECURITY_REPLAY": "wsse:InvalidSecurity",
}


@dataclass(frozen=True)
class Fault:
    faultcode: str
    code: str
    """The door's e-Box code (``Code`` of the detail)."""
    hub_code: ErrorCode
    message: str
    system: bool = False

    @property
    def status(self) -> int:
        return 503 if self.system else 500


ATTACHMENT_FIELDS = ("/MediaType", "/FileName")
"""A schema refusal of the hub's envelope at these fields is about a file: INVALID_ATTACHMENT."""


def ebox_code(refused: Rejected) -> str:
    own = getattr(refused, "ebox_code", None)
    if isinstance(own, str):
        return own
    path = refused.violations[0].path or ""
    if refused.code is ErrorCode.SCHEMA_INVALID and path.endswith(ATTACHMENT_FIELDS):
        return "INVALID_ATTACHMENT"
    return EBOX_CODES.get(refused.code, "INVALID_CONTENT")


def fault_of(refused: Rejected, *, security: bool = False) -> Fault:
    """The fault for a refusal; ``security``: raised while checking WS-Security (a WSS fault code)."""
    code = ebox_code(refused)
    faultcode = "soap:Client"
    if security:
        faultcode = WSS_BY_EBOX_CODE.get(code) or WSS_FAULTS.get(refused.code, "wsse:InvalidSecurity")
    return Fault(faultcode, code, refused.code, refused.message)


def unavailable_fault(message: str) -> Fault:
    return Fault("soap:Server", "SERVICE_UNAVAILABLE", ErrorCode.SERVICE_UNAVAILABLE, message, system=True)


def fault_document(fault: Fault, *, environment: str) -> bytes:
    envelope = etree.Element(_S + "Envelope", nsmap={"soap": SOAP_NS, "wsse": WSSE_NS})
    body = etree.SubElement(envelope, _S + "Body")
    element = etree.SubElement(body, _S + "Fault")
    etree.SubElement(element, "faultcode").text = fault.faultcode
    etree.SubElement(element, "faultstring").text = f"{fault.code}: {fault.message}"
    detail = etree.SubElement(element, "detail")
    error = etree.SubElement(
        detail, _ERR + ("SystemError" if fault.system else "BusinessError"), nsmap={"err": ERRORS_NS}
    )
    etree.SubElement(error, _ERR + "Origin").text = "provider" if fault.system else "consumer"
    etree.SubElement(error, _ERR + "Code").text = fault.code
    message = etree.SubElement(error, _ERR + "Message")
    message.set(_XML_LANG, "en")
    message.text = f"[{fault.hub_code.value}] {fault.message}"
    etree.SubElement(error, _ERR + "Retry").text = "true" if fault.system else "false"
    etree.SubElement(error, _ERR + "Environment").text = "Production" if environment == "PROD" else "Integration"
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
