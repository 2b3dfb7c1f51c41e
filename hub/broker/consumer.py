"""The consume loop every stage runs: one queue, one handler, manual acks.

The handler is called with the raw body, the headers and the message's ``Properties``:

- it returns: its effect is committed; the message is acked.
- it raises ``Rejected``: the message can never succeed; it is rejected without requeue,
  which dead-letters it to ``hub.dead`` on RabbitMQ (the in-process transport drops it).
- it raises ``Unavailable``: a dependency is down; after a back-off (growing while the
  failures go on) the message is requeued and will come again.
- it raises anything else: a bug; the message is requeued and the exception ends the loop.

Delivery is at-least-once (a crash after the effect and before the ack delivers the
message again, ``redelivered`` set), so handlers de-duplicate, e.g. by ``message_id``.
A lost connection is retried with the reconnect policy until ``stop`` is set.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import amqp.exceptions  # type: ignore[import-untyped]
from kombu import Connection, Consumer, Queue
from kombu.message import Message

from hub.broker.connection import (
    DEFAULT_OPTIONS,
    DEFAULT_RETRY,
    ConnectionOptions,
    RetryPolicy,
    broker_errors,
    connect,
)
from hub.errors import ConfigError, Rejected, Unavailable

log = logging.getLogger("hub.broker")

HANDLER_BACKOFF = RetryPolicy(start=0.5, step=1.0, max=30.0, jitter=0.1)
RECONNECT = RetryPolicy(start=0.5, step=1.0, max=10.0, jitter=0.1)


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


Handler = Callable[[bytes, dict[str, Any], Properties], None]


def _properties(message: Message) -> Properties:
    info: Mapping[str, Any] = message.delivery_info or {}
    props: Mapping[str, Any] = message.properties or {}
    return Properties(
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
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


class _HandlerCrashed(Exception):
    """Carries a handler's own exception (even an ``OSError``) past the broker-error translation."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Dispatch:
    """Calls the handler for one message and settles it."""

    def __init__(self, handler: Handler, stop: threading.Event, backoff: RetryPolicy, queue_name: str) -> None:
        self.handler, self.stop, self.backoff, self.queue_name = handler, stop, backoff, queue_name
        self.failures = 0

    def __call__(self, message: Message) -> None:
        properties = _properties(message)
        try:
            self.handler(_body(message), dict(message.headers or {}), properties)
        except Rejected as refused:
            log.warning(
                "%s: %s rejected (%s); dead-lettered", self.queue_name, properties.message_id, refused.code.value
            )
            message.reject(requeue=False)
        except Unavailable as exc:
            self.failures += 1
            delay = self.backoff.delay(self.failures)
            log.warning("%s: %s; requeued after %.1f s", self.queue_name, exc, delay)
            self.stop.wait(delay)
            message.requeue()
        except Exception as exc:
            message.requeue()
            raise _HandlerCrashed(exc) from exc
        except BaseException:
            message.requeue()
            raise
        else:
            self.failures = 0
            message.ack()


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

    The queue must exist (``hub broker declare``); a missing one is a ``ConfigError``.
    """
    dispatch = _Dispatch(handler, stop, backoff, queue_name)
    outages = 0
    while not stop.is_set():
        try:
            connection = connect(connection_url, options=options, retry=DEFAULT_RETRY)
            try:
                with broker_errors(f"consuming {queue_name}"):
                    _consume_on(connection, queue_name, dispatch, prefetch, stop, poll)
                    outages = 0
            finally:
                _release(connection)
        except _HandlerCrashed as crashed:
            raise crashed.error from crashed.error.__cause__
        except Unavailable as exc:
            outages += 1
            delay = reconnect.delay(outages)
            log.warning("%s: %s; reconnecting in %.1f s", queue_name, exc, delay)
            stop.wait(delay)


def _consume_on(
    connection: Connection, queue_name: str, dispatch: _Dispatch, prefetch: int, stop: threading.Event, poll: float
) -> None:
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
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):  # nothing arrived within ``poll``
            connection.drain_events(timeout=poll)
        connection.heartbeat_check()
    with contextlib.suppress(Exception):  # closing the connection cancels it anyway
        consumer.cancel()


def _release(connection: Connection) -> None:
    with contextlib.suppress(Exception):  # the connection is already gone
        connection.release()
