"""The AMQP door: envelopes published to ``hub.submit`` are accepted like any other.

The answer (the signed receipt, or the error document) goes to the message's ``reply_to``
queue with its ``correlation_id`` (or ``message_id``). Without ``reply_to``, a receipt goes
to the submitter's ``sender.<id>.acks`` queue (through ``hub.notify``), and a refusal is
dead-lettered to ``hub.dead`` with its code: the claimed sender of an unverified envelope
is not told anything. A database outage leaves the message queued for a later attempt.

Headers of an answer: ``hub-status`` (201, 200 or the HTTP status of the refusal),
``hub-code`` (the refusal's stable code), ``hub-message-id``.

A ``reply_to`` naming one of the hub's own queues (``hub.*``, ``provider.*``, ``sender.*``) is
not followed: anyone may publish to ``hub.submit``, and its answers must not land in a provider's
deliveries, another sender's acknowledgements or the hub's own work queues. Such a message is
answered as one without ``reply_to``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu import Exchange, Producer

from hub.broker.connection import RetryPolicy, connect
from hub.broker.consumer import Properties, consume
from hub.broker.retry import REDELIVERY
from hub.broker.topology import notify_key, reply_queue
from hub.errors import Rejected
from hub.inbound.acceptance import Intake
from hub.inbound.documents import error_document
from hub.inbound.http import http_status

log = logging.getLogger("hub.amqp")

INBOUND_QUEUE = "hub.inbound"
NOTIFY_EXCHANGE = Exchange("hub.notify", type="topic", durable=True)


class AmqpDoor:
    def __init__(self, intake: Intake, broker_url: str) -> None:
        self.intake = intake
        self.broker_url = broker_url
        self._connection = connect(broker_url)
        self._producer = Producer(self._connection.channel())
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connection.release()

    def handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        correlation = properties.correlation_id or properties.message_id
        reply_to = reply_queue(properties.reply_to)
        try:
            receipt = self.intake.submit(body, door="amqp")
        except Rejected as refused:
            if not reply_to:
                log.info(
                    "refused without reply_to", extra={"event": "refused", "door": "amqp", "code": refused.code.value}
                )
                raise  # dead-lettered, with the code in the log
            self._answer(
                error_document(refused),
                {"hub-status": http_status(refused), "hub-code": refused.code.value},
                reply_to=reply_to,
                correlation_id=correlation,
            )
            return
        answer_headers = {
            "hub-status": 201 if receipt.created else 200,
            "hub-code": "",
            "hub-message-id": receipt.message_id,
        }
        if reply_to:
            self._answer(receipt.xml, answer_headers, reply_to=reply_to, correlation_id=correlation)
        else:
            self._answer(
                receipt.xml,
                answer_headers,
                exchange=NOTIFY_EXCHANGE,
                routing_key=notify_key(receipt.submitter_id),
                correlation_id=correlation,
            )

    def _answer(
        self,
        body: bytes,
        headers: dict[str, Any],
        *,
        reply_to: str | None = None,
        exchange: Exchange | str = "",
        routing_key: str | None = None,
        correlation_id: str | None,
    ) -> None:
        # Published (and confirmed on RabbitMQ) before the submission is acknowledged: if this
        # fails, the submission is delivered again and its idempotent repeat answers again.
        with self._lock:
            self._producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key or reply_to or "",
                headers=headers,
                correlation_id=correlation_id,
                content_type="application/xml",
                content_encoding="binary",
                delivery_mode=2,
                retry=True,
            )

    def run(self, stop: threading.Event, *, prefetch: int = 50, backoff: RetryPolicy = REDELIVERY) -> None:
        """Consume ``hub.submit``'s queue until ``stop``; ``backoff``: the redelivery policy (``[retry]``)."""
        consume(self.broker_url, INBOUND_QUEUE, self.handle, prefetch=prefetch, stop=stop, backoff=backoff)
