"""Retries with back-off and dead letters: what the consume loop does with a message that failed.

The decision is a pure function of the error, the attempt and the policy (``decide``):

    handler raised        attempt < policy.attempts         attempt == policy.attempts
    Rejected              dead at once (bad data: no retry)  dead
    Unavailable           retry after policy.delay(attempt)  dead, "SERVICE_UNAVAILABLE: ..."
    any other Exception   retry after policy.delay(attempt)  dead, "HANDLER_ERROR: <class name>"

Any other exception is a bug or an unforeseen failure; it may be transient (a race, a
timeout the code did not translate), so it is retried like an outage, but with a bounded
number of attempts: a bug never loops forever and never stops the stage, it ends in
``hub.dead`` with the class of the exception as its reason (and the traceback in the log).

Headers (all ``x-hub-*``; the message's own headers and properties are kept):

- ``x-hub-attempts``: on a delivery, which attempt it is (absent = the first); on a dead
  letter, how many attempts were made.
- on a dead letter also ``x-hub-reason`` (``CODE: text``: a refusal's code and element
  path, an outage's own message, or an exception's class name; never content, never
  personal data), ``x-hub-code`` (the code alone), ``x-hub-queue`` (the queue it was
  consumed from, where a replay puts it back), ``x-hub-dead-at`` (ISO 8601, UTC) and
  ``x-hub-dead-id`` (a short id of this dead letter, for ``hub dlq``).

Nothing is dropped: the copy (to the retry queue or to ``hub.dead``) is published, and on
RabbitMQ confirmed by the broker, before the original is acked. A crash in between
delivers the original again: at-least-once, as everywhere in the hub.

``Republisher`` publishes those copies on a connection of its own: on RabbitMQ a confirm
wait reads every frame of its connection, and on the consuming one it would run the
handler for the next message from inside the settlement of this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import amqp  # type: ignore[import-untyped]
import amqp.exceptions  # type: ignore[import-untyped]
from kombu import Connection, Producer

from hub.broker.connection import (
    DEFAULT_OPTIONS,
    DEFAULT_RETRY,
    ConnectionOptions,
    RetryPolicy,
    broker_errors,
    connect,
    is_amqp,
)
from hub.broker.topology import DEAD_EXCHANGE
from hub.errors import ConfigError, Rejected, Unavailable

log = logging.getLogger("hub.broker")

ATTEMPTS = "x-hub-attempts"
REASON = "x-hub-reason"
CODE = "x-hub-code"
QUEUE = "x-hub-queue"
DEAD_AT = "x-hub-dead-at"
DEAD_ID = "x-hub-dead-id"
REPLAYS = "x-hub-replays"
"""How many times ``hub dlq replay`` put this message back (kept across replays)."""

UNAVAILABLE_CODE = "SERVICE_UNAVAILABLE"
HANDLER_ERROR_CODE = "HANDLER_ERROR"
MAX_REASON = 300
"""Characters of ``x-hub-reason`` kept."""

REDELIVERY = RetryPolicy(attempts=8, start=1.0, factor=2.5, step=0.0, max=300.0, jitter=0.2)
"""The default: 8 attempts, waits of about 1, 2.5, 6, 16, 39, 98 and 244 s (+0..20%): about
seven minutes of outage before a message is dead-lettered (``hub dlq replay`` brings it back)."""

BROKER_HEADERS = ("x-death", "x-delivery-count")
BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
HUB_DEATH_HEADERS = (ATTEMPTS, REASON, CODE, QUEUE, DEAD_AT, DEAD_ID)


# -- the decision (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why a handler failed, in words fit for a header: no content, no personal data."""

    code: str
    reason: str
    transient: bool

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        if isinstance(error, Rejected):
            first = error.violations[0]
            where = f" at {first.path}" if first.path else (f" at line {first.line}" if first.line else "")
            return cls(first.code.value, f"{first.code.value}{where}", transient=False)
        if isinstance(error, Unavailable):
            return cls(UNAVAILABLE_CODE, _clip(f"{UNAVAILABLE_CODE}: {error}"), transient=True)
        return cls(HANDLER_ERROR_CODE, f"{HANDLER_ERROR_CODE}: {type(error).__name__}", transient=True)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds; that delivery is attempt ``attempt``."""

    attempt: int
    delay: float


@dataclass(frozen=True)
class Dead:
    """Give up: ``attempts`` were made."""

    attempts: int
    failure: Failure


def decide(error: BaseException, attempt: int, policy: RetryPolicy) -> Retry | Dead:
    """What to do after attempt ``attempt`` (1 = the first) failed with ``error``.

    An outage that says when to come back (``retry_after`` seconds, e.g. an HTTP
    ``Retry-After`` on a webhook push) waits at least that long, never more than ``policy.max``.
    """
    failure = Failure.of(error)
    if failure.transient and attempt < policy.attempts:
        delay = policy.delay(attempt)
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > delay:
            delay = min(float(asked), policy.max)
        return Retry(attempt + 1, delay)
    return Dead(attempt, failure)


def attempt_of(headers: Mapping[str, Any]) -> int:
    """Which attempt a delivery is, from its ``x-hub-attempts`` header (absent or unreadable: 1)."""
    value = headers.get(ATTEMPTS)
    try:
        return max(1, int(value)) if value is not None and not isinstance(value, bool) else 1
    except (TypeError, ValueError):
        return 1


def retry_headers(headers: Mapping[str, Any], retry: Retry) -> dict[str, Any]:
    return {**headers, ATTEMPTS: retry.attempt}


def dead_headers(headers: Mapping[str, Any], dead: Dead, queue: str, *, at: datetime | None = None) -> dict[str, Any]:
    return {
        **headers,
        ATTEMPTS: dead.attempts,
        REASON: dead.failure.reason,
        CODE: dead.failure.code,
        QUEUE: queue,
        DEAD_AT: (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        DEAD_ID: uuid.uuid4().hex[:12],
    }


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A dead letter's headers as a fresh message: attempts reset, death records gone, replays counted."""
    kept = {
        name: value
        for name, value in headers.items()
        if name not in HUB_DEATH_HEADERS and name not in BROKER_HEADERS and not name.startswith(BROKER_HEADER_PREFIXES)
    }
    previous = headers.get(REPLAYS)
    kept[REPLAYS] = (previous if isinstance(previous, int) and not isinstance(previous, bool) else 0) + 1
    return kept


# -- copies and publishing -----------------------------------------------------------------

KEPT_PROPERTIES = ("message_id", "correlation_id", "reply_to", "priority", "type", "app_id", "timestamp")
"""The properties a copy keeps (not ``user_id``: the broker checks it against the publisher)."""


@dataclass(frozen=True)
class Copy:
    """A message to publish again: its body, headers and properties (persistent)."""

    body: bytes = dataclasses.field(repr=False)
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str | None = None
    content_encoding: str | None = None

    @classmethod
    def of(cls, body: bytes, headers: Mapping[str, Any], properties: Mapping[str, Any], **more: Any) -> Copy:
        kept = {name: properties[name] for name in KEPT_PROPERTIES if properties.get(name) is not None}
        return cls(body=body, headers=dict(headers), properties=kept, **more)

    def with_headers(self, headers: dict[str, Any]) -> Copy:
        return dataclasses.replace(self, headers=headers)


class Unroutable(ConfigError):
    """No queue took a copy: the topology is missing a queue (``hub broker declare``)."""


class Republisher:
    """Publishes copies with publisher confirms, on a connection of its own (opened when first needed).

    ``publish`` returns once the broker confirmed the copy and routed it to a queue; else it
    raises ``Unavailable`` (broker down, nack, no confirm within ``confirm_timeout``) or
    ``Unroutable``. Not thread-safe: one per consume loop.
    """

    def __init__(
        self,
        url: str,
        *,
        options: ConnectionOptions = DEFAULT_OPTIONS,
        retry: RetryPolicy = DEFAULT_RETRY,
        confirm_timeout: float = 10.0,
    ) -> None:
        self.url, self.options, self.retry, self.confirm_timeout = url, options, retry, confirm_timeout
        self._connection: Connection | None = None
        self._channel: Any = None
        self._returned: list[str] = []

    def _open(self) -> Connection:
        if self._connection is None:
            # No heartbeats: nothing reads this connection between publishes, so RabbitMQ would
            # close it after two missed ones; a dead connection shows when publishing, and is replaced.
            options = dataclasses.replace(self.options, confirm_publish=True, heartbeat=0)
            self._connection = connect(self.url, options=options, retry=self.retry)
        return self._connection

    def _channel_of(self, connection: Connection) -> Any:
        if self._channel is None or (is_amqp(connection) and not self._channel.is_open):
            channel = connection.channel()
            if is_amqp(connection):
                channel.events["basic_return"].add(self._on_return)
            self._channel = channel
        return self._channel

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"exchange {exchange!r}, routing key {routing_key!r} ({exc})")

    def publish(self, copy: Copy, *, exchange: str, routing_key: str, expiration: float | None = None) -> None:
        """Publish ``copy``; ``expiration`` (seconds) is its per-message TTL on RabbitMQ.

        A connection that sat idle may have been dropped (by a firewall, a broker restart):
        a failure on one opened before is tried once more on a new connection (at worst the
        copy is published twice: at-least-once, like everything else).
        """
        reused = self._connection is not None
        try:
            self._publish_once(copy, exchange, routing_key, expiration)
        except Unavailable as exc:
            if not reused:
                raise
            log.info("republisher: %s; trying again on a new connection", exc)
            self._publish_once(copy, exchange, routing_key, expiration)

    def _publish_once(self, copy: Copy, exchange: str, routing_key: str, expiration: float | None) -> None:
        try:
            with broker_errors("the broker (publishing a retry or dead letter)"):
                connection = self._open()
                channel = self._channel_of(connection)
                if is_amqp(connection):
                    self._publish_amqp(channel, copy, exchange, routing_key, expiration)
                else:
                    self._publish_kombu(channel, copy, exchange, routing_key)
        except Unroutable:
            raise
        except (Unavailable, ConfigError):
            self.close()
            raise
        except amqp.exceptions.MessageNacked as exc:
            self.close()
            raise Unavailable("the broker refused (nacked) a retry or dead letter; the original stays queued") from exc
        except amqp.exceptions.ChannelError as exc:  # e.g. the exchange does not exist: the channel is closed
            self.close()
            raise Unroutable(f"the broker refused a publish to {exchange!r} ({exc}); declare the topology") from exc

    def _publish_amqp(self, channel: Any, copy: Copy, exchange: str, routing_key: str, ttl: float | None) -> None:
        properties: dict[str, Any] = dict(copy.properties)
        if ttl is not None:
            properties["expiration"] = str(max(0, round(ttl * 1000)))
        message = amqp.Message(
            copy.body,
            content_type=copy.content_type,
            content_encoding=copy.content_encoding,
            application_headers=copy.headers,
            delivery_mode=2,
            **properties,
        )
        self._returned.clear()
        # confirm_publish: py-amqp waits for the broker's ack; a basic.return comes before it.
        channel.basic_publish(
            message, exchange=exchange, routing_key=routing_key, mandatory=True, confirm_timeout=self.confirm_timeout
        )
        if self._returned:
            raise Unroutable(f"no queue takes the copy: {self._returned[0]}; declare the topology (hub broker declare)")

    def _publish_kombu(self, channel: Any, copy: Copy, exchange: str, routing_key: str) -> None:
        # The in-process transport would create a queue for any name: check the queue or the bindings.
        if not exchange and hasattr(channel, "_has_queue"):
            if not channel._has_queue(routing_key):
                raise Unroutable(f"queue {routing_key} does not exist; declare the topology (hub broker declare)")
        elif hasattr(channel, "get_table"):
            try:
                table = channel.get_table(exchange)
                routed = channel.typeof(exchange).lookup(table, exchange, routing_key, None)
            except KeyError:
                routed = []
            if not routed:
                raise Unroutable(
                    f"no queue takes the copy from exchange {exchange!r}; declare the topology (hub broker declare)"
                )
        Producer(channel).publish(
            copy.body,
            exchange=exchange,
            routing_key=routing_key,
            headers=copy.headers,
            content_type=copy.content_type or "application/octet-stream",
            content_encoding=copy.content_encoding or "binary",
            delivery_mode=2,
            retry=False,
            **copy.properties,
        )

    def dead(self, copy: Copy) -> None:
        """Publish to ``hub.dead`` (a fanout: the routing key is kept for information)."""
        self.publish(copy, exchange=DEAD_EXCHANGE, routing_key=str(copy.headers.get(QUEUE, "")))

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # the connection is already gone
                connection.release()

    def __enter__(self) -> Republisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
