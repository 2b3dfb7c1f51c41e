"""The SOAP 1.1 door (document/literal): the intake of the REST door, in SOAP envelopes.

GET  /soap?wsdl, /soap/wsdl      the contract (``schemas/hub-soap-1.wsdl``), addressed to where it was fetched
GET  /soap/schemas/{name}.xsd    the schemas the WSDL imports, so that a client resolves them from the hub
POST /soap                       publishMessage: Body = the signed PublishMessage -> the signed SubmissionReceipt
                                 getMessageStatus (Authorization: Bearer <token>) -> MessageStatus

The envelope travels inside the SOAP Body exactly as it was signed. The hub takes that element out as a
document of its own (``extract``) and hands those bytes to the intake, which verifies, stores and digests
them as if they had been posted to the REST door. Its signature covers the whole document with exclusive
c14n, so namespaces the SOAP envelope declares around it change nothing; a client that re-serialises the
element (whitespace, prefixes) is refused ``SIGNATURE_INVALID``, as it should be.

Every refusal is a SOAP 1.1 Fault (HTTP 500): ``soap:Client`` for refused input, ``soap:Server`` with HTTP
503 when the hub cannot serve now, ``soap:VersionMismatch`` for SOAP 1.2, ``soap:MustUnderstand`` for a
mandatory header block; the fault's ``detail`` holds the REST door's ``t:Error`` with the same stable code.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from hub.envelope.model import ENVELOPE_NS
from hub.envelope.schema import SCHEMA_FILES, schema_dir
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.documents import error_element, status_element
from hub.inbound.http import authenticated_party, certificate_party, closing, read_body
from hub.runtime import Runtime
from hub.safexml import ParseLimits, element_path, parse

log = logging.getLogger("hub.soap")

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
HUB_SOAP_NS = "urn:ebox-hub:soap:1"
WSDL_FILE = "hub-soap-1.wsdl"
SCHEMA_NAMES = frozenset(SCHEMA_FILES.values())
"""The schemas served at /soap/schemas/ (the ones the WSDL imports, and they import each other)."""

NEXT_ACTOR = "http://schemas.xmlsoap.org/soap/actor/next"
SOAP_DEPTH = 2
"""Levels the SOAP wrapper adds above the body entry (Envelope, Body)."""

CLIENT = "soap:Client"
SERVER = "soap:Server"
VERSION_MISMATCH = "soap:VersionMismatch"
MUST_UNDERSTAND = "soap:MustUnderstand"

_S = "{" + SOAP_NS + "}"
_H = "{" + HUB_SOAP_NS + "}"
_WSDL_SOAP = "{http://schemas.xmlsoap.org/wsdl/soap/}"
_XS = "{http://www.w3.org/2001/XMLSchema}"
_HUB_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DECLARATION = re.compile(rb"\A<\?xml[^>]*\?>\s*")


class SoapFault(Exception):
    """A refusal answered with a fault code other than ``soap:Client``."""

    def __init__(self, faultcode: str, refused: Rejected, *, detail: bool = True) -> None:
        super().__init__(str(refused))
        self.faultcode, self.refused, self.detail = faultcode, refused, detail


Answer = tuple[bytes, dict[str, str]]
"""A body entry (serialised element, no XML declaration) and extra HTTP headers."""

Payload = bytes | str
"""What an operation takes from its Body element: plain data, read in the thread that parsed the request."""


@dataclass(frozen=True)
class Operation:
    name: str
    element: str
    """Clark name of the Body element that asks for this operation (document/literal)."""
    read: Callable[[etree._Element], Payload]
    handler: Callable[[Runtime, Request, Payload], Awaitable[Answer]]

    @property
    def action(self) -> str:
        """The SOAPAction the WSDL declares for it."""
        return f"{HUB_SOAP_NS}:{self.name}"


# --- the contract ---------------------------------------------------------------------------------


def wsdl_document(base_url: str) -> bytes:
    """The WSDL, with its service address and schema locations under ``base_url`` (no trailing slash)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring((schema_dir() / WSDL_FILE).read_bytes(), parser=parser)
    for address in root.iter(_WSDL_SOAP + "address"):
        address.set("location", f"{base_url}/soap")
    for reference in root.iter(_XS + "import", _XS + "include"):
        name = reference.get("schemaLocation")
        if name in SCHEMA_NAMES:
            reference.set("schemaLocation", f"{base_url}/soap/schemas/{name}")
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def get_wsdl(request: Request) -> Response:
    # The address inside depends on the Host header: never let a shared cache keep it.
    return Response(
        wsdl_document(_base_url(request)), media_type="text/xml", headers={"Cache-Control": "no-store", "Vary": "Host"}
    )


async def get_soap(request: Request) -> Response:
    if any(key.lower() == "wsdl" for key in request.query_params):
        return await get_wsdl(request)
    return PlainTextResponse(
        "The SOAP 1.1 door of ebox-hub: POST SOAP requests here (Content-Type text/xml). The contract: GET /soap?wsdl",
        status_code=400,
    )


async def get_schema(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in SCHEMA_NAMES:
        return PlainTextResponse(f"no schema {name!r}; the WSDL imports {', '.join(sorted(SCHEMA_NAMES))}.", 404)
    return Response((schema_dir() / name).read_bytes(), media_type="application/xml")


# --- requests ---------------------------------------------------------------------------------------


def _require_soap11(request: Request) -> None:
    kind, _, parameters = request.headers.get("content-type", "").partition(";")
    kind = kind.strip().lower()
    if kind == "application/soap+xml":
        raise SoapFault(
            VERSION_MISMATCH,
            Rejected(
                ErrorCode.CONTENT_TYPE_INVALID,
                f"SOAP 1.2 (application/soap+xml) is not served; send SOAP 1.1: Content-Type text/xml and "
                f"the envelope namespace {SOAP_NS}.",
            ),
        )
    if kind != "text/xml":
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID,
            f"send SOAP 1.1 requests as text/xml (Content-Type was {kind or 'missing'!r}).",
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "us-ascii"):
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, f"send the request in UTF-8 (charset was {charset!r}).")


def _soap_refusal(message: str, element: etree._Element | None = None) -> Rejected:
    if element is None:
        return Rejected(ErrorCode.SCHEMA_INVALID, message)
    return Rejected(ErrorCode.SCHEMA_INVALID, message, path=element_path(element), line=element.sourceline)


def body_entry(root: etree._Element) -> etree._Element:
    """The one element inside ``soap:Body``, once the envelope is known to be a SOAP 1.1 request for the hub."""
    name = etree.QName(root)
    if name.localname == "Envelope" and name.namespace != SOAP_NS:
        version = "a SOAP 1.2 envelope" if name.namespace == SOAP12_NS else f"an envelope in {name.namespace!r}"
        raise SoapFault(
            VERSION_MISMATCH,
            _soap_refusal(f"this is {version}; the hub serves SOAP 1.1 (envelope namespace {SOAP_NS}).", root),
        )
    if root.tag != _S + "Envelope":
        raise _soap_refusal(
            f"the request is not a SOAP envelope (root element {root.tag!r}); wrap the envelope in "
            f"soap:Envelope/soap:Body ({SOAP_NS}), or post it as it is to /v1/messages.",
            root,
        )
    children = list(root)
    header = children.pop(0) if children and children[0].tag == _S + "Header" else None
    if not children or children[0].tag != _S + "Body":
        raise _soap_refusal("the SOAP envelope has no Body: send soap:Header (optional), then soap:Body.", root)
    body = children[0]
    if header is not None:
        _refuse_mandatory_headers(header)
    entries = list(body)
    if len(entries) != 1 or (body.text or "").strip() or any((entry.tail or "").strip() for entry in entries):
        raise _soap_refusal(
            f"the SOAP Body must hold exactly one element, the request of one operation (found {len(entries)}).", body
        )
    return entries[0]


def _refuse_mandatory_headers(header: etree._Element) -> None:
    for block in header:
        mandatory = (block.get(_S + "mustUnderstand") or "0").strip() in ("1", "true")
        for_us = (block.get(_S + "actor") or NEXT_ACTOR) == NEXT_ACTOR
        if mandatory and for_us:
            # SOAP 1.1 section 4.4: header errors carry no detail element.
            raise SoapFault(
                MUST_UNDERSTAND,
                _soap_refusal(f"the header block {block.tag!r} is marked mustUnderstand; the hub does not process it."),
                detail=False,
            )


def _operation(entry: etree._Element) -> Operation:
    operation = OPERATIONS.get(entry.tag)
    if operation is None:
        known = ", ".join(f"{op.name} ({op.element})" for op in OPERATIONS.values())
        raise _soap_refusal(f"no operation takes {entry.tag!r} in the Body; this door serves {known}.", entry)
    return operation


def _check_action(request: Request, operation: Operation) -> None:
    """SOAPAction may be quoted or empty (the Body decides); any other value must be the operation's."""
    raw = request.headers.get("soapaction")
    if raw is None:
        return
    action = raw.strip()
    if len(action) >= 2 and action[0] == action[-1] == '"':
        action = action[1:-1].strip()
    if action and action != operation.action:
        raise _soap_refusal(
            f"SOAPAction {raw!r} does not name the operation of the Body ({operation.name}); "
            f'send SOAPAction "{operation.action}" (or an empty one).'
        )


def extract(entry: etree._Element) -> bytes:
    """The Body's envelope as a document of its own: the bytes the hub verifies, stores and digests.

    The element with its own namespace declarations, plus those of the SOAP envelope its names use
    (declared on it), without the whitespace around it; UTF-8 with an XML declaration. For an envelope
    embedded as a standard serialiser wrote it, these are the bytes of the signed file.
    """
    own = copy.deepcopy(entry)
    own.tail = None
    return etree.tostring(own, xml_declaration=True, encoding="UTF-8")


def _without_declaration(document: bytes) -> bytes:
    return _DECLARATION.sub(b"", document, count=1)


def _read_request(data: bytes, limits: ParseLimits) -> tuple[Operation, Payload]:
    entry = body_entry(parse(data, limits=limits))
    operation = _operation(entry)
    return operation, operation.read(entry)


# --- operations -------------------------------------------------------------------------------------


async def publish_message(runtime: Runtime, request: Request, envelope: Payload) -> Answer:
    assert isinstance(envelope, bytes)
    party = certificate_party(runtime, request)
    receipt = await run_in_threadpool(runtime.intake.submit, envelope, door="soap", client_party=party)
    # The receipt travels verbatim: its bytes are those the hub signed and stored.
    return _without_declaration(receipt.xml), {"X-Hub-Message-Id": receipt.message_id}


def _hub_message_id(entry: etree._Element) -> str:
    children = list(entry)
    if len(children) != 1 or children[0].tag != _H + "HubMessageId" or len(children[0]) or (entry.text or "").strip():
        raise _soap_refusal(
            f"GetMessageStatus holds exactly one HubMessageId element (namespace {HUB_SOAP_NS}).", entry
        )
    value = (children[0].text or "").strip()
    if not _HUB_MESSAGE_ID.fullmatch(value):
        raise _soap_refusal(
            f"HubMessageId {value[:64]!r} is not a hub message id; give the HubMessageId of the receipt.", children[0]
        )
    return value


async def get_message_status(runtime: Runtime, request: Request, message_id: Payload) -> Answer:
    assert isinstance(message_id, str)
    party = authenticated_party(runtime, request)
    message, events = await run_in_threadpool(runtime.intake.status, message_id, requester=party)
    return etree.tostring(status_element(message, events), encoding="UTF-8", xml_declaration=False), {}


OPERATIONS: dict[str, Operation] = {
    op.element: op
    for op in (
        Operation("publishMessage", f"{{{ENVELOPE_NS}}}PublishMessage", extract, publish_message),
        Operation("getMessageStatus", _H + "GetMessageStatus", _hub_message_id, get_message_status),
    )
}


# --- answers ------------------------------------------------------------------------------------------


def soap_envelope(entry: bytes) -> bytes:
    """A SOAP 1.1 response around one serialised body entry, left byte for byte as it is."""
    return (
        b"<?xml version='1.0' encoding='UTF-8'?>\n"
        b'<soap:Envelope xmlns:soap="' + SOAP_NS.encode() + b'"><soap:Body>' + entry + b"</soap:Body></soap:Envelope>"
    )


def fault_document(faultcode: str, refused: Rejected, *, detail: bool = True) -> bytes:
    envelope = etree.Element(_S + "Envelope", nsmap={"soap": SOAP_NS})
    fault = etree.SubElement(etree.SubElement(envelope, _S + "Body"), _S + "Fault")
    etree.SubElement(fault, "faultcode").text = faultcode
    etree.SubElement(fault, "faultstring").text = refused.message
    if detail:
        etree.SubElement(fault, "detail").append(error_element(refused))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def fault_response(
    faultcode: str, refused: Rejected, *, detail: bool = True, status: int = 500, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        fault_document(faultcode, refused, detail=detail), status_code=status, media_type="text/xml", headers=headers
    )


async def post_soap(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    try:
        _require_soap11(request)
        data = await read_body(request, limit=settings.max_envelope_bytes, timeout=settings.http_timeout_s)
        limits = ParseLimits(
            max_bytes=settings.max_envelope_bytes, max_depth=runtime.intake.parse_limits.max_depth + SOAP_DEPTH
        )
        operation, payload = await run_in_threadpool(_read_request, data, limits)
        _check_action(request, operation)
        body, headers = await operation.handler(runtime, request, payload)
        return Response(soap_envelope(body), media_type="text/xml", headers=headers)
    except SoapFault as fault:
        return fault_response(fault.faultcode, fault.refused, detail=fault.detail)
    except Rejected as refused:
        return fault_response(CLIENT, refused, headers=closing(refused))
    except Unavailable as exc:
        log.warning("unavailable", extra={"event": "unavailable", "path": request.url.path, "door": "soap"})
        return fault_response(
            SERVER, Rejected(ErrorCode.SERVICE_UNAVAILABLE, str(exc)), status=503, headers={"Retry-After": "5"}
        )


def routes() -> list[Route]:
    return [
        Route("/soap", get_soap, methods=["GET"]),
        Route("/soap", post_soap, methods=["POST"]),
        Route("/soap/wsdl", get_wsdl, methods=["GET"]),
        Route("/soap/schemas/{name}", get_schema, methods=["GET"]),
    ]
