"""The attacks of the hostile-input suite, each with its door, its stable code and its status.

This table is what the suite runs: each test module of ``tests/hostile`` is parametrised from
``attacks(door)`` and holds one way (``HOW``) to carry out each attack of its doors; a test checks
that the table and the ways are the same list. Print it with ``python -m tests.hostile.attacks``.

Columns:

- ``code``: the stable ``ErrorCode`` of the refusal (``None``: not a refusal, e.g. a replay answered
  with the original receipt, or a refusal without a code: a configuration file, a SOAP header fault).
- ``status``: what the door answers. REST: the HTTP status (a batch: the item's status). SOAP 1.1:
  500 for every fault (the code travels in the fault's ``detail``; it is the REST door's code). AMQP:
  the ``hub-status`` header of the answer on ``reply_to``, or ``None`` when the refusal is
  dead-lettered (``hub.dead``, with the code in ``x-hub-code``). CLI: the exit status.
- ``leaves``: what the attack may leave in the store. ``NOTHING``: no row in any table, no message in
  any of the hub's queues, no file. ``COUNTED``: an envelope whose signature verified (the sender is
  known) refused for a business rule is counted for the monthly statistics, as acceptance documents:
  one ``refusals`` row and one ``audit`` entry (code, door, message type; no content, no recipient),
  and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from hub.errors import ErrorCode

C = ErrorCode


class Door(StrEnum):
    REST = "REST POST /v1/messages"
    BATCH = "REST POST /v1/batches"
    SOAP = "SOAP POST /soap publishMessage"
    AMQP = "AMQP hub.submit"
    STATUS = "REST GET /v1/messages/{id}"
    SOAP_STATUS = "SOAP POST /soap getMessageStatus"
    FEED = "REST GET /v1/acks"
    ACKS = "REST POST /v1/acks"
    AMQP_ACKS = "AMQP hub.acks"
    CLAIM = "REST GET /v1/deliveries/{id}/envelope"
    SUBSCRIPTIONS = "REST POST /v1/providers/{id}/subscriptions"
    SERVER = "HTTP server (uvicorn, raw socket)"
    CONFIG = "hub CLI: configuration files"


class Leaves(Enum):
    NOTHING = "nothing"
    COUNTED = "one refusals row + one audit entry"


@dataclass(frozen=True)
class Attack:
    door: Door
    name: str
    code: ErrorCode | None
    status: int | None
    leaves: Leaves
    what: str

    @property
    def id(self) -> str:
        return f"{self.door.name.lower()}/{self.name}"


N, COUNTED = Leaves.NOTHING, Leaves.COUNTED

# Envelopes: every door that takes one (REST, batch, SOAP, AMQP) meets each of these.
SUBMISSIONS: tuple[tuple[str, ErrorCode | None, int, Leaves, str], ...] = (
    ("replayed-envelope", None, 200, N, "the same signed bytes sent again: the original receipt, nothing new stored"),
    ("same-id-other-content", C.DUPLICATE_MESSAGE_ID, 409, COUNTED, "a SenderMessageId used again for other content"),
    ("signed-by-another-sender", C.UNKNOWN_SIGNER, 401, N, "signed with sender A's key, claiming to be sender B"),
    (
        "integrator-without-mandate",
        C.NOT_AUTHORISED,
        403,
        COUNTED,
        "an integrator sending for an institution it has no mandate for",
    ),
    (
        "institution-for-another",
        C.NOT_AUTHORISED,
        403,
        COUNTED,
        "an institution (no integrator) naming another in OnBehalfOf",
    ),
    ("wrong-environment", C.ENVIRONMENT_MISMATCH, 403, COUNTED, "an INT envelope sent to the PROD hub"),
    (
        "message-type-not-allowed",
        C.UNKNOWN_MESSAGE_TYPE,
        403,
        COUNTED,
        "a message type registered for another institution only",
    ),
    ("application-not-registered", C.INVALID_SENDER, 403, COUNTED, "an application id the institution does not have"),
    ("unregistered-signer", C.UNKNOWN_SIGNER, 401, N, "signed by a key no sender registered"),
    ("tampered-after-signing", C.SIGNATURE_INVALID, 401, N, "one amount changed after signing"),
    ("xxe", C.XML_FORBIDDEN, 400, N, "a DOCTYPE with an external entity"),
    ("not-xml", C.XML_MALFORMED, 400, N, "bytes that are not XML"),
)

SUBMISSION_DOORS = (Door.REST, Door.BATCH, Door.SOAP, Door.AMQP)


def _submissions() -> list[Attack]:
    found = []
    for door in SUBMISSION_DOORS:
        for name, code, status, leaves, what in SUBMISSIONS:
            answer = status
            if door is Door.SOAP and code is not None:
                answer = 500  # a SOAP 1.1 fault; the code is the REST door's
            found.append(Attack(door, name, code, answer, leaves, what))
    return found


ATTACKS: tuple[Attack, ...] = (
    *_submissions(),
    # --- REST: the request itself ---------------------------------------------------------------------
    Attack(Door.REST, "json-content-type", C.CONTENT_TYPE_INVALID, 415, N, "a signed envelope sent as JSON"),
    Attack(Door.REST, "oversized-body", C.TOO_LARGE, 413, N, "a body over [limits] max_envelope_bytes"),
    Attack(
        Door.REST, "chunked-oversized-body", C.TOO_LARGE, 413, N, "a chunked body (no Content-Length) over the limit"
    ),
    Attack(Door.REST, "bad-content-length", C.CONTENT_TYPE_INVALID, 415, N, "a Content-Length that is not a number"),
    Attack(Door.BATCH, "deeply-nested-json", C.SCHEMA_INVALID, 400, N, "a JSON body nested 100,000 deep"),
    Attack(Door.BATCH, "too-many-envelopes", C.TOO_LARGE, 413, N, "more envelopes than [limits] max_batch"),
    Attack(Door.BATCH, "envelopes-not-a-list", C.SCHEMA_INVALID, 400, N, '{"envelopes": "..."}'),
    # --- SOAP: the SOAP envelope -----------------------------------------------------------------------
    Attack(Door.SOAP, "soap-not-xml", C.XML_MALFORMED, 500, N, "a body that is not XML (REST: XML_MALFORMED too)"),
    Attack(Door.SOAP, "soap-1.2-envelope", C.SCHEMA_INVALID, 500, N, "a SOAP 1.2 envelope: soap:VersionMismatch"),
    Attack(
        Door.SOAP, "soap-1.2-content-type", C.CONTENT_TYPE_INVALID, 500, N, "application/soap+xml: soap:VersionMismatch"
    ),
    Attack(Door.SOAP, "missing-operation", C.SCHEMA_INVALID, 500, N, "an empty soap:Body"),
    Attack(Door.SOAP, "unknown-operation", C.SCHEMA_INVALID, 500, N, "a Body element no operation takes"),
    Attack(
        Door.SOAP,
        "xxe-in-soap-envelope",
        C.XML_FORBIDDEN,
        500,
        N,
        "a DOCTYPE with an external entity around the SOAP envelope (REST: XML_FORBIDDEN too)",
    ),
    Attack(Door.SOAP, "oversized-request", C.TOO_LARGE, 500, N, "a SOAP request over the limit (REST: TOO_LARGE too)"),
    Attack(
        Door.SOAP, "must-understand-header", None, 500, N, "a mandatory header block: soap:MustUnderstand, no detail"
    ),
    # --- AMQP: the message's properties ----------------------------------------------------------------
    Attack(
        Door.AMQP,
        "garbage-without-reply-to",
        C.XML_MALFORMED,
        None,
        N,
        "garbage and no reply_to: dead-lettered with its code, nothing to any sender's queue",
    ),
    Attack(
        Door.AMQP,
        "reply-to-a-providers-queue",
        C.XML_MALFORMED,
        None,
        N,
        "reply_to naming provider.myebox: the answer never lands in a hub queue; dead-lettered",
    ),
    Attack(
        Door.AMQP,
        "reply-to-the-inbound-queue",
        C.XML_MALFORMED,
        None,
        N,
        "reply_to naming hub.inbound: no loop; dead-lettered",
    ),
    # --- reading status and feeds ------------------------------------------------------------------------
    Attack(
        Door.STATUS,
        "another-senders-message",
        C.MESSAGE_NOT_FOUND,
        404,
        N,
        "sender B asks for sender A's message: the very answer an unknown id gets",
    ),
    Attack(Door.STATUS, "unknown-message", C.MESSAGE_NOT_FOUND, 404, N, "an id nobody was given"),
    Attack(Door.STATUS, "nul-in-the-id", C.MESSAGE_NOT_FOUND, 404, N, "GET /v1/messages/%00"),
    Attack(Door.STATUS, "no-token", C.UNAUTHENTICATED, 401, N, "no Authorization header"),
    Attack(Door.STATUS, "unknown-token", C.UNAUTHENTICATED, 401, N, "a bearer token nobody registered"),
    Attack(Door.STATUS, "basic-auth", C.UNAUTHENTICATED, 401, N, "Authorization: Basic with the sender's token"),
    Attack(Door.STATUS, "provider-token", C.UNAUTHENTICATED, 401, N, "a provider's token reading a sender's message"),
    Attack(
        Door.SOAP_STATUS,
        "another-senders-message",
        C.MESSAGE_NOT_FOUND,
        500,
        N,
        "getMessageStatus of sender A's message with sender B's token",
    ),
    Attack(Door.SOAP_STATUS, "no-token", C.UNAUTHENTICATED, 500, N, "getMessageStatus without a token"),
    Attack(Door.SOAP_STATUS, "not-a-message-id", C.SCHEMA_INVALID, 500, N, "a HubMessageId that is no id"),
    Attack(
        Door.FEED,
        "another-senders-events",
        None,
        204,
        N,
        "sender B reads the feed after sender A's events: none of them",
    ),
    Attack(Door.FEED, "asks-for-another-sender", None, 204, N, "sender B adds ?sender=A (and friends) to the query"),
    Attack(Door.FEED, "no-token", C.UNAUTHENTICATED, 401, N, "no Authorization header"),
    Attack(Door.FEED, "provider-token", C.UNAUTHENTICATED, 401, N, "a provider's token on a sender's feed"),
    Attack(Door.FEED, "negative-cursor", C.SCHEMA_INVALID, 400, N, "?after=-1"),
    # --- providers ---------------------------------------------------------------------------------------
    Attack(Door.ACKS, "another-providers-delivery", C.ACK_NOT_YOURS, 403, N, "doccle acknowledges myebox's delivery"),
    Attack(Door.ACKS, "unknown-delivery", C.ACK_UNKNOWN_DELIVERY, 404, N, "a delivery that does not exist"),
    Attack(
        Door.ACKS, "signed-by-another-provider", C.UNKNOWN_SIGNER, 401, N, "signed with doccle's key, Issuer myebox"
    ),
    Attack(
        Door.ACKS,
        "another-providers-token",
        C.NOT_AUTHORISED,
        403,
        N,
        "myebox's acknowledgement posted with doccle's token",
    ),
    Attack(Door.ACKS, "no-token", C.UNAUTHENTICATED, 401, N, "no Authorization header"),
    Attack(Door.ACKS, "sender-token", C.UNAUTHENTICATED, 401, N, "a sender's token posting acknowledgements"),
    Attack(
        Door.ACKS,
        "replayed-acknowledgement",
        None,
        200,
        N,
        "an applied acknowledgement sent again: 'repeat', nothing new stored",
    ),
    Attack(Door.ACKS, "oversized", C.TOO_LARGE, 413, N, "a document over 4 MiB"),
    Attack(
        Door.AMQP_ACKS,
        "another-providers-delivery",
        C.ACK_NOT_YOURS,
        None,
        N,
        "doccle acknowledges myebox's delivery on hub.acks: dead-lettered",
    ),
    Attack(
        Door.AMQP_ACKS,
        "unknown-delivery",
        C.ACK_UNKNOWN_DELIVERY,
        None,
        N,
        "a delivery that does not exist: dead-lettered",
    ),
    Attack(
        Door.AMQP_ACKS,
        "signed-by-another-provider",
        C.UNKNOWN_SIGNER,
        None,
        N,
        "signed with doccle's key, Issuer myebox: dead-lettered",
    ),
    Attack(
        Door.CLAIM,
        "another-providers-envelope",
        C.MESSAGE_NOT_FOUND,
        404,
        N,
        "doccle fetches myebox's claim-checked envelope",
    ),
    Attack(Door.CLAIM, "sender-token", C.UNAUTHENTICATED, 401, N, "a sender's token fetching a delivery"),
    Attack(Door.CLAIM, "nul-in-the-id", C.MESSAGE_NOT_FOUND, 404, N, "GET /v1/deliveries/%00/envelope"),
    Attack(
        Door.SUBSCRIPTIONS,
        "nul-in-another-providers-id",
        C.NOT_AUTHORISED,
        403,
        N,
        "myebox's token on /v1/providers/%00/subscriptions: the refusal quotes the id",
    ),
    Attack(Door.SUBSCRIPTIONS, "deeply-nested-json", C.SCHEMA_INVALID, 400, N, "a JSON body nested 100,000 deep"),
    # --- the HTTP server ---------------------------------------------------------------------------------
    Attack(
        Door.SERVER,
        "declared-oversized-body",
        C.TOO_LARGE,
        413,
        N,
        "Content-Length over the limit: answered before the body is sent",
    ),
    Attack(
        Door.SERVER,
        "chunked-oversized-body",
        C.TOO_LARGE,
        413,
        N,
        "chunks past the limit: answered without waiting for the last chunk",
    ),
    Attack(
        Door.SERVER,
        "slow-body",
        C.REQUEST_TIMEOUT,
        408,
        N,
        "the body a byte at a time, each byte within the "
        "timeout: 408 once the body is over its time; others are served meanwhile",
    ),
    Attack(Door.SERVER, "stalled-body", C.REQUEST_TIMEOUT, 408, N, "the body starts, then nothing"),
    Attack(
        Door.SERVER,
        "slow-headers",
        C.REQUEST_TIMEOUT,
        408,
        N,
        "the request line and headers a byte at a time (slowloris): 408 and closed; others are served meanwhile",
    ),
    Attack(Door.SERVER, "idle-connection", C.REQUEST_TIMEOUT, 408, N, "a connection that sends nothing"),
    Attack(
        Door.SERVER,
        "disconnect-mid-body",
        None,
        None,
        N,
        "the client goes away half-way through the body: no error in the hub's log",
    ),
    # --- configuration -----------------------------------------------------------------------------------
    Attack(Door.CONFIG, "senders-not-yaml", None, 2, N, "senders.yaml that is not YAML"),
    Attack(Door.CONFIG, "senders-unknown-key", None, 2, N, "a misspelt key in senders.yaml"),
    Attack(Door.CONFIG, "senders-missing-certificate", None, 2, N, "a certificate file that does not exist"),
    Attack(Door.CONFIG, "senders-duplicate-institution", None, 2, N, "one institution listed twice"),
    Attack(Door.CONFIG, "hub-toml-unknown-key", None, 2, N, "a misspelt key in hub.toml"),
    Attack(Door.CONFIG, "hub-toml-not-toml", None, 2, N, "hub.toml that is not TOML"),
    Attack(Door.CONFIG, "providers-duplicate", None, 2, N, "one provider listed twice (hub routes check)"),
    Attack(Door.CONFIG, "tls-key-missing", None, 2, N, "hub.toml naming TLS files that do not exist (hub serve)"),
)


KNOWN_BUGS: dict[str, str] = {}
"""Attacks the hub lets through today, by id, with the bug: their tests are expected to fail (strict: once the
bug is fixed, the test passes and the run fails until the entry is removed)."""


def attacks(*doors: Door) -> list[Attack]:
    """The attacks on these doors, in the table's order."""
    return [attack for attack in ATTACKS if attack.door in doors]


def param(attack: Attack) -> Any:
    """``pytest.param`` of an attack, with its id (and expected to fail when it is a known bug)."""
    import pytest

    marks = [pytest.mark.xfail(reason=KNOWN_BUGS[attack.id], strict=True)] if attack.id in KNOWN_BUGS else []
    return pytest.param(attack, id=attack.id, marks=marks)


def params(*doors: Door) -> list[Any]:
    """``param`` of each attack on these doors."""
    return [param(attack) for attack in attacks(*doors)]


def render() -> str:
    """The table as text: door, attack, code, status, what it may leave."""
    rows = [("door", "attack", "code", "status", "leaves")]
    for attack in ATTACKS:
        code = attack.code.value if attack.code else "-"
        status = "-" if attack.status is None else str(attack.status)
        rows.append((attack.door.value, attack.name, code, status, attack.leaves.value))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    print(render())
