"""The e-Box EBoxMessage v1 SOAP door: institutions' existing e-Box clients, pointed at the hub unchanged.

POST /ebox/soap/EboxMessage/v1     SOAP 1.1 document/literal, as the official WSDL says (use its address here):
    publishEboxMessage   -> one message per RecipientID (up to 5), accepted all or none by
                            ``Intake.submit_on_behalf_all`` (door ``ebox-soap``); the response's ID is the
                            (first recipient's) hub message id; a replacement withdraws what it replaces
    hasAnEbox            -> the recipient directory (exists, exclusively e-Box, last connection date)
    getMessageStatus     -> HasBeenConsulted from the hub's events (opened / replied), per e-Box and
                            Ticket/Sequence (the newest message when it was replaced)
    healthCheck          -> the monitoring answer (PING: the door; DEFAULT/DEEP: and the database / broker)

Requests are ``text/xml``, or ``multipart/related`` with the files as MIME parts named by swaRef
(``hub.compat.ebox_soap_mime``). Every operation but healthCheck needs WS-Security: an X.509
BinarySecurityToken registered for a sender or an integrator, a signature over the Body and a fresh
Timestamp, never replayed (``hub.compat.ebox_soap_wssecurity``); successful answers are signed with the
hub's key (the policy's recipient token). Refusals are the contract's faults
(``hub.compat.ebox_soap_faults``). The mapping onto the hub's message is ``hub.compat.ebox_soap_mapping``;
from acceptance on, the message is like any other. Nothing personal is logged.

The door's settings live on ``app.state.ebox_soap`` (``DoorSettings``): the timestamp freshness, the
language given to the texts (the contract has none), the replay cache, and whether answers are signed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

from lxml import etree
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from hub.compat import ebox_soap_mapping as mapping
from hub.compat import ebox_soap_schema as schema
from hub.compat.ebox_soap_faults import Fault, fault_document, fault_of, unavailable_fault
from hub.compat.ebox_soap_mime import SoapRequest, split_request
from hub.compat.ebox_soap_wssecurity import (
    NEXT_ACTOR,
    WSSE_NS,
    Authenticated,
    Freshness,
    Unfresh,
    authenticate,
    signed_response,
)
from hub.envelope.model import Language
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.acceptance import Receipt
from hub.inbound.http import UNREAD_BODY, read_body
from hub.lifecycle.retention import RetentionScheduler
from hub.routing.directory import Directory, recipient_key
from hub.routing.recipients import RecipientKind
from hub.runtime import Runtime
from hub.safexml import ParseLimits, parse
from hub.signing.truststore import TrustedCertificate
from hub.store.db import ping, unavailable_on_outage
from hub.store.models import Event, Message
from hub.store.single_use import SingleUse

log = logging.getLogger("hub.compat.ebox_soap")

PATH = "/ebox/soap/EboxMessage/v1"
DOOR = "ebox-soap"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MAX_DEPTH = 24
"""Envelope/Header/Security/Signature/SignedInfo/Reference/Transforms/Transform/InclusiveNamespaces is 9."""

_S = "{" + SOAP_NS + "}"
_E = "{" + schema.EBOX_NS + "}"
_T = "{" + schema.TYPES_NS + "}"
_M = "{" + schema.MONITORING_NS + "}"
_UNDERSTOOD = frozenset({"{" + WSSE_NS + "}Security"})
_NOT_SERVED = (
    "GetEboxInfoRequest",
    "StoreEboxMessageRequest",
    "LinkEboxMessageRequest",
    "CommitLinkEboxMessageRequest",
)


@dataclass
class DoorSettings:
    freshness: Freshness = field(default_factory=Freshness)
    language: Language = Language.FR
    """The language of the texts (Title, FreeText): EBoxMessage v1 does not say which."""
    replays: SingleUse | None = None
    """The register of signatures already received (``hub.store.single_use``: shared by every worker
    process); made from the runtime's store on first use."""
    sign_responses: bool = True
    """Sign successful responses with the hub's key (the policy's recipient token); faults are not signed."""
    response_lifetime: timedelta = timedelta(minutes=5)


class SoapFault(Exception):
    def __init__(self, fault: Fault) -> None:
        super().__init__(fault.message)
        self.fault = fault


def door_settings(request: Request) -> DoorSettings:
    state = request.app.state
    settings: DoorSettings | None = getattr(state, "ebox_soap", None)
    if settings is None:
        settings = DoorSettings()
        state.ebox_soap = settings
    return settings


# --- the SOAP envelope ---------------------------------------------------------------------------------------


def body_entry(root: etree._Element) -> etree._Element:
    """The one element of the SOAP 1.1 Body; mandatory headers other than wsse:Security are refused."""
    name = etree.QName(root)
    if name.localname == "Envelope" and name.namespace != SOAP_NS:
        raise SoapFault(
            Fault(
                "soap:VersionMismatch",
                "INVALID_REQUEST",
                ErrorCode.CONTENT_TYPE_INVALID,
                f"EBoxMessage v1 is SOAP 1.1 (envelope namespace {SOAP_NS}).",
            )
        )
    if root.tag != _S + "Envelope":
        raise Rejected(ErrorCode.SCHEMA_INVALID, "the request is not a SOAP 1.1 envelope.")
    children = [child for child in root if isinstance(child.tag, str)]
    header = children.pop(0) if children and children[0].tag == _S + "Header" else None
    if len(children) != 1 or children[0].tag != _S + "Body":
        raise Rejected(ErrorCode.SCHEMA_INVALID, "the SOAP envelope holds an optional Header, then one Body.")
    for block in header if header is not None else ():
        mandatory = (block.get(_S + "mustUnderstand") or "0").strip() in ("1", "true")
        if mandatory and block.tag not in _UNDERSTOOD and (block.get(_S + "actor") or NEXT_ACTOR) == NEXT_ACTOR:
            raise SoapFault(
                Fault(
                    "soap:MustUnderstand",
                    "INVALID_REQUEST",
                    ErrorCode.SCHEMA_INVALID,
                    f"the header {str(block.tag)[:100]!r} is mandatory and the hub does not process it.",
                )
            )
    entries = [child for child in children[0] if isinstance(child.tag, str)]
    if len(entries) != 1:
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"the SOAP Body holds one request element (found {len(entries)}).")
    return entries[0]


def _operation(entry: etree._Element) -> str:
    name = etree.QName(entry)
    if entry.tag == _M + "HealthCheckRequest":
        return "healthCheck"
    if name.namespace == schema.EBOX_NS:
        if name.localname in ("PublishEboxMessageRequest", "HasAnEboxRequest", "GetMessageStatusRequest"):
            return name.localname
        if name.localname in _NOT_SERVED:
            raise mapping.Refused(
                ErrorCode.SCHEMA_INVALID,
                "OPERATION_NOT_SUPPORTED",
                f"{name.localname[:-7]} is internal to the e-Box platform and not served by the hub.",
            )
    raise Rejected(
        ErrorCode.SCHEMA_INVALID,
        f"no EBoxMessage v1 operation takes {name.localname[:80]!r}: this door serves publishEboxMessage, "
        "hasAnEbox, getMessageStatus and healthCheck.",
    )


# --- operations ------------------------------------------------------------------------------------------------


def _record(runtime: Runtime, refused: Rejected, party: str, now: datetime) -> None:
    """Count a refusal the door made itself for an authenticated sender, as the intake counts its own."""
    runtime.intake.record_refusal(refused, party=party, door=DOOR, now=now)


def publish(
    runtime: Runtime, entry: etree._Element, request: SoapRequest, credential: TrustedCertificate, language: Language
) -> etree._Element:
    """One message per RecipientID, all accepted or none (``Intake.submit_on_behalf_all``); the answer's ID is
    the first recipient's hub message id. The same Ticket/Sequence again: the same content is a repeat (the
    original answer); other content is refused DUPLICATE_MESSAGE, unless the institution may replace
    (``senders.yaml`` ``may_replace``): then it is published anew (the keys' next generation) and the
    messages of the current generation are withdrawn in the same transaction (``hub.lifecycle.retention``)."""
    now = runtime.intake.clock()
    try:
        schema.check(entry)
        envelopes = mapping.publish_to_envelopes(
            entry,
            request,
            party=credential.party,
            directory=runtime.directory,
            now=now,
            language=language,
            environment=runtime.intake.environment,
        )
    except Rejected as refused:
        _record(runtime, refused, credential.party, now)
        raise
    digest = mapping.requests_digest(envelopes)
    ticket, sequence = mapping.message_ids(entry.find(_T + "MessageID"))
    institution_id = envelopes[0].header.sender.institution_id
    integrator = runtime.directory.integrators.get(credential.party)
    acting = credential.party == institution_id or (integrator is not None and institution_id in integrator.mandates)
    # Not the institution's to send: the intake refuses it; what is stored under its tickets is not looked at.
    generation, current = _current(runtime, institution_id, ticket, sequence) if acting else (1, [])
    then = None
    keys = {envelope.header.sender_message_id for envelope in mapping.keyed(envelopes, ticket, sequence, generation)}
    if current and any(row.envelope_sha256 != digest.hex() for row in current):
        institution = runtime.directory.institutions.get(institution_id)
        if institution is not None and institution.may_replace and generation < mapping.MAX_GENERATION:
            generation += 1
            then = _withdrawal(runtime, [row.id for row in current])
        elif keys != {row.sender_message_id for row in current}:  # another set of recipients: no key to refuse by
            duplicate = Rejected(
                ErrorCode.DUPLICATE_MESSAGE_ID,
                f"Ticket/Sequence already used for another request (hub message {current[0].id}); give each "
                "message its own Sequence.",
                path="/PublishMessage/Header/SenderMessageId",
            )
            _record(runtime, duplicate, credential.party, now)
            raise duplicate
    if generation > 1:
        envelopes = mapping.keyed(envelopes, ticket, sequence, generation)
    receipts = runtime.intake.submit_on_behalf_all(
        envelopes, credential=credential, door=DOOR, request_digest=digest, then=then
    )
    return mapping.publish_response(receipts[0].message_id)


class _Row(NamedTuple):
    id: str
    sender_message_id: str
    envelope_sha256: str


def _current(runtime: Runtime, institution_id: str, ticket: str, sequence: int | None) -> tuple[int, list[_Row]]:
    """The latest generation of an institution's messages under Ticket/Sequence and its messages; (1, []) if none."""
    with unavailable_on_outage(), runtime.sessions() as session:
        rows = session.execute(
            select(Message.id, Message.sender_message_id, Message.envelope_sha256).where(
                Message.institution_id == institution_id,
                Message.sender_message_id.startswith(mapping.ticket_part(ticket) + ":", autoescape=True),
            )
        ).all()
    by_generation: dict[int, list[_Row]] = {}
    for row in rows:
        parts = mapping.key_parts(row.sender_message_id, ticket)
        if parts is not None and parts[0] == sequence:
            by_generation.setdefault(parts[2], []).append(_Row(*row))
    if not by_generation:
        return 1, []
    latest = max(by_generation)
    return latest, by_generation[latest]


def _withdrawal(runtime: Runtime, replaced: list[str]) -> Callable[[Session, list[Receipt], datetime], None]:
    """Withdraw the ``replaced`` messages by the expiry path, in the transaction that stores their replacement."""

    def withdraw(session: Session, receipts: list[Receipt], now: datetime) -> None:
        why = {"reason": "replaced", "replaced_by": [receipt.message_id for receipt in receipts]}
        report = RetentionScheduler.for_runtime(runtime).withdraw(session, replaced, now, why=why)
        log.info(
            "replaced",
            extra={"event": "replaced", "door": DOOR, "withdrawn": report.expired, "notices": report.notices},
        )

    return withdraw


def has_an_ebox(runtime: Runtime, entry: etree._Element) -> etree._Element:
    schema.check(entry)
    ebox_type, _ = mapping.audience(entry)
    keys: list[tuple[RecipientKind, str] | None] = []
    for item in entry.iterchildren(_T + "EboxID"):
        try:
            kind, ident, _ = mapping.entity(item)
        except mapping.Refused:
            keys.append(None)  # NIHII: no such e-Box at the hub
            continue
        mapping.check_audience(kind, ebox_type, item)
        try:
            keys.append(recipient_key(kind.value, ident))
        except Rejected as refused:
            raise mapping.Refused(refused.code, "INVALID_RECIPIENT", refused.message, element=item) from None
    now = runtime.intake.clock()
    found = Directory(runtime.sessions, clock=runtime.intake.clock).get_many([k for k in keys if k is not None])
    answers = []
    for key in keys:
        recipient = found.get(key) if key is not None else None
        exists = recipient is not None and recipient.digital_at(now)
        last = recipient.last_connection if exists and recipient is not None else None
        answers.append(
            (exists, exists and recipient is not None and recipient.exclusive, last.date() if last else None)
        )
    return mapping.has_an_ebox_response(entry, answers)


def _status_of(runtime: Runtime, party: str, item: etree._Element) -> mapping.StatusAnswer:
    ticket, sequence = mapping.message_ids(item.find(_T + "MessageID"))
    try:
        kind, ident, _ = mapping.entity(item.find(_T + "EboxID"))
    except mapping.Refused:
        return "NOT_FOUND"
    integrator = runtime.directory.integrators.get(party)
    institutions = {party, *(integrator.mandates if integrator is not None else ())}
    with unavailable_on_outage(), runtime.sessions() as session:
        rows = session.execute(
            select(Message.id, Message.state, Message.sender_message_id, Message.institution_id, Message.submitter_id)
            .where(
                or_(Message.institution_id.in_(institutions), Message.submitter_id == party),
                Message.sender_message_id.startswith(mapping.ticket_part(ticket) + ":", autoescape=True),
                Message.recipient_kind == kind.value,
                Message.recipient_id == ident,
            )
            .order_by(Message.accepted_at.desc())
            .limit(100)
        ).all()
        # Per (institution, Sequence): the newest generation's message (a replaced one answers no more).
        latest: dict[tuple[str, int | None], tuple[int, Any]] = {}
        for row in rows:
            parts = mapping.key_parts(row.sender_message_id, ticket)
            if parts is None or (sequence is not None and parts[0] != sequence):
                continue
            key = (row.institution_id, parts[0])
            if key not in latest or parts[2] > latest[key][0]:
                latest[key] = (parts[2], row)
        matches = [row for _, row in latest.values()]
        if not matches:
            return "NOT_FOUND"
        if len(matches) > 1:
            return "MULTIPLE_RESULTS_SPECIFY_SEQUENCE"
        row = matches[0]
        # Only the requester's own messages were looked at: another sender's answers NOT_FOUND (the hub never
        # confirms that another sender's message exists), so NOT_AUTHORIZED stays a safeguard.
        if not runtime.directory.may_read(party, row.institution_id, row.submitter_id):
            return "NOT_AUTHORIZED"
        kinds = session.scalars(select(Event.kind).where(Event.message_id == row.id)).all()
    return mapping.has_been_consulted(row.state, kinds)


def message_status(runtime: Runtime, entry: etree._Element, credential: TrustedCertificate) -> etree._Element:
    schema.check(entry)
    answers = [_status_of(runtime, credential.party, item) for item in entry.iterchildren(_T + "Message")]
    return mapping.message_status_response(entry, answers)


async def health(runtime: Runtime, request: Request, entry: etree._Element) -> etree._Element:
    kind = (entry.get("type") or "DEFAULT").strip()
    if kind not in ("PING", "DEFAULT", "DEEP"):
        raise Rejected(ErrorCode.SCHEMA_INVALID, "HealthCheckRequest type is PING, DEFAULT or DEEP.")
    checks: list[tuple[str, str, int]] = []
    if kind != "PING":
        probes = [("database", lambda: ping(runtime.engine))]
        broker = getattr(request.app.state, "broker_probe", None)
        if kind == "DEEP" and broker is not None:
            probes.append(("broker", broker))
        for name, probe in probes:
            started = time.monotonic()
            try:
                await run_in_threadpool(probe)
                level = "OK"
            except Unavailable:
                level = "CRITICAL"
            checks.append((name, level, int((time.monotonic() - started) * 1000)))
    overall = "CRITICAL" if any(level != "OK" for _, level, _ in checks) else "OK"
    try:
        hub_version = version("ebox-hub")
    except PackageNotFoundError:
        hub_version = "0"
    return mapping.health_response(
        level=overall,
        environment=runtime.intake.environment,
        host=socket.gethostname(),
        version=hub_version,
        checks=checks,
        now=runtime.intake.clock(),
    )


# --- HTTP ---------------------------------------------------------------------------------------------------


def _authenticated(runtime: Runtime, root: etree._Element, settings: DoorSettings) -> Authenticated:
    now = runtime.intake.clock()
    try:
        authenticated = authenticate(root, trust=runtime.intake.verifier.trust, now=now, freshness=settings.freshness)
        if settings.replays is None:
            settings.replays = SingleUse(runtime.sessions)
        signature, until = authenticated.signature_value, authenticated.remember_until
        if not settings.replays.first_use("ws-security", signature, until, now):
            raise Unfresh("SECURITY_REPLAY", "this signed request was already received (a replay); sign it anew.")
    except Rejected as refused:
        raise SoapFault(fault_of(refused, security=True)) from None
    return authenticated


def soap_envelope(answer: etree._Element) -> bytes:
    body = etree.tostring(answer, encoding="UTF-8")
    return (
        b"<?xml version='1.0' encoding='UTF-8'?>\n"
        b'<soap:Envelope xmlns:soap="' + SOAP_NS.encode() + b'"><soap:Body>' + body + b"</soap:Body></soap:Envelope>"
    )


def _read(data: bytes, content_type: str, limit: int) -> tuple[SoapRequest, etree._Element, etree._Element, str]:
    request = split_request(content_type, data)
    root = parse(request.soap, limits=ParseLimits(max_bytes=limit, max_depth=MAX_DEPTH))
    entry = body_entry(root)
    return request, root, entry, _operation(entry)


async def post_soap(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    settings = door_settings(request)
    environment = runtime.intake.environment
    operation = "?"
    try:
        limit = runtime.settings.max_envelope_bytes
        data = await read_body(request, limit=limit, timeout=runtime.settings.http_timeout_s)
        soap, root, entry, operation = await run_in_threadpool(
            _read, data, request.headers.get("content-type", ""), limit
        )
        if operation == "healthCheck":
            answer = await health(runtime, request, entry)
        else:
            authenticated = await run_in_threadpool(_authenticated, runtime, root, settings)
            if entry.getparent() is not authenticated.body:
                raise SoapFault(
                    fault_of(Rejected(ErrorCode.SIGNATURE_SCOPE, "the Body read is not the one signed."), security=True)
                )
            credential = authenticated.credential
            if operation == "PublishEboxMessageRequest":
                answer = await run_in_threadpool(publish, runtime, entry, soap, credential, settings.language)
            elif operation == "HasAnEboxRequest":
                answer = await run_in_threadpool(has_an_ebox, runtime, entry)
            else:
                answer = await run_in_threadpool(message_status, runtime, entry, credential)
        if settings.sign_responses:
            document = signed_response(
                answer, runtime.hub_keys, now=runtime.intake.clock(), lifetime=settings.response_lifetime
            )
        else:
            document = soap_envelope(answer)
        return Response(document, media_type="text/xml; charset=utf-8")
    except SoapFault as raised:
        fault = raised.fault
    except Rejected as refused:
        fault = fault_of(refused)
    except Unavailable as exc:
        log.warning("unavailable", extra={"event": "unavailable", "door": DOOR, "operation": operation})
        fault = unavailable_fault(str(exc))
    log.info("refused", extra={"event": "refused", "door": DOOR, "operation": operation, "code": fault.code})
    headers = (
        {"Retry-After": "5"} if fault.system else {"Connection": "close"} if fault.hub_code in UNREAD_BODY else None
    )
    return Response(
        fault_document(fault, environment=environment),
        status_code=fault.status,
        media_type="text/xml; charset=utf-8",
        headers=headers,
    )


async def get_soap(request: Request) -> Response:
    return PlainTextResponse(
        "The e-Box EBoxMessage v1 door of ebox-hub (SOAP 1.1). Use the official EboxMessage-X509Sha256_v1.wsdl "
        "with this address; POST requests here. Operations: publishEboxMessage, hasAnEbox, getMessageStatus, "
        "healthCheck.",
        status_code=400 if request.query_params else 200,
    )


def routes() -> list[BaseRoute]:
    return [Route(PATH, post_soap, methods=["POST"]), Route(PATH, get_soap, methods=["GET"])]
