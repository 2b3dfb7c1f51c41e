"""What a routing decision writes: deliveries, their outbox rows, the event and the audit entry.

``plan`` turns a ``Decision`` about one stored message into rows (a pure function: no I/O,
the clock is an argument); ``store`` writes them in the caller's transaction, guarded so that
a message is routed once whatever the broker redelivers:

- ``messages``: ``accepted`` -> ``routed`` (deliver, paper) or ``undeliverable``; the UPDATE
  only matches a message still ``accepted``, and takes its row lock on PostgreSQL;
- ``deliveries``: one per chosen provider, ``pending``, id ``<message id>:<provider>``,
  unique per (message, provider);
- ``outbox``: one per delivery, to exchange ``hub.deliver`` with routing key the provider id
  (``deliver_key``), no body of its own (the relay publishes the message's stored envelope,
  exactly as received: a message routed to three providers is not copied three times), the broker priority
  (0-9), and ``not_before`` when the delivery is held (maintenance, effective date);
- ``events``: ``routed`` (with the providers, or the paper fallback taken) or ``undeliverable``;
- ``audit``: action ``routed`` (or ``expired``), no personal data.

Headers of a delivery (what a provider reads before the body): ``hub-message-id``,
``delivery-id``, ``priority`` (low / normal / high), ``expires-at`` (ISO 8601, absent when the
message is kept indefinitely), ``registered`` (bool), ``sender`` (the institution's CBE number),
``content_type`` (``application/xml``). No recipient identifier: brokers and their tracing may
log headers; the recipient is inside the signed envelope.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from hub.broker.topology import deliver_key
from hub.inbound.acceptance import PRIORITIES
from hub.routing.rules import Decision, Outcome
from hub.store.models import AuditEntry, Base, Delivery, Event, Message, OutboxEntry
from hub.store.wakeup import EVENTS, OUTBOX, notify

DELIVER_EXCHANGE = "hub.deliver"
ACTOR = "hub.routing"
ENVELOPE_CONTENT_TYPE = "application/xml"


class State:
    """The message states routing reads and writes (``messages.state``)."""

    ACCEPTED = "accepted"
    ROUTED = "routed"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"


PENDING = "pending"
"""A delivery's first state."""


@dataclass(frozen=True, kw_only=True)
class Routable:
    """What routing reads of a stored message."""

    id: str
    state: str
    institution_id: str
    submitter_id: str
    message_type: str
    priority: str
    registered: bool
    expires_at: datetime | None
    has_content: bool
    """The envelope is still stored (False once retention removed it)."""
    routing_facts: str | None = None
    """``MessageFacts.to_json`` as acceptance stored it; ``None`` for a message accepted before it did."""
    envelope: bytes | None = None
    """The signed envelope, read only for a message without ``routing_facts``."""


@dataclass(frozen=True)
class Plan:
    """The rows one routing decision writes (see the module's doc)."""

    message_id: str
    state: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)


def delivery_id(message_id: str, provider: str) -> str:
    return f"{message_id}:{provider}"


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def detail(decision: Decision) -> dict[str, Any]:
    """The routed / undeliverable event's detail: the decision in words, no personal data.

    ``decide`` writes its reasons from rule names, provider ids, capabilities and states only
    (never the recipient's number nor content), so they go in as they are.
    """
    out: dict[str, Any] = {"outcome": decision.outcome.value, "rule": decision.rule, "priority": decision.priority}
    if decision.outcome is not Outcome.UNDELIVERABLE:
        out["providers"] = list(decision.providers)
    if decision.outcome is Outcome.PAPER:
        out["fallback"] = "paper"
    held = {
        d.provider: {"until": d.not_before.isoformat(), "why": d.why_held}
        for d in decision.deliveries
        if d.not_before is not None
    }
    if held:
        out["held"] = held
    out["reasons"] = list(decision.reasons)
    if decision.skipped:
        out["skipped"] = {provider: why for provider, why in decision.skipped}
    return out


def plan(message: Routable, decision: Decision, now: datetime) -> Plan:
    """The rows for ``decision`` about ``message`` (which must still hold its envelope)."""
    if decision.outcome is Outcome.UNDELIVERABLE:
        state, kind = State.UNDELIVERABLE, "undeliverable"
    else:
        state, kind = State.ROUTED, "routed"
    assert message.has_content or not decision.deliveries
    priority = PRIORITIES.get(decision.priority, PRIORITIES["normal"])
    result = Plan(message.id, state)
    for chosen in decision.deliveries:
        ident = delivery_id(message.id, chosen.provider)
        result.deliveries.append(
            {
                "id": ident,
                "message_id": message.id,
                "provider": chosen.provider,
                "state": PENDING,
                "priority": priority,
                "not_before": chosen.not_before,
                "created_at": now,
                "updated_at": now,
            }
        )
        headers: dict[str, Any] = {
            "hub-message-id": message.id,
            "delivery-id": ident,
            "priority": decision.priority,
            "registered": message.registered,
            "sender": message.institution_id,
            "content_type": ENVELOPE_CONTENT_TYPE,
        }
        if message.expires_at is not None:
            headers["expires-at"] = message.expires_at.isoformat()
        result.outbox.append(
            {
                "message_id": message.id,
                "exchange": DELIVER_EXCHANGE,
                "routing_key": deliver_key(chosen.provider),
                "body": None,  # the relay publishes the message's stored envelope: no copy per provider
                "headers": json.dumps(headers),
                "priority": priority,
                "created_at": now,
                "sent_at": None,
                "not_before": chosen.not_before,
            }
        )
    described = detail(decision)
    result.events.append(
        {
            "message_id": message.id,
            "kind": kind,
            "occurred_at": now,
            "source": "hub",
            "provider": None,
            "detail": json.dumps(described),
        }
    )
    result.audit.append(
        {
            "at": now,
            "actor": ACTOR,
            "action": "routed",
            "message_id": message.id,
            "detail": json.dumps(
                {
                    "institution": message.institution_id,
                    "message_type": message.message_type,
                    "outcome": decision.outcome.value,
                    "rule": decision.rule,
                    "deliveries": [d["id"] for d in result.deliveries],
                }
            ),
        }
    )
    return result


def expiry_plan(message: Routable, now: datetime) -> Plan:
    """The message expired before it could be routed: ``expired``, its event and audit entry."""
    expired = message.expires_at.isoformat() if message.expires_at else None
    why = {"reason": "expired before routing", "expires_at": expired}
    return Plan(
        message.id,
        State.EXPIRED,
        events=[
            {
                "message_id": message.id,
                "kind": "expired",
                "occurred_at": now,
                "source": "hub",
                "provider": None,
                "detail": json.dumps(why),
            }
        ],
        audit=[
            {
                "at": now,
                "actor": ACTOR,
                "action": "expired",
                "message_id": message.id,
                "detail": json.dumps({"institution": message.institution_id, **why}),
            }
        ],
    )


def store(session: Session, plans: Sequence[Plan]) -> bool:
    """Write ``plans`` in the session's transaction; False when a message is no longer ``accepted``.

    The guarded UPDATEs come first (one per target state): they only move messages still
    ``accepted``, and on PostgreSQL they wait for a concurrent router of the same messages
    and then find them moved. False (or ``IntegrityError`` from the deliveries' unique key,
    the last line of defence) means some other worker routed one of them meanwhile: the
    caller rolls back. The caller commits when True. Then one executemany per table (psycopg
    pipelines them; multi-row INSERT ... RETURNING measured no faster).
    """
    connection = session.connection()
    messages = _table(Message)
    by_state: dict[str, list[str]] = {}
    for planned in plans:
        by_state.setdefault(planned.state, []).append(planned.message_id)
    moved = 0
    for state, ids in sorted(by_state.items()):
        moved += connection.execute(
            update(messages)
            .where(messages.c.id.in_(sorted(ids)), messages.c.state == State.ACCEPTED)
            .values(state=state, routing_facts=None)  # what routing needed of it is used: no copy of it stays
        ).rowcount
    if moved != len(plans):
        return False
    for model, rows in (
        (Delivery, [row for p in plans for row in p.deliveries]),
        (OutboxEntry, [row for p in plans for row in p.outbox]),
        (Event, [row for p in plans for row in p.events]),
        (AuditEntry, [row for p in plans for row in p.audit]),
    ):
        if rows:
            table = _table(model)
            connection.execute(insert(table), rows)
    notify(session, OUTBOX, EVENTS)  # deliveries for the relay, routed / undeliverable for the forwarder
    return True
