"""Forwarding: each event, signed by the hub, to the sender over the channel it chose.

``Forwarder.run_once`` follows the event feed (``hub.outbound.feed``) from its cursor, and
for each event of a message whose submitter wants its acknowledgements by AMQP or webhook
(``config/senders.yaml``, ``acknowledgements.channel``) writes one outbox row: exchange
``hub.notify``, routing key the submitter's id (queue ``sender.<id>.acks``), the body the
``Acknowledgement`` signed by the hub (headers ``hub-message-id``, ``ack-id``, ``event``).
A sender whose channel says ``batch: N`` gets instead one row per batch of up to N of its
events that were waiting: an ``Acknowledgements`` document (one ``Item`` per event, in feed
order) under one signature, with the header ``items`` (how many) and ``first-seq`` (the
feed position of the first). A signature is the dearest step of forwarding, so under load
this divides its cost by the batch; with one event waiting the batch is that one event.

The outbox rows and the cursor's new position commit together, so each event is forwarded
exactly once into the outbox (one row, or one item of one row); the relay publishes the rows with
publisher confirms (at least once: a sender de-duplicates by ``AcknowledgementId``, which is
stable per event). Webhook senders' queues are emptied by ``hub worker push`` (POST, retried
with back-off, dead-lettered after the configured attempts). Senders that poll read the same
events with ``GET /v1/acks?after=CURSOR``: nothing to forward.

One forwarder at a time advances the cursor (its row is locked for the round on PostgreSQL);
a second one waits, then continues from where the first stopped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.broker.topology import NOTIFY, notify_key
from hub.inbound.senders import SenderDirectory
from hub.outbound.acks import signed_acknowledgement, signed_acknowledgements
from hub.outbound.feed import FeedItem, ack_id_of, acknowledgement, read, sequence
from hub.signing.signer import Signer
from hub.store.db import unavailable_on_outage
from hub.store.models import Cursor, OutboxEntry
from hub.store.wakeup import EVENTS, GATHER, OUTBOX, Wakeup, notify

log = logging.getLogger("hub.forwarding")

CURSOR = "forwarder"
PUSHED = ("amqp", "webhook")
ACK_CONTENT_TYPE = "application/xml"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Forwarder:
    """Turns events into signed acknowledgements on the senders' queues (see the module's doc)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        signer: Signer,
        senders: SenderDirectory,
        *,
        batch: int = 500,
        gather: float = GATHER,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions, self.signer, self.senders = sessions, signer, senders
        self.batch, self.gather, self.clock = batch, gather, clock
        self._channels = senders.acknowledgement_channels()

    def channel_of(self, party: str) -> str:
        channel = self._channels.get(party)
        return channel.kind if channel is not None else "polling"

    def pushed_senders(self) -> list[str]:
        """The senders whose acknowledgements go to a queue (their ``sender.<id>.acks`` must be declared)."""
        return [party for party, channel in self._channels.items() if channel.kind in PUSHED]

    def run_once(self) -> int:
        """Sequence new events and forward the next batch; how many events were passed (forwarded or not)."""
        started = time.perf_counter()
        with unavailable_on_outage(), self.sessions() as session:
            sequence(session)
            session.commit()
            position = self._claim(session)
            items = read(session, after=position, limit=self.batch)
            if not items:
                session.rollback()
                return 0
            pushed = [item for item in items if self.channel_of(item.submitter_id) in PUSHED]
            rows = self._rows(pushed)
            if rows:
                session.execute(insert(OutboxEntry), rows)
                notify(session, OUTBOX)
            session.execute(
                update(Cursor).where(Cursor.name == CURSOR).values(position=items[-1].seq, updated_at=self.clock())
            )
            session.commit()
        if rows:
            log.info("forwarded %d acknowledgements to senders' queues in %d messages", len(pushed), len(rows))
        metrics.count("forward", "queued", len(pushed))
        metrics.count("forward", "polling", len(items) - len(pushed))
        metrics.observe("forward", started)
        return len(items)

    def _claim(self, session: Session) -> int:
        query = select(Cursor.position).where(Cursor.name == CURSOR)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        position = session.scalar(query)
        if position is None:
            try:
                with session.begin_nested():
                    session.execute(insert(Cursor).values(name=CURSOR, position=0, updated_at=self.clock()))
            except IntegrityError:  # another forwarder created it meanwhile
                pass
            position = session.scalar(query)
        return int(position or 0)

    def _rows(self, items: list[FeedItem]) -> list[dict[str, object]]:
        """The outbox rows of ``items``: one per event, or per batch for a sender whose channel
        batches (in feed order within each sender; each batch is what was waiting, up to its size)."""
        by_party: dict[str, list[FeedItem]] = {}
        for item in items:
            by_party.setdefault(item.submitter_id, []).append(item)
        rows = []
        for party, theirs in by_party.items():
            size = self._channels[party].batch  # a pushed sender: it has a channel
            if size == 1:
                rows += [self._row(item) for item in theirs]
            else:
                rows += [self._batch_row(party, theirs[at : at + size]) for at in range(0, len(theirs), size)]
        return rows

    def _batch_row(self, party: str, items: list[FeedItem]) -> dict[str, object]:
        body = signed_acknowledgements(self.signer, [acknowledgement(item) for item in items])
        headers = {"items": len(items), "first-seq": items[0].seq, "content_type": ACK_CONTENT_TYPE}
        return self._outbox(None, party, body, headers)

    def _row(self, item: FeedItem) -> dict[str, object]:
        body = signed_acknowledgement(self.signer, acknowledgement(item))
        headers = {
            "hub-message-id": item.message_id,
            "ack-id": ack_id_of(item),
            "event": item.kind,
            "content_type": ACK_CONTENT_TYPE,
        }
        return self._outbox(item.message_id, item.submitter_id, body, headers)

    def _outbox(
        self, message_id: str | None, party: str, body: bytes, headers: Mapping[str, object]
    ) -> dict[str, object]:
        return {
            "message_id": message_id,
            "exchange": NOTIFY.name,
            "routing_key": notify_key(party),
            "body": body,
            "headers": json.dumps(headers),
            "priority": 0,
            "created_at": self.clock(),
            "sent_at": None,
            "not_before": None,
        }

    def run_forever(self, stop: threading.Event, idle_sleep: float = 0.5) -> None:
        """Forward until ``stop`` is set; an outage is logged and tried again after a pause.

        With nothing to forward it waits for a wake-up (a transaction that wrote events
        committed: ``hub.store.wakeup``) or ``idle_sleep`` seconds.
        """
        from hub.errors import Unavailable

        bind = self.sessions.kw.get("bind")
        wakeup = Wakeup(bind, EVENTS, gather=self.gather) if bind is not None else None
        try:
            while not stop.is_set():
                try:
                    if not self.run_once():
                        if wakeup is not None:
                            wakeup.wait(idle_sleep)
                        else:
                            stop.wait(idle_sleep)
                except Unavailable as exc:
                    log.warning("forwarder: %s; trying again in 1 s", exc)
                    stop.wait(1.0)
        finally:
            if wakeup is not None:
                wakeup.close()
