"""The outbox relay: publish committed outbox rows to the broker, then mark them sent.

One round (``run_once``) takes up to ``batch`` unsent rows in id order (skipping rows held
until a later ``not_before``: a delivery waiting for a provider's maintenance window or the
message's effective date, judged by the relay's ``clock``), publishes them
with publisher confirms, and marks the confirmed ones sent in one UPDATE. A row is marked
only after the broker confirmed it; a crash between publishing and marking publishes the
row again after the restart (at-least-once). Every message therefore carries a stable
``message_id`` (``outbox-<row id>``) and the row's headers, so consumers de-duplicate.

On PostgreSQL the rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and the
lock is held until they are marked, so relays running side by side never publish the
same rows at the same time. On SQLite run one relay per database file.

Publishing: on RabbitMQ a waiting-per-message publish (``confirm_publish``) manages about
a thousand messages a second, so the relay uses its own channel in confirm mode, sends
the whole batch and then waits for the broker's (usually cumulative) acks. Messages are
published ``mandatory``: one that no queue would take (e.g. to a provider whose queue
was never declared) comes back, is logged, and its row stays unsent rather than being
marked sent and lost. The in-process transport checks routability through its bindings.

A row without a body of its own (a delivery) publishes the stored envelope of its
``message_id``, read in the same claim; if retention removed that envelope first, the row is
marked sent without publishing, with a warning (there is nothing left to deliver).

Claim check: with a ``ClaimCheck``, an envelope larger than its threshold is not read at all
(the claim selects its size and digest only): the delivery goes out with an empty body and
the headers ``envelope-url`` (``<hub>/v1/deliveries/<delivery id>/envelope``, where the
provider fetches it with its API token), ``envelope-bytes`` and ``envelope-sha256`` (what
the fetched bytes must be). RabbitMQ then moves small messages only, and the relay never holds
a large envelope at all. Rows with a body of their own (routing messages, notices) do not read
their message's envelope either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import amqp  # type: ignore[import-untyped]
import amqp.exceptions  # type: ignore[import-untyped]
from kombu import Connection, Producer
from sqlalchemy import case, delete, func, null, outerjoin, select, update
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.broker.connection import (
    DEFAULT_OPTIONS,
    DEFAULT_RETRY,
    ConnectionOptions,
    RetryPolicy,
    broker_errors,
    connect,
    is_amqp,
)
from hub.broker.topology import MAX_PRIORITY, declare
from hub.errors import Unavailable
from hub.store.db import unavailable_on_outage
from hub.store.models import Message, OutboxEntry
from hub.store.wakeup import GATHER, OUTBOX, Wakeup

log = logging.getLogger("hub.broker")

DEFAULT_CONTENT_TYPE = "application/json"


KEEP_SENT = timedelta(hours=24)
"""How long a published outbox row stays for operators to look at (``[broker] keep_sent_hours``)."""
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 5000


def utcnow() -> datetime:
    return datetime.now(UTC)


def outbox_message_id(row_id: int) -> str:
    """The stable ``message_id`` of the message published for an outbox row."""
    return f"outbox-{row_id}"


@dataclass(frozen=True)
class ClaimCheck:
    """Deliveries of envelopes larger than ``above`` bytes carry a link to them instead (see the module's doc)."""

    above: int
    base_url: str
    """The hub's HTTP door as providers reach it (``Settings.effective_public_url``)."""

    def __post_init__(self) -> None:
        if self.above < 1:
            raise ValueError(f"a claim check needs a threshold of at least 1 byte, not {self.above}")

    def url(self, delivery_id: str) -> str:
        return f"{self.base_url.rstrip('/')}/v1/deliveries/{quote(delivery_id, safe=':')}/envelope"


def claim_check_of(threshold: int, base_url: str) -> ClaimCheck | None:
    """The relay's claim check from the settings (``[broker] claim_check_bytes``; 0: none)."""
    return ClaimCheck(threshold, base_url) if threshold > 0 else None


@dataclass(frozen=True)
class OutboxMessage:
    """One outbox row, ready to publish."""

    row_id: int
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    priority: int

    @property
    def message_id(self) -> str:
        return outbox_message_id(self.row_id)

    @property
    def content_type(self) -> str:
        value = self.headers.get("content_type", self.headers.get("content-type"))
        return value if isinstance(value, str) and value else DEFAULT_CONTENT_TYPE

    @classmethod
    def of(cls, row: Any, claim_check: ClaimCheck | None = None) -> OutboxMessage:
        """The message of a claimed row: its own body, else its message's envelope, else (an envelope
        above the claim check's threshold, not read) an empty body and the headers to fetch it."""
        headers = json.loads(row.headers or "{}")
        if not isinstance(headers, dict):
            raise ValueError(f"outbox row {row.id}: headers must be a JSON object, not {type(headers).__name__}")
        if row.body is not None:
            body = bytes(row.body)
        elif row.envelope is not None:
            body = bytes(row.envelope)
        else:
            if claim_check is None or not headers.get("delivery-id"):
                raise ValueError(f"outbox row {row.id}: no body, and no claim check for its envelope")
            body = b""
            headers["envelope-url"] = claim_check.url(str(headers["delivery-id"]))
            headers["envelope-bytes"] = int(row.envelope_bytes)
            headers["envelope-sha256"] = row.envelope_sha256
        return cls(
            row_id=row.id,
            exchange=row.exchange,
            routing_key=row.routing_key,
            body=body,
            headers=headers,
            priority=max(0, min(MAX_PRIORITY, int(row.priority or 0))),
        )


@dataclass(frozen=True)
class Gone:
    """An outbox row that refers to its message's envelope, which retention removed: nothing to publish."""

    row_id: int


class Publisher(Protocol):
    def publish(self, messages: Sequence[OutboxMessage]) -> list[int]:
        """Publish; return the row ids the broker confirmed and routed to at least one queue."""
        ...


class ConfirmingPublisher:
    """RabbitMQ: one channel in confirm mode; send a whole batch, then wait for its acks."""

    def __init__(self, connection: Connection, *, confirm_timeout: float) -> None:
        self.connection = connection
        self.confirm_timeout = confirm_timeout
        self.channel: Any = None
        self._next_tag = 1
        self._pending: dict[int, int] = {}
        """delivery tag -> row id, awaiting the broker's ack or nack."""
        self._acked: set[int] = set()
        self._refused: set[int] = set()

    def _open(self) -> Any:
        if self.channel is None or not self.channel.is_open:
            channel = self.connection.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            self.channel, self._next_tag = channel, 1
        return self.channel

    def _settle(self, tag: int, multiple: bool, into: set[int]) -> None:
        if multiple:
            for settled in [t for t in self._pending if t <= tag]:
                into.add(self._pending.pop(settled))
        elif tag in self._pending:
            into.add(self._pending.pop(tag))

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, self._acked)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        nacked: set[int] = set()
        self._settle(delivery_tag, multiple, nacked)
        log.warning("broker nacked outbox rows %s; they stay unsent", sorted(nacked))
        self._refused |= nacked

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = str(message.properties.get("message_id", ""))
        log.error(
            "unroutable: no queue takes %s from exchange %r with routing key %r (%s); the row stays unsent",
            message_id,
            exchange,
            routing_key,
            exc,
        )
        if message_id.startswith("outbox-"):
            self._refused.add(int(message_id.removeprefix("outbox-")))

    def publish(self, messages: Sequence[OutboxMessage]) -> list[int]:
        self._pending.clear()
        self._acked.clear()
        self._refused.clear()
        try:
            channel = self._open()
            for message in messages:
                channel.basic_publish(
                    amqp.Message(
                        message.body,
                        content_type=message.content_type,
                        application_headers=message.headers,
                        delivery_mode=2,
                        priority=message.priority,
                        message_id=message.message_id,
                    ),
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    mandatory=True,
                )
                self._pending[self._next_tag] = message.row_id
                self._next_tag += 1
            deadline = time.monotonic() + self.confirm_timeout
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Unavailable(
                        f"the broker confirmed {len(self._acked)} of {len(messages)} messages within "
                        f"{self.confirm_timeout:g} s; the rest stay unsent"
                    )
                try:
                    self.connection.drain_events(timeout=remaining)
                except TimeoutError:  # socket.timeout; the deadline is checked above
                    continue
        except amqp.exceptions.ChannelError as exc:
            # E.g. an exchange that does not exist: the broker closed the channel.
            self.channel = None
            raise Unavailable(f"the broker refused a publish ({exc}); the rows stay unsent") from exc
        except BaseException:
            self.channel = None
            raise
        return [m.row_id for m in messages if m.row_id in self._acked and m.row_id not in self._refused]


class KombuPublisher:
    """Any other transport (the in-process ``memory://`` one above all): kombu's Producer."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.channel: Any = None

    def _routable(self, message: OutboxMessage) -> bool:
        channel = self.channel
        if not hasattr(channel, "get_table"):  # not a virtual transport: trust the broker
            return True
        try:
            table = channel.get_table(message.exchange)
            queues = channel.typeof(message.exchange).lookup(table, message.exchange, message.routing_key, None)
        except KeyError:
            queues = []
        if not queues:
            log.error(
                "unroutable: no queue takes %s from exchange %r with routing key %r; the row stays unsent",
                message.message_id,
                message.exchange,
                message.routing_key,
            )
        return bool(queues)

    def publish(self, messages: Sequence[OutboxMessage]) -> list[int]:
        if self.channel is None:
            self.channel = self.connection.channel()
        producer = Producer(self.channel)
        published: list[int] = []
        for message in messages:
            if not self._routable(message):
                continue
            producer.publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                headers=message.headers,
                priority=message.priority,
                message_id=message.message_id,
                delivery_mode=2,
                content_type=message.content_type,
                content_encoding="binary",
                retry=False,
            )
            published.append(message.row_id)
        return published


class OutboxRelay:
    """Moves committed outbox rows to the broker. One per process; not thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connection_url: str,
        *,
        batch: int = 500,
        confirm_timeout: float = 10.0,
        options: ConnectionOptions = DEFAULT_OPTIONS,
        retry: RetryPolicy = DEFAULT_RETRY,
        claim_check: ClaimCheck | None = None,
        gather: float = GATHER,
        keep_sent: timedelta | None = KEEP_SENT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.claim_check = claim_check
        self.gather = gather
        self.keep_sent = keep_sent
        self._pruned_at = 0.0
        self.sessions = sessions
        self.connection_url = connection_url
        self.batch = batch
        self.confirm_timeout = confirm_timeout
        self.options = options
        self.retry = retry
        self.clock = clock
        self._connection: Connection | None = None
        self._wakeup: Wakeup | None = None
        self._publisher: Publisher | None = None

    # -- the broker side -------------------------------------------------------------------

    def _connected(self) -> Publisher:
        if self._publisher is None:
            # Confirms are the relay's own business (a whole batch at a time), not py-amqp's per message.
            options = dataclasses.replace(self.options, confirm_publish=False)
            connection = connect(self.connection_url, options=options, retry=self.retry)
            try:
                declare(connection)  # the exchanges and the routing queue exist before the first publish
            except BaseException:
                connection.release()
                raise
            self._connection = connection
            self._publisher = (
                ConfirmingPublisher(connection, confirm_timeout=self.confirm_timeout)
                if is_amqp(connection)
                else KombuPublisher(connection)
            )
        return self._publisher

    def close(self) -> None:
        """Release the broker connection (a later round opens a new one)."""
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # the connection is already gone; nothing to release
                connection.release()

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the database side -----------------------------------------------------------------

    def _claim(self, session: Session) -> list[OutboxMessage | Gone]:
        """The next unsent rows that are due; on PostgreSQL locked until this transaction ends.

        Held rows (``not_before``) whose time has come go first, by that time; then rows
        ready from the start, in id order. Each query has its own partial index, so rows
        still held are never read on the way (``ix_outbox_held``, ``ix_outbox_ready``).
        """
        size = func.length(Message.envelope)  # from the value's header: the envelope itself is not read
        wanted: Any = OutboxEntry.body.is_(None)  # only a delivery publishes its message's envelope
        if self.claim_check is not None:  # and not a large one: the delivery carries a link to it
            wanted = wanted & (size <= self.claim_check.above)
        envelope = case((wanted, Message.envelope), else_=null())
        columns = (
            OutboxEntry.id,
            OutboxEntry.exchange,
            OutboxEntry.routing_key,
            OutboxEntry.body,
            envelope.label("envelope"),
            size.label("envelope_bytes"),
            Message.envelope_sha256,
            OutboxEntry.headers,
            OutboxEntry.priority,
        )
        postgres = session.get_bind().dialect.name == "postgresql"
        # A row without a body of its own publishes its message's stored envelope (a delivery).
        rows_of = select(*columns).select_from(outerjoin(OutboxEntry, Message, OutboxEntry.message_id == Message.id))
        due = (
            rows_of.where(
                OutboxEntry.sent_at.is_(None),
                OutboxEntry.not_before.is_not(None),
                OutboxEntry.not_before <= self.clock(),
            )
            .order_by(OutboxEntry.not_before, OutboxEntry.id)
            .limit(self.batch)
        )
        if postgres:
            due = due.with_for_update(skip_locked=True, of=OutboxEntry)
        rows = list(session.execute(due).all())
        if len(rows) < self.batch:
            ready = (
                rows_of.where(OutboxEntry.sent_at.is_(None), OutboxEntry.not_before.is_(None))
                .order_by(OutboxEntry.id)
                .limit(self.batch - len(rows))
            )
            if postgres:
                ready = ready.with_for_update(skip_locked=True, of=OutboxEntry)
            rows += session.execute(ready).all()
        if not postgres:
            session.commit()  # SQLite: hold no read snapshot while publishing
        gone = {row.id for row in rows if row.body is None and row.envelope_bytes is None}
        return [OutboxMessage.of(row, self.claim_check) for row in rows if row.id not in gone] + [
            Gone(row_id) for row_id in sorted(gone)
        ]

    def _mark_sent(self, session: Session, row_ids: Sequence[int], at: datetime) -> None:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(row_ids))
            .values(sent_at=at)
            .execution_options(synchronize_session=False)
        )

    # -- rounds ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish up to ``batch`` unsent rows and mark the confirmed ones sent; how many were marked.

        Raises ``Unavailable`` (broker or database down; nothing confirmed is lost, nothing
        unconfirmed is marked).
        """
        publisher = self._connected()
        started = time.perf_counter()
        with unavailable_on_outage(), self.sessions() as session:
            claimed = self._claim(session)
            if not claimed:
                return 0
            messages = [m for m in claimed if isinstance(m, OutboxMessage)]
            withdrawn = [m.row_id for m in claimed if isinstance(m, Gone)]
            if withdrawn:  # their envelope was removed (retention) before they could go out
                log.warning(
                    "relay: %d outbox rows refer to an envelope that was removed; not published", len(withdrawn)
                )
                self._mark_sent(session, withdrawn, self.clock())
            try:
                with broker_errors("the broker"):
                    confirmed = publisher.publish(messages) if messages else []
            except Unavailable:
                self.close()
                raise
            if confirmed:
                self._mark_sent(session, confirmed, self.clock())
            session.commit()
        if len(confirmed) < len(messages):
            log.warning("relay: %d of %d outbox rows stay unsent", len(messages) - len(confirmed), len(messages))
        sent = set(confirmed)
        metrics.published(m.exchange for m in messages if m.row_id in sent)
        metrics.observe("relay", started)
        return len(confirmed) + len(withdrawn)

    def prune(self, *, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` rows sent longer than ``keep_sent`` ago, oldest first; how many.

        A published row has done its work (the broker holds the message; consumers de-duplicate
        by its ``message_id``); it stays ``keep_sent`` for operators to look at, then goes, so
        the outbox does not grow with every message the hub ever sent. The scan follows the
        primary key from the oldest row, where the rows to delete are, and stops after ``limit``.
        """
        if self.keep_sent is None:
            return 0
        cutoff = self.clock() - self.keep_sent
        with unavailable_on_outage(), self.sessions() as session:
            oldest = (
                select(OutboxEntry.id)
                .where(OutboxEntry.sent_at.is_not(None), OutboxEntry.sent_at < cutoff)
                .order_by(OutboxEntry.id)
                .limit(limit)
            )
            ids = list(session.scalars(oldest))
            if ids:
                session.execute(delete(OutboxEntry).where(OutboxEntry.id.in_(ids)))
            session.commit()
        if ids:
            log.info("relay: removed %d outbox rows sent before %s", len(ids), cutoff.isoformat(timespec="seconds"))
        return len(ids)

    def _prune_now_and_then(self) -> None:
        """``prune`` at most every ``PRUNE_EVERY_S`` seconds, from the relay's own loop (no other process needed)."""
        if self.keep_sent is None or time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = time.monotonic()
        try:
            while self.prune() == PRUNE_BATCH:
                pass
        except Unavailable as exc:  # the next round tries again; publishing is what matters
            log.warning("relay: could not remove old outbox rows: %s", exc)

    def run_forever(self, stop: threading.Event, idle_sleep: float = 0.5) -> None:
        """Relay until ``stop`` is set; an outage is logged and retried with the back-off policy.

        Now and then (``PRUNE_EVERY_S``) it removes the rows sent longer than ``keep_sent`` ago.

        When a round finds less than a batch, the relay waits for a writer's wake-up
        (``hub.store.wakeup``: a transaction that wrote outbox rows committed) or ``idle_sleep``
        seconds, whichever comes first; held rows that became due are found by that polling.
        """
        failures = 0
        bind = self.sessions.kw.get("bind")
        self._wakeup = Wakeup(bind, OUTBOX, gather=self.gather) if bind is not None else None
        try:
            while not stop.is_set():
                try:
                    published = self.run_once()
                except Unavailable as exc:
                    failures += 1
                    delay = self.retry.delay(failures)
                    log.warning("relay: %s; retrying in %.1f s", exc, delay)
                    stop.wait(delay)
                    continue
                failures = 0
                self._prune_now_and_then()
                if published < self.batch:
                    self._idle(stop, idle_sleep)
        finally:
            self.close()
            if self._wakeup is not None:
                self._wakeup.close()

    def _idle(self, stop: threading.Event, seconds: float) -> None:
        """Wait for a wake-up or ``seconds``; then, on RabbitMQ, read (and answer) heartbeats."""
        if self._wakeup is not None:
            self._wakeup.wait(seconds)
        else:
            stop.wait(seconds)
        connection = self._connection
        if connection is None or not is_amqp(connection):
            return
        try:
            with broker_errors("the broker"):
                connection.heartbeat_check()
                with contextlib.suppress(TimeoutError):  # nothing arrived: the usual case
                    connection.drain_events(timeout=0.001)
        except Unavailable as exc:
            log.warning("relay: %s; reconnecting", exc)
            self.close()
