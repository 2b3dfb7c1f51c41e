"""Forwarding: each event, signed by the hub, to the sender over the channel it chose.

``Forwarder.run_once`` follows the event feed (``hub.outbound.feed``) from its cursor, and
for each event of a message whose submitter wants its acknowledgements by AMQP or webhook
(``config/senders.yaml``, ``acknowledgements.channel``) writes one outbox row: exchange
``hub.notify``, routing key the submitter's id (queue ``sender.<id>.acks``), the body the
``Acknowledgement`` signed by the hub. The outbox rows and the cursor's new position commit
together, so each event becomes exactly one row; the relay publishes the rows with
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
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.broker.topology import NOTIFY, notify_key
from hub.inbound.senders import SenderDirectory
from hub.outbound.acks import signed_acknowledgement
from hub.outbound.feed import FeedItem, ack_id_of, acknowledgement, read, sequence
from hub.signing.signer import Signer
from hub.store.db import unavailable_on_outage
from hub.store.models import Cursor, OutboxEntry
from hub.store.wakeup import EVENTS, OUTBOX, Wakeup, notify

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
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions, self.signer, self.senders = sessions, signer, senders
        self.batch, self.clock = batch, clock
        self._channels = {party: channel.kind for party, channel in senders.acknowledgement_channels().items()}

    def channel_of(self, party: str) -> str:
        return self._channels.get(party, "polling")

    def pushed_senders(self) -> list[str]:
        """The senders whose acknowledgements go to a queue (their ``sender.<id>.acks`` must be declared)."""
        return [party for party, kind in self._channels.items() if kind in PUSHED]

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
            rows = [self._row(item) for item in items if self.channel_of(item.submitter_id) in PUSHED]
            if rows:
                session.execute(insert(OutboxEntry), rows)
                notify(session, OUTBOX)
            session.execute(
                update(Cursor).where(Cursor.name == CURSOR).values(position=items[-1].seq, updated_at=self.clock())
            )
            session.commit()
        if rows:
            log.info("forwarded %d acknowledgements to senders' queues", len(rows))
        metrics.count("forward", "queued", len(rows))
        metrics.count("forward", "polling", len(items) - len(rows))
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

    def _row(self, item: FeedItem) -> dict[str, object]:
        body = signed_acknowledgement(self.signer, acknowledgement(item))
        headers = {
            "hub-message-id": item.message_id,
            "ack-id": ack_id_of(item),
            "event": item.kind,
            "content_type": ACK_CONTENT_TYPE,
        }
        return {
            "message_id": item.message_id,
            "exchange": NOTIFY.name,
            "routing_key": notify_key(item.submitter_id),
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
        wakeup = Wakeup(bind, EVENTS) if bind is not None else None
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
