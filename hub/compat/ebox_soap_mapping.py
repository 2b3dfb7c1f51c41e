"""EBoxMessage v1 <-> the hub's message model: pure functions, no I/O.

``publishEboxMessage`` becomes one ``Envelope`` per RecipientID (``docs/ebox-compatibility.md`` has the table):

- MessageID Ticket + Sequence -> ``sender_message_id`` (``sender_key``): the idempotency key; with several
  recipients, each message's key adds the recipient's position (``/1`` .. ``/5``), and a replacement (a
  sender that may replace) the generation (``-r2``, ``-r3``, ...);
- SenderID Institution / Application -> the sender (an integrator's certificate with another institution's
  CBE: ``on_behalf_of``); without SenderID, the certificate's institution and its only application;
- RecipientID (1 to 5, each another e-Box) -> the recipient: INSS a citizen, CompanyID (+ SubentityId) an
  enterprise, Person the "for the attention of"; EboxType must agree; a QualityCode travels as business data;
- MessageType -> the message type; IsRegistered -> registered mail;
- Document / Annex (swaRef) -> the main document / annexes: the MIME part's bytes, the declared Digest
  checked; Title -> the subject and the document's title;
- FreeInformation FreeText -> the body; Table and Meta -> business data.

Texts are in ``language`` (EBoxMessage v1 has no language): the door's default.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime

from lxml import etree

from hub.compat.ebox_soap_mime import SoapRequest
from hub.compat.ebox_soap_schema import EBOX_NS, MONITORING_NS, TYPES_NS
from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.errors import ErrorCode, Rejected
from hub.inbound.senders import SenderDirectory
from hub.safexml import element_path

_E = "{" + EBOX_NS + "}"
_T = "{" + TYPES_NS + "}"
_M = "{" + MONITORING_NS + "}"

TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}")
"""The hub's identifiers (``t:Token64``): message types, application ids, sender message ids."""
KEY_PLAIN, KEY_HASHED = "ebox:", "eboxh:"
NO_SEQUENCE = "none"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
DIGESTS = {"SHA-256": "sha256", "SHA-512": "sha512"}
"""e-Box DigestMethod -> hashlib; SHA-1 (deprecated by the contract since 2018) is refused."""


class Refused(Rejected):
    """A refusal with the door's own e-Box code where the hub's code alone would not say it."""

    def __init__(self, code: ErrorCode, ebox_code: str, message: str, *, element: etree._Element | None = None) -> None:
        super().__init__(code, message, path=element_path(element) if element is not None else None)
        self.ebox_code = ebox_code


def _text(element: etree._Element, path: str) -> str | None:
    value = element.findtext(path)
    return value.strip() if value is not None else None


# --- identifiers ---------------------------------------------------------------------------------------


def ticket_part(ticket: str) -> str:
    """The Ticket in a sender message id: itself when it is a hub token, else a digest of it."""
    if TOKEN.fullmatch(ticket) and len(ticket) <= 25:
        return KEY_PLAIN + ticket
    return KEY_HASHED + hashlib.sha256(ticket.encode()).hexdigest()[:40]


def sender_key(ticket: str, sequence: int | None) -> str:
    """The hub's ``sender_message_id`` of a Ticket + Sequence (at most 52 characters)."""
    return f"{ticket_part(ticket)}:{NO_SEQUENCE if sequence is None else sequence}"


MAX_RECIPIENTS = 5
"""RecipientID maxOccurs in the contract."""
MAX_GENERATION = 99_999_999
"""Replacements of one Ticket/Sequence the keys can number (``-r`` and 8 digits: a key stays within 64)."""
_REST = re.compile(r"(none|[0-9]+)(?:/([1-5]))?(?:-r([0-9]{1,8}))?")


def message_key(ticket: str, sequence: int | None, position: int | None = None, generation: int = 1) -> str:
    """The ``sender_message_id`` of a recipient's message of a Ticket + Sequence (at most 64 characters).

    ``position``: the recipient's place (1-5) in a request with several (None: the only one, the key is
    ``sender_key``'s); ``generation``: 1 for the first content, 2 and on for replacements."""
    key = sender_key(ticket, sequence)
    if position is not None:
        key += f"/{position}"
    if generation > 1:
        key += f"-r{generation}"
    return key


def key_parts(key: str, ticket: str) -> tuple[int | None, int | None, int] | None:
    """(Sequence, position, generation) of a key of ``ticket`` (``message_key``); None when it is not ``ticket``'s."""
    prefix = ticket_part(ticket) + ":"
    if not key.startswith(prefix):
        return None
    found = _REST.fullmatch(key[len(prefix) :])
    if found is None:
        return None
    sequence, position, generation = found.groups()
    return (
        None if sequence == NO_SEQUENCE else int(sequence),
        None if position is None else int(position),
        1 if generation is None else int(generation),
    )


def sequence_of(key: str, ticket: str) -> int | bool | None:
    """The Sequence of a sender key of ``ticket`` (None: none given); False when the key is not ``ticket``'s."""
    parts = key_parts(key, ticket)
    return False if parts is None else parts[0]


def message_ids(element: etree._Element) -> tuple[str, int | None]:
    """(Ticket, Sequence) of a MessageID element."""
    ticket = element.findtext(_T + "Ticket") or ""
    sequence = _text(element, _T + "Sequence")
    return ticket, (int(sequence) if sequence is not None else None)


def entity(element: etree._Element) -> tuple[m.EboxType, str, str | None]:
    """(kind, id, sub-entity) of an EntityID; NIHII is refused (the hub's recipients are citizens and enterprises)."""
    ssin = _text(element, _T + "INSS")
    if ssin is not None:
        return m.EboxType.CITIZEN, ssin, None
    cbe = _text(element, _T + "CompanyID")
    if cbe is not None:
        return m.EboxType.ENTERPRISE, cbe, _text(element, _T + "SubentityId")
    raise Refused(
        ErrorCode.SCHEMA_INVALID,
        "INVALID_RECIPIENT",
        "NIHII e-Boxes are not served by the hub: address the citizen (INSS) or the enterprise (CompanyID).",
        element=element,
    )


def audience(element: etree._Element) -> tuple[str | None, str | None]:
    """(EboxType, QualityCode) of a request or recipient."""
    return _text(element, _T + "EboxType"), _text(element, _T + "QualityCode")


def check_audience(kind: m.EboxType, ebox_type: str | None, element: etree._Element) -> None:
    if ebox_type is not None and ebox_type.lower() != kind.value:
        raise Refused(
            ErrorCode.SCHEMA_INVALID,
            "INVALID_RECIPIENT",
            f"EboxType {ebox_type} does not fit the identifier given (a {kind.value}'s).",
            element=element,
        )


# --- publishEboxMessage -> Envelope -----------------------------------------------------------------------


def _sender(request: etree._Element, party: str, directory: SenderDirectory) -> m.Sender:
    given = request.find(_T + "SenderID")
    if given is not None:
        institution = _text(given, _T + "Institution") or ""
        application = _text(given, _T + "Application") or ""
    else:
        known = directory.institutions.get(party)
        applications = sorted(known.applications) if known is not None else []
        if len(applications) != 1:
            raise Refused(
                ErrorCode.INVALID_SENDER,
                "INVALID_SENDER",
                "give SenderID (Application and Institution): the certificate's organisation has "
                f"{len(applications)} applications registered, so the hub cannot choose one.",
                element=request,
            )
        institution, application = party, applications[0]
    if not TOKEN.fullmatch(application):
        raise Refused(
            ErrorCode.INVALID_SENDER,
            "INVALID_SENDER",
            f"application {application[:40]!r} is not registered for {institution}.",
            element=given,
        )
    return m.Sender(
        organization_id=party, application_id=application, on_behalf_of=institution if institution != party else None
    )


def _recipient(element: etree._Element) -> m.Recipient:
    kind, ident, sub = entity(element)
    ebox_type, _ = audience(element)
    check_audience(kind, ebox_type, element)
    person = element.find(_T + "Person")
    attention = None
    if person is not None:
        name = f"{_text(person, _T + 'FirstName')} {_text(person, _T + 'LastName')}"
        attention = m.ForTheAttentionOf(ssin=_text(person, _T + "INSS"), name=name)
    return m.Recipient(ebox_type=kind, id=ident, sub_entity_id=sub, for_the_attention_of=attention)


def _recipients(request: etree._Element) -> list[tuple[m.Recipient, etree._Element]]:
    """Each RecipientID (1 to 5), in order; the same e-Box twice is refused (its position named, not its number)."""
    elements = request.findall(_T + "RecipientID")
    if not 1 <= len(elements) <= MAX_RECIPIENTS:
        raise Refused(
            ErrorCode.SCHEMA_INVALID,
            "INVALID_RECIPIENT",
            f"a request has 1 to {MAX_RECIPIENTS} RecipientID (found {len(elements)}).",
            element=request,
        )
    found: list[tuple[m.Recipient, etree._Element]] = []
    seen: dict[tuple[m.EboxType, str, str | None], int] = {}
    for position, element in enumerate(elements, start=1):
        recipient = _recipient(element)
        box = (recipient.ebox_type, recipient.id, recipient.sub_entity_id)
        if box in seen:
            raise Refused(
                ErrorCode.SCHEMA_INVALID,
                "INVALID_RECIPIENT",
                f"RecipientID {position} is the e-Box of RecipientID {seen[box]}: name each recipient once.",
                element=element,
            )
        seen[box] = position
        found.append((recipient, element))
    return found


def _file(element: etree._Element, request: SoapRequest, lang: m.Language) -> m.Attachment:
    uri = _text(element, _T + "Content") or ""
    part = request.referenced(uri)
    if part is None:
        raise Refused(
            ErrorCode.SCHEMA_INVALID,
            "INVALID_ATTACHMENT",
            f"Content {uri[:80]!r} names no MIME part of the request: attach the file as a part whose Content-ID "
            "the swaRef (cid:...) names.",
            element=element,
        )
    digest = element.find(_T + "Digest")
    if digest is not None:
        method = _text(digest, _T + "DigestMethod") or ""
        algorithm = DIGESTS.get(method)
        if algorithm is None:
            raise Refused(
                ErrorCode.DIGEST_MISMATCH,
                "UNSUPPORTED_DIGEST_METHOD",
                f"DigestMethod {method} is not accepted (SHA-1 is deprecated): use SHA-256 or SHA-512.",
                element=digest,
            )
        declared = "".join((digest.findtext(_T + "DigestValue") or "").split())
        actual = base64.b64encode(hashlib.new(algorithm, part.content).digest()).decode()
        if not hmac.compare_digest(declared, actual):
            raise Refused(
                ErrorCode.DIGEST_MISMATCH,
                "DIGEST_MISMATCH",
                f"the {method} digest of the attachment {uri[:80]} does not match its content: the file changed "
                "or another file was attached.",
                element=digest,
            )
    media_type = _text(element, _T + "MIME") or part.content_type
    if not media_type:
        raise Refused(
            ErrorCode.MEDIA_TYPE_MISMATCH,
            "INVALID_ATTACHMENT",
            "give the file's MIME type (the MIME element, or the part's Content-Type).",
            element=element,
        )
    title = _text(element, _T + "Title") or ""
    return m.Attachment(
        file_name=_text(element, _T + "DownloadFileName") or "",
        media_type=media_type,
        size=len(part.content),
        digest=hashlib.sha256(part.content).digest(),
        content=part.content,
        titles=(m.Text(lang=lang, value=title),),
    )


def _business_data(
    request: etree._Element, recipient: etree._Element | None, lang: m.Language
) -> list[m.BusinessDataEntry]:
    entries: list[m.BusinessDataEntry] = []
    quality = _text(recipient, _T + "QualityCode") if recipient is not None else None
    if quality:
        entries.append(m.BusinessDataEntry(key="ebox.qualityCode", values=(quality,)))
    table = request.find(f"{_T}FreeInformation/{_T}Table")
    if table is not None:
        entries.append(m.BusinessDataEntry(key="ebox.table.title", values=(_text(table, _T + "Title") or "",)))
        for number, row in enumerate(table.iterchildren(_T + "Row"), start=1):
            entries.append(
                m.BusinessDataEntry(
                    key=f"ebox.table.{number}",
                    names=(m.Text(lang=lang, value=_text(row, _T + "LeftCell") or ""),),
                    values=(_text(row, _T + "RightCell") or "",),
                )
            )
    for number, meta in enumerate(request.iterchildren(_T + "Meta"), start=1):
        entries.append(
            m.BusinessDataEntry(
                key=f"ebox.meta.{number}",
                names=(m.Text(lang=lang, value=_text(meta, _T + "Type") or ""),),
                values=tuple((value.text or "").strip() for value in meta.iterchildren(_T + "Value")),
            )
        )
    return entries


def publish_to_envelopes(
    request: etree._Element,
    attachments: SoapRequest,
    *,
    party: str,
    directory: SenderDirectory,
    now: datetime,
    language: m.Language,
    environment: str,
) -> list[m.Envelope]:
    """The hub's messages for a (schema-checked) PublishEboxMessageRequest signed by ``party``: one per
    RecipientID, in order, the same content each, keyed by ``message_key`` (the first generation)."""
    ticket, sequence = message_ids(request.find(_T + "MessageID"))
    message_type = _text(request, _T + "MessageType") or ""
    sender = _sender(request, party, directory)
    recipients = _recipients(request)
    if not TOKEN.fullmatch(message_type):
        raise Refused(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            "UNKNOWN_MESSAGE_TYPE",
            f"message type {message_type[:80]!r} is not registered for {sender.institution_id}.",
            element=request.find(_T + "MessageType"),
        )
    document_element = request.find(_T + "Document")
    assert document_element is not None
    document = _file(document_element, attachments, language)
    annexes = tuple(_file(annex, attachments, language) for annex in request.iterchildren(_T + "Annex"))
    referenced = {document_element.findtext(_T + "Content")} | {
        annex.findtext(_T + "Content") for annex in request.iterchildren(_T + "Annex")
    }
    unreferenced = set(attachments.attachments) - {
        part.content_id for uri in referenced if uri and (part := attachments.referenced(uri)) is not None
    }
    if unreferenced:
        raise Refused(
            ErrorCode.SCHEMA_INVALID,
            "INVALID_ATTACHMENT",
            f"{len(unreferenced)} MIME part(s) are referenced by no Document or Annex; attach only what is published.",
        )
    free_text = _text(request, f"{_T}FreeInformation/{_T}FreeText")
    title = _text(document_element, _T + "Title") or ""
    is_registered = _text(request, _T + "IsRegistered")
    several = len(recipients) > 1
    envelopes = []
    for position, (recipient, element) in enumerate(recipients, start=1):
        header = m.Header(
            sender_message_id=message_key(ticket, sequence, position if several else None),
            sender=sender,
            recipient=recipient,
            message_type=message_type,
            created=now,
            registered=is_registered in ("true", "1"),
            environment=m.Environment(environment),
        )
        content = m.Content(
            subjects=(m.Text(lang=language, value=title),),
            bodies=(m.Text(lang=language, value=free_text),) if free_text else (),
            document=document,
            annexes=annexes,
            business_data=tuple(_business_data(request, element, language)),
        )
        envelopes.append(m.Envelope(header=header, content=content))
    return envelopes


def request_digest(envelope: m.Envelope) -> bytes:
    """SHA-256 of what the request asks, independent of when it was sent: repeats match, other content does not.

    The hub's envelope of the mapped message, its creation time fixed: a client that re-sends the same
    message (new timestamp, new signature, new MIME boundaries and Content-IDs) gets the same digest.
    """
    timeless = replace(envelope, header=replace(envelope.header, created=_EPOCH))
    return hashlib.sha256(to_bytes(build_envelope(timeless))).digest()


def keyed(envelopes: list[m.Envelope], ticket: str, sequence: int | None, generation: int) -> list[m.Envelope]:
    """``envelopes`` (from ``publish_to_envelopes``) with the keys of replacement ``generation``."""
    several = len(envelopes) > 1
    return [
        replace(
            envelope,
            header=replace(
                envelope.header,
                sender_message_id=message_key(ticket, sequence, position if several else None, generation),
            ),
        )
        for position, envelope in enumerate(envelopes, start=1)
    ]


def requests_digest(envelopes: list[m.Envelope]) -> bytes:
    """The digest of a request mapped to ``envelopes`` (generation 1 keys): ``request_digest`` of the only one
    (as before several recipients were served: stored digests still match), else the SHA-256 of theirs in order.
    """
    if len(envelopes) == 1:
        return request_digest(envelopes[0])
    return hashlib.sha256(b"".join(request_digest(envelope) for envelope in envelopes)).digest()


# --- status -------------------------------------------------------------------------------------------------

CONSULTED = frozenset({"opened", "replied"})
"""Hub events meaning the recipient read the message: e-Box's HasBeenConsulted."""


def has_been_consulted(state: str, event_kinds: Iterable[str]) -> bool:
    return state in CONSULTED or any(kind in CONSULTED for kind in event_kinds)


# --- responses ------------------------------------------------------------------------------------------------


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, _T + name)
    if text is not None:
        child.text = text
    return child


def _response(name: str) -> etree._Element:
    return etree.Element(_E + name, nsmap={None: EBOX_NS, "t": TYPES_NS})


def publish_response(message_id: str) -> etree._Element:
    root = _response("PublishEboxMessageResponse")
    _sub(root, "ID", message_id)
    return root


def copy_entity(parent: etree._Element, name: str, source: etree._Element) -> None:
    """An EntityID element ``name`` with the identifiers of ``source`` (an EntityID)."""
    target = _sub(parent, name)
    for field in ("CompanyID", "SubentityId", "INSS", "NIHII"):
        value = _text(source, _T + field)
        if value is not None:
            _sub(target, field, value)


def copy_message_id(parent: etree._Element, ticket: str, sequence: int | None) -> None:
    target = _sub(parent, "MessageID")
    _sub(target, "Ticket", ticket)
    if sequence is not None:
        _sub(target, "Sequence", str(sequence))


def copy_audience(parent: etree._Element, request: etree._Element) -> None:
    ebox_type, quality = audience(request)
    if ebox_type is not None:
        _sub(parent, "EboxType", ebox_type)
    else:
        _sub(parent, "QualityCode", quality or "")


def has_an_ebox_response(request: etree._Element, answers: list[tuple[bool, bool, date | None]]) -> etree._Element:
    """``answers``: (exists, exclusively, last connection) for each EboxID of ``request``, in order."""
    root = _response("HasAnEboxResponse")
    copy_audience(root, request)
    for source, (exists, exclusively, last) in zip(request.iterchildren(_T + "EboxID"), answers, strict=True):
        item = _sub(root, "Ebox")
        copy_entity(item, "Ebox", source)
        _sub(item, "Exists", "true" if exists else "false")
        if last is not None:
            _sub(item, "LastConnectionDate", last.isoformat())
        _sub(item, "ExclusivelyEbox", "true" if exclusively else "false")
    return root


StatusAnswer = bool | str
"""HasBeenConsulted, or an ErrorStatusCode (NOT_AUTHORIZED, NOT_FOUND, MULTIPLE_RESULTS_SPECIFY_SEQUENCE)."""


def message_status_response(request: etree._Element, answers: list[StatusAnswer]) -> etree._Element:
    root = _response("GetMessageStatusResponse")
    copy_audience(root, request)
    asked = list(request.iterchildren(_T + "Message"))
    found = [(item, answer) for item, answer in zip(asked, answers, strict=True) if isinstance(answer, bool)]
    failed = [(item, answer) for item, answer in zip(asked, answers, strict=True) if not isinstance(answer, bool)]
    for name, rows in (("Message", found), ("ErrorCase", failed)):
        for item, answer in rows:
            row = _sub(root, name)
            copy_entity(row, "EboxID", item.find(_T + "EboxID"))
            copy_message_id(row, *message_ids(item.find(_T + "MessageID")))
            if isinstance(answer, bool):
                _sub(row, "HasBeenConsulted", "true" if answer else "false")
            else:
                _sub(row, "ErrorCode", answer)
    return root


def health_response(
    *, level: str, environment: str, host: str, version: str, checks: list[tuple[str, str, int]], now: datetime
) -> etree._Element:
    """A monitoring HealthCheckResponse; ``checks``: (resource, level, milliseconds) of each sanity check."""
    root = etree.Element(_M + "HealthCheckResponse", nsmap={None: MONITORING_NS})
    root.set("timestamp", now.astimezone(UTC).isoformat().replace("+00:00", "Z"))

    def sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        child = etree.SubElement(parent, _M + name)
        child.text = text
        return child

    status = sub(root, "Status")
    sub(status, "Level", level)
    component = sub(root, "Component")
    sub(component, "Name", "ebox-hub EBoxMessage v1")
    sub(component, "Version", version)
    location = sub(root, "Location")
    sub(location, "Environment", {"PROD": "PRD", "INT": "INT"}.get(environment, "OTHER"))
    sub(location, "Host", host)
    for name, check_level, millis in checks:
        check = sub(root, "SanityCheck")
        check.set("id", name)
        check.set("type", "DEFAULT")
        sub(sub(check, "Status"), "Level", check_level)
        resource = sub(check, "Resource")
        resource.set("name", name)
        resource.set("type", "DB")
        sub(check, "TimeInMillis", str(millis))
    return root
