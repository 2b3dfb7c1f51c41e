"""The acknowledgement document (``schemas/acknowledgement-1.xsd``): model, builder, reader, opener.

An ``Acknowledgement`` is one event in a message's life: from a provider to the hub (signed
by the provider: delivered, opened, replied, failed, printed, ...) or from the hub to the
sender (signed by the hub). ``Acknowledgements`` batches several under one signature; its
items (``Item``) have the same body without a signature of their own.

- ``build_acknowledgement`` / ``build_acknowledgements``: model -> unsigned tree, children in
  the schema's order; a model within the schema's bounds builds a valid document.
- ``signed_acknowledgement`` / ``signed_acknowledgements``: the signed document as bytes.
- ``read_acknowledgement`` / ``read_acknowledgements``: tree -> model, after checking the root
  and validating against the schema (``SCHEMA_INVALID`` otherwise, located).
- ``open_acknowledgement`` / ``open_acknowledgements``: bytes as received -> model and signer:
  hardened parse, schema, then the signature, which must be by the party named in ``Issuer``
  (``"hub"`` or a provider id, as registered in the trust store).

Timestamps are read into aware datetimes in UTC (the instant is kept, the offset written by
the issuer is not); a naive datetime is refused by the model.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from lxml import etree

from hub.envelope.builder import timestamp, to_bytes
from hub.envelope.model import ACK_NS, TYPES_NS, AssuranceLevel, Sender
from hub.envelope.schema import check_root, validate
from hub.errors import ErrorCode, Rejected, Violation
from hub.safexml import DEFAULT_LIMITS, ParseLimits, element_path, parse
from hub.signing.signer import Signer
from hub.signing.verifier import Verified, Verifier

_A = "{" + ACK_NS + "}"
_T = "{" + TYPES_NS + "}"
NSMAP = {None: ACK_NS, "t": TYPES_NS}

HUB = "hub"
"""The ``Issuer`` of what the hub itself reports (and the trust store party of the hub's key)."""

MAX_ITEMS = 10000
"""Most items in one ``Acknowledgements`` document (the schema's bound)."""


class Event(StrEnum):
    """Every value of the schema's ``Event`` type."""

    ACCEPTED = "accepted"
    ROUTED = "routed"
    DELIVERED = "delivered"
    OPENED = "opened"
    REPLIED = "replied"
    UNDELIVERABLE = "undeliverable"
    PRINTED = "printed"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    NEW_DOCUMENT_REMINDER = "newDocumentReminder"
    DOCUMENT_EXPIRATION_ALERT = "documentExpirationAlert"


class Fallback(StrEnum):
    """``Routes/Fallback``: what routing fell back to when no provider could take the message."""

    PAPER = "paper"
    UNDELIVERABLE = "undeliverable"


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone (an aware datetime)")
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else _utc(value, name)


@dataclass(frozen=True, kw_only=True)
class Routes:
    """How the hub routed the message (``routed`` / ``undeliverable`` acknowledgements)."""

    providers: tuple[str, ...] = ()
    fallback: Fallback | None = None
    rule: str | None = None
    """The routing rule's name (1 to 255 characters)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "providers", tuple(self.providers))
        if self.fallback is not None:
            object.__setattr__(self, "fallback", Fallback(self.fallback))


@dataclass(frozen=True, kw_only=True)
class Reply:
    """The recipient's answer: one of the envelope's choices, or free text (exactly one)."""

    choice_id: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.choice_id is None) == (self.text is None):
            raise ValueError("a reply is either a choice_id or a text, not both nor neither")


@dataclass(frozen=True, kw_only=True)
class Proof:
    """Registered mail: what was delivered or opened, where and when."""

    envelope_digest: bytes
    """SHA-256 of the envelope as the hub received it (32 bytes)."""
    provider: str
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    assurance_level: AssuranceLevel | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "delivered_at", _utc_or_none(self.delivered_at, "delivered_at"))
        object.__setattr__(self, "opened_at", _utc_or_none(self.opened_at, "opened_at"))
        if self.assurance_level is not None:
            object.__setattr__(self, "assurance_level", AssuranceLevel(self.assurance_level))


@dataclass(frozen=True, kw_only=True)
class ErrorDetail:
    """``t:Error``: why something failed or was refused. ``code`` is the issuer's (a provider's
    codes need not be the hub's ``ErrorCode`` values)."""

    code: str
    message: str
    line: int | None = None
    path: str | None = None

    @classmethod
    def of(cls, violation: Violation) -> ErrorDetail:
        return cls(code=violation.code.value, message=violation.message, line=violation.line, path=violation.path)


@dataclass(frozen=True, kw_only=True)
class Acknowledgement:
    """One acknowledgement (the schema's ``AcknowledgementBody``); optional fields are ``None``."""

    ack_id: str
    """``AcknowledgementId``: unique per issuer; a repeat with the same id is the same event."""
    event: Event
    occurred_at: datetime
    """When the event happened (aware; kept in UTC)."""
    issuer: str
    """``"hub"`` or the id of the provider that reports the event (and signs the document)."""
    hub_message_id: str | None = None
    sender_message_id: str | None = None
    sender: Sender | None = None
    provider: str | None = None
    delivery_id: str | None = None
    envelope_digest: bytes | None = None
    routes: Routes | None = None
    reply: Reply | None = None
    proof: Proof | None = None
    error: ErrorDetail | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event", Event(self.event))
        object.__setattr__(self, "occurred_at", _utc(self.occurred_at, "occurred_at"))


# --- build ----------------------------------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    child = etree.SubElement(parent, tag, attrib)
    if text is not None:
        child.text = text
    return child


def _opt(parent: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        _sub(parent, _A + name, value)


def _digest(parent: etree._Element, value: bytes) -> None:
    _sub(parent, _A + "EnvelopeDigest", value.hex(), algorithm="sha_256")


def _fill(body: etree._Element, ack: Acknowledgement) -> etree._Element:
    """Write ``ack``'s fields into ``body`` in the order of ``AcknowledgementBody``."""
    _sub(body, _A + "AcknowledgementId", ack.ack_id)
    _sub(body, _A + "Event", ack.event.value)
    _sub(body, _A + "OccurredAt", timestamp(ack.occurred_at))
    _sub(body, _A + "Issuer", ack.issuer)
    _opt(body, "HubMessageId", ack.hub_message_id)
    _opt(body, "SenderMessageId", ack.sender_message_id)
    if ack.sender is not None:
        party = _sub(body, _A + "Sender")
        _sub(party, _T + "OrganizationId", ack.sender.organization_id)
        _sub(party, _T + "ApplicationId", ack.sender.application_id)
        if ack.sender.on_behalf_of is not None:
            _sub(party, _T + "OnBehalfOf", ack.sender.on_behalf_of)
    _opt(body, "Provider", ack.provider)
    _opt(body, "DeliveryId", ack.delivery_id)
    if ack.envelope_digest is not None:
        _digest(body, ack.envelope_digest)
    if ack.routes is not None:
        routes = _sub(body, _A + "Routes")
        for provider in ack.routes.providers:
            _sub(routes, _A + "Provider", provider)
        if ack.routes.fallback is not None:
            _sub(routes, _A + "Fallback", ack.routes.fallback.value)
        _opt(routes, "Rule", ack.routes.rule)
    if ack.reply is not None:
        reply = _sub(body, _A + "Reply")
        if ack.reply.choice_id is not None:
            _sub(reply, _A + "ChoiceId", ack.reply.choice_id)
        else:
            _sub(reply, _A + "Text", ack.reply.text)
    if ack.proof is not None:
        proof = _sub(body, _A + "Proof")
        _digest(proof, ack.proof.envelope_digest)
        _sub(proof, _A + "Provider", ack.proof.provider)
        if ack.proof.delivered_at is not None:
            _sub(proof, _A + "DeliveredAt", timestamp(ack.proof.delivered_at))
        if ack.proof.opened_at is not None:
            _sub(proof, _A + "OpenedAt", timestamp(ack.proof.opened_at))
        if ack.proof.assurance_level is not None:
            _sub(proof, _A + "AssuranceLevel", ack.proof.assurance_level.value)
    if ack.error is not None:
        error = _sub(body, _A + "Error")
        _sub(error, _T + "Code", ack.error.code)
        _sub(error, _T + "Message", ack.error.message)
        if ack.error.line is not None:
            _sub(error, _T + "Line", str(ack.error.line))
        if ack.error.path is not None:
            _sub(error, _T + "Path", ack.error.path)
    return body


def build_acknowledgement(ack: Acknowledgement) -> etree._Element:
    """An unsigned ``Acknowledgement`` document."""
    return _fill(etree.Element(_A + "Acknowledgement", nsmap=NSMAP), ack)


def build_acknowledgements(acks: Iterable[Acknowledgement]) -> etree._Element:
    """An unsigned ``Acknowledgements`` document: one ``Item`` per acknowledgement (1 to 10000)."""
    root = etree.Element(_A + "Acknowledgements", nsmap=NSMAP)
    for count, ack in enumerate(acks, start=1):
        if count > MAX_ITEMS:
            raise ValueError(f"an Acknowledgements document holds at most {MAX_ITEMS} items; send several")
        _fill(_sub(root, _A + "Item"), ack)
    if len(root) == 0:
        raise ValueError("an Acknowledgements document holds at least one item")
    return root


def signed_acknowledgement(signer: Signer, ack: Acknowledgement) -> bytes:
    """``ack`` as a signed document, serialised as the hub sends it."""
    return to_bytes(signer.sign(build_acknowledgement(ack)))


def signed_acknowledgements(signer: Signer, acks: Iterable[Acknowledgement]) -> bytes:
    """Several acknowledgements under one signature (batched forwarding)."""
    return to_bytes(signer.sign(build_acknowledgements(acks)))


# --- read -----------------------------------------------------------------------------------


def _unreadable(element: etree._Element, exc: Exception) -> Rejected:
    # Schema-valid yet unreadable: xs:dateTime "24:00:00", a year past 9999, ...
    return Rejected(
        ErrorCode.SCHEMA_INVALID,
        f"a value could not be read ({exc}); use ISO 8601 timestamps with years 0001-9999 and a time zone.",
        path=element_path(element),
        line=element.sourceline,
    )


def _moment(element: etree._Element) -> datetime:
    text = (element.text or "").strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise _unreadable(element, exc) from exc


def _children(element: etree._Element, namespace: str = _A) -> dict[str, list[etree._Element]]:
    """Children in ``namespace`` by local name (a signature, in another namespace, is skipped)."""
    groups: dict[str, list[etree._Element]] = {}
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(namespace):
            groups.setdefault(tag[len(namespace) :], []).append(child)
    return groups


def _text(groups: dict[str, list[etree._Element]], name: str) -> str | None:
    found = groups.get(name)
    return (found[0].text or "") if found else None


def _hex(element: etree._Element) -> bytes:
    return bytes.fromhex((element.text or "").strip())


def _read_body(body: etree._Element) -> Acknowledgement:
    """Read a schema-valid ``AcknowledgementBody`` (an ``Acknowledgement`` or an ``Item``)."""
    kids = _children(body)
    sender = None
    if "Sender" in kids:
        party = _children(kids["Sender"][0], _T)
        sender = Sender(
            organization_id=_text(party, "OrganizationId") or "",
            application_id=_text(party, "ApplicationId") or "",
            on_behalf_of=_text(party, "OnBehalfOf"),
        )
    routes = None
    if "Routes" in kids:
        r = _children(kids["Routes"][0])
        fallback = _text(r, "Fallback")
        routes = Routes(
            providers=tuple(e.text or "" for e in r.get("Provider", [])),
            fallback=None if fallback is None else Fallback(fallback),
            rule=_text(r, "Rule"),
        )
    reply = None
    if "Reply" in kids:
        r = _children(kids["Reply"][0])
        choice = _text(r, "ChoiceId")
        reply = Reply(choice_id=choice) if choice is not None else Reply(text=_text(r, "Text") or "")
    proof = None
    if "Proof" in kids:
        p = _children(kids["Proof"][0])
        level = _text(p, "AssuranceLevel")
        proof = Proof(
            envelope_digest=_hex(p["EnvelopeDigest"][0]),
            provider=_text(p, "Provider") or "",
            delivered_at=_moment(p["DeliveredAt"][0]) if "DeliveredAt" in p else None,
            opened_at=_moment(p["OpenedAt"][0]) if "OpenedAt" in p else None,
            assurance_level=None if level is None else AssuranceLevel(level),
        )
    error = None
    if "Error" in kids:
        e = _children(kids["Error"][0], _T)
        line = _text(e, "Line")
        try:
            line_number = None if line is None else int(line.strip())
        except ValueError as exc:  # a positiveInteger beyond Python's digit limit
            raise _unreadable(e["Line"][0], exc) from exc
        error = ErrorDetail(
            code=_text(e, "Code") or "", message=_text(e, "Message") or "", line=line_number, path=_text(e, "Path")
        )
    return Acknowledgement(
        ack_id=_text(kids, "AcknowledgementId") or "",
        event=Event(_text(kids, "Event") or ""),
        occurred_at=_moment(kids["OccurredAt"][0]),
        issuer=_text(kids, "Issuer") or "",
        hub_message_id=_text(kids, "HubMessageId"),
        sender_message_id=_text(kids, "SenderMessageId"),
        sender=sender,
        provider=_text(kids, "Provider"),
        delivery_id=_text(kids, "DeliveryId"),
        envelope_digest=_hex(kids["EnvelopeDigest"][0]) if "EnvelopeDigest" in kids else None,
        routes=routes,
        reply=reply,
        proof=proof,
        error=error,
    )


def read_acknowledgement(root: etree._Element) -> Acknowledgement:
    """Validate ``root`` (an ``Acknowledgement``, signed or not) and read it; ``SCHEMA_INVALID`` otherwise.

    Read a tree from ``hub.safexml.parse`` (comments dropped), as every door does.
    """
    check_root(root, expect=ACK_NS, name="Acknowledgement")
    validate(root, expect=ACK_NS)
    return _read_body(root)


def read_acknowledgements(root: etree._Element) -> list[Acknowledgement]:
    """Validate ``root`` (an ``Acknowledgements`` batch) and read its items in document order."""
    check_root(root, expect=ACK_NS, name="Acknowledgements")
    validate(root, expect=ACK_NS)
    return [_read_body(item) for item in root.iterchildren(_A + "Item")]


# --- open: parse, schema, signature by the issuer -------------------------------------------


def _check_issuer(issuer: str, issuers: Collection[str] | None, where: etree._Element) -> None:
    if issuers is not None and issuer not in issuers:
        raise Rejected(
            ErrorCode.NOT_AUTHORISED,
            f"acknowledgements from {issuer!r} are not accepted here; the Issuer must be one of: "
            f"{', '.join(sorted(issuers)) or '(none)'}.",
            path=element_path(where),
            line=where.sourceline,
        )


def _check_signer(verified: Verified, issuer: str) -> None:
    # The verifier only tried the issuer's certificates; kept as a guard should that change.
    if verified.signer.party != issuer:
        raise Rejected(
            ErrorCode.UNKNOWN_SIGNER,
            f"the document says it is issued by {issuer!r} but is signed by {verified.signer.party!r}; "
            "an acknowledgement is signed by its issuer.",
        )


def _check_own(ack: Acknowledgement, where: etree._Element) -> None:
    """A provider reports about its own deliveries: Provider and Proof/Provider name the issuer."""
    if ack.issuer == HUB:
        return
    named_in = (("Provider", ack.provider), ("Proof/Provider", None if ack.proof is None else ack.proof.provider))
    for field, named in named_in:
        if named is not None and named != ack.issuer:
            raise Rejected(
                ErrorCode.ACK_NOT_YOURS,
                f"{field} is {named!r} but the issuer is {ack.issuer!r}; a provider acknowledges its own "
                "deliveries only.",
                path=element_path(where),
                line=where.sourceline,
            )


def _issuer_element(body: etree._Element) -> etree._Element:
    found = body.find(_A + "Issuer")
    assert found is not None  # the schema requires it
    return found


def open_acknowledgement(
    data: bytes,
    verifier: Verifier,
    now: datetime,
    limits: ParseLimits = DEFAULT_LIMITS,
    *,
    issuers: Collection[str] | None = None,
) -> tuple[Acknowledgement, Verified]:
    """The acknowledgement in ``data`` and who signed it, or ``Rejected`` with a stable code.

    Hardened parse (``XML_*``, ``TOO_LARGE``), root and schema (``SCHEMA_INVALID``), then the
    signature, checked only against the certificates registered for the party named in
    ``Issuer`` (``SIGNATURE_*``, ``CERT_*``; ``UNKNOWN_SIGNER`` when it is signed with a key
    not registered for that party, e.g. another provider claiming to be this one). Then:
    ``issuers`` (when given) lists the issuers this door accepts (``NOT_AUTHORISED``), and a
    provider's acknowledgement must not name another provider (``ACK_NOT_YOURS``).
    The model is read from the very tree that was verified.
    """
    root = parse(data, limits=limits)
    check_root(root, expect=ACK_NS, name="Acknowledgement")
    validate(root, expect=ACK_NS)
    issuer_element = _issuer_element(root)
    issuer = issuer_element.text or ""
    verified = verifier.verify(root, now=now, parties=[issuer])
    _check_signer(verified, issuer)
    _check_issuer(issuer, issuers, issuer_element)
    ack = _read_body(verified.root)
    _check_own(ack, root)
    return ack, verified


def open_acknowledgements(
    data: bytes,
    verifier: Verifier,
    now: datetime,
    limits: ParseLimits = DEFAULT_LIMITS,
    *,
    issuers: Collection[str] | None = None,
) -> tuple[list[Acknowledgement], Verified]:
    """A signed ``Acknowledgements`` batch: as ``open_acknowledgement``, and one signature speaks
    for one party, so every item's ``Issuer`` must be the same (``NOT_AUTHORISED`` otherwise)."""
    root = parse(data, limits=limits)
    check_root(root, expect=ACK_NS, name="Acknowledgements")
    validate(root, expect=ACK_NS)
    items: Sequence[etree._Element] = list(root.iterchildren(_A + "Item"))
    issuer_elements = [_issuer_element(item) for item in items]
    issuer = issuer_elements[0].text or ""
    for element in issuer_elements[1:]:
        if (element.text or "") != issuer:
            raise Rejected(
                ErrorCode.NOT_AUTHORISED,
                f"the batch mixes issuers ({issuer!r} and {element.text!r}); one signature speaks for one "
                "issuer: send one batch per issuer.",
                path=element_path(element),
                line=element.sourceline,
            )
    verified = verifier.verify(root, now=now, parties=[issuer])
    _check_signer(verified, issuer)
    _check_issuer(issuer, issuers, issuer_elements[0])
    acks = []
    for item in items:
        ack = _read_body(item)
        _check_own(ack, item)
        acks.append(ack)
    return acks, verified
