"""The consume loop every stage runs: one queue, one handler, manual acks, retries through the broker.

The handler is called with the raw body, the headers and the message's ``Properties``
(``attempt`` says which attempt this delivery is):

- it returns: its effect is committed; the message is acked.
- it raises ``Rejected``: the message can never succeed; a copy goes to ``hub.dead`` at
  once, with the refusal's code in ``x-hub-reason``.
- it raises ``Unavailable`` (a dependency is down) or any other exception (a bug, or a
  failure nobody translated): the message is retried after a back-off that grows with each
  attempt (``backoff``: exponential, with jitter), up to ``backoff.attempts`` attempts in
  all; then it goes to ``hub.dead`` with the reason, the queue and the attempts. A bug is
  logged with its traceback; the loop goes on with the other messages.

Retrying never blocks the other messages: the failed message is set aside and the loop
takes the next one at once. On RabbitMQ it is published (with a confirm) to the queue's
retry queue ``<queue>.retry`` with a per-message TTL of the delay; when the TTL runs out
the broker dead-letters it back to ``<queue>`` (see ``hub.broker.topology``). On the
in-process ``memory://`` transport (no TTL, no dead-lettering) the loop keeps the copy
itself and publishes it back to ``<queue>`` when its delay is over; when the loop stops,
copies still waiting are published back at once, so nothing is lost with the embedded
default either (whose queues live only as long as the process anyway).

Every copy (retry or dead letter) is published before the original is acked; when that
publish fails, the original is requeued and the loop reconnects. Decisions and headers:
``hub.broker.retry``.

Delivery is at-least-once (a crash after the effect and before the ack delivers the
message again, ``redelivered`` set), so handlers de-duplicate, e.g. by ``message_id``.

Batches (``consume_batches``): a stage whose effect is cheaper in bulk (one query and one
commit for many messages) takes what the broker has already pushed (up to ``batch_size``;
it never waits for more than is there) and gets them in one call. The batch handler returns
one outcome per message, ``None`` (done: acked) or the exception that message failed with
(settled as above, on its own: one bad message does not sink the others); when the batch
handler itself raises, every message of the batch is settled with that exception.
A lost connection is retried with the reconnect policy until ``stop`` is set.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import amqp.exceptions  # type: ignore[import-untyped]
from kombu import Connection, Consumer, Queue
from kombu.message import Message

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
from hub.broker.retry import REDELIVERY, Copy, Dead, Republisher, Retry, attempt_of, dead_headers, decide, retry_headers
from hub.broker.topology import DEAD_QUEUE, retry_queue_name
from hub.errors import ConfigError, HubError, Unavailable

log = logging.getLogger("hub.broker")

HANDLER_BACKOFF = REDELIVERY
"""The default redelivery policy of the consume loop (``hub.broker.retry.REDELIVERY``)."""
RECONNECT = RetryPolicy(start=0.5, step=1.0, max=10.0, jitter=0.1)
GATHER = 0.001
"""Seconds a batch consumer waits for one more message already on its way before handling the batch."""


@dataclass(frozen=True)
class Properties:
    """What a handler may need beside body and headers."""

    message_id: str | None
    priority: int | None
    content_type: str | None
    redelivered: bool
    """The broker delivered this message before (a handler may have done its effect already)."""
    exchange: str
    routing_key: str
    reply_to: str | None = None
    """Where the publisher wants the answer (a queue name, via the default exchange)."""
    correlation_id: str | None = None
    attempt: int = 1
    """Which attempt this delivery is (``x-hub-attempts``; 1 = the first)."""


Handler = Callable[[bytes, dict[str, Any], Properties], None]


@dataclass(frozen=True)
class Incoming:
    """One message of a batch, as a batch handler sees it."""

    body: bytes
    headers: dict[str, Any]
    properties: Properties


BatchHandler = Callable[[Sequence[Incoming]], Sequence[BaseException | None]]
"""Takes a batch; returns one outcome per message, in order: ``None`` (done) or what it failed with."""


def _properties(message: Message) -> Properties:
    info: Mapping[str, Any] = message.delivery_info or {}
    props: Mapping[str, Any] = message.properties or {}
    return Properties(
        attempt=attempt_of(message.headers or {}),
        message_id=props.get("message_id"),
        priority=props.get("priority"),
        content_type=message.content_type,
        redelivered=bool(info.get("redelivered", False)),
        exchange=str(info.get("exchange", "")),
        routing_key=str(info.get("routing_key", "")),
        reply_to=props.get("reply_to"),
        correlation_id=props.get("correlation_id"),
    )


def _body(message: Message) -> bytes:
    body = message.body
    if isinstance(body, str):  # py-amqp decodes bodies that carry a content_encoding
        if not body:  # an empty body comes as "" whatever its encoding (even "binary", which is no codec)
            return b""
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


def _ids(headers: Mapping[str, Any], properties: Properties) -> dict[str, Any]:
    """The structured log fields naming a message: the hub's message id (when its headers carry it), the attempt."""
    hub_message_id = headers.get("hub_message_id") or headers.get("hub-message-id")
    ids: dict[str, Any] = {"attempt": properties.attempt, "amqp_message_id": properties.message_id}
    if isinstance(hub_message_id, str):
        ids["message_id"] = hub_message_id
    return ids


def _no_handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
    raise AssertionError("a batch consumer hands messages to its batch handler")


class _Dispatch:
    """Calls the handler for one message and settles it: ack, retry later, or dead-letter."""

    def __init__(
        self,
        handler: Handler | None,
        queue_name: str,
        policy: RetryPolicy,
        publisher: Republisher,
        *,
        batch_handler: BatchHandler | None = None,
        batch_size: int = 1,
    ) -> None:
        self.handler = handler or _no_handler
        self.queue_name, self.policy, self.publisher = queue_name, policy, publisher
        self.batch_handler, self.batch_size = batch_handler, max(1, batch_size)
        self._batch: list[Message] = []
        self.in_process = False
        """The transport has no TTL nor dead-lettering (``memory://``): this loop holds the waiting copies."""
        self._waiting: list[tuple[float, int, Copy]] = []
        self._order = itertools.count()
        self.suspended = True
        """Set while a connection is torn down: a message delivered meanwhile (py-amqp reads frames while it
        closes) is left unacknowledged, and the broker requeues it, instead of being handled half-way."""

    def __call__(self, message: Message) -> None:
        if self.suspended:
            return
        if self.batch_handler is not None:
            self._batch.append(message)  # handled by ``flush``, with the others the broker pushed meanwhile
            return
        properties = _properties(message)
        headers = dict(message.headers or {})
        body = _body(message)
        try:
            self.handler(body, headers, properties)
        except Exception as exc:
            self._failed(message, body, headers, properties, exc)
        except BaseException:
            message.requeue()
            raise
        else:
            message.ack()

    @property
    def batch_full(self) -> bool:
        return len(self._batch) >= self.batch_size

    def flush(self) -> None:
        """Batches: hand the messages collected so far to the batch handler, then settle each."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        incoming = [Incoming(_body(m), dict(m.headers or {}), _properties(m)) for m in batch]
        assert self.batch_handler is not None
        try:
            outcomes: Sequence[BaseException | None] = self.batch_handler(incoming)
            if len(outcomes) != len(incoming):
                raise RuntimeError(f"the batch handler returned {len(outcomes)} outcomes for {len(incoming)} messages")
        except Exception as exc:  # the whole batch failed (an outage, most often): each is settled with it
            outcomes = [exc] * len(incoming)
        except BaseException:
            for message in batch:
                with contextlib.suppress(Exception):
                    message.requeue()
            raise
        for message, item, outcome in zip(batch, incoming, outcomes, strict=True):
            if outcome is None:
                message.ack()
            else:
                self._failed(message, item.body, item.headers, item.properties, outcome)

    def drop_batch(self) -> None:
        """The connection is gone: the broker requeues what was collected (never acked)."""
        self._batch = []

    def _failed(
        self, message: Message, body: bytes, headers: dict[str, Any], properties: Properties, exc: BaseException
    ) -> None:
        outcome = decide(exc, properties.attempt, self.policy)
        if not isinstance(exc, HubError):
            log.error(
                "%s: the handler failed on %s (attempt %d)",
                self.queue_name,
                properties.message_id,
                properties.attempt,
                exc_info=exc,
            )
        copy = Copy.of(
            body,
            headers,
            message.properties or {},
            content_type=message.content_type,
            content_encoding=message.content_encoding,
        )
        self._settle(message, properties, copy, outcome)

    def _settle(self, message: Message, properties: Properties, copy: Copy, outcome: Retry | Dead) -> None:
        """Publish the retry or dead copy, then ack the original; if the copy cannot be published, requeue it."""
        try:
            if isinstance(outcome, Retry):
                retry = copy.with_headers(retry_headers(copy.headers, outcome))
                if self.in_process:
                    heapq.heappush(self._waiting, (time.monotonic() + outcome.delay, next(self._order), retry))
                else:
                    self.publisher.publish(
                        retry,
                        exchange="",
                        routing_key=retry_queue_name(self.queue_name),
                        expiration=outcome.delay,
                    )
                metrics.retried(self.queue_name)
                log.warning(
                    "%s: %s failed (attempt %d of %d); retry in %.2f s",
                    self.queue_name,
                    properties.message_id,
                    properties.attempt,
                    self.policy.attempts,
                    outcome.delay,
                    extra={"event": "retry", "queue": self.queue_name, **_ids(copy.headers, properties)},
                )
            else:
                self.publisher.dead(copy.with_headers(dead_headers(copy.headers, outcome, self.queue_name)))
                metrics.dead(self.queue_name, outcome.failure.code)
                log.warning(
                    "%s: %s dead-lettered after %d attempt(s): %s",
                    self.queue_name,
                    properties.message_id,
                    outcome.attempts,
                    outcome.failure.reason,
                    extra={
                        "event": "dead_letter",
                        "queue": self.queue_name,
                        "code": outcome.failure.code,
                        **_ids(copy.headers, properties),
                    },
                )
        except BaseException:
            with contextlib.suppress(Exception):  # the connection is gone: the broker requeues it anyway
                message.requeue()
            raise
        message.ack()

    # -- the in-process transport: copies waiting for their delay ----------------------------

    def due_in(self) -> float | None:
        """Seconds until the next waiting copy is due (None: none waits)."""
        return max(0.0, self._waiting[0][0] - time.monotonic()) if self._waiting else None

    def release_due(self, *, everything: bool = False) -> None:
        """Publish the copies whose delay is over (``everything``: all of them, now) back to the queue."""
        now = time.monotonic()
        while self._waiting and (everything or self._waiting[0][0] <= now):
            _, _, copy = self._waiting[0]
            self.publisher.publish(copy, exchange="", routing_key=self.queue_name)
            heapq.heappop(self._waiting)


def consume(
    connection_url: str,
    queue_name: str,
    handler: Handler,
    *,
    prefetch: int = 100,
    stop: threading.Event,
    backoff: RetryPolicy = HANDLER_BACKOFF,
    reconnect: RetryPolicy = RECONNECT,
    options: ConnectionOptions = DEFAULT_OPTIONS,
    poll: float = 0.25,
) -> None:
    """Consume ``queue_name`` until ``stop`` is set (checked at least every ``poll`` seconds).

    ``backoff`` is the redelivery policy: ``attempts`` in all, then ``hub.dead``; the delays
    between them from ``start``, ``factor``, ``step``, ``max`` and ``jitter``.
    The queue, its retry queue and ``hub.dead`` must exist (``hub broker declare``); a
    missing one is a ``ConfigError``.
    """
    dispatch = _Dispatch(handler, queue_name, backoff, Republisher(connection_url, options=options))
    _run(connection_url, queue_name, dispatch, prefetch, stop, reconnect, options, poll)


def consume_batches(
    connection_url: str,
    queue_name: str,
    handler: BatchHandler,
    *,
    batch_size: int = 100,
    prefetch: int | None = None,
    stop: threading.Event,
    backoff: RetryPolicy = HANDLER_BACKOFF,
    reconnect: RetryPolicy = RECONNECT,
    options: ConnectionOptions = DEFAULT_OPTIONS,
    poll: float = 0.25,
) -> None:
    """``consume``, handing ``handler`` up to ``batch_size`` messages at a time (see the module's doc).

    A batch is what the broker pushed before the handler is free again: the loop never waits
    to fill one, so a lone message is handled at once. ``prefetch`` (default: twice
    ``batch_size``) lets the broker push the next batch while this one is handled.
    """
    dispatch = _Dispatch(
        None,
        queue_name,
        backoff,
        Republisher(connection_url, options=options),
        batch_handler=handler,
        batch_size=batch_size,
    )
    _run(connection_url, queue_name, dispatch, prefetch or 2 * batch_size, stop, reconnect, options, poll)


def _run(
    connection_url: str,
    queue_name: str,
    dispatch: _Dispatch,
    prefetch: int,
    stop: threading.Event,
    reconnect: RetryPolicy,
    options: ConnectionOptions,
    poll: float,
) -> None:
    outages = 0
    try:
        while not stop.is_set():
            try:
                connection = connect(connection_url, options=options, retry=DEFAULT_RETRY)
                try:
                    with broker_errors(f"consuming {queue_name}"):
                        dispatch.in_process = not is_amqp(connection)
                        _consume_on(connection, queue_name, dispatch, prefetch, stop, poll)
                        outages = 0
                finally:
                    dispatch.drop_batch()
                    _release(connection)
            except Unavailable as exc:
                outages += 1
                delay = reconnect.delay(outages)
                log.warning("%s: %s; reconnecting in %.1f s", queue_name, exc, delay)
                stop.wait(delay)
    finally:
        try:
            dispatch.release_due(everything=True)
        finally:
            dispatch.publisher.close()


def _check_queues(connection: Connection, queue_name: str) -> None:
    """RabbitMQ: the queue, its retry queue and ``hub.dead`` exist (the loop publishes to the last two)."""
    for needed in (queue_name, retry_queue_name(queue_name), DEAD_QUEUE.name):
        channel = connection.channel()
        try:
            channel.queue_declare(queue=needed, passive=True)
        except amqp.exceptions.NotFound as exc:
            needs = "" if needed == queue_name else f" (consuming {queue_name} needs it)"
            raise ConfigError(
                f"queue {needed} does not exist{needs}; declare the topology first (hub broker declare)"
            ) from exc
        finally:
            with contextlib.suppress(Exception):  # closed by the broker already
                channel.close()


def _consume_on(
    connection: Connection, queue_name: str, dispatch: _Dispatch, prefetch: int, stop: threading.Event, poll: float
) -> None:
    if is_amqp(connection):
        _check_queues(connection, queue_name)
    channel = connection.channel()
    consumer = Consumer(
        channel,
        queues=[Queue(queue_name, no_declare=True)],
        on_message=dispatch,
        prefetch_count=prefetch,
        no_ack=False,
    )
    try:
        consumer.consume()
    except amqp.exceptions.NotFound as exc:
        raise ConfigError(
            f"queue {queue_name} does not exist; declare the topology first (hub broker declare)"
        ) from exc
    dispatch.suspended = False
    try:
        while not stop.is_set():
            due = dispatch.due_in()
            with contextlib.suppress(TimeoutError):  # nothing arrived within the timeout
                connection.drain_events(timeout=poll if due is None else min(poll, max(due, 0.001)))
                while dispatch.batch_handler is not None and not dispatch.batch_full:
                    connection.drain_events(timeout=GATHER)  # what the broker pushed already joins the batch
            dispatch.flush()
            dispatch.release_due()
            connection.heartbeat_check()
    finally:
        dispatch.suspended = True
    with contextlib.suppress(Exception):  # closing the connection cancels it anyway
        consumer.cancel()


def _release(connection: Connection) -> None:
    with contextlib.suppress(Exception):  # the connection is already gone
        connection.release()
