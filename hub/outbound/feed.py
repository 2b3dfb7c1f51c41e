"""The senders' event feed: every event of every message, in one order that never changes.

Events are written by many transactions at once (intake, routing, acknowledgements), and an
auto-increment id is handed out when a row is inserted, not when it is committed: a reader
following ``events.id`` could pass id 11 while id 10 is still uncommitted, and never see 10.
So events get a second number, ``seq``, after they are committed: the sequencer (``sequence``)
numbers the committed events that have none yet, in id order, continuing from the highest
``seq`` given, one sequencer at a time (a transaction-scoped advisory lock on PostgreSQL;
SQLite has one writer at a time anyway). A reader that follows ``seq`` (``read``) sees each
event once and never skips one: a late commit simply gets a later ``seq``. Events of one
message keep their order, because each is written after the one before it was committed.

``acknowledgement`` turns a feed item into the acknowledgement the hub signs for the sender
(``Issuer`` = ``hub``; for registered mail, ``delivered`` and ``opened`` carry a ``Proof``).
The polling feed (``GET /v1/acks``), the forwarder to senders' queues and webhooks
(``hub.outbound.forwarding``) and ``getMessageStatus`` all read the same events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, or_, select, text
from sqlalchemy.orm import Session

from hub.envelope.model import Sender
from hub.outbound.acks import HUB, Acknowledgement, ErrorDetail, Event, Fallback, Proof, Reply, Routes
from hub.store.db import one_at_a_time
from hub.store.models import Event as EventRow
from hub.store.models import Message

SEQUENCER_LOCK = 0x6875_6273_6571  # "hubseq": the advisory lock key of the sequencer (PostgreSQL)
SEQUENCE_BATCH = 10_000

_events: Table = EventRow.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]

_SEQUENCE = text(
    # No leading WITH: Python's sqlite3 reports no rowcount for a statement that starts with one.
    """
    UPDATE events SET seq = (SELECT coalesce(max(seq), 0) FROM events) + todo.n
    FROM (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM events WHERE seq IS NULL ORDER BY id LIMIT :limit
    ) AS todo
    WHERE events.id = todo.id
    """
)


def sequence(session: Session, *, limit: int = SEQUENCE_BATCH) -> int:
    """Number the committed events that have no ``seq`` yet (up to ``limit``); how many. The caller commits."""
    connection = session.connection()
    one_at_a_time(connection, SEQUENCER_LOCK)
    return int(connection.execute(_SEQUENCE, {"limit": limit}).rowcount or 0)


@dataclass(frozen=True, kw_only=True)
class FeedItem:
    """One event of the feed, with what the sender's acknowledgement says about its message."""

    seq: int
    event_id: int
    kind: str
    occurred_at: datetime
    provider: str | None
    detail: dict[str, Any]
    message_id: str
    institution_id: str
    submitter_id: str
    application_id: str
    sender_message_id: str
    registered: bool
    envelope_sha256: str


def read(
    session: Session, *, after: int, limit: int, parties: Sequence[str] | None = None, mandates: Sequence[str] = ()
) -> list[FeedItem]:
    """Sequenced events after ``after``, in ``seq`` order, at most ``limit``.

    ``parties``: only messages one of them sent or submitted (None: every message);
    ``mandates``: also the messages of these institutions (an integrator's mandates).
    """
    query = (
        select(
            _events.c.seq,
            _events.c.id,
            _events.c.kind,
            _events.c.occurred_at,
            _events.c.provider,
            _events.c.detail,
            _messages.c.id.label("message_id"),
            _messages.c.institution_id,
            _messages.c.submitter_id,
            _messages.c.application_id,
            _messages.c.sender_message_id,
            _messages.c.registered,
            _messages.c.envelope_sha256,
        )
        .select_from(_events.join(_messages, _events.c.message_id == _messages.c.id))
        .where(_events.c.seq > after)
        .order_by(_events.c.seq)
        .limit(limit)
    )
    if parties is not None:
        query = query.where(
            or_(
                _messages.c.institution_id.in_(list(parties)),
                _messages.c.submitter_id.in_(list(parties)),
                _messages.c.institution_id.in_(list(mandates)),
            )
        )
    return [feed_item(row, row, message_id=row.message_id) for row in session.connection().execute(query)]


def feed_item(event: Any, message: Any, *, message_id: str, detail: dict[str, Any] | None = None) -> FeedItem:
    """The ``FeedItem`` of an event row and its message's row (the feed's joined row is both).

    ``detail``: the event's detail already read (else read from ``event.detail``). An event not
    sequenced yet (``seq`` NULL, e.g. in an evidence bundle) is given 0.
    """
    return FeedItem(
        seq=event.seq or 0,
        event_id=event.id,
        kind=event.kind,
        occurred_at=event.occurred_at,  # UTCDateTime: aware, in UTC
        provider=event.provider,
        detail=event_detail(event.detail) if detail is None else detail,
        message_id=message_id,
        institution_id=message.institution_id,
        submitter_id=message.submitter_id,
        application_id=message.application_id,
        sender_message_id=message.sender_message_id,
        registered=bool(message.registered),
        envelope_sha256=message.envelope_sha256,
    )


def event_detail(value: str | None) -> dict[str, Any]:
    """An event row's ``detail`` (JSON text) as a dict; ``{}`` for nothing, unreadable or not an object."""
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def ack_id_of(item: FeedItem) -> str:
    """The acknowledgement id the hub gives an event: stable, so a sender de-duplicates a repeat by it."""
    return f"hub-{item.event_id}"


PROOF_EVENTS = frozenset({Event.DELIVERED, Event.OPENED})


def acknowledgement(item: FeedItem) -> Acknowledgement:
    """What the hub signs and sends the sender for one event (pure)."""
    event = Event(item.kind)
    detail = item.detail
    sender = Sender(
        organization_id=item.submitter_id,
        application_id=item.application_id,
        on_behalf_of=item.institution_id if item.institution_id != item.submitter_id else None,
    )
    digest = bytes.fromhex(item.envelope_sha256)
    routes = None
    if event in (Event.ROUTED, Event.UNDELIVERABLE):
        fallback = detail.get("fallback") or ("undeliverable" if event is Event.UNDELIVERABLE else None)
        rule = detail.get("rule")
        routes = Routes(
            providers=tuple(str(p) for p in detail.get("providers", ())),
            fallback=Fallback(fallback) if fallback else None,
            rule=str(rule)[:255] if rule else None,
        )
    reply = None
    raw_reply = detail.get("reply")
    if event is Event.REPLIED and isinstance(raw_reply, dict):
        reply = Reply(choice_id=raw_reply.get("choice_id"), text=raw_reply.get("text"))
    proof = None
    if item.registered and event in PROOF_EVENTS and item.provider:
        proof = Proof(
            envelope_digest=digest,
            provider=item.provider,
            delivered_at=item.occurred_at if event is Event.DELIVERED else None,
            opened_at=item.occurred_at if event is Event.OPENED else None,
        )
    error = None
    raw_error = detail.get("error")
    if isinstance(raw_error, dict) and raw_error.get("code"):
        error = ErrorDetail(code=str(raw_error["code"])[:64], message=str(raw_error.get("message", ""))[:1000])
    return Acknowledgement(
        ack_id=ack_id_of(item),
        event=event,
        occurred_at=item.occurred_at,
        issuer=HUB,
        hub_message_id=item.message_id,
        sender_message_id=item.sender_message_id,
        sender=sender,
        provider=item.provider,
        delivery_id=f"{item.message_id}:{item.provider}" if item.provider else None,
        envelope_digest=digest,
        routes=routes,
        reply=reply,
        proof=proof,
        error=error,
    )
