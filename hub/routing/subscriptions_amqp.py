"""The recipient directory over AMQP: providers' changes published to ``hub.subscriptions``.

The same as ``POST /v1/providers/{provider_id}/subscriptions`` (``hub.routing.directory_http``), for
providers that talk AMQP: the same change objects, the same limits, the same tokens, the same
per-change results. ``hub worker subscriptions`` consumes the queue (``SubscriptionsConsumer``).

A provider publishes to the exchange ``hub.subscriptions`` (direct), routing key ``subscriptions``
(queue ``hub.subscriptions``, quorum, with its retry queue; ``hub broker declare`` makes them):

    header ``x-hub-provider``   its provider id, as in ``config/providers.yaml``
    header ``authorization``    ``Bearer <token>``: one of its API tokens (``api_token_sha256`` there)
    content_type               ``application/json``
    reply_to                   optional: the queue that gets the answer (through the default exchange);
                               never one of the hub's own queues (hub.*, provider.*, sender.*)
    correlation_id             optional: copied to the answer (else the message's ``message_id``)
    body                       ``{"changes": [{"op": ..., "kind": ..., "id": ..., "at": ...}, ...]}``:
                               1 to 1,000 changes (``MAX_CHANGES``), at most 1 MiB (``MAX_SUBSCRIPTION_BYTES``)

The token is checked against the SHA-256 hashes ``providers.yaml`` lists, as over HTTP; the worker
reads them when it starts (restart it to take a new token). RabbitMQ's ``user_id`` property is not
used: it proves who published only where every provider has a broker user of its own.

The valid changes of a message are applied in one transaction (``Directory.apply``); invalid ones
are refused one by one with their code (a provider linking or unlinking another provider:
NOT_AUTHORISED). The answer goes to ``reply_to``, with the message's correlation id, as JSON
exactly as the HTTP route answers (``apply_changes``), with the headers ``hub-status`` (200) and
``hub-code`` (empty)::

    {"applied": 2, "refused": 1, "results": [{"index": 0, "status": 200, "changed": true},
     {"index": 1, "status": 400, "code": "SSIN_INVALID", "message": "..."}, ...]}

A message refused whole is dead-lettered to ``hub.dead`` at once, with its code in ``x-hub-code``
(``hub dlq list``), and nothing of it is applied:

- UNAUTHENTICATED (no ``x-hub-provider``, no bearer token, or a token nobody has) and
  NOT_AUTHORISED (another provider's token): no answer, whatever ``reply_to`` says;
- CONTENT_TYPE_INVALID (not ``application/json``), TOO_LARGE (over 1 MiB, no change or over
  1,000), SCHEMA_INVALID (not JSON, or not ``{"changes": [...]}``): the provider, authenticated,
  also gets the error document to ``reply_to`` (``application/xml``, as the HTTP route answers it,
  ``hub-status`` 413/415/400 and ``hub-code``).

A dead letter of ``hub.subscriptions`` keeps no token: its ``authorization`` header is replaced
(``hub dlq show`` prints headers). Replaying one is therefore refused UNAUTHENTICATED: the provider
sends its changes again (they are idempotent).

A database or broker outage is retried by the consume loop (``hub.broker.consumer``); delivery is
at least once. A change applied twice changes nothing the second time: a message handled again
(redelivered, or retried after its changes committed but before its answer was sent) is answered
again, with ``"changed": false`` for what the first time applied. National numbers are never
logged: the log says who sent how many changes, and the refusals' codes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from hub.broker.connection import RetryPolicy
from hub.broker.consumer import HANDLER_BACKOFF, Properties, consume
from hub.broker.retry import Copy, Republisher, Unroutable
from hub.broker.topology import SUBSCRIPTIONS_QUEUE, reply_queue
from hub.errors import ErrorCode, Rejected
from hub.inbound.documents import error_document
from hub.inbound.http import http_status
from hub.routing.directory import Directory
from hub.routing.directory_http import (
    MAX_SUBSCRIPTION_BYTES,
    ProviderTokens,
    apply_changes,
    changes_of,
    provider_by_token,
)
from hub.settings import Settings

log = logging.getLogger("hub.directory")

QUEUE = SUBSCRIPTIONS_QUEUE.name
PROVIDER_HEADER = "x-hub-provider"
AUTHORIZATION_HEADER = "authorization"
REMOVED = "(removed by the hub)"
"""What a dead letter's ``authorization`` header says instead of the token."""
JSON = "application/json"


def provider_tokens(settings: Settings) -> dict[str, set[str]]:
    """``{provider id: {sha256, ...}}`` from ``providers.yaml``, as ``hub serve`` loads it; empty without the file.

    ``ConfigError`` (file and line) when the file is wrong.
    """
    path = settings.config_dir / "providers.yaml"
    if not path.exists():
        return {}
    from hub.routing.providers import load_providers

    return load_providers(path).tokens()


def _header(headers: Mapping[str, Any], name: str) -> str:
    """A text header, its name in any case ("" when absent or not text)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.strip() if isinstance(value, str) else ""


def _json(answer: dict[str, Any]) -> bytes:
    """The answer as the HTTP route's ``JSONResponse`` writes it, byte for byte."""
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def _remove_token(headers: dict[str, Any]) -> None:
    """Replace the bearer token in the headers the consume loop copies to a dead letter."""
    for name in list(headers):
        if str(name).lower() == AUTHORIZATION_HEADER:
            headers[name] = REMOVED


class SubscriptionsConsumer:
    """The handler of ``hub.subscriptions`` for the consume loop, with the connection its answers go out on."""

    def __init__(
        self,
        directory: Directory,
        tokens: ProviderTokens,
        broker_url: str,
        *,
        backoff: RetryPolicy = HANDLER_BACKOFF,
    ) -> None:
        self.directory = directory
        self.tokens = tokens
        self.broker_url = broker_url
        self.backoff = backoff
        """The consume loop's redelivery policy: the last attempt's dead letter loses its token too."""
        self._publisher = Republisher(broker_url)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._publisher.close()

    def run(self, stop: threading.Event, *, prefetch: int = 10, poll: float = 0.25) -> None:
        """Consume ``hub.subscriptions`` until ``stop`` is set."""
        consume(self.broker_url, QUEUE, self.handle, prefetch=prefetch, stop=stop, backoff=self.backoff, poll=poll)

    # -- one message ---------------------------------------------------------------------------

    def handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        """Authenticate, check, apply, answer; ``Rejected`` (dead-lettered) when the message is refused whole."""
        try:
            self._handle(body, headers, properties)
        except Rejected:
            _remove_token(headers)  # dead-lettered at once
            raise
        except Exception:
            if properties.attempt >= self.backoff.attempts:  # retried no more: dead-lettered
                _remove_token(headers)
            raise

    def _handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        try:
            provider = self.authenticate(headers)
        except Rejected as refused:
            log.info("refused", extra={"event": "refused", "door": "amqp-subscriptions", "code": refused.code.value})
            raise  # told nothing: who sent it is not known
        try:
            items = self._changes(body, properties)
        except Rejected as refused:
            log.info(
                "refused",
                extra={
                    "event": "refused",
                    "door": "amqp-subscriptions",
                    "provider": provider,
                    "code": refused.code.value,
                },
            )
            self._answer(
                error_document(refused),
                {"hub-status": http_status(refused), "hub-code": refused.code.value},
                "application/xml",
                properties,
            )
            raise
        answer = apply_changes(self.directory, items, provider, self.directory.clock())
        log.info(
            "subscriptions",
            extra={
                "event": "subscriptions",
                "door": "amqp-subscriptions",
                "provider": provider,
                "applied": answer["applied"],
                "refused": answer["refused"],
            },
        )
        self._answer(_json(answer), {"hub-status": 200, "hub-code": ""}, JSON, properties)

    def authenticate(self, headers: Mapping[str, Any]) -> str:
        """The provider that sent the message: ``x-hub-provider``, proven by the bearer token in ``authorization``."""
        provider = _header(headers, PROVIDER_HEADER)
        if not provider:
            raise Rejected(
                ErrorCode.UNAUTHENTICATED,
                f"send your provider id in the header {PROVIDER_HEADER} and 'Bearer <token>' in {AUTHORIZATION_HEADER}",
            )
        return provider_by_token(self.tokens, provider, _header(headers, AUTHORIZATION_HEADER))

    @staticmethod
    def _changes(body: bytes, properties: Properties) -> list[Any]:
        content_type = (properties.content_type or "").split(";")[0].strip().lower()
        if content_type != JSON:
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, 'send application/json: {"changes": [...]}')
        if len(body) > MAX_SUBSCRIPTION_BYTES:
            raise Rejected(
                ErrorCode.TOO_LARGE, f"the message is {len(body)} bytes; the limit is {MAX_SUBSCRIPTION_BYTES}."
            )
        return changes_of(body)

    def _answer(self, body: bytes, headers: dict[str, Any], content_type: str, properties: Properties) -> None:
        """Send the answer to ``reply_to`` (none without it), confirmed; a reply queue that does not exist loses it."""
        reply_to = reply_queue(properties.reply_to)
        if reply_to is None:
            return
        correlation = properties.correlation_id or properties.message_id
        answer = Copy(
            body=body,
            headers=headers,
            properties={"correlation_id": correlation} if correlation else {},
            content_type=content_type,
            content_encoding="utf-8",
        )
        try:
            with self._lock:
                self._publisher.publish(answer, exchange="", routing_key=reply_to)
        except Unroutable:
            log.warning(
                "no reply queue",
                extra={"event": "answer_lost", "door": "amqp-subscriptions", "message_id": properties.message_id},
            )
